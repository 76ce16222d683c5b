"""One implementation of the benchmark, in its own process: ``python -m remote_steer.bench.worker``.

``remote-steer bench`` (``bench.py``) writes the prompts once and runs every
implementation as a separate process on them, alternating, so each one's peak
memory (``ru_maxrss``) is its own. This module runs (a) this project, (c) the plain
study protocol and (d) the compute floor; (b), the ``steering-vectors`` library,
needs transformers 4 and runs from ``bench/sv_worker.py`` in its own virtual environment.

Every worker: load the model, warm up on two items, then time extraction and the
sweep separately; write wall times, token × layer work, memory and the numbers
(vectors, baseline and steered logit diffs) for the agreement check.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def rss_mb() -> float:
    """Current resident set size (Linux /proc), MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class Items:
    """The bench input, as EncodedItem-like records."""

    def __init__(self, records: list[dict[str, Any]], concept: str = "bench") -> None:
        from remote_steer.data.prompts import EncodedItem

        self.items = [
            EncodedItem(
                item_id=r["id"],
                concept=concept,
                matching_letter=r["letter"],
                prompt_ids=tuple(r["ids"]),
                assistant_start=r["assistant_start"],
                matching_token=r["matching"],
                other_token=r["other"],
            )
            for r in records
        ]


# --------------------------------------------------------------------------- (a) this project


def run_fast(spec: dict, train, test, configs, warm: bool) -> dict:
    from remote_steer.engines.sweep_fast import FastLogitDiffEngine, WorkStats, extract_caa_fast
    from remote_steer.models.loading import load_model, resolve
    from remote_steer.remote.backend import Backend

    model = _loaded(spec, lambda: load_model(resolve(spec["checkpoint"]), dtype="float32"))
    batch = spec["batch_size"]
    if warm:
        vec = extract_caa_fast(model, train[:2], concept="bench", batch_size=batch, backend=Backend())
        FastLogitDiffEngine(model, Backend(), batch * 2, spec["positions"]).run(test[:2], vec.vectors, configs[:2])
    stats = WorkStats()
    t0 = time.perf_counter()
    vectors = extract_caa_fast(model, train, concept="bench", batch_size=batch, backend=Backend(), stats=stats).vectors
    t1 = time.perf_counter()
    engine = FastLogitDiffEngine(model, Backend(), batch * len(configs), spec["positions"], stats=stats)
    result = engine.run(test, vectors, configs)
    t2 = time.perf_counter()
    return {
        "extract_s": t1 - t0,
        "sweep_s": t2 - t1,
        "token_layers": stats.token_layers,
        "padding_token_layers": stats.padding_token_layers,
        "vocab_positions": 0,
        "answer_logit_rows": stats.answer_logit_rows,
        "forward_calls": stats.traces,
        "_arrays": {"vectors": vectors.numpy(), "baseline": result.baseline, "steered": result.steered},
        "test_items": list(range(len(test))),
    }


# --------------------------------------------------------------------------- (c) the plain protocol


