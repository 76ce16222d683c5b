"""``remote-steer bench``: this project's sweep against the reference implementations.

On one toy configuration (real Qwen tokenizer, real prompt lengths) and one set of
prompts, it runs

- (a) this project: ``extract_caa_fast`` + ``FastLogitDiffEngine``;
- (b) the ``steering-vectors`` library: ``train_steering_vector``, then
  ``SteeringVector.apply`` per configuration (``bench/sv_worker.py``, own venv);
- (c) the study's protocol done plainly: one nnsight trace per prompt, positive and
  negative answers appended as two forward passes per item × configuration;
- (d) the compute floor: exactly the floor's token × layer work as unsteered,
  batched plain-PyTorch passes (``bench.worker.run_floor``);

each in its own process, alternating a b c d a b c d …, and reports wall time,
token × layer work, peak memory (``ru_maxrss`` of that process), the ratios
(b)/(a), (c)/(a), (a)/(d) (medians over repeats) and whether (a), (b) and (c)
agree numerically.

(c) is one trace per item and configuration, so its time is additive over items:
by default its sweep runs on the first ``plain_items`` test items and its time and
work are scaled to all items (its extraction always runs on all training items).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from remote_steer.errors import RemoteSteerError

if TYPE_CHECKING:
    from remote_steer.data.prompts import SteerPositions

IMPLEMENTATIONS = {
    "a": "remote-steer",
    "b": "steering-vectors",
    "c": "plain protocol",
    "d": "floor",
}
DESCRIPTIONS = {
    "a": "this project: extract_caa_fast + FastLogitDiffEngine",
    "b": "steering-vectors 0.12.2: train_steering_vector, then SteeringVector.apply per configuration",
    "c": "the study's protocol done plainly: one nnsight trace per prompt, answers appended as two passes",
    "d": "the compute floor: exactly the floor's token × layer work, unsteered, batched, plain PyTorch",
}
TARGETS = {"b/a": (">=", 25.0), "c/a": (">=", 100.0), "a/d": ("<=", 1.1)}  # issue 13: at real depth (36 layers)


@dataclass
class BenchOptions:
    items: int = 64  # held-out items swept; as many training items train the vector
    layers: int = 24
    hidden: int = 256
    model: str = "toy/qwen3"
    data: str | None = None  # upstream-layout root; None = the bundled fixtures
    threads: int = 2
    batch_size: int = 16  # prompts per forward pass (a, b, d); (c) is one prompt per trace
    repeats: int = 3
    plain_items: int = 8  # (c)'s sweep runs on this many items, scaled to all; 0 = all
    positions: SteerPositions = "assistant"
    layer_start_fraction: float = 0.33
    strengths: tuple[float, ...] = (-1.0, 1.0)
    skip_steering_vectors: bool = False
    sv_python: str = ".bench-venv/bin/python"
    output_dir: str = "outputs/bench"
    implementations: str = "abcd"
    seed: int = 0
    shape: str | None = None  # a registry model: random weights with its depth, heads, vocabulary
    shape_hidden: int | None = None  # width of the shape (None = the model's own)
    quick: bool = False  # reduced mode for CI-style checks (see apply_quick)


def check_options(positions: str, device: str) -> None:
    """``--positions`` and ``--device`` as the bench takes them, else one line."""
    from remote_steer.data.prompts import POSITIONS
    from remote_steer.errors import RemoteSteerError
    from remote_steer.run.spec import either

    if positions not in POSITIONS:
        raise RemoteSteerError(f"--positions {positions!r}: expected {either(POSITIONS)}")
    if device != "cpu":
        raise RemoteSteerError(
            f"--device {device!r}: the bench's CPU protocol runs on the CPU; on a GPU run "
            "`python tests/gpu_check.py` (Qwen3-4B and Qwen3-30B-A3B shapes at full size, bf16)"
        )


def shape_width(shape: str | None, width_scale: float | None, hidden: int | None) -> int | None:
    """The hidden size of a ``--shape`` model: ``hidden``, or its own scaled by ``width_scale``
    (a multiple of twice its heads); None without a shape."""
    if not shape or width_scale is None:
        return hidden if shape else None
    from remote_steer.errors import RemoteSteerError
    from remote_steer.models.registry import lookup

    card = lookup(shape)
    if card is None:
        raise RemoteSteerError(f"--shape {shape!r}: not a registry model (see `remote-steer models`)")
    step = 2 * card.n_heads
    return max(step, int(round(card.hidden_size * width_scale / step)) * step)


def apply_quick(options: BenchOptions) -> BenchOptions:
    """``--quick``: 8 items, (c) on one item, one repeat of each, steering-vectors left out.
    Under five minutes on a loaded 2-core box at 36 layers × hidden 256."""
    import dataclasses

    return dataclasses.replace(
        options, items=min(options.items, 8), plain_items=1, repeats=1, skip_steering_vectors=True, quick=True
    )


@dataclass
class BenchResult:
    options: dict
    machine: dict
    config: dict
    runs: dict[str, list[dict]] = field(default_factory=dict)  # impl -> one dict per repeat
    summary: dict[str, dict] = field(default_factory=dict)  # impl -> medians
    ratios: dict[str, float | None] = field(default_factory=dict)
    agreement: dict[str, float | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    paths: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- inputs


def _select(pool: list, n: int, seed: int) -> list:
    if len(pool) <= n:
        return list(pool)
    return random.Random(seed).sample(pool, n)


def prepare_inputs(options: BenchOptions) -> tuple[dict, dict, list[str]]:
    """The toy checkpoint, the prompts (train and test) and the sweep, as one JSON-able spec."""
    from remote_steer.data.concepts import STUDY_CONCEPTS
    from remote_steer.data.loading import list_concepts, load_concept
    from remote_steer.data.preprocess import ABItem, preprocess
    from remote_steer.data.prompts import encode_items
    from remote_steer.models.loading import load_tokenizer, resolve

    notes: list[str] = []
    checkpoint, n_layers, described = bench_checkpoint(options)
    source = options.data or "fixtures"
    available = [
        row["concept"] for row in list_concepts(source) if row["available"] and row["concept"] in STUDY_CONCEPTS
    ]
    train_pool: list[ABItem] = []
    test_pool: list[ABItem] = []
    for concept in available:
        split = preprocess(load_concept(concept, source), concept, seed=options.seed, test_fraction=0.5)
        train_pool += split.train
        test_pool += split.test
    train = _select(train_pool, options.items, options.seed)
    test = _select(test_pool, options.items, options.seed + 1)
    if len(test) < options.items or len(train) < options.items:
        notes.append(f"only {len(train)} training and {len(test)} held-out items available in {source}")
    tokenizer = load_tokenizer(resolve(str(checkpoint)))
    encoded_train, encoded_test = encode_items(tokenizer, train), encode_items(tokenizer, test)

    def record(it) -> dict:
        def decode(ids) -> str:
            return tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

        return {
            "id": it.item_id,
            "letter": it.matching_letter,
            "ids": list(it.prompt_ids),
            "assistant_start": it.assistant_start,
            "matching": it.matching_token,
            "other": it.other_token,
            "text": decode(it.prompt_ids),
            "matching_text": decode([it.matching_token]),
            "other_text": decode([it.other_token]),
        }

    first = math.ceil(options.layer_start_fraction * n_layers)
    spec = {
        "checkpoint": str(checkpoint),
        "threads": options.threads,
        "batch_size": options.batch_size,
        "positions": options.positions,
        "layers": list(range(first, n_layers)),
        "strengths": list(options.strengths),
        "plain_items": options.plain_items,
        "pad_id": tokenizer.pad_token_id,
        "warmup": True,
        "train": [record(it) for it in encoded_train],
        "test": [record(it) for it in encoded_test],
    }
    lengths = [len(it.prompt_ids) for it in encoded_test]
    config = {
        "model": described,
        "checkpoint": str(checkpoint),
        "data": source,
        "concepts": available,
        "train_items": len(encoded_train),
        "test_items": len(encoded_test),
        "prompt_tokens_median": statistics.median(lengths),
        "prompt_tokens_range": [min(lengths), max(lengths)],
        "steered_tokens": sorted({len(it.prompt_ids) - it.steer_start(options.positions) for it in encoded_test}),
        "sweep_layers": spec["layers"],
        "strengths": spec["strengths"],
        "configurations": len(spec["layers"]) * len(spec["strengths"]),
        "positions": options.positions,
        "batch_size": options.batch_size,
        "floor": floor_work(spec, n_layers),
        "n_layers": n_layers,
    }
    config.update(model_flops(checkpoint, statistics.median(lengths)))
    return spec, config, notes


def bench_checkpoint(options: BenchOptions) -> tuple[Path, int, str]:
    """The benchmark model: a registry shape, the embedded real model, or a resized toy."""
    from remote_steer.models.registry import lookup, require_toy
    from remote_steer.models.toy import ensure_toy

    if options.shape:
        from remote_steer.models.shapes import ensure_shape, shape_config

        config = shape_config(options.shape, options.shape_hidden)
        width = "full width" if options.shape_hidden is None else f"width scaled to hidden {options.shape_hidden}"
        described = (
            f"random-weight {options.shape} shape: {config.num_hidden_layers} layers, hidden "
            f"{config.hidden_size} ({width}), {config.num_attention_heads}/{config.num_key_value_heads} heads, "
            f"vocabulary {config.vocab_size:,}"
        )
        return ensure_shape(options.shape, options.shape_hidden), int(config.num_hidden_layers), described
    card = lookup(options.model)
    if card is not None and card.embedded:
        from remote_steer.models.real_small import ensure_real

        return ensure_real(card.name), card.n_layers, f"{card.name}: {card.about}"
    require_toy(options.model)
    checkpoint = ensure_toy(options.model, n_layers=options.layers, hidden_size=options.hidden)
    return (
        checkpoint,
        options.layers,
        f"{options.model} resized: {options.layers} layers, hidden {options.hidden} (random weights)",
    )


def model_flops(checkpoint: Path, context: float) -> dict[str, float]:
    """FLOPs per token × layer (at the median prompt length) and per vocabulary row."""
    from transformers import AutoConfig

    from remote_steer.models.shapes import flops_per_token_layer, vocab_row_flops

    config = AutoConfig.from_pretrained(checkpoint)
    return {
        "flops_per_token_layer": flops_per_token_layer(config, context),
        "flops_per_vocab_row": vocab_row_flops(config),
        "hidden_size": config.hidden_size,
    }


def matmul_peak(threads: int, hidden: int, seconds: float = 1.5) -> dict[str, float]:
    """The machine's fp32 matmul rate right now (GFLOP/s): a square 2048² product and the
    floor's thin shape (7 tokens × hidden @ hidden × 4·hidden), best of repeated timings."""
    import time

    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    out = {}
    try:
        for label, (m, k, n) in {"square_2048": (2048, 2048, 2048), "thin_7_tokens": (7, hidden, 4 * hidden)}.items():
            a, b = torch.randn(m, k), torch.randn(k, n)
            reps = max(1, int(2e8 // (m * k * n) + 1))
            best, deadline = float("inf"), time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                for _ in range(reps):
                    a @ b
                best = min(best, (time.perf_counter() - t) / reps)
            out[label] = 2 * m * k * n / best / 1e9
    finally:
        torch.set_num_threads(previous)
    return out


def floor_work(spec: dict, n_layers: int) -> dict[str, int]:
    """The least token × layer work: each prompt once through all layers; extraction adds
    the two answer tokens through all layers; a configuration (L, s) adds the steered
    positions through layers L+1..last (the edit is added to layer L's output)."""

    def starts(r) -> int:
        return 0 if spec["positions"] == "all" else r["assistant_start"]

    extract = sum((len(r["ids"]) + 2) * n_layers for r in spec["train"])
    sweep = 0
    for r in spec["test"]:
        steered = len(r["ids"]) - starts(r)
        sweep += len(r["ids"]) * n_layers
        sweep += sum(steered * (n_layers - 1 - layer) for layer in spec["layers"] for _ in spec["strengths"])
    return {"extract": extract, "sweep": sweep, "total": extract + sweep}


# --------------------------------------------------------------------------- running


def machine_info(threads: int) -> dict:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    import torch

    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in load],
    }


