"""The GPU session's one command: real-depth shapes at full size, bf16, on CUDA.

    python tests/gpu_check.py                 # Qwen3-4B and Qwen3-30B-A3B shapes, full size, bf16, cuda
    python tests/gpu_check.py --smoke         # the same code on width-scaled shapes (CPU or GPU), seconds
    python tests/gpu_check.py --shapes Qwen3-4B --items 64 --device auto

Random weights with the registry model's depth, width, heads and vocabulary, built
directly on the device (no download, nothing on disk), wrapped in nnsight like any
model. Per shape it reports: load time; extraction and logit-sweep rows/s with the
fast engine and with the plain engine (on a subset), their agreement (max |Δ|),
generation tokens/s, peak GPU memory (``torch.cuda.max_memory_allocated``) and the
fast engine's block size as sized from free memory. Results: OUT/gpu_check.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def _wrap(name, hf_model, tokenizer):
    import nnsight

    from remote_steer.models.loading import LoadedModel
    from remote_steer.models.registry import lookup

    nn_model = nnsight.LanguageModel(hf_model, tokenizer=tokenizer)
    config = hf_model.config
    return LoadedModel(
        name,
        nn_model,
        tokenizer,
        int(config.num_hidden_layers),
        int(config.hidden_size),
        "random-shape",
        True,
        lookup(name),
    )


def _tokenizer():
    from remote_steer.models.loading import load_tokenizer, resolve

    return load_tokenizer(resolve("toy/qwen3"))  # the real Qwen3 tokenizer, rebuilt offline


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def check_shape(name, *, hidden, dtype, device, n_items, plain_items, gen_items, gen_tokens):
    from conftest import make_items

    from remote_steer.data.prompts import encode_items
    from remote_steer.engines.extraction import extract_caa
    from remote_steer.engines.generation_plain import GenerationEngine
    from remote_steer.engines.sweep_fast import FastLogitDiffEngine, extract_caa_fast
    from remote_steer.engines.sweep_plain import LogitDiffEngine, SteerConfig
    from remote_steer.models.shapes import build_in_memory
    from remote_steer.remote.backend import Backend

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    hf_model = build_in_memory(name, hidden, dtype=dtype, device=device)
    _sync()
    load_s = time.perf_counter() - t0
    tokenizer = _tokenizer()
    model = _wrap(name, hf_model, tokenizer)
    items = encode_items(tokenizer, make_items(n_items, seed=3))
    L = model.n_layers
    configs = [SteerConfig(layer, s) for layer in range(L // 3, L, max(1, L // 12)) for s in (-4.0, 4.0)]
    backend = Backend()
    out = {
        "shape": name,
        "hidden": hf_model.config.hidden_size,
        "layers": L,
        "dtype": str(dtype),
        "device": device,
        "load_s": round(load_s, 2),
        "items": n_items,
        "configurations": len(configs),
        "params_b": round(sum(p.numel() for p in hf_model.parameters()) / 1e9, 3),
    }
    extract_caa_fast(model, items[:2], concept="warm", batch_size=2, backend=backend)  # warm-up
    _sync()
    t = time.perf_counter()
    vectors = extract_caa_fast(model, items, concept="c", batch_size=16, backend=backend).vectors
    _sync()
    out["fast_extract_rows_per_s"] = round(2 * n_items / (time.perf_counter() - t), 2)
    engine = FastLogitDiffEngine(model, backend, batch_rows=16 * len(configs))
    t = time.perf_counter()
    fast = engine.run(items, vectors, configs)
    _sync()
    out["fast_sweep_rows_per_s"] = round(n_items * (len(configs) + 1) / (time.perf_counter() - t), 2)
    out["fast_block_rows"] = getattr(engine, "block_rows_used", None)
    sub = items[:plain_items]
    t = time.perf_counter()
    plain_vectors = extract_caa(model, sub, concept="c", batch_size=8, backend=backend).vectors
    plain = LogitDiffEngine(model, backend, batch_rows=32).run(sub, vectors, configs)
    _sync()
    out["plain_rows_per_s"] = round((2 * len(sub) + len(sub) * (len(configs) + 1)) / (time.perf_counter() - t), 2)
    fast_sub_vectors = extract_caa_fast(model, sub, concept="c", batch_size=8, backend=backend).vectors
    out["agreement_vectors_max_abs"] = float((fast_sub_vectors.float() - plain_vectors.float()).abs().max())
    out["agreement_logit_diff_max_abs"] = float(np.abs(fast.steered[: len(sub)] - plain.steered).max())
    out["steering_effect_max_abs"] = float(np.abs(fast.steered - fast.baseline[:, None]).max())
    gen = GenerationEngine(model, backend, batch_rows=32, max_new_tokens=gen_tokens)
    t = time.perf_counter()
    result = gen.run(items[:gen_items], vectors, configs[:2])
    _sync()
    rows = gen_items * 3
    out["generation_tokens_per_s"] = round(rows * gen_tokens / (time.perf_counter() - t), 1)
    out["generated_rows"] = rows
    if torch.cuda.is_available():
        out["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
    del model, hf_model, result
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="Qwen3-4B,Qwen3-30B-A3B")
    parser.add_argument("--device", default="cuda", help='"cuda", "cuda:N", "auto" (all GPUs) or "cpu"')
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"])
    parser.add_argument("--hidden", type=int, default=None, help="width-scale the shapes (default: full size)")
    parser.add_argument("--items", type=int, default=32)
    parser.add_argument("--plain-items", type=int, default=4)
    parser.add_argument("--gen-items", type=int, default=8)
    parser.add_argument("--gen-tokens", type=int, default=16)
    parser.add_argument("--smoke", action="store_true", help="width-scaled shapes (hidden 256), 4 items: seconds")
    parser.add_argument("--out", default="outputs/gpu_check")
    args = parser.parse_args(argv)
    if args.device != "cpu" and not torch.cuda.is_available():
        if not args.smoke:
            print(
                "gpu_check: CUDA is not available on this machine; nothing to do (use --smoke --device cpu to "
                "exercise the code on the CPU)",
                file=sys.stderr,
            )
            return 2
        args.device = "cpu"
    if args.smoke:
        args.hidden, args.items, args.plain_items, args.gen_items, args.gen_tokens = args.hidden or 256, 4, 2, 2, 3
    torch.set_grad_enabled(False)
    dtype = getattr(torch, args.dtype)
    results = []
    for name in [s.strip() for s in args.shapes.split(",") if s.strip()]:
        print(
            f"gpu_check: {name} ({'full size' if args.hidden is None else f'hidden {args.hidden}'}, {args.dtype}, "
            f"{args.device})",
            flush=True,
        )
        results.append(
            check_shape(
                name,
                hidden=args.hidden,
                dtype=dtype,
                device=args.device,
                n_items=args.items,
                plain_items=args.plain_items,
                gen_items=args.gen_items,
                gen_tokens=args.gen_tokens,
            )
        )
        print(json.dumps(results[-1]), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(results, indent=1))
    keys = [
        "shape",
        "hidden",
        "layers",
        "params_b",
        "load_s",
        "fast_extract_rows_per_s",
        "fast_sweep_rows_per_s",
        "plain_rows_per_s",
        "generation_tokens_per_s",
        "peak_gpu_memory_gb",
        "fast_block_rows",
        "agreement_logit_diff_max_abs",
        "steering_effect_max_abs",
    ]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r.get(k, "—")) for k in keys) + " |" for r in results]
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    (out / "gpu_check.md").write_text(f"# gpu_check on {device}\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