def run_plain(spec: dict, train, test, configs, warm: bool) -> dict:
    """One nnsight trace per prompt: each item × configuration runs twice (prompt + positive
    answer, prompt + negative answer), full forward, full logits, as the study did."""
    import nnsight

    from remote_steer.models.loading import load_model, resolve

    model = _loaded(spec, lambda: load_model(resolve(spec["checkpoint"]), dtype="float32"))
    layers, n_layers, lm_head = model.layers, model.n_layers, model.nn.lm_head
    positions = spec["positions"]
    work = {"extract": _zero(), "sweep": _zero()}

    def extract(items):
        total = torch.zeros(n_layers, model.hidden_size)
        for it in items:
            for sign, answer in ((1.0, it.matching_token), (-1.0, it.other_token)):
                ids = torch.tensor([list(it.prompt_ids) + [answer]])
                with model.nn.trace(ids):
                    acts = nnsight.save([layers[layer].output[0, -1] for layer in range(n_layers)])
                total += sign * torch.stack(acts)
                _count(work["extract"], ids.shape[1], n_layers)
        return total / len(items)

    def logit_diff(it, layer, strength, vectors):
        picked = []
        for answer in (it.matching_token, it.other_token):  # logit of the appended answer, read before it
            ids = torch.tensor([list(it.prompt_ids) + [answer]])
            with model.nn.trace(ids):
                if layer is not None:
                    start = it.steer_start(positions)
                    hidden = layers[layer].output
                    layers[layer].output = torch.cat(
                        [hidden[:, :start], hidden[:, start:] + strength * vectors[layer]], dim=1
                    )
                logits = nnsight.save(lm_head.output)
            picked.append(float(logits[0, len(it.prompt_ids) - 1, answer]))
            _count(work["sweep"], ids.shape[1], n_layers)
        return picked[0] - picked[1]

    def sweep(items, vectors):
        baseline = np.array([logit_diff(it, None, 0.0, vectors) for it in items])
        steered = np.array([[logit_diff(it, c.layer, c.strength, vectors) for c in configs] for it in items])
        return baseline, steered

    with torch.inference_mode():
        if warm:
            v = extract(train[:1])
            logit_diff(test[0], configs[0].layer, configs[0].strength, v)
            work = {"extract": _zero(), "sweep": _zero()}
        timed = test[: spec["plain_items"]] if spec["plain_items"] else test
        t0 = time.perf_counter()
        vectors = extract(train)
        t1 = time.perf_counter()
        baseline, steered = sweep(timed, vectors)
        t2 = time.perf_counter()
    scale = len(test) / len(timed)  # items are independent here: time and work scale per item
    total = {k: int(work["extract"][k] + work["sweep"][k] * scale) for k in work["extract"]}
    return {
        "extract_s": t1 - t0,
        "sweep_s": (t2 - t1) * scale,
        "sweep_measured_s": t2 - t1,
        "sweep_items_measured": len(timed),
        **total,
        "padding_token_layers": 0,
        "_arrays": {"vectors": vectors.numpy(), "baseline": baseline, "steered": steered},
        "test_items": list(range(len(timed))),
    }


def _zero() -> dict:
    return {"token_layers": 0, "vocab_positions": 0, "forward_calls": 0}


def _count(work: dict, tokens: int, n_layers: int) -> None:
    work["token_layers"] += tokens * n_layers
    work["vocab_positions"] += tokens
    work["forward_calls"] += 1


# --------------------------------------------------------------------------- (d) the floor


