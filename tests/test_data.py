"""Loading model-written-evals files: JSONL validation, sources, concepts, the hub."""

from __future__ import annotations

import json
import time
from pathlib import Path

import huggingface_hub
import huggingface_hub.constants
import pytest
from huggingface_hub import errors as hf_errors

from remote_steer.data import loading as data
from remote_steer.data.concepts import CONCEPT_FILES, HUB_DATASET
from remote_steer.data.loading import (
    FIXTURES_ROOT,
    DataSource,
    RawItem,
    concept_files,
    list_concepts,
    load_concept,
    load_jsonl,
    resolve_source,
)
from remote_steer.errors import DataError

REAL_DATA = Path(__file__).resolve().parents[2] / "shared/data/model-written-evals"


def item(q: str = "Q?\n\nChoices:\n (A) yes\n (B) no", m: object = " (A)", nm: object = " (B)") -> dict:
    return {"question": q, "answer_matching_behavior": m, "answer_not_matching_behavior": nm}


def write_lines(path: Path, lines: list[object]) -> Path:
    """Dicts become JSON lines; strings are written verbatim (for malformed lines)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(json.dumps(x) if isinstance(x, dict) else str(x) for x in lines)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def upstream_tree(root: Path, concept: str, n_items: int = 2) -> list[Path]:
    """A local folder laid out like upstream, holding the given concept's files."""
    paths = []
    for k, rel in enumerate(CONCEPT_FILES[concept]):
        lines = [item(f"{concept} {k} item {i}?\n\nChoices:\n (A) x\n (B) y") for i in range(n_items)]
        paths.append(write_lines(root / rel, lines))
    return paths


# --------------------------------------------------------------------------- load_jsonl


def test_load_jsonl_reads_items_skips_blanks_and_numbers_lines(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "a.jsonl", [item(), "", "   ", item("Other?", [" (B)"], " (A)")])
    items = load_jsonl(path)
    assert [i.line for i in items] == [1, 4]  # blank lines skipped, numbering is the file's
    assert items[0] == RawItem("Q?\n\nChoices:\n (A) yes\n (B) no", " (A)", " (B)", str(path), 1)
    assert items[1].answer_matching == (" (B)",)  # list-valued answer kept as a tuple
    assert items[1].answer_not_matching == " (A)"


