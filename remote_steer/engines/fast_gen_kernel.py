"""The fast generation engine's in-trace kernel: steered greedy decoding next to the model.

Runs inside one nnsight trace, after the model's own forward pass over a group of
prompts (the baseline's prefill, with a key/value cache). Self-contained on purpose
(torch and transformers only), like ``fast_kernel``: ``nnsight.register`` ships it by
value with a remote request. Attention is never reimplemented: decoder layers,
rotary embedding, final norm, ``create_causal_mask`` and ``DynamicCache`` are
transformers' own. What differs between architectures arrives as ``layout``
(plain data, ``models.architectures.kernel_layout``): each layer's mask kind (full
or sliding-window), a rotary embedding per kind (Gemma 3), the logit soft-cap.

Rows: one baseline row per item, then item × configuration. Per row:

1. **The prompt once.** Every row starts from its item's prompt pass: the cached
   keys/values of every layer. A configuration at layer L shares them at every
   column before its steered window and at every layer up to L; only its window
   runs again, through layers L+1.. (a staircase: rows join at their own layer).
2. **Only its own new tokens.** Each row then decodes one token per step against
   its own cache (the shared prefix copied in once), with ``strength × vector`` added
   to its layer's output at every new position.
3. **Finished rows leave.** After each token the stop rule (``answer_stop.step``,
   inlined here as flags) marks rows that reached end of turn or decided their
   answer; they are dropped from the batch and from every cache tensor before the
   next step, so they cost nothing more.

Returns ``[rows, max_new_tokens]`` int32 token ids, ``-1`` after a row finished
(the end-of-turn token itself is included; the client cuts with ``answer_stop.cut``),
plus a per-step count of the rows decoded (work accounting).
"""

from __future__ import annotations

import inspect

import torch

_STOP, _THINK_CLOSE, _DECIDES = 1, 2, 4  # answer_stop flags


def _cache_keyword():
    from transformers.masking_utils import create_causal_mask

    return "cache" if "cache" in inspect.signature(create_causal_mask).parameters else "past_key_values"


def output_cache(output):
    """The key/value cache a forward pass returned (``use_cache=True``)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


def _device(module):
    for parameter in module.parameters():
        return parameter.device
    return torch.device("cpu")


def _take(tensor, index):
    return None if tensor is None else tensor.index_select(0, index.to(tensor.device))


class _CaptureKV:
    """A read-only prefix cache that also keeps the keys/values it was given."""

    def __init__(self, keys, values):
        self.keys, self.values = keys, values
        self.new_keys = self.new_values = None

    def update(self, key_states, value_states, *args, **kwargs):
        self.new_keys, self.new_values = key_states, value_states
        return torch.cat([self.keys, key_states], dim=-2), torch.cat([self.values, value_states], dim=-2)


_FULL = "full_attention"


def _mask(base, embeds, attention_mask, cache, position_ids, keyword):
    from transformers.masking_utils import create_causal_mask

    return create_causal_mask(
        config=base.config,
        inputs_embeds=embeds,
        attention_mask=attention_mask,
        position_ids=position_ids,
        **{keyword: cache},
    )


def _masks(base, embeds, attention_mask, cache, position_ids, keyword, layout):
    """{kind: mask}: the full causal mask and, if any layer slides, the sliding-window one."""
    out = {_FULL: _mask(base, embeds, attention_mask, cache, position_ids, keyword)}
    if layout is not None and layout["sliding"]:
        from transformers.masking_utils import create_sliding_window_causal_mask

        out["sliding_attention"] = create_sliding_window_causal_mask(
            config=base.config,
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            **{keyword: cache},
        )
    return out


def _rotary(base, hidden, position_ids, layout):
    """{kind: (cos, sin)}: one rotary embedding, or one per attention kind (Gemma 3)."""
    kinds = sorted(set(layout["kinds"])) if layout is not None else [_FULL]
    if layout is not None and layout["rotary_per_kind"]:
        return {kind: base.rotary_emb(hidden, position_ids, kind) for kind in kinds}
    cos, sin = base.rotary_emb(hidden, position_ids)
    return {kind: (cos, sin) for kind in kinds}


def _kind(layout, index):
    return _FULL if layout is None else layout["kinds"][index]


def _layer(base, index, hidden, mask, position_ids, cos, sin, kv, keyword):  # noqa: PLR0913 - shipped kernel: tensors only (the server has no remote_steer)
    layer = base.layers[index]
    dev = _device(layer)
    out = layer(
        hidden.to(dev),
        attention_mask=None if mask is None else mask.to(dev),
        position_ids=position_ids.to(dev),
        position_embeddings=(cos.to(dev), sin.to(dev)),
        **{keyword: kv},
    )
    return out[0] if isinstance(out, tuple) else out


def _next_token(base, lm_head, last_hidden, cap=None):
    normed = base.norm(last_hidden.to(_device(base.norm))[:, None, :])
    logits = lm_head(normed.to(lm_head.weight.device))[:, 0]
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap  # as the model's head does: ties resolve alike
    return logits.argmax(-1)


def _row_tables(groups, config_layers, config_strengths):
    """Per generated row: its item, its configuration (-1: baseline), steered layer and strength."""
    n_configs = len(config_layers)
    row_item = torch.cat([torch.arange(groups), torch.arange(groups).repeat_interleave(n_configs)])
    row_config = torch.cat([torch.full((groups,), -1, dtype=torch.long), torch.arange(n_configs).repeat(groups)])
    layer_of = torch.tensor([-1] + [int(x) for x in config_layers], dtype=torch.long)[row_config + 1]
    strength_of = torch.tensor([0.0] + [float(x) for x in config_strengths])[row_config + 1]
    return row_item, row_config, layer_of, strength_of


def _coefficients(config_layers, layer_of, strength_of, dev, dtype):
    """Per steered layer: each row's strength there (0 for rows steered elsewhere)."""
    return {
        layer: torch.where(layer_of == layer, strength_of, torch.zeros_like(strength_of)).to(dev, dtype)
        for layer in sorted({int(x) for x in config_layers})
    }


