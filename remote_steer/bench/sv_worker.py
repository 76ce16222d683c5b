"""Benchmark implementation (b): the same sweep with the ``steering-vectors`` library.

Run by ``remote-steer bench`` as a script in its own virtual environment
(``.bench-venv``): steering-vectors 0.12.2 needs transformers < 5, which cannot share
the project's environment. So this file imports nothing from remote-steer::

    .bench-venv/bin/python remote_steer/bench/sv_worker.py INPUT.json OUTPUT.json

The library is given its best reasonable settings: ``train_steering_vector`` on the
positive/negative strings (prompt + answer token, read at the answer token, same
batch size, prompts sorted by length so batches pad little), then per configuration
``SteeringVector.apply`` with only that layer's vector, the multiplier, and a
per-row token mask of the steered positions (left padding makes a single
``min_token_index`` wrong); the forward pass keeps only the last position's logits
(``logits_to_keep=1``) and passes explicit position ids, as the project does.

The toy checkpoint (and the embedded SmolLM2) is written by transformers 5; it is
loaded here by building the transformers-4 ``Qwen3ForCausalLM`` (``LlamaForCausalLM``)
from its config (``rope_parameters`` mapped to
``rope_theta``) and loading the safetensors weights, tied embeddings re-tied.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load(checkpoint: str):
    from safetensors.torch import load_file
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    root = Path(checkpoint)
    raw = json.loads((root / "config.json").read_text())
    classes = {"qwen3": (Qwen3Config, Qwen3ForCausalLM), "llama": (LlamaConfig, LlamaForCausalLM)}
    if raw.get("model_type") not in classes:
        raise SystemExit(
            f"bench_sv: only dense Qwen3 and Llama checkpoints are supported here, got {raw.get('model_type')}"
        )
    config_class, model_class = classes[raw["model_type"]]
    rope = raw.pop("rope_parameters", None) or {}
    if "rope_theta" in rope:
        raw["rope_theta"] = rope["rope_theta"]
    for key in ("dtype", "transformers_version", "architectures"):
        raw.pop(key, None)
    config = config_class(**raw)
    config._attn_implementation = "sdpa"
    model = model_class(config)
    missing, unexpected = model.load_state_dict(load_file(str(root / "model.safetensors")), strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise SystemExit(f"bench_sv: checkpoint mismatch: missing {missing}, unexpected {unexpected}")
    if config.tie_word_embeddings:
        model.tie_weights()
    elif "lm_head.weight" in missing:
        raise SystemExit("bench_sv: lm_head.weight missing from an untied checkpoint")
    model.eval()
    settings = root / "tokenizer_config.json"
    pad = json.loads(settings.read_text()).get("pad_token") if settings.is_file() else None
    pad = pad.get("content") if isinstance(pad, dict) else pad
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(root / "tokenizer.json"), pad_token=pad or "<|endoftext|>", padding_side="left"
    )
    return model, tokenizer


def left_pad(rows, pad_id):
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row)
        mask[i, width - len(row) :] = 1
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0), width - mask.sum(-1)


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    spec = json.loads(Path(args[0]).read_text())
    out = Path(args[1])
    torch.set_num_threads(int(spec["threads"]))
    from steering_vectors import SteeringVector, train_steering_vector

    t = time.perf_counter()
    model, tokenizer = load(spec["checkpoint"])
    load_s, rss_loaded = time.perf_counter() - t, rss_mb()
    n_layers = model.config.num_hidden_layers
    batch_size = int(spec["batch_size"])
    positions = spec["positions"]
    configs = [(int(layer), float(s)) for layer in spec["layers"] for s in spec["strengths"]]
    train = sorted(spec["train"], key=lambda r: len(r["ids"]))
    test_order = sorted(range(len(spec["test"])), key=lambda i: len(spec["test"][i]["ids"]))
    test = spec["test"]

    def texts(record):
        return record["text"] + record["matching_text"], record["text"] + record["other_text"]

    # the library tokenizes strings itself: check they give exactly the bench's token ids
    mismatches = 0
    for r in train:
        pos, neg = texts(r)
        if tokenizer(pos)["input_ids"] != r["ids"] + [r["matching"]] or tokenizer(neg)["input_ids"] != r["ids"] + [
            r["other"]
        ]:
            mismatches += 1
    work = {"token_layers": 0, "padding_token_layers": 0, "vocab_positions": 0, "forward_calls": 0}

    def train_vectors(records):
        samples = [texts(r) for r in records]
        vector = train_steering_vector(model, tokenizer, samples, read_token_index=-1, batch_size=batch_size)
        for start in range(0, len(records), batch_size):
            rows = records[start : start + batch_size]
            for answer in ("matching", "other"):
                _, _, _, pad = left_pad([r["ids"] + [r[answer]] for r in rows], 0)
                width = max(len(r["ids"]) + 1 for r in rows)
                work["token_layers"] += len(rows) * width * n_layers
                work["padding_token_layers"] += int(pad.sum()) * n_layers
                work["vocab_positions"] += len(rows) * width  # the library's forward projects every position
                work["forward_calls"] += 1
        return vector

    def sweep(indices, vector):
        baseline = np.zeros(len(test))
        steered = np.zeros((len(test), len(configs)))
        for start in range(0, len(indices), batch_size):
            index = indices[start : start + batch_size]
            rows = [test[i] for i in index]
            ids, mask, pos, pad = left_pad([r["ids"] for r in rows], tokenizer.pad_token_id)
            width = ids.shape[1]
            first = pad + torch.tensor([0 if positions == "all" else r["assistant_start"] for r in rows])
            token_mask = (torch.arange(width)[None, :] >= first[:, None]).float()
            tokens = torch.tensor([[r["matching"], r["other"]] for r in rows])

            def diffs(ids=ids, mask=mask, pos=pos, tokens=tokens, pad=pad, rows=rows):  # this batch's tensors
                logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1).logits[:, -1]
                picked = logits.gather(1, tokens).float()
                work["token_layers"] += ids.numel() * n_layers
                work["padding_token_layers"] += int(pad.sum()) * n_layers
                work["vocab_positions"] += len(rows)
                work["forward_calls"] += 1
                return (picked[:, 0] - picked[:, 1]).numpy()

            baseline[index] = diffs()
            for c, (layer, strength) in enumerate(configs):
                single = SteeringVector({layer: vector.layer_activations[layer]}, vector.layer_type)
                with single.apply(model, multiplier=strength, min_token_index=None, token_indices=token_mask):
                    steered[index, c] = diffs()
        return baseline, steered

    with torch.inference_mode():
        if spec.get("warmup", True):
            warm = train_vectors(train[:2])
            sweep(test_order[:2], warm)
            work = {k: 0 for k in work}
        t0 = time.perf_counter()
        vector = train_vectors(train)
        t1 = time.perf_counter()
        baseline, steered = sweep(test_order, vector)
        t2 = time.perf_counter()
    # vectors in the bench's item order (train order does not matter for a mean)
    vectors = np.stack([vector.layer_activations[layer].float().numpy() for layer in range(n_layers)])
    np.savez(out.with_suffix(".npz"), vectors=vectors, baseline=baseline, steered=steered)
    import transformers

    result = {
        "extract_s": t1 - t0,
        "sweep_s": t2 - t1,
        "total_s": t2 - t0,
        **work,
        "load_s": load_s,
        "rss_loaded_mb": rss_loaded,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "threads": torch.get_num_threads(),
        "tokenization_mismatches": mismatches,
        "test_items": list(range(len(test))),
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__},
    }
    out.write_text(json.dumps(result, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
