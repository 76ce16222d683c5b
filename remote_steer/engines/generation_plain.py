"""The generation steering engine: what the steered model actually says.

For each held-out item the model answers freely (greedy decoding), unsteered once
(the baseline) and under each configuration, where a configuration adds
``strength × vector[layer]`` to the residual stream (the decoder-layer output) at
the prompt's steered positions *and at every generated position*. The vector acts
from the first generated token on: the prefill step (the forward pass over the
prompt, whose last position predicts the first new token) is steered at every
steered prompt position including the last one, and every later decode step is
steered at its one new position. (The reference CAA code skipped the prompt's last
position, so its vector acted one token late; ``tests/test_generation.py`` pins the
difference.)

Generation starts exactly at the assistant turn: the runner encodes generation
items with ``prompts.encode_generation_items``, whose ``prompt_ids`` end with the
chat template's generation prompt (for Qwen3 with thinking on,
``<|im_start|>assistant\\n``; with thinking off, the empty think block after it) and
never with tokens the two answers share (SmolLM2's ``"("``). Rows are cut with
``answer_stop.StopRule``: at end of turn, or once the answer is decided (the ``)``
that closes a letter, after ``</think>`` when thinking), the same rule every
engine uses.

As in ``sweep_plain.py``, rows of one batch are (item, configuration) pairs, each
steered at its own layer and strength, left-padded together; the baseline is one
row per item. The trace body is tensors only, and only the generated token ids
leave it. All batches of one ``run`` call go in one request (a session locally, one
job remotely). This module's surface is ``GenerationResult``,
``GenerationEngine.run``, ``decode_generated``, ``generation_rows`` and
``generation_summary``.

How the per-step intervention works (nnsight 0.8): inside ``model.generate(...)``,
``for step in tracer.iter[:max_new_tokens]`` binds the loop body's reads and writes
of ``layers[l].output`` to the ``step``-th forward pass of the decode loop (step 0 is
the prefill, ``[rows, width, hidden]``; later steps are ``[rows, 1, hidden]`` with
the KV cache). The loop asks for exactly ``max_new_tokens`` steps, so the decode
loop must run all of them: end-of-sequence stopping is switched off
(``eos_token_id=None``) and each row is cut at its first stop token afterwards.
Greedy decoding of a row never looks at later tokens, so this yields exactly what
an eos-stopping ``generate`` yields, and lets ``tracer.result`` (the finished ids)
be read after the loop. Stopping early would leave the loop waiting for a step that
never comes and drop everything after it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import nnsight
import torch

from remote_steer.data.prompts import EncodedItem, SteerPositions
from remote_steer.engines import answer_stop
from remote_steer.engines.batching import chunks, left_pad
from remote_steer.engines.parsing import parse_answer
from remote_steer.engines.sweep_plain import SteerConfig, item_config_rows, row_steering
from remote_steer.models.loading import LoadedModel
from remote_steer.remote.backend import Backend

GENERATION_COLUMNS: tuple[str, ...] = (
    "model",
    "dataset",
    "item_id",
    "layer",
    "layer_fraction",
    "n_layers",
    "strength",
    "training",
    "text",
    "letter",
    "valid",
    "matches_behavior",
    "baseline_text",
    "baseline_letter",
    "baseline_valid",
    "baseline_matches",
    "parse_rule",
)
# Also written (not required when reading older runs): the generated token ids, so any
# answer can be re-parsed; why each row ended; whether thinking was on.
GENERATION_EXTRA_COLUMNS: tuple[str, ...] = (
    "token_ids",
    "baseline_token_ids",
    "finish",
    "baseline_finish",
    "thinking",
)

SUMMARY_KEYS: tuple[str, ...] = ("model", "dataset", "layer", "strength")


@dataclass(frozen=True)
class GenerationResult:
    """Generated token ids (cut before the first stop token) and their decoded text."""

    baseline_ids: tuple[tuple[int, ...], ...]  # [items]
    steered_ids: tuple[tuple[tuple[int, ...], ...], ...]  # [items][configs]
    baseline_text: tuple[str, ...]  # [items]
    steered_text: tuple[tuple[str, ...], ...]  # [items][configs]
    baseline_finish: tuple[str, ...] = ()  # [items] why each row ended (answer_stop)
    steered_finish: tuple[tuple[str, ...], ...] = ()  # [items][configs]


def stop_token_ids(model: LoadedModel) -> frozenset[int]:
    """Tokens that end an answer: the generation config's eos ids, the tokenizer's eos and pad."""
    ids: set[int] = set()
    config = getattr(model.nn._module, "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    if eos is not None:
        ids.update([int(eos)] if isinstance(eos, int) else (int(e) for e in eos))
    for token in (model.tokenizer.eos_token_id, model.tokenizer.pad_token_id):
        if token is not None:
            ids.add(int(token))
    return frozenset(ids)


def cut_at_stop(ids: Sequence[int], stop: frozenset[int]) -> tuple[int, ...]:
    """The ids before the first stop token (all of them if none stops)."""
    for n, token in enumerate(ids):
        if token in stop:
            return tuple(int(t) for t in ids[:n])
    return tuple(int(t) for t in ids)


def decode_generated(tokenizer: Any, ids: Sequence[int]) -> str:
    """Generated ids as text, special tokens skipped (Qwen's ``<think>`` tags are not special)."""
    return tokenizer.decode(list(ids), skip_special_tokens=True)


@dataclass
class GenerationEngine:
    model: LoadedModel
    backend: Backend
    batch_rows: int = 32  # rows (item × configuration) per generate call
    positions: SteerPositions = "assistant"
    max_new_tokens: int = 384
    thinking: bool = False  # the prompts open the assistant turn with thinking on
    answer_tokens: int = 16  # answer tokens after which the answer counts as given (StopRule)
    stop_rule: answer_stop.StopRule | None = None  # default: answer_stop.make_stop_rule(model, thinking, answer_tokens)

    def run(
        self,
        items: Sequence[EncodedItem],
        vectors: torch.Tensor,
        configs: Sequence[SteerConfig],
        on_rows: Callable[[int], None] | None = None,
        request_key: str | None = None,
    ) -> GenerationResult:
        """Baseline and steered greedy generations for every item × configuration.

        All batches of one call go in one request (one session locally, one job
        remotely), as in ``LogitDiffEngine.run``; ``request_key`` names the job in
        the run directory's journal so a rerun resumes it.
        """
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens {self.max_new_tokens}: expected at least 1")
        # Row r = (item index, configuration index or BASELINE), as in sweep_plain.py.
        rows = item_config_rows(len(items), len(configs))
        if not rows:
            return GenerationResult((), (), (), ())
        batches = [self._batch(items, vectors, configs, batch_rows) for batch_rows in chunks(rows, self.batch_rows)]
        nn, layers = self.model.nn, self.model.layers
        n_steps, generate_kwargs = self.max_new_tokens, self._generate_kwargs()
        request = self.backend.open(self.model, "generation", request_key)
        generated = None
        # Trace body: tensors only (see the module docstring). ``tracer.iter[:n_steps]``
        # binds the loop body to decode step ``step``: step 0 is the prefill over the
        # padded prompt, steered where the row's mask is set, through the answer
        # position, so the first generated token is already steered; each later step
        # is one new position per row (the KV cache holds the rest), always steered.
        # A step's positions are the last ``hidden.shape[1]`` of the first
        # ``width + step``. Every row runs all n_steps (eos stopping off), so the loop
        # always ends and ``tracer.result`` is reached. Only the generated ids leave
        # the trace. (No comment lines inside the session: nnsight ships the body's
        # unparsed source, and a dropped line shifts nested traces.)
        # fmt: off
        with torch.inference_mode():
            if request.must_submit:
                with nn.session(**request.session_kwargs()):
                    generated = []
                    for inputs, width, steered, row_layer, row_strength, full_mask, layer_vectors in batches:
                        with nn.generate(inputs, **generate_kwargs) as tracer:
                            if steered:
                                for step in tracer.iter[:n_steps]:
                                    for j, layer in enumerate(steered):
                                        hidden = layers[layer].output
                                        end = width + step
                                        mask = full_mask[:, end - hidden.shape[1] : end].to(hidden)
                                        coeff = (row_strength * (row_layer == layer)).to(hidden)
                                        delta = coeff[:, None, None] * mask[:, :, None] * layer_vectors[j].to(hidden)
                                        layers[layer].output = hidden + delta
                            generated.append(tracer.result[:, width:].to(torch.int32).cpu())
                    generated = nnsight.save(generated)
            generated = request.result(generated=generated)["generated"]
        # fmt: on
        rule = self.stop_rule or answer_stop.make_stop_rule(self.model, self.thinking, self.answer_tokens)
        cuts = [answer_stop.cut(row.tolist(), rule) for batch in generated for row in batch]
        if on_rows is not None:
            on_rows(len(rows))
        return result_from_rows(self.model.tokenizer, len(items), len(configs), cuts)

    def _generate_kwargs(self) -> dict[str, Any]:
        """Greedy, exactly ``max_new_tokens`` steps: eos stopping off (rows are cut after)."""
        return {
            "max_new_tokens": self.max_new_tokens,
            "do_sample": False,
            "num_beams": 1,
            "eos_token_id": None,
            # unset the checkpoint's sampling settings (Qwen3 ships temperature/top_p/top_k)
            "temperature": None,
            "top_p": None,
            "top_k": None,
        }

    def _batch(self, items, vectors, configs, rows):
        """The tensors one generate call needs, built outside the trace."""
        batch = left_pad([items[i].prompt_ids for i, _ in rows], self.model.tokenizer.pad_token_id)
        row_layer, row_strength, steered = row_steering(configs, rows)
        steer_mask = batch.mask_from([items[i].steer_start(self.positions) for i, _ in rows])
        # Prompt positions from each row's steer start, then every generated position.
        full_mask = torch.cat([steer_mask, torch.ones(len(rows), self.max_new_tokens, dtype=torch.bool)], dim=1)
        layer_vectors = vectors[steered]  # only the layers this batch steers
        return batch.model_inputs(), batch.width, steered, row_layer, row_strength, full_mask, layer_vectors


def result_from_rows(tokenizer, n: int, k: int, cuts) -> GenerationResult:
    """A result from (ids, finish) per row, rows ordered as ``item_config_rows``."""
    ids = [c[0] for c in cuts]
    finish = [c[1] for c in cuts]
    texts = [decode_generated(tokenizer, row) for row in ids]

    def per_item(values):
        return tuple(tuple(values[n + i * k : n + (i + 1) * k]) for i in range(n))

    return GenerationResult(
        baseline_ids=tuple(ids[:n]),
        steered_ids=per_item(ids),
        baseline_text=tuple(texts[:n]),
        steered_text=per_item(texts),
        baseline_finish=tuple(finish[:n]),
        steered_finish=per_item(finish),
    )


# --------------------------------------------------------------------------- results


def generation_rows(
    model_name: str,
    concept: str,
    n_layers: int,
    training: str | None,
    items: Sequence[Any],
    configs: Sequence[SteerConfig],
    result: GenerationResult,
    thinking: bool = False,
):
    """One row per item × configuration: generated text, parsed letter, validity.

    ``items`` are the ``ABItem`` objects (or anything with ``item_id``,
    ``matching_letter``, ``choice_a`` and ``choice_b``) aligned with the
    ``EncodedItem`` list given to ``GenerationEngine.run``. ``thinking`` must say
    whether the prompts were encoded with thinking on (the parser then requires and
    reads past a closed ``<think>`` block).
    """
    import pandas as pd

    if len(items) != len(result.baseline_ids):
        raise ValueError(f"{len(items)} items but the result has {len(result.baseline_ids)}")

    records = []
    for i, item in enumerate(items):
        base_text = result.baseline_text[i]
        base = parse_answer(base_text, item.choice_a, item.choice_b, thinking=thinking)
        base_matches = base.valid and base.letter == item.matching_letter
        for c, config in enumerate(configs):
            text = result.steered_text[i][c]
            parsed = parse_answer(text, item.choice_a, item.choice_b, thinking=thinking)
            records.append(
                {
                    "model": model_name,
                    "dataset": concept,
                    "item_id": item.item_id,
                    "layer": int(config.layer),
                    "layer_fraction": (config.layer + 1) / n_layers,  # depth of the layer's output
                    "n_layers": int(n_layers),
                    "strength": float(config.strength),
                    "training": training,
                    "text": text,
                    "letter": parsed.letter,
                    "valid": bool(parsed.valid),
                    "matches_behavior": bool(parsed.valid and parsed.letter == item.matching_letter),
                    "baseline_text": base_text,
                    "baseline_letter": base.letter,
                    "baseline_valid": bool(base.valid),
                    "baseline_matches": bool(base_matches),
                    "parse_rule": parsed.rule,
                    "token_ids": [int(t) for t in result.steered_ids[i][c]],
                    "baseline_token_ids": [int(t) for t in result.baseline_ids[i]],
                    "finish": result.steered_finish[i][c] if result.steered_finish else None,
                    "baseline_finish": result.baseline_finish[i] if result.baseline_finish else None,
                    "thinking": bool(thinking),
                }
            )
    return pd.DataFrame.from_records(records, columns=[*GENERATION_COLUMNS, *GENERATION_EXTRA_COLUMNS])


def generation_summary(frame):
    """Per model × dataset × layer × strength: validity and behaviour rates, change vs baseline.

    ``behavior_rate`` is the share of *valid* steered answers that match the
    behaviour (NaN when none is valid); ``baseline_behavior_rate`` likewise over the
    valid baseline answers of the same items; ``change_vs_baseline`` is their
    difference. ``behavior_rate_all`` and ``baseline_behavior_rate_all`` count every
    answer, an invalid one as not matching (the study's stricter reading: a model
    that stops answering does not show the behaviour), and ``change_all`` is their
    difference. The validity rates show how many answers were invalid.
    """
    import numpy as np
    import pandas as pd

    def rate(matches: pd.Series, valid: pd.Series) -> float:
        n_valid = int(valid.sum())
        return float(matches[valid].sum()) / n_valid if n_valid else float("nan")

    records = []
    for key, group in frame.groupby(list(SUMMARY_KEYS), sort=True):
        valid = group["valid"].astype(bool)
        base_valid = group["baseline_valid"].astype(bool)
        behavior = rate(group["matches_behavior"].astype(bool), valid)
        baseline = rate(group["baseline_matches"].astype(bool), base_valid)
        records.append(
            {
                **dict(zip(SUMMARY_KEYS, key, strict=True)),
                "n_items": int(group["item_id"].nunique()),
                "validity_rate": float(valid.mean()),
                "behavior_rate": behavior,
                "baseline_validity_rate": float(base_valid.mean()),
                "baseline_behavior_rate": baseline,
                "change_vs_baseline": behavior - baseline
                if not (np.isnan(behavior) or np.isnan(baseline))
                else float("nan"),
                "behavior_rate_all": float((group["matches_behavior"].astype(bool) & valid).mean()),
                "baseline_behavior_rate_all": float((group["baseline_matches"].astype(bool) & base_valid).mean()),
            }
        )
    columns = [
        *SUMMARY_KEYS,
        "n_items",
        "validity_rate",
        "behavior_rate",
        "baseline_validity_rate",
        "baseline_behavior_rate",
        "change_vs_baseline",
        "behavior_rate_all",
        "baseline_behavior_rate_all",
        "change_all",
    ]
    for record in records:
        record["change_all"] = record["behavior_rate_all"] - record["baseline_behavior_rate_all"]
    return pd.DataFrame.from_records(records, columns=columns)