def _worker_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"})
    return env


def run_one(impl: str, input_path: Path, out_path: Path, options: BenchOptions) -> dict:
    """Run one implementation in a fresh process; its JSON result (and arrays, if any)."""
    if impl == "b":
        command = [options.sv_python, str(Path(__file__).with_name("sv_worker.py")), str(input_path), str(out_path)]
    else:
        command = [sys.executable, "-m", "remote_steer.bench.worker", str(input_path), impl, str(out_path)]
    done = subprocess.run(command, env=_worker_env(options.threads), capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise RemoteSteerError(
            f"bench implementation ({impl}) failed (exit {done.returncode}); its last lines:\n{tail}"
        )
    result = json.loads(out_path.read_text())
    arrays = out_path.with_suffix(".npz")
    if arrays.exists():
        with np.load(arrays) as data:
            result["_arrays"] = {k: data[k] for k in data.files}
    return result


def _median(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def _max_abs(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(x, dtype=np.float64) - np.asarray(y, dtype=np.float64))))


def agreement(arrays: dict[str, dict]) -> dict[str, float | None]:
    """Max |Δ| of vectors and logit diffs between (a) and (b), (a) and (c), on the items both ran."""
    out: dict[str, float | None] = {}
    a = arrays.get("a")
    if not a:
        return out
    moved = _max_abs(a["steered"], np.repeat(a["baseline"][:, None], a["steered"].shape[1], axis=1))
    out["a: max |steered − baseline|"] = moved
    for other in ("b", "c"):
        o = arrays.get(other)
        if not o:
            continue
        k = o["steered"].shape[0]
        out[f"{other} vs a: vectors"] = _max_abs(o["vectors"], a["vectors"])
        out[f"{other} vs a: logit diffs"] = max(
            _max_abs(o["baseline"][:k], a["baseline"][:k]), _max_abs(o["steered"][:k], a["steered"][:k])
        )
    return out


