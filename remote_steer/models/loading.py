"""Loading models for tracing: toys, hub ids and local checkpoint directories.

Everything goes through nnsight's ``TransformersModel`` on an ordinary checkpoint
directory or hub id; a toy is just a checkpoint this package builds and caches
(``toy.py``), so the real loading code is the code the tests exercise.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from remote_steer.errors import ModelError
from remote_steer.models.architectures import (
    Architecture,
    architecture,
    fast_path_refusal,
    kernel_layout,
    logit_softcap,
    module,
    text_config,
)
from remote_steer.models.registry import ModelCard, lookup

_DTYPES = {
    "auto": "auto",
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


@dataclass(frozen=True)
class ModelSource:
    """Where a model's files come from, resolved from the name a spec gives."""

    name: str  # as written in the spec
    location: str  # hub id or local directory
    card: ModelCard | None  # registry entry, if any
    is_toy: bool
    revision: str | None = None

    @property
    def is_local_dir(self) -> bool:
        return Path(self.location).is_dir()


def resolve(name: str, revision: str | None = None) -> ModelSource:
    """Map a spec's model name to files: a toy, a registry name, a hub id or a path."""
    card = lookup(name)
    if card is not None and card.toy:
        from remote_steer.models.toy import ensure_toy

        return ModelSource(name, str(ensure_toy(card.name)), card, True)
    if card is not None and card.embedded:
        from remote_steer.models.real_small import ensure_real

        return ModelSource(name, str(ensure_real(card.name)), card, False)
    if name.startswith("toy/"):
        from remote_steer.models.registry import require_toy

        require_toy(name)  # raises with the list of toys
    if card is not None:
        return ModelSource(name, card.hub_id, card, False, revision)
    if Path(name).expanduser().is_dir():
        return ModelSource(name, str(Path(name).expanduser().resolve()), None, False, revision)
    if name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise ModelError(
            f"model {name!r}: no such directory, and not a hub id (expected 'org/name'), "
            "a registry name (see `remote-steer models`) or a toy such as 'toy/qwen3'"
        )
    return ModelSource(name, name, None, False, revision)


def _offline_message(source: ModelSource, error: BaseException) -> str:
    return (
        f"model {source.name!r}: could not load {source.location!r}: the Hugging Face hub is unreachable "
        f"and the model is not in the local cache ({type(error).__name__}). On a machine with network access "
        f"run `hf download {source.location}`, or set the spec's model name to a local "
        "checkpoint directory"
    )


def _hub_refusal(source: ModelSource, error: BaseException) -> str | None:
    """One line when the hub answered but refused: a gated repo (the licence not accepted,
    or no login) or one it does not have (or a private one); None otherwise."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    chain: list[BaseException] = []
    seen: BaseException | None = error
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    text = " ".join(str(e) for e in chain).lower()
    repo = source.location
    login = "log in with `hf auth login` or set HF_TOKEN"
    local = "(the client reads config and tokenizer from the hub even when the model runs remotely)"
    if any(isinstance(e, GatedRepoError) for e in chain) or "gated repo" in text:
        return (
            f"model {source.name!r}: {repo} is gated on the Hugging Face hub: accept its licence at "
            f"https://huggingface.co/{repo}, then {login} {local}"
        )
    if any(isinstance(e, RepositoryNotFoundError) for e in chain) or "repository not found" in text:
        return (
            f"model {source.name!r}: the Hugging Face hub has no repo {repo} it will show you: check the name "
            f"(`remote-steer models` lists the registry), or if it is private, {login}"
        )
    return None


def _hub_message(source: ModelSource, error: BaseException) -> str:
    return _hub_refusal(source, error) or _offline_message(source, error)


_HUB_TIMEOUT_S = 5.0


def _check_hub_reachable(source: ModelSource) -> None:
    """Fail in seconds, not after transformers' minute of retries, when a hub model is
    neither cached nor reachable."""
    if source.is_toy or source.is_local_dir:
        return
    import huggingface_hub
    from huggingface_hub import constants as hf_constants

    cached = huggingface_hub.try_to_load_from_cache(source.location, "config.json", revision=source.revision)
    if isinstance(cached, str):
        return
    if hf_constants.is_offline_mode():
        raise ModelError(_offline_message(source, OSError("HF_HUB_OFFLINE is set")))
    try:
        url = huggingface_hub.hf_hub_url(source.location, "config.json", revision=source.revision)
        huggingface_hub.get_hf_file_metadata(url, timeout=_HUB_TIMEOUT_S)
    except Exception as error:  # noqa: BLE001 - any failure to reach the hub ends here
        raise ModelError(_hub_message(source, error)) from None


def load_config(source: ModelSource) -> Any:
    """The model's transformers config (cheap: no weights). Fails fast and clearly offline."""
    from transformers import AutoConfig

    _check_hub_reachable(source)
    try:
        return AutoConfig.from_pretrained(source.location, revision=source.revision)
    except (OSError, ValueError) as error:
        raise ModelError(_hub_message(source, error)) from None


