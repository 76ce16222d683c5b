"""``remote-steer bench --generation``: steered generation, four ways, on the same rows.

On one resized random-weight toy (real Qwen tokenizer and chat prompts from the
bundled data) and the same items × configurations, with every row forced to
decode exactly ``new_tokens`` tokens (end of turn and the stop rule ignored, so
random weights decode as long as a real model would):

- (a) this project: ``FastGenerationEngine`` (prompt once per item, per row only its
  own window and new tokens, all rows of a group decoded together);
- (b) the straightforward nnsight protocol: one ``generate`` per configuration (and
  one unsteered), the vector added at every step through ``tracer.iter``;
- (c) transformers ``generate`` per configuration with a forward hook on the layer;
- (d) the floor in plain PyTorch: each prompt once, its cache copied to its rows,
  then every row decodes the same number of tokens, no steering arithmetic.

(b) and (c) make one ``generate`` per configuration, so their time is additive over
configurations: by default they run the unsteered pass and ``plain_configs``
configuration(s) and their time is scaled to all (as the logit bench scales its
plain protocol over items).

Each runs in its own process (its own peak RSS), alternating a b c d a b c d …;
wall times are medians over repeats, and the ratios (b)/(a), (c)/(a), (a)/(d) are
taken per repeat (side by side, so machine load affects both) and then the median.
(a), (b) and (c) must produce the same greedy tokens; the share of identical rows
is reported.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

IMPLEMENTATIONS = {
    "a": "remote-steer FastGenerationEngine",
    "b": "nnsight generate per configuration",
    "c": "transformers generate + forward hook",
    "d": "floor (plain PyTorch, unsteered)",
}
TARGETS = {"b/a": (">=", 5.0), "c/a": (">=", 3.0), "a/d": ("<=", 1.5)}


@dataclass
class GenBenchOptions:
    items: int = 32
    layers: int = 24
    hidden: int = 128
    new_tokens: int = 64
    gen_layers: tuple[int, ...] = ()  # default: 40 % and 60 % depth
    strengths: tuple[float, ...] = (-1.0, 1.0)
    batch_rows: int = 64  # rows decoded together by (a); (b), (c) batch `batch_items` items
    batch_items: int = 32
    repeats: int = 3
    plain_configs: int = 1  # (b), (c): time the unsteered run and this many configurations, scaled to all; 0 = all
    threads: int = 2
    implementations: str = "abcd"
    output_dir: str = "outputs/bench"
    seed: int = 0

    @classmethod
    def quick(cls, **overrides) -> GenBenchOptions:
        return cls(**{**dict(items=4, layers=6, hidden=64, new_tokens=8, repeats=1, batch_items=4), **overrides})


@dataclass
class GenBenchResult:
    options: dict
    config: dict
    runs: dict[str, list[dict]] = field(default_factory=dict)
    summary: dict[str, dict] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)
    ratio_runs: dict[str, list[float]] = field(default_factory=dict)
    identical_rows: dict[str, float | None] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)


def prepare(options: GenBenchOptions) -> dict:
    from remote_steer.data.loading import load_concept
    from remote_steer.data.preprocess import ABItem, preprocess
    from remote_steer.data.prompts import encode_generation_items
    from remote_steer.models.loading import load_tokenizer, resolve
    from remote_steer.models.toy import ensure_toy

    checkpoint = ensure_toy("toy/qwen3", n_layers=options.layers, hidden_size=options.hidden)
    tokenizer = load_tokenizer(resolve(str(checkpoint)))
    items: list[ABItem] = []
    for concept in (
        "corrigibility",
        "survival-instinct",
        "self-awareness",
        "power-seeking",
        "sycophancy",
        "coordinate-other-versions",
    ):
        try:
            split = preprocess(load_concept(concept, "fixtures"), concept, seed=options.seed, test_fraction=0.5)
        except Exception:  # noqa: BLE001 - a concept the fixtures lack
            continue
        items += split.test
        if len(items) >= options.items:
            break
    encoded = encode_generation_items(tokenizer, items[: options.items], enable_thinking=True)
    layers = list(options.gen_layers) or sorted({round(0.4 * options.layers), round(0.6 * options.layers)})
    return {
        "checkpoint": str(checkpoint),
        "threads": options.threads,
        "new_tokens": options.new_tokens,
        "batch_rows": options.batch_rows,
        "batch_items": options.batch_items,
        "layers": layers,
        "strengths": list(options.strengths),
        "pad_id": tokenizer.pad_token_id,
        "seed": options.seed,
        "plain_configs": options.plain_configs,
        "items": [
            {
                "id": it.item_id,
                "ids": list(it.prompt_ids),
                "assistant_start": it.assistant_start,
                "letter": it.matching_letter,
                "matching": it.matching_token,
                "other": it.other_token,
            }
            for it in encoded
        ],
    }


def work(spec: dict, n_layers: int, per_token_layer: float, per_vocab_row: float) -> dict[str, dict]:
    """Each implementation's arithmetic, counted from the prompts (padding left out).

    Every row decodes ``new_tokens`` tokens in all four (forced length), so the decoding
    work, one vocabulary row per new token included, is the same; what differs is the
    prompt: (a) and (d) run each prompt once ((a) also each configuration's steered window
    above its layer), (b) and (c) run it once per configuration and once unsteered. On a
    device that is busy computing (this CPU), wall-time ratios cannot exceed these work
    ratios; the issue's (b)/(a) ≥ 5 and (c)/(a) ≥ 3 assume a device where a decoding step
    costs the same for 5 rows as for 160 (a GPU).
    """
    items, layers = spec["items"], spec["layers"]
    k = len(layers) * len(spec["strengths"])
    n_new = spec["new_tokens"]
    prompt = sum(len(r["ids"]) for r in items) * n_layers
    window = sum(
        (len(r["ids"]) - r["assistant_start"]) * (n_layers - layer - 1)
        for r in items
        for layer in layers
        for _ in spec["strengths"]
    )
    rows = len(items) * (k + 1)
    decode = rows * (n_new - 1) * n_layers
    vocab = rows * n_new
    token_layers = {
        "a": prompt + window + decode,
        "b": (k + 1) * prompt + decode,
        "c": (k + 1) * prompt + decode,
        "d": prompt + decode,
    }
    return {
        impl: {"token_layers": tl, "vocab_rows": vocab, "gflop": (tl * per_token_layer + vocab * per_vocab_row) / 1e9}
        for impl, tl in token_layers.items()
    }


# --------------------------------------------------------------------------- workers (own process)


def _setup(spec):
    import torch

    from remote_steer.data.prompts import EncodedItem
    from remote_steer.engines.sweep_plain import SteerConfig
    from remote_steer.models.loading import load_model, resolve

    torch.set_num_threads(spec["threads"])
    model = load_model(resolve(spec["checkpoint"]), dtype="float32")
    items = [
        EncodedItem(r["id"], "bench", r["letter"], tuple(r["ids"]), r["assistant_start"], r["matching"], r["other"])
        for r in spec["items"]
    ]
    gen = torch.Generator().manual_seed(spec["seed"])
    vectors = torch.randn(model.n_layers, model.hidden_size, generator=gen)
    vectors = vectors / vectors.norm(dim=-1, keepdim=True) * 8.0
    configs = [SteerConfig(layer, s) for layer in spec["layers"] for s in spec["strengths"]]
    return model, items, vectors, configs


def _run_a(model, items, vectors, configs, spec, n_new):
    from remote_steer.engines.generation_fast import FastGenerationEngine
    from remote_steer.remote.backend import Backend

    engine = FastGenerationEngine(model, Backend(), spec["batch_rows"], "assistant", n_new, True, force_length=True)
    result = engine.run(items, vectors, configs)
    return [list(r) for r in result.baseline_ids] + [list(r) for per in result.steered_ids for r in per]


def _batches(items, size):
    return [items[i : i + size] for i in range(0, len(items), size)]


def _per_configuration(items, configs, spec, generate_batch):
    """(b) and (c): one generate per configuration (and one unsteered, ``config`` None) over
    batches of ``batch_items`` left-padded prompts; ``generate_batch(config, chunk, batch)``
    returns the batch's new token ids as lists."""
    import torch

    from remote_steer.engines.batching import left_pad

    out = {}
    with torch.inference_mode():
        for c, config in [(-1, None), *_plain_configs(configs, spec)]:
            rows = []
            for chunk in _batches(items, spec["batch_items"]):
                rows += generate_batch(config, chunk, left_pad([it.prompt_ids for it in chunk], spec["pad_id"]))
            out[c] = rows
    return _order(out, len(items), len(configs))