def run_bench(options: BenchOptions, display=None) -> BenchResult:
    from remote_steer.display import NullDisplay

    display = display or NullDisplay()
    impls = [i for i in options.implementations if i in IMPLEMENTATIONS]
    notes: list[str] = []
    if "b" in impls and options.skip_steering_vectors:
        impls.remove("b")
        notes.append("(b) skipped (--skip-steering-vectors)")
    elif "b" in impls and not Path(options.sv_python).exists():
        impls.remove("b")
        notes.append(
            f"(b) skipped: {options.sv_python} not found; create it with `python3 -m venv .bench-venv && "
            '.bench-venv/bin/pip install torch==2.13.0 "steering-vectors==0.12.2" "transformers<5"`'
        )
    elif (
        "b" in impls
        and options.shape
        and options.shape.lower().startswith("qwen3")
        and "a3b" not in options.shape.lower()
    ):
        pass  # a dense Qwen3 shape: bench/sv_worker.py loads it like the toy
    elif "b" in impls and options.model not in ("toy/qwen3", "small/smollm2-135m-instruct"):
        impls.remove("b")
        notes.append("(b) skipped: the transformers-4 loader in bench/sv_worker.py handles dense Qwen3 and Llama only")
    display.note(f"Preparing {options.items} items on {options.shape or options.model}")
    spec, config, prep_notes = prepare_inputs(options)
    notes += prep_notes
    config["matmul_peak_gflops"] = matmul_peak(options.threads, config["hidden_size"])
    if options.plain_items and "c" in impls and options.plain_items < len(spec["test"]):
        notes.append(
            f"(c) swept {options.plain_items} of {len(spec['test'])} items (one trace per item × configuration, "
            "so time is additive over items); its sweep time and work are scaled to all items"
        )
    result = BenchResult(asdict(options), machine_info(options.threads), config, notes=notes)
    arrays: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="remote-steer-bench-") as tmp:
        input_path = Path(tmp) / "input.json"
        input_path.write_text(json.dumps(spec))
        for repeat in range(options.repeats):
            for impl in impls:  # alternating: a b c d a b c d …
                display.note(f"repeat {repeat + 1}/{options.repeats}: ({impl}) {DESCRIPTIONS[impl]}")
                run = run_one(impl, input_path, Path(tmp) / f"{impl}-{repeat}.json", options)
                got = run.pop("_arrays", None)
                if got and impl not in arrays:
                    arrays[impl] = got
                result.runs.setdefault(impl, []).append(run)
                display.note(
                    f"    {run['total_s']:.2f} s (extraction {run['extract_s']:.2f} s, sweep {run['sweep_s']:.2f} s)"
                )
    floor_total = config["floor"]["total"]
    for impl, runs in result.runs.items():
        summary: dict[str, Any] = {
            key: _median(runs, key) for key in ("total_s", "extract_s", "sweep_s", "peak_rss_mb", "rss_loaded_mb")
        }
        summary["token_layers"] = runs[0].get("token_layers")
        summary["token_layers_vs_floor"] = (runs[0].get("token_layers") or 0) / floor_total
        summary["vocab_positions"] = runs[0].get("vocab_positions")
        summary["forward_calls"] = runs[0].get("forward_calls")
        flops = (runs[0].get("token_layers") or 0) * config["flops_per_token_layer"] + (
            runs[0].get("vocab_positions") or 0
        ) * config["flops_per_vocab_row"]
        summary["gflop"] = flops / 1e9
        summary["gflops_per_s"] = flops / 1e9 / summary["total_s"] if summary["total_s"] else None
        summary["totals_s"] = [round(r["total_s"], 3) for r in runs]
        for key in ("tokenization_mismatches", "versions", "sweep_items_measured"):
            if key in runs[0]:
                summary[key] = runs[0][key]
        result.summary[impl] = summary
    s = result.summary

    def ratio(x: str, y: str, key: str = "total_s") -> float | None:
        if x in s and y in s and s[x][key] and s[y][key]:
            return s[x][key] / s[y][key]
        return None

    result.ratios = {
        "b/a": ratio("b", "a"),
        "c/a": ratio("c", "a"),
        "a/d": ratio("a", "d"),
        "b/a sweep": ratio("b", "a", "sweep_s"),
        "c/a sweep": ratio("c", "a", "sweep_s"),
        "a/d sweep": ratio("a", "d", "sweep_s"),
    }
    result.agreement = agreement(arrays)
    return result