def load_tokenizer(source: ModelSource) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source.location, revision=source.revision)
    except (OSError, ValueError) as error:
        raise ModelError(_hub_message(source, error)) from None
    # Causal LMs read the last position; left padding keeps it at index -1 for every row.
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def model_revision(source: ModelSource, config: Any) -> str:
    """What exactly was loaded: toy build hash, hub commit, or local path."""
    if source.is_toy:
        from remote_steer.models.toy import toy_revision

        return toy_revision(Path(source.location))
    commit = getattr(config, "_commit_hash", None)
    from remote_steer.models.real_small import real_revision

    embedded = real_revision(Path(source.location)) if source.is_local_dir else None
    if embedded is not None:
        return embedded
    if source.is_local_dir:
        return f"local:{source.location}"
    return commit or source.revision or "unknown"


@dataclass
class LoadedModel:
    """A model ready for tracing, with what the stages need to know about it."""

    name: str
    nn: Any  # nnsight TransformersModel
    tokenizer: Any
    n_layers: int
    hidden_size: int
    revision: str
    is_toy: bool
    card: ModelCard | None

    @property
    def architecture(self) -> Architecture | None:
        """This model's row of the architecture table (None: not in it)."""
        return architecture(str(getattr(text_config(self.nn.config), "model_type", None)))

    @property
    def layers(self) -> Any:
        """The decoder layers, as nnsight envoys (``.output`` is the residual stream)."""
        arch = self.architecture
        return module(self.nn, arch.layers if arch is not None else "model.layers")

    @property
    def fast_path_refusal(self) -> str | None:
        """Why the fast engines cannot run this model (one line), or None if they can."""
        return fast_path_refusal(self.nn._module)

    @property
    def logit_softcap(self) -> float | None:
        """The final logit soft-cap (Gemma), applied after the output projection; None if none."""
        arch = self.architecture
        if arch is not None:
            return logit_softcap(arch, self.nn.config)
        cap = getattr(text_config(self.nn.config), "final_logit_softcapping", None)
        return None if cap is None else float(cap)

    def kernel_layout(self) -> dict[str, Any]:
        """The per-architecture facts the fast kernels take (plain data)."""
        arch = self.architecture
        if arch is None:
            raise ModelError(f"model {self.name!r}: {self.fast_path_refusal}")
        return kernel_layout(arch, self.nn.config)

    def layer_fraction(self, layer: int) -> float:
        """Depth of the layer's output, (layer + 1) / layers (``registry.layer_depth``)."""
        return (layer + 1) / self.n_layers


def _device_kwargs(device: str) -> dict[str, Any]:
    if device == "auto":
        return {"device_map": "auto"}  # spread over all visible GPUs (accelerate)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f'device {device!r}: CUDA is not available on this machine; use device = "cpu"')
    if device == "cpu":
        return {}  # plain CPU load; device_map needs accelerate and buys nothing here
    return {"device_map": device}


def remote_id(source: ModelSource) -> str:
    """The name a remote server knows this model by: the hub id, or the toy's name."""
    if source.card is not None and (source.is_toy or source.card.embedded):
        return source.card.name
    return source.location


def load_model(source: ModelSource, *, dtype: str = "auto", device: str = "cpu", weights: bool = True) -> LoadedModel:
    """Wrap the model in nnsight. With ``weights`` (local backends) the weights are
    loaded and dispatched; without (remote backend) only config and tokenizer are read
    and the model is built on the meta device: the server holds the weights."""
    import nnsight
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own display reports progress
    if dtype not in _DTYPES:
        raise ModelError(f"dtype {dtype!r}: expected one of {', '.join(_DTYPES)}")
    config = load_config(source)
    tokenizer = load_tokenizer(source)
    kwargs: dict[str, Any] = dict(_device_kwargs(device)) if weights else {}
    kwargs["dtype"] = _DTYPES[dtype]
    if not weights and source.card is not None and (source.is_toy or source.card.embedded):
        canonicalize_remote_id(source.location, remote_id(source))  # toys and embedded models: a local directory
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            nn_model = nnsight.TransformersModel(
                source.location,
                task="text-generation",
                tokenizer=tokenizer,
                revision=source.revision,
                dispatch=weights,
                **kwargs,
            )
        except (OSError, ValueError) as error:
            if source.is_toy or source.is_local_dir:
                raise ModelError(f"model {source.name!r}: could not load {source.location}: {error}") from None
            raise ModelError(_hub_message(source, error)) from None
    if weights:
        nn_model._module.eval()
    text_config = getattr(config, "text_config", config)
    return LoadedModel(
        name=source.name,
        nn=nn_model,
        tokenizer=tokenizer,
        n_layers=int(text_config.num_hidden_layers),
        hidden_size=int(text_config.hidden_size),
        revision=model_revision(source, config),
        is_toy=source.is_toy,
        card=source.card,
    )


def describe_config(config: Any) -> dict[str, Any]:
    """A few config fields for the manifest."""
    text_config = getattr(config, "text_config", config)
    keys = ("model_type", "num_hidden_layers", "hidden_size", "num_attention_heads", "num_experts")
    return {k: getattr(text_config, k) for k in keys if getattr(text_config, k, None) is not None}


def canonicalize_remote_id(location: str, remote_id: str) -> None:
    """Name a model the way the server knows it, without asking the hub.

    nnsight builds a remote model key from ``HfApi().model_info(repo).id``; a toy
    (a local directory) has no hub entry, so its key is set here instead.
    """
    from nnsight.modeling import huggingface

    huggingface._ID_CACHE[location] = remote_id