def _run_b(model, items, vectors, configs, spec, n_new):
    """One nnsight generate per configuration (and one unsteered), vector added every step."""
    import nnsight
    import torch

    nn, layers = model.nn, model.layers
    kwargs = dict(max_new_tokens=n_new, do_sample=False, eos_token_id=None, temperature=None, top_p=None, top_k=None)

    def generate_batch(config, chunk, batch):
        width = batch.width
        mask = torch.cat(
            [batch.mask_from([it.assistant_start for it in chunk]), torch.ones(len(chunk), n_new, dtype=torch.bool)],
            dim=1,
        )
        with nn.generate(batch.model_inputs(), **kwargs) as tracer:
            if config is not None:
                vector = vectors[config.layer] * config.strength
                layer = layers[config.layer]
                for step in tracer.iter[:n_new]:
                    hidden = layer.output
                    end = width + step
                    layer.output = hidden + mask[:, end - hidden.shape[1] : end, None].to(hidden) * vector
            ids = nnsight.save(tracer.result[:, width:])
        return ids.tolist()

    return _per_configuration(items, configs, spec, generate_batch)


def _order(out, n, k):
    """Rows as item_config_rows orders them; configurations not run are None."""
    rows = list(out[-1])
    for i in range(n):
        rows += [out[c][i] if c in out else None for c in range(k)]
    return rows