def _stop_rule(f, in_answer, count, answer_tokens):
    """(done, in_answer, count) after a token with flags ``f``: an end of turn stops a row; in
    the answer, a deciding token or ``answer_tokens`` tokens stop it; ``</think>`` opens it."""
    count = count + in_answer.long()
    done = ((f & _STOP) > 0) | (in_answer & ((f & _DECIDES) > 0)) | (in_answer & (count >= answer_tokens))
    return done, in_answer | ((f & _THINK_CLOSE) > 0), count


def _keep_rows(dyn, keep):
    """The decode cache's rows ``keep`` only (finished rows leave the batch)."""
    for layer_cache in dyn.layers:
        layer_cache.keys = layer_cache.keys.index_select(0, keep.to(layer_cache.keys.device))
        layer_cache.values = layer_cache.values.index_select(0, keep.to(layer_cache.values.device))


def generate(  # noqa: PLR0913 - shipped kernel: tensors only (the server has no remote_steer)
    base,
    lm_head,
    resid,
    cache,
    prefix,
    position_ids,
    attention_mask,
    steer,
    vectors,
    vector_rows,
    config_layers,
    config_strengths,
    flags,
    thinking,
    answer_tokens,
    max_new_tokens,
    force_length,
    layout=None,
):
    """Greedy ids [G × (1 + K), max_new_tokens] of a group's baseline and configuration rows.

    ``resid[l]``: decoder-layer output of layer l over the window columns (``prefix``
    onwards) of the group's prompt pass; ``cache``: that pass's key/value cache;
    ``steer`` [G, W]: 1 at steered window columns. Row order: the G baseline rows,
    then item-major item × configuration. ``force_length``: ignore the stop rule
    (every row decodes ``max_new_tokens``; benchmarks).
    """
    from transformers import DynamicCache

    keyword = _cache_keyword()
    n_layers = len(resid)
    dev, dtype = resid[0].device, resid[0].dtype

    row_item, row_config, layer_of, strength_of = _row_tables(resid[0].shape[0], config_layers, config_strengths)
    rows = row_item.shape[0]

    keys = [layer.keys for layer in cache.layers]
    values = [layer.values for layer in cache.layers]
    full_k = [_take(k, row_item) for k in keys]
    full_v = [_take(v, row_item) for v in values]
    last = _take(resid[-1][:, -1], row_item).clone()

    # Steered windows, a staircase from the lowest steered layer; their keys/values replace
    # the prompt's window columns above each row's layer.
    window_pos = position_ids[:, prefix:]
    first = resid[0]
    cap = None if layout is None else layout["softcap"]
    rope_all = _rotary(base, first, window_pos.to(first.device), layout)
    sizing = DynamicCache(ddp_cache_data=[(keys[0][..., :prefix, :], values[0][..., :prefix, :])]) if prefix else None
    mask_all = _masks(base, first, attention_mask, sizing, window_pos, keyword, layout)
    steered_rows = torch.nonzero(row_config >= 0).flatten()
    steered_rows = steered_rows[torch.argsort(layer_of[steered_rows], stable=True)]
    hidden = None
    members = torch.empty(0, dtype=torch.long)
    if steered_rows.numel():
        for layer in range(int(layer_of[steered_rows].min()), n_layers):
            new = steered_rows[layer_of[steered_rows] == layer]
            if new.numel():
                items = row_item[new]
                vec = vectors[vector_rows[layer]].to(device=dev, dtype=dtype)
                delta = strength_of[new].to(device=dev, dtype=dtype)[:, None, None] * vec[None, None, :]
                start = _take(resid[layer], items) + delta * _take(steer, items).to(dev, dtype)[:, :, None]
                hidden = start if hidden is None else torch.cat([hidden, start])
                members = torch.cat([members, new])
            if hidden is None or layer + 1 == n_layers:
                continue
            above = layer + 1
            items = row_item[members]
            kind = _kind(layout, above)
            kv = _CaptureKV(_take(keys[above][..., :prefix, :], items), _take(values[above][..., :prefix, :], items))
            hidden = _layer(
                base,
                above,
                hidden,
                _take(mask_all[kind], items),
                _take(window_pos, items),
                _take(rope_all[kind][0], items),
                _take(rope_all[kind][1], items),
                kv,
                keyword,
            )
            index = members.to(full_k[above].device)
            full_k[above][index, :, prefix:] = kv.new_keys.to(full_k[above].dtype)
            full_v[above][index, :, prefix:] = kv.new_values.to(full_v[above].dtype)
        last[members] = hidden[:, -1].to(last.dtype)

    # Decode: every active row one token per step; finished rows leave the batch.
    out = torch.full((rows, max_new_tokens), -1, dtype=torch.int32)
    active = torch.arange(rows)
    decoded = []
    flags = flags.to(dev)
    in_answer = torch.full((rows,), not thinking, dtype=torch.bool, device=dev)
    count = torch.zeros(rows, dtype=torch.long, device=dev)
    dyn = DynamicCache(ddp_cache_data=list(zip(full_k, full_v, strict=True)))
    mask2d = _take(attention_mask, row_item).to(dev)
    next_pos = _take(position_ids[:, -1:], row_item).to(dev) + 1
    coef = _coefficients(config_layers, layer_of, strength_of, dev, dtype)
    token = _next_token(base, lm_head, last, cap)
    embed = base.embed_tokens
    for step in range(max_new_tokens):
        out[active, step] = token.to(torch.int32).cpu()
        if not force_length:
            done, in_answer, count = _stop_rule(flags[token].long(), in_answer, count, answer_tokens)
            if bool(done.any()):
                keep = torch.nonzero(~done).flatten()
                if keep.numel() == 0:
                    break
                active, token, in_answer, count = active[keep.cpu()], token[keep], in_answer[keep], count[keep]
                mask2d, next_pos = mask2d[keep], next_pos[keep]
                coef = {layer: c[keep] for layer, c in coef.items()}
                _keep_rows(dyn, keep)
        if step + 1 == max_new_tokens:
            break
        decoded.append(int(active.numel()))
        mask2d = torch.cat([mask2d, torch.ones_like(mask2d[:, :1])], dim=1)
        hidden = embed(token[:, None].to(_device(embed)))
        rope = _rotary(base, hidden, next_pos, layout)
        mask = _masks(base, hidden, mask2d, dyn, next_pos, keyword, layout)
        for index in range(n_layers):
            kind = _kind(layout, index)
            hidden = _layer(base, index, hidden, mask[kind], next_pos, rope[kind][0], rope[kind][1], dyn, keyword)
            if index in coef:
                vec = vectors[vector_rows[index]].to(device=hidden.device, dtype=hidden.dtype)
                hidden = hidden + coef[index].to(hidden.device)[:, None, None] * vec[None, None, :]
        token = _next_token(base, lm_head, hidden[:, -1], cap)
        next_pos = next_pos + 1
    return out, torch.tensor(decoded, dtype=torch.long)