# --------------------------------------------------------------------------- reporting


def _verdict(name: str, value: float | None) -> str:
    if value is None:
        return "not run"
    op, target = TARGETS[name]
    ok = value >= target if op == ">=" else value <= target
    return f"{'met' if ok else 'MISSED'} (target {op} {target:g})"


def table_rows(result: BenchResult) -> list[list[Any]]:
    rows = []
    for impl in IMPLEMENTATIONS:
        s = result.summary.get(impl)
        if s is None:
            continue
        rows.append(
            [
                f"({impl}) {IMPLEMENTATIONS[impl]}",
                round(s["total_s"], 2),
                round(s["extract_s"], 2),
                round(s["sweep_s"], 2),
                f"{s['token_layers']:,}" if s["token_layers"] is not None else "—",
                f"{s['token_layers_vs_floor']:.2f}×",
                f"{s['vocab_positions']:,}" if s.get("vocab_positions") is not None else "—",
                round(s["peak_rss_mb"]),
                round(s["peak_rss_mb"] - s["rss_loaded_mb"]),
                "—" if s.get("gflops_per_s") is None else f"{s['gflops_per_s']:.1f}",
            ]
        )
    return rows


COLUMNS = [
    "implementation",
    "wall s",
    "extract s",
    "sweep s",
    "token×layer",
    "× floor",
    "vocab rows",
    "peak RSS MB",
    "Δ RSS MB",
    "GFLOP/s",
]