def _plain_configs(configs, spec):
    """(b) and (c) make one generate per configuration, so their time is additive over
    configurations: they run the unsteered pass and the first ``plain_configs``."""
    n = spec.get("plain_configs", 0)
    return list(enumerate(configs))[:n] if n else list(enumerate(configs))


def _run_c(model, items, vectors, configs, spec, n_new):
    """transformers generate per configuration with a forward hook on the steered layer."""
    hf = model.nn._module

    def generate_batch(config, chunk, batch):
        steer = batch.mask_from([it.assistant_start for it in chunk])
        handle = None
        if config is not None:
            vector = vectors[config.layer] * config.strength

            def hook(_m, _i, output):
                hidden = output[0] if isinstance(output, tuple) else output
                if hidden.shape[1] == steer.shape[1]:
                    hidden = hidden + steer[:, :, None].to(hidden) * vector
                else:
                    hidden = hidden + vector
                return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

            handle = hf.model.layers[config.layer].register_forward_hook(hook)
        try:
            result = hf.generate(
                **batch.model_inputs(),
                max_new_tokens=n_new,
                min_new_tokens=n_new,
                do_sample=False,
                eos_token_id=None,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=spec["pad_id"],
            )
        finally:
            if handle is not None:
                handle.remove()
        return result[:, batch.width :].tolist()

    return _per_configuration(items, configs, spec, generate_batch)