def run_floor(spec: dict, train, test, configs, warm: bool) -> dict:
    """The compute floor as plain PyTorch on the transformers modules, no nnsight, no
    steering: each prompt once through every layer (key/value cache kept), each
    training item's two answer tokens through every layer against it, and per
    configuration only the steered window through the layers above its layer, rows
    batched per layer; two output-projection rows per scored row."""
    from transformers import AutoModelForCausalLM, DynamicCache

    from remote_steer.engines import fast_kernel
    from remote_steer.engines.batching import left_pad
    from remote_steer.engines.sweep_fast import _groups
    from remote_steer.models.architectures import architecture, kernel_layout

    hf = _loaded(spec, lambda: AutoModelForCausalLM.from_pretrained(spec["checkpoint"], dtype=torch.float32).eval())
    base = hf.model
    arch = architecture(hf.config.model_type)
    layout = kernel_layout(arch, hf.config) if arch is not None else None
    full_cache = {keyword_of(hf): DynamicCache} if layout is not None and layout["sliding"] else {}
    n_layers = len(base.layers)
    pad_id = spec["pad_id"]
    keyword = fast_kernel.cache_keyword()
    batch_size = spec["batch_size"]
    positions = spec["positions"]
    work = {"token_layers": 0, "padding_token_layers": 0, "forward_calls": 0}
    by_layer = sorted(configs, key=lambda c: c.layer)

    def prompt_pass(group, window):
        batch = left_pad([it.prompt_ids for it in group], pad_id)
        prefix = batch.width - window
        captured = []
        hooks = [
            layer.register_forward_hook(lambda _m, _i, out: captured.append(out[:, prefix:])) for layer in base.layers
        ]
        try:
            out = base(**batch.model_inputs(), use_cache=True, **{k: make() for k, make in full_cache.items()})
        finally:
            for hook in hooks:
                hook.remove()
        work["token_layers"] += batch.input_ids.numel() * n_layers
        work["padding_token_layers"] += int(batch.pad.sum()) * n_layers
        work["forward_calls"] += 1
        return batch, prefix, fast_kernel.output_cache(out), captured

    def extract(items):
        for index in _groups(items, batch_size):
            group = [items[i] for i in index]
            g = len(group)
            batch, _, cache, _ = prompt_pass(group, 0)
            rows = torch.arange(g).repeat(2)
            answers = torch.tensor([[it.matching_token] for it in group] + [[it.other_token] for it in group])
            expanded = DynamicCache(ddp_cache_data=[(layer.keys[rows], layer.values[rows]) for layer in cache.layers])
            attention = torch.cat([batch.attention_mask, torch.ones(g, 1, dtype=torch.long)], 1)[rows]
            base(
                input_ids=answers,
                attention_mask=attention,
                position_ids=batch.position_ids[rows, -1:] + 1,
                **{keyword: expanded},
            )
            work["token_layers"] += 2 * g * n_layers
            work["forward_calls"] += 1

    def sweep(items):
        for index in _groups(items, batch_size):
            group = [items[i] for i in index]
            g = len(group)
            window = max(len(it.prompt_ids) - it.steer_start(positions) for it in group)
            batch, prefix, cache, resid = prompt_pass(group, window)
            keys, values = fast_kernel.cache_tensors(cache, prefix) if prefix else ([], [])
            w_pos = batch.position_ids[:, prefix:]
            rope = fast_kernel.rotary(base, resid[0], w_pos, layout)
            masks = fast_kernel.masks(base, resid[0], batch.attention_mask, keys, values, w_pos, keyword, layout)
            row_item = torch.arange(g).repeat(len(by_layer))
            row_layer = torch.tensor([c.layer for c in by_layer]).repeat_interleave(g)
            hidden = torch.cat([resid[c.layer] for c in by_layer])  # unsteered: the floor's work, not its values
            for layer in range(by_layer[0].layer + 1, n_layers):
                n = int((row_layer < layer).sum())  # rows sorted by layer: the active ones lead
                idx = row_item[:n]
                kv = fast_kernel.ReadOnlyKV(keys[layer][idx], values[layer][idx]) if keys else None
                kind = fast_kernel.layer_kind(layout, layer)
                mask, (cos, sin) = masks[kind], rope[kind]
                hidden[:n] = base.layers[layer](
                    hidden[:n],
                    attention_mask=None if mask is None else mask[idx],
                    position_ids=w_pos[idx],
                    position_embeddings=(cos[idx], sin[idx]),
                    **{keyword: kv},
                )
                work["token_layers"] += n * window
            tokens = torch.tensor([[it.matching_token, it.other_token] for it in group])
            cap = None if layout is None else layout["softcap"]
            fast_kernel.answer_diff(base, hf.lm_head, hidden[:, -1], tokens[row_item], cap)
            fast_kernel.answer_diff(base, hf.lm_head, resid[-1][:, -1], tokens, cap)

    with torch.inference_mode():
        if warm:
            extract(train[:2])
            sweep(test[:2])
            for key in work:
                work[key] = 0
        t0 = time.perf_counter()
        extract(train)
        t1 = time.perf_counter()
        sweep(test)
        t2 = time.perf_counter()
    return {"extract_s": t1 - t0, "sweep_s": t2 - t1, **work, "vocab_positions": 0, "_arrays": {}, "test_items": []}


def keyword_of(hf) -> str:
    """The cache argument's name of a transformers model's forward."""
    import inspect

    return "cache" if "cache" in inspect.signature(hf.model.forward).parameters else "past_key_values"


# --------------------------------------------------------------------------- driver

_LOAD: dict[str, float] = {}


def _loaded(spec: dict, load):
    t = time.perf_counter()
    model = load()
    _LOAD["load_s"] = time.perf_counter() - t
    _LOAD["rss_loaded_mb"] = rss_mb()
    return model


RUNNERS = {"a": run_fast, "c": run_plain, "d": run_floor}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 3 or args[1] not in RUNNERS:
        print("usage: python -m remote_steer.bench.worker INPUT.json {a,c,d} OUTPUT.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text())
    torch.set_num_threads(int(spec["threads"]))
    from remote_steer.engines.sweep_plain import SteerConfig

    configs = [SteerConfig(int(layer), float(s)) for layer in spec["layers"] for s in spec["strengths"]]
    train, test = Items(spec["train"]).items, Items(spec["test"]).items
    result = RUNNERS[args[1]](spec, train, test, configs, bool(spec.get("warmup", True)))
    arrays = result.pop("_arrays")
    out = Path(args[2])
    if arrays:
        np.savez(out.with_suffix(".npz"), **arrays)
    result.update(_LOAD)
    result["peak_rss_mb"] = peak_rss_mb()
    result["total_s"] = result["extract_s"] + result["sweep_s"]
    result["threads"] = torch.get_num_threads()
    out.write_text(json.dumps(result, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
