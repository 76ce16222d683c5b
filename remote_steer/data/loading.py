"""Loading model-written-evals JSONL files from the fixtures, the hub, or a local copy.

Everything that goes wrong here is a ``DataError`` whose one-line message names the
file (and line) and says what was expected, so a researcher can fix the input.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Literal

from remote_steer.data.concepts import CONCEPT_FILES, HUB_DATASET
from remote_steer.errors import DataError

FIXTURES_ROOT: Path = Path(__file__).resolve().parents[1] / "fixtures" / "model-written-evals"

FIELDS: tuple[str, ...] = ("question", "answer_matching_behavior", "answer_not_matching_behavior")
_EXPECTED_LINE = "expected one JSON object per line with " + ", ".join(FIELDS)

# Short timeouts: an unreachable hub should fail in seconds, not after minutes of retries.
_HUB_TIMEOUT_S = 5.0
_LOCAL_COPY_HINT = (
    'point the spec at a local copy instead: [data] source = "/path/to/model-written-evals" '
    '(a clone of github.com/anthropics/evals), or source = "fixtures" for the bundled sample'
)
_LFS_MAGIC = b"version https://git-lfs"


@dataclass(frozen=True)
class RawItem:
    """One JSONL line, validated for shape only; meaning is checked in preprocess."""

    question: str
    answer_matching: str | tuple[str, ...]
    answer_not_matching: str | tuple[str, ...]
    source: str  # file path as given
    line: int  # 1-based line number in that file


# --------------------------------------------------------------------------- JSONL


def load_jsonl(path: Path | str) -> list[RawItem]:
    """Read one model-written-evals file; blank lines are skipped."""
    path = Path(path)
    text = _read_text(path)
    items: list[RawItem] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            items.append(_parse_line(path, lineno, line))
    return items


def _read_text(path: Path) -> str:
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise DataError(f"data file {path} {what}; expected a JSONL file ({_EXPECTED_LINE})")
    raw = path.read_bytes()
    if raw.startswith(_LFS_MAGIC):
        # A clone without git-lfs holds pointers, not data (upstream sycophancy files).
        raise DataError(
            f'{path} is a Git LFS pointer, not data; run `git lfs pull` in that clone, or use [data] source = "hub"'
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); {_EXPECTED_LINE}") from None


def _parse_line(path: Path, lineno: int, line: str) -> RawItem:
    where = f"{path}:{lineno}"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno}); {_EXPECTED_LINE}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{where}: got a JSON {type(obj).__name__}, not an object; {_EXPECTED_LINE}")
    missing = [f for f in FIELDS if f not in obj]
    if missing:
        raise DataError(f"{where}: missing field {missing[0]!r}; {_EXPECTED_LINE}")
    question = obj["question"]
    if not isinstance(question, str):
        raise DataError(f"{where}: field 'question' is {_json_type(question)}; expected a string")
    return RawItem(
        question=question,
        answer_matching=_answer(where, "answer_matching_behavior", obj["answer_matching_behavior"]),
        answer_not_matching=_answer(where, "answer_not_matching_behavior", obj["answer_not_matching_behavior"]),
        source=str(path),
        line=lineno,
    )


def _answer(where: str, field: str, value: object) -> str | tuple[str, ...]:
    # Upstream sycophancy files sometimes hold a list of strings; keep it as a tuple.
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise DataError(
        f'{where}: field {field!r} is {_json_type(value)}; expected a string like " (A)" or a list of strings'
    )


def _json_type(value: object) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", dict: "an object", type(None): "null"}
    if isinstance(value, list):
        return "a list containing non-strings"
    return names.get(type(value), type(value).__name__)


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class DataSource:
    """Where concept files come from: the bundled fixtures, the hub, or a local upstream-style folder."""

    kind: Literal["fixtures", "hub", "local"]
    root: Path | None = None  # None for the hub

    def describe(self) -> str:
        return f"hub dataset {HUB_DATASET}" if self.kind == "hub" else f"{self.kind} folder {self.root}"

    def locate(self, relpath: str, concept: str) -> Path:
        """A local path for ``relpath``, downloading it first for the hub."""
        if self.kind == "hub":
            return _hub_fetch(relpath, concept)
        assert self.root is not None
        path = self.root / relpath
        if not path.is_file():
            raise DataError(
                f"concept {concept!r}: file {path} not found in {self.describe()}; "
                f"expected the upstream layout (github.com/anthropics/evals) with {relpath}"
            )
        return path

    def peek(self, relpath: str) -> Path | None:
        """A local path for ``relpath`` if it is already here, without touching the network."""
        if self.kind == "hub":
            return _hub_cached(relpath)
        assert self.root is not None
        path = self.root / relpath
        return path if path.is_file() else None


def resolve_source(source: str | Path | DataSource) -> DataSource:
    """``"fixtures"``, ``"hub"``, or a directory laid out like the upstream repository."""
    if isinstance(source, DataSource):
        return source
    if isinstance(source, str) and source in ("fixtures", "hub"):
        return DataSource("fixtures", FIXTURES_ROOT) if source == "fixtures" else DataSource("hub")
    if not isinstance(source, (str, Path)) or not str(source).strip():
        raise DataError(
            f"data source {source!r} is not usable; expected 'fixtures', 'hub', "
            "or a local folder laid out like github.com/anthropics/evals"
        )
    root = Path(source).expanduser()
    if not root.is_dir():
        raise DataError(
            f"data source {root} is not a directory; expected 'fixtures', 'hub', "
            "or a local folder laid out like github.com/anthropics/evals"
        )
    return DataSource("local", root.resolve())


# --------------------------------------------------------------------------- hub


def _hub_cached(relpath: str) -> Path | None:
    import huggingface_hub  # imported lazily: only the hub source needs it

    found = huggingface_hub.try_to_load_from_cache(HUB_DATASET, relpath, repo_type="dataset")
    return Path(found) if isinstance(found, str) else None


def _hub_fetch(relpath: str, concept: str) -> Path:
    import huggingface_hub
    from huggingface_hub import constants as hf_constants
    from huggingface_hub import errors as hf_errors

    # Cache first: the upstream dataset does not change, and this never touches the network.
    try:
        return Path(_hub_download(huggingface_hub, relpath, local_files_only=True))
    except (hf_errors.LocalEntryNotFoundError, hf_errors.OfflineModeIsEnabled, FileNotFoundError):
        pass
    if hf_constants.is_offline_mode():
        raise DataError(_unreachable(relpath, concept, "offline mode is on (HF_HUB_OFFLINE)"))
    try:
        # One quick HEAD without retries: hf_hub_download alone retries 5 times (~25 s) when unreachable.
        url = huggingface_hub.hf_hub_url(HUB_DATASET, relpath, repo_type="dataset")
        huggingface_hub.get_hf_file_metadata(url, timeout=_HUB_TIMEOUT_S)
        return Path(_hub_download(huggingface_hub, relpath, local_files_only=False))
    except Exception as exc:  # noqa: BLE001 - every hub failure becomes one DataError
        raise _hub_error(exc, relpath, concept) from exc


def _hub_download(hf: ModuleType, relpath: str, *, local_files_only: bool) -> str:
    return hf.hf_hub_download(
        repo_id=HUB_DATASET,
        repo_type="dataset",
        filename=relpath,
        etag_timeout=_HUB_TIMEOUT_S,
        local_files_only=local_files_only,
    )


def _hub_error(exc: Exception, relpath: str, concept: str) -> DataError:
    from huggingface_hub import errors as hf_errors

    if isinstance(exc, (hf_errors.RemoteEntryNotFoundError, hf_errors.EntryNotFoundError)) and not isinstance(
        exc, hf_errors.LocalEntryNotFoundError
    ):
        return DataError(f"concept {concept!r}: file {relpath} not found in hub dataset {HUB_DATASET}")
    if isinstance(exc, (hf_errors.RepositoryNotFoundError, hf_errors.GatedRepoError)):
        return DataError(f"hub dataset {HUB_DATASET} is not accessible ({type(exc).__name__}); {_LOCAL_COPY_HINT}")
    detail = _one_line(str(exc), 120)
    why = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    return DataError(_unreachable(relpath, concept, why))


def _unreachable(relpath: str, concept: str, why: str) -> str:
    return (
        f"could not reach the Hugging Face hub dataset {HUB_DATASET} to fetch {relpath} "
        f"for concept {concept!r} ({why}) and it is not in the local cache; {_LOCAL_COPY_HINT}"
    )


def _one_line(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


# --------------------------------------------------------------------------- concepts


def known_concepts(overrides: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """Study concepts first, then any extra ones the overrides define."""
    extra = [c for c in (overrides or {}) if c not in CONCEPT_FILES]
    return list(CONCEPT_FILES) + extra


def concept_relpaths(concept: str, overrides: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """The files behind a concept, as given (relative to the source root, or absolute)."""
    if overrides and concept in overrides:
        return _override_paths(concept, overrides[concept])
    if concept in CONCEPT_FILES:
        return list(CONCEPT_FILES[concept])
    known = known_concepts(overrides)
    close = difflib.get_close_matches(concept, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise DataError(
        f"unknown concept {concept!r}{hint} Known concepts: {', '.join(known)} "
        "(or add the concept's files under [data.files] in the spec)"
    )


def _override_paths(concept: str, value: object) -> list[str]:
    if isinstance(value, (str, Path)):  # one path given bare; don't iterate its characters
        value = [value]
    if not isinstance(value, Sequence) or not value or not all(isinstance(p, (str, Path)) for p in value):
        raise DataError(f"[data.files] {concept!r} = {value!r}; expected a non-empty list of file paths")
    return [str(p) for p in value]


def concept_files(
    concept: str,
    source: str | Path | DataSource = "fixtures",
    overrides: Mapping[str, Sequence[str]] | None = None,
) -> list[Path]:
    """Local paths of a concept's files, fetched from the hub if that is the source."""
    src = resolve_source(source)
    return [_locate(src, rel, concept) for rel in concept_relpaths(concept, overrides)]