def markdown(result: BenchResult) -> str:
    m, c = result.machine, result.config
    lines = [
        f"# remote-steer bench — {result.paths.get('stamp', '')}",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch threads {m['threads']}, torch {m['torch']}; "
        f"load average at start {m['load_average_at_start']}.",
        f"Model: {c['model']}. Data: {c['data']} ({', '.join(c['concepts'])}); {c['train_items']} training + "
        f"{c['test_items']} held-out items, prompt tokens median {c['prompt_tokens_median']} "
        f"(range {c['prompt_tokens_range'][0]}–{c['prompt_tokens_range'][1]}), steered tokens {c['steered_tokens']}.",
        f"Sweep: layers {c['sweep_layers'][0]}–{c['sweep_layers'][-1]} × strengths {c['strengths']} = "
        f"{c['configurations']} configurations, positions `{c['positions']}`, batch size {c['batch_size']}. "
        f"Floor work: {c['floor']['total']:,} token×layer "
        f"(extraction {c['floor']['extract']:,}, sweep {c['floor']['sweep']:,}).",
        f"Each implementation ran in its own process, alternating, {result.options['repeats']} repeats; medians shown"
        + (" (`--quick` mode)." if result.options.get("quick") else "."),
        _peak_line(result),
        "",
        *[f"- ({k}) {v}" for k, v in DESCRIPTIONS.items()],
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in table_rows(result):
        lines.append("| " + " | ".join(str(v) for v in row) + " |")
    lines += ["", "| ratio (wall time) | total | sweep only | work ratio | verdict |", "|---|---|---|---|---|"]

    def fmt(v: float | None) -> str:
        return "—" if v is None else f"{v:.1f}×"

    for name in ("b/a", "c/a", "a/d"):
        total, sweep = result.ratios.get(name), result.ratios.get(f"{name} sweep")
        lines.append(
            f"| ({name[0]})/({name[2]}) | {fmt(total)} | {fmt(sweep)} | {fmt(work_ratio(result, name))} | "
            f"{_verdict(name, total)} |"
        )
    lines += ["", WORK_RATIO_NOTE]
    if result.agreement:
        lines += ["", "Agreement (max absolute difference):", ""]
        lines += [f"- {k}: {v:.2e}" for k, v in result.agreement.items()]
    if result.notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in result.notes]
    return "\n".join(lines) + "\n"