def _run_d(model, items, vectors, configs, spec, n_new):
    """Floor: each prompt once, its cache copied to its 1 + K rows, every row decodes n_new tokens."""
    import inspect

    import torch

    from remote_steer.engines.batching import left_pad
    from remote_steer.engines.fast_gen_kernel import output_cache

    hf = model.nn._module
    rows_per_item = len(configs) + 1
    per_group = max(1, spec["batch_rows"] // rows_per_item)
    produced = 0
    with torch.inference_mode():
        for chunk in _batches(items, per_group):
            batch = left_pad([it.prompt_ids for it in chunk], spec["pad_id"])
            out = hf(**batch.model_inputs(), use_cache=True, logits_to_keep=1)
            cache = output_cache(out)
            keyword = "cache" if "cache" in inspect.signature(hf.forward).parameters else "past_key_values"
            for layer in cache.layers:
                layer.keys = layer.keys.repeat_interleave(rows_per_item, 0)
                layer.values = layer.values.repeat_interleave(rows_per_item, 0)
            token = out.logits[:, -1].argmax(-1).repeat_interleave(rows_per_item)[:, None]
            mask = batch.attention_mask.repeat_interleave(rows_per_item, 0)
            pos = batch.position_ids[:, -1:].repeat_interleave(rows_per_item, 0)
            for _ in range(n_new - 1):
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
                pos = pos + 1
                out = hf(
                    input_ids=token,
                    attention_mask=mask,
                    position_ids=pos,
                    use_cache=True,
                    logits_to_keep=1,
                    **{keyword: cache},
                )
                token = out.logits[:, -1].argmax(-1)[:, None]
            produced += token.shape[0] * n_new
    return produced


def worker(impl: str, spec_path: str, out_path: str) -> None:
    import resource

    spec = json.loads(Path(spec_path).read_text())
    model, items, vectors, configs = _setup(spec)
    run = {"a": _run_a, "b": _run_b, "c": _run_c, "d": _run_d}[impl]
    run(model, items[:1], vectors, configs[:1], spec, 2)  # warm-up
    started = time.perf_counter()
    rows = run(model, items, vectors, configs, spec, spec["new_tokens"])
    seconds = time.perf_counter() - started
    n_rows = len(items) * (len(configs) + 1)
    measured = seconds
    if impl in "bc" and spec.get("plain_configs"):  # additive over configurations: scale to all
        seconds *= (len(configs) + 1) / (min(spec["plain_configs"], len(configs)) + 1)
    tokens = n_rows * spec["new_tokens"]
    record = {
        "seconds": seconds,
        "measured_seconds": measured,
        "tokens": tokens,
        "tokens_per_s": tokens / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rows": rows if isinstance(rows, list) else None,
    }
    Path(out_path).write_text(json.dumps(record))


# --------------------------------------------------------------------------- driver


def run_generation_bench(options: GenBenchOptions, display=None) -> GenBenchResult:
    spec = prepare(options)
    n_rows = len(spec["items"]) * (len(spec["layers"]) * len(spec["strengths"]) + 1)
    lengths = [len(r["ids"]) for r in spec["items"]]
    config = {
        "model": f"toy/qwen3 resized: {options.layers} layers, hidden {options.hidden} (random weights)",
        "items": len(spec["items"]),
        "generation_layers": spec["layers"],
        "strengths": spec["strengths"],
        "configurations": len(spec["layers"]) * len(spec["strengths"]),
        "rows": n_rows,
        "new_tokens": options.new_tokens,
        "tokens_per_run": n_rows * options.new_tokens,
        "prompt_tokens_median": statistics.median(lengths),
        "thinking": True,
        "threads": options.threads,
    }
    from remote_steer.bench.bench import model_flops

    flops = model_flops(Path(spec["checkpoint"]), statistics.median(lengths) + options.new_tokens / 2)
    config["work"] = work(spec, options.layers, flops["flops_per_token_layer"], flops["flops_per_vocab_row"])
    config["vocab_share_of_decoding"] = flops["flops_per_vocab_row"] / (
        flops["flops_per_vocab_row"] + options.layers * flops["flops_per_token_layer"]
    )
    result = GenBenchResult(asdict(options), config)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]),
    }
    impls = [i for i in "abcd" if i in options.implementations]
    with tempfile.TemporaryDirectory() as tmp:
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps(spec))
        for repeat in range(options.repeats):
            for impl in impls:
                out_path = Path(tmp) / f"{impl}-{repeat}.json"
                if display is not None:
                    display.note(f"repeat {repeat + 1}/{options.repeats}: ({impl}) {IMPLEMENTATIONS[impl]}")
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "remote_steer.bench.generation_bench",
                        "--worker",
                        impl,
                        str(spec_path),
                        str(out_path),
                    ],
                    check=True,
                    env=env,
                )
                result.runs.setdefault(impl, []).append(json.loads(out_path.read_text()))
    for impl, runs in result.runs.items():
        seconds = statistics.median(r["seconds"] for r in runs)
        result.summary[impl] = {
            "seconds": seconds,
            "tokens_per_s": statistics.median(r["tokens_per_s"] for r in runs),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            "gflop": config["work"][impl]["gflop"],
            "gflops_per_s": config["work"][impl]["gflop"] / seconds if seconds else None,
        }
    for key in TARGETS:
        num, den = key.split("/")
        if num in result.runs and den in result.runs:
            per = [a["seconds"] / b["seconds"] for a, b in zip(result.runs[num], result.runs[den], strict=True)]
            result.ratio_runs[key] = per
            result.ratios[key] = statistics.median(per)
    reference = result.runs.get("a", [{}])[0].get("rows")
    for impl in ("b", "c"):
        rows = result.runs.get(impl, [{}])[0].get("rows")
        if reference and rows:
            pairs = [(x, y) for x, y in zip(reference, rows, strict=True) if y is not None]
            result.identical_rows[f"{impl} vs a"] = sum(x == y for x, y in pairs) / len(pairs)
    for runs in result.runs.values():
        for r in runs:
            r.pop("rows", None)
    return result