def _locate(src: DataSource, relpath: str, concept: str) -> Path:
    path = Path(relpath).expanduser()
    if not path.is_absolute():
        return src.locate(relpath, concept)
    if not path.is_file():
        raise DataError(f"concept {concept!r}: file {path} not found (from [data.files])")
    return path


def load_concept(
    concept: str,
    source: str | Path | DataSource = "fixtures",
    overrides: Mapping[str, Sequence[str]] | None = None,
) -> list[RawItem]:
    """All raw items of a concept, file by file in the listed order."""
    items: list[RawItem] = []
    for path in concept_files(concept, source, overrides):
        items.extend(load_jsonl(path))
    return items


def list_concepts(
    source: str | Path | DataSource = "fixtures",
    overrides: Mapping[str, Sequence[str]] | None = None,
) -> list[dict]:
    """One row per concept for the CLI's ``datasets`` command; never touches the network.

    ``available`` is True when every file is present (for the hub: cached);
    ``n_lines`` counts non-blank lines over the files present (None if none are).
    """
    src = resolve_source(source)
    rows = []
    for concept in known_concepts(overrides):
        files = concept_relpaths(concept, overrides)
        present = [p for p in (_peek(src, rel) for rel in files) if p is not None]
        rows.append(
            {
                "concept": concept,
                "files": files,
                "available": len(present) == len(files),
                "n_lines": sum(_count_lines(p) for p in present) if present else None,
            }
        )
    return rows


def _peek(src: DataSource, relpath: str) -> Path | None:
    path = Path(relpath).expanduser()
    found = (path if path.is_file() else None) if path.is_absolute() else src.peek(relpath)
    # An LFS pointer is not data; report it as unavailable.
    if found is not None and _is_lfs_pointer(found):
        return None
    return found


def _is_lfs_pointer(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(len(_LFS_MAGIC)) == _LFS_MAGIC


def _count_lines(path: Path) -> int:
    return sum(1 for line in path.read_bytes().splitlines() if line.strip())