WORK_RATIO_NOTE = (
    "work ratio: the two implementations' arithmetic (GFLOP from token × layer and vocabulary "
    "rows). Where the machine is busy computing, a wall-time ratio beyond it needs the faster side "
    "to run at more GFLOP/s than the slower one."
)


def work_ratio(result: BenchResult, name: str) -> float | None:
    """GFLOP of the numerator implementation over the denominator's (``name`` like "b/a")."""
    x, y = name.split("/")
    gx, gy = (result.summary.get(k, {}).get("gflop") for k in (x, y))
    return gx / gy if gx and gy else None


def _peak_line(result: BenchResult) -> str:
    c = result.config
    peak = c.get("matmul_peak_gflops") or {}
    if not peak:
        return ""
    return (
        f"GFLOP/s = (token×layer × {c['flops_per_token_layer'] / 1e6:.1f} MFLOP per token-layer at the median "
        f"prompt + vocabulary rows × {c['flops_per_vocab_row'] / 1e6:.1f} MFLOP) / wall time. This machine's fp32 "
        f"matmul peak measured at start with {result.machine['threads']} threads: "
        f"{peak.get('square_2048', float('nan')):.3g} GFLOP/s at 2048², "
        f"{peak.get('thin_7_tokens', float('nan')):.3g} GFLOP/s at the floor's thin 7-token shape."
    )


def write_result(result: BenchResult, output_dir: Path) -> tuple[Path, Path]:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = output_dir / f"bench-{stamp}.json", output_dir / f"bench-{stamp}.md"
    result.paths = {"stamp": stamp, "json": str(json_path), "markdown": str(md_path)}
    for path, text in ((json_path, json.dumps(asdict(result), indent=1, default=float)), (md_path, markdown(result))):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return json_path, md_path


def show(result: BenchResult, display) -> None:
    c = result.config
    display.table(
        f"remote-steer bench: {c['model']}, {c['test_items']} items, {c['configurations']} configurations",
        COLUMNS,
        table_rows(result),
        f"medians of {result.options['repeats']} alternating runs; {result.machine['cpu']}, "
        f"{result.machine['threads']} threads; floor {c['floor']['total']:,} token×layer. {_peak_line(result)}",
    )
    rows = []

    def fmt(v: float | None) -> str:
        return "—" if v is None else f"{v:.1f}×"

    for name in ("b/a", "c/a", "a/d"):
        total, sweep = result.ratios.get(name), result.ratios.get(f"{name} sweep")
        rows.append(
            [f"({name[0]})/({name[2]})", fmt(total), fmt(sweep), fmt(work_ratio(result, name)), _verdict(name, total)]
        )
    display.table("Ratios (wall time)", ["ratio", "total", "sweep only", "work", "verdict"], rows, WORK_RATIO_NOTE)
    if result.agreement:
        display.table("Agreement", ["check", "max |Δ|"], [[k, f"{v:.2e}"] for k, v in result.agreement.items()])
    for note in result.notes:
        display.note(f"note: {note}")