def markdown(result: GenBenchResult, command: str) -> str:
    c = result.config
    lines = [
        f"Command: `{command}`",
        "",
        f"{c['model']}; {c['items']} items × ({c['configurations']} configurations + unsteered) = {c['rows']} rows, "
        f"{c['new_tokens']} new tokens each (forced), {c['tokens_per_run']} tokens per run; prompts median "
        f"{c['prompt_tokens_median']} tokens (thinking on); {c['threads']} threads; "
        f"{result.options['repeats']} alternating repeats."
        + (
            f" (b) and (c) make one generate per configuration, so their time is additive: they ran the "
            f"unsteered pass and {result.options['plain_configs']} configuration(s), scaled to all "
            f"{c['configurations']} + 1."
            if result.options.get("plain_configs")
            else ""
        ),
        "",
        "| implementation | seconds (median) | tokens/s | GFLOP | GFLOP/s | peak RSS (MB) |",
        "|---|---|---|---|---|---|",
    ]
    for impl, s in result.summary.items():
        gflop, rate = s.get("gflop"), s.get("gflops_per_s")
        lines.append(
            f"| ({impl}) {IMPLEMENTATIONS[impl]} | {s['seconds']:.2f} | {s['tokens_per_s']:.0f} | "
            f"{'—' if gflop is None else f'{gflop:.0f}'} | {'—' if rate is None else f'{rate:.1f}'} | "
            f"{s['peak_rss_mb']:.0f} |"
        )
    work = c.get("work") or {}
    lines += ["", "| ratio | median | per repeat | work ratio | target |", "|---|---|---|---|---|"]
    for key, value in result.ratios.items():
        op, target = TARGETS[key]
        met = (value >= target) if op == ">=" else (value <= target)
        per = ", ".join(f"{x:.2f}" for x in result.ratio_runs[key])
        num, den = key.split("/")
        ratio = f"{work[num]['gflop'] / work[den]['gflop']:.2f}" if num in work and den in work else "—"
        lines.append(f"| {key} | {value:.2f} | {per} | {ratio} | {op} {target:g} ({'met' if met else 'not met'}) |")
    if work:
        lines += [
            "",
            "Work ratio: the two implementations' arithmetic (token × layer at the median context, plus "
            "vocabulary rows), counted from the prompts. Every row decodes the same forced tokens in all four, "
            f"so only the prompt passes differ; the output projection is {c['vocab_share_of_decoding']:.0%} of a "
            "decoding step here. Where the device is busy computing, a wall-time ratio cannot beat the work "
            "ratio.",
        ]
    if result.identical_rows:
        lines += ["", "Identical greedy rows: " + ", ".join(f"{k}: {v:.0%}" for k, v in result.identical_rows.items())]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit("usage: python -m remote_steer.bench.generation_bench --worker IMPL SPEC OUT")


def write_generation_result(result: GenBenchResult, output_dir: Path, command: str) -> tuple[Path, Path, str]:
    """``generation_bench.json`` and ``.md`` in ``output_dir`` (atomic); returns both paths and the Markdown."""
    import json
    from dataclasses import asdict

    from remote_steer.rundir import atomic_write

    text = markdown(result, command)
    json_path, md_path = output_dir / "generation_bench.json", output_dir / "generation_bench.md"
    atomic_write(json_path, lambda tmp: tmp.write_text(json.dumps(asdict(result), indent=2) + "\n"))
    atomic_write(md_path, lambda tmp: tmp.write_text(text))
    return json_path, md_path, text