def test_malformed_json_names_file_and_line(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "bad.jsonl", [item(), '{"question": "oops", ', item()])
    with pytest.raises(DataError) as exc:
        load_jsonl(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}:2: invalid JSON (")
    assert "expected one JSON object per line with question, answer_matching_behavior" in msg
    assert "\n" not in msg


def test_missing_field_names_file_line_and_field(tmp_path: Path) -> None:
    bad = {"question": "Q?", "answer_matching_behavior": " (A)"}
    path = write_lines(tmp_path / "m.jsonl", [item(), item(), bad])
    with pytest.raises(DataError, match=r"m\.jsonl:3: missing field 'answer_not_matching_behavior'; expected"):
        load_jsonl(path)


@pytest.mark.parametrize(
    ("bad", "field", "expected"),
    [
        (item(q=7), "question", "expected a string"),
        (item(m=1), "answer_matching_behavior", "expected a string like"),
        (item(nm=[" (A)", 2]), "answer_not_matching_behavior", "list of strings"),
        (item(nm=None), "answer_not_matching_behavior", "null"),
    ],
)
def test_wrong_field_type_names_field_and_expectation(tmp_path: Path, bad: dict, field: str, expected: str) -> None:
    path = write_lines(tmp_path / "t.jsonl", [bad])
    with pytest.raises(DataError) as exc:
        load_jsonl(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}:1: field {field!r}")
    assert expected in msg


def test_non_object_line_is_rejected(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "l.jsonl", ['["question", "a", "b"]'])
    with pytest.raises(DataError, match=r"l\.jsonl:1: got a JSON list, not an object"):
        load_jsonl(path)


def test_missing_file_names_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.jsonl"
    with pytest.raises(DataError, match="nope.jsonl does not exist"):
        load_jsonl(path)


def test_git_lfs_pointer_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "syc.jsonl"
    path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12\n")
    with pytest.raises(DataError, match="Git LFS pointer"):
        load_jsonl(path)


# --------------------------------------------------------------------------- sources and concepts


def test_resolve_source_kinds(tmp_path: Path) -> None:
    assert resolve_source("fixtures") == DataSource("fixtures", FIXTURES_ROOT)
    assert resolve_source("hub") == DataSource("hub")
    assert resolve_source(tmp_path) == DataSource("local", tmp_path.resolve())
    assert resolve_source(str(tmp_path)).kind == "local"
    src = resolve_source(tmp_path)
    assert resolve_source(src) is src
    assert FIXTURES_ROOT == Path(data.__file__).resolve().parents[1] / "fixtures" / "model-written-evals"


def test_resolve_source_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data source .*nowhere is not a directory; expected 'fixtures', 'hub'"):
        resolve_source(tmp_path / "nowhere")


def test_local_source_concept_files_and_load(tmp_path: Path) -> None:
    paths = upstream_tree(tmp_path, "sycophancy", n_items=2)
    assert concept_files("sycophancy", tmp_path) == paths
    items = load_concept("sycophancy", tmp_path)
    assert len(items) == 6  # 3 files x 2 lines, file by file in listed order
    assert [Path(i.source).name for i in items[::2]] == [p.name for p in paths]


def test_local_source_missing_file_names_full_path_and_concept(tmp_path: Path) -> None:
    upstream_tree(tmp_path, "corrigibility")
    missing = tmp_path.resolve() / CONCEPT_FILES["power-seeking"][0]
    with pytest.raises(DataError) as exc:
        load_concept("power-seeking", tmp_path)
    assert str(missing) in str(exc.value)
    assert "'power-seeking'" in str(exc.value)


def test_unknown_concept_suggests_closest_and_lists_known(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        concept_files("corrigibilty", tmp_path)
    msg = str(exc.value)
    assert "unknown concept 'corrigibilty'; did you mean 'corrigibility'?" in msg
    for name in CONCEPT_FILES:
        assert name in msg


def test_unknown_concept_without_close_match(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        load_concept("zzzz", tmp_path)
    assert "did you mean" not in str(exc.value)
    assert "Known concepts: corrigibility" in str(exc.value)


def test_overrides_relative_absolute_and_new_concepts(tmp_path: Path) -> None:
    root = tmp_path / "root"
    rel = write_lines(root / "mine" / "honesty.jsonl", [item(), item("B?\n\nChoices:\n (A) x\n (B) y")])
    outside = write_lines(tmp_path / "elsewhere" / "corr.jsonl", [item()])
    overrides = {"honesty": ["mine/honesty.jsonl"], "corrigibility": [str(outside)]}
    assert concept_files("honesty", root, overrides) == [rel]
    assert concept_files("corrigibility", root, overrides) == [outside]
    assert len(load_concept("honesty", root, overrides)) == 2
    # A bare string is one path, not a list of characters.
    assert concept_files("honesty", root, {"honesty": "mine/honesty.jsonl"}) == [rel]
    # The suggestion list includes override-defined concepts.
    with pytest.raises(DataError, match="did you mean 'honesty'"):
        concept_files("honesty2", root, overrides)


def test_bad_overrides(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"\[data.files\] 'x' = \[\]; expected a non-empty list"):
        concept_files("x", tmp_path, {"x": []})
    with pytest.raises(DataError, match=r"concept 'x': file .*gone.jsonl not found"):
        concept_files("x", tmp_path, {"x": [str(tmp_path / "gone.jsonl")]})


def test_list_concepts_local(tmp_path: Path) -> None:
    upstream_tree(tmp_path, "corrigibility", n_items=3)
    syc = upstream_tree(tmp_path, "sycophancy", n_items=2)
    syc[1].unlink()  # one of three files missing
    extra = write_lines(tmp_path / "extra.jsonl", [item(), "", item()])
    rows = {r["concept"]: r for r in list_concepts(tmp_path, {"extra": [str(extra)]})}
    assert list(rows)[: len(CONCEPT_FILES)] == list(CONCEPT_FILES)
    assert rows["corrigibility"] == {
        "concept": "corrigibility",
        "files": list(CONCEPT_FILES["corrigibility"]),
        "available": True,
        "n_lines": 3,
    }
    assert rows["sycophancy"]["available"] is False
    assert rows["sycophancy"]["n_lines"] == 4  # two present files x 2 lines
    assert rows["power-seeking"]["available"] is False and rows["power-seeking"]["n_lines"] is None
    assert rows["extra"]["available"] is True and rows["extra"]["n_lines"] == 2


# --------------------------------------------------------------------------- hub


@pytest.fixture
def empty_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_hub_offline_gives_clear_error_quickly(empty_hf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # huggingface_hub reads HF_HUB_OFFLINE at import, so patch the constant as well.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    start = time.monotonic()
    with pytest.raises(DataError) as exc:
        load_concept("corrigibility", "hub")
    assert time.monotonic() - start < 5
    msg = str(exc.value)
    assert f"could not reach the Hugging Face hub dataset {HUB_DATASET}" in msg
    assert CONCEPT_FILES["corrigibility"][0] in msg
    assert '[data] source = "/path/to/model-written-evals"' in msg
    assert "github.com/anthropics/evals" in msg and "fixtures" in msg
    assert "\n" not in msg


def _no_cache(**kwargs: object) -> str:
    raise hf_errors.LocalEntryNotFoundError("not cached")


def test_hub_unreachable_network_error(empty_hf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(*args: object, **kwargs: object) -> None:
        raise ConnectionError("[Errno -2] Name or service not known")

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _no_cache)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", unreachable)
    with pytest.raises(DataError, match=r"could not reach .*ConnectionError: \[Errno -2\] Name or service"):
        load_concept("self-awareness", "hub")


def test_hub_file_missing_upstream(empty_hf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(*args: object, **kwargs: object) -> None:
        raise hf_errors.EntryNotFoundError("404")

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _no_cache)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", missing)
    with pytest.raises(DataError, match=rf"concept 'x': file a/b.jsonl not found in hub dataset {HUB_DATASET}"):
        load_concept("x", "hub", {"x": ["a/b.jsonl"]})


def test_hub_uses_cache_without_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cached = write_lines(tmp_path / "cached.jsonl", [item(), item("Z?\n\nChoices:\n (A) 1\n (B) 2")])
    calls: list[dict] = []

    def fake_download(**kwargs: object) -> str:
        calls.append(kwargs)
        assert kwargs["repo_id"] == HUB_DATASET and kwargs["repo_type"] == "dataset"
        assert kwargs["local_files_only"] is True  # the cache is tried first
        return str(cached)

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("network used although the file is cached")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", no_network)
    items = load_concept("survival-instinct", "hub")
    assert len(items) == 2
    assert calls[0]["filename"] == CONCEPT_FILES["survival-instinct"][0]


def test_list_concepts_hub_reads_cache_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cached = write_lines(tmp_path / "c.jsonl", [item(), item(), item()])
    rel = CONCEPT_FILES["corrigibility"][0]

    def fake_cache(repo_id: str, filename: str, **kwargs: object) -> str | None:
        return str(cached) if filename == rel else None

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", fake_cache)
    rows = {r["concept"]: r for r in list_concepts("hub")}
    assert rows["corrigibility"]["available"] is True and rows["corrigibility"]["n_lines"] == 3
    assert rows["sycophancy"]["available"] is False


# --------------------------------------------------------------------------- fixtures and real data


def test_fixtures_load_when_present() -> None:
    if not FIXTURES_ROOT.is_dir():
        pytest.skip(f"{FIXTURES_ROOT} not present")
    rows = [r for r in list_concepts("fixtures") if r["available"]]
    if not rows:
        pytest.skip("no concept files in the fixtures yet")
    for row in rows:
        assert len(load_concept(row["concept"], "fixtures")) == row["n_lines"]


def test_real_data_lines_match_readme_counts() -> None:
    if not REAL_DATA.is_dir():
        pytest.skip(f"{REAL_DATA} not present")
    expected = {
        "corrigibility": 340,
        "self-awareness": 300,
        "survival-instinct": 953,
        "power-seeking": 998,
        "coordinate-other-versions": 348,
    }
    rows = {r["concept"]: r for r in list_concepts(REAL_DATA)}
    for concept, n in expected.items():
        assert rows[concept]["available"] is True
        assert rows[concept]["n_lines"] == n
        assert len(load_concept(concept, REAL_DATA)) == n
    assert rows["sycophancy"]["available"] is False  # not in the shared subset
