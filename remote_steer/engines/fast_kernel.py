"""The fast engine's in-trace kernels: what runs where the model is (locally or on a server).

These functions run inside one nnsight trace, after the model's own forward pass
over a group of prompts: they take that pass's per-layer residual stream and its
key/value cache and call the model's modules *ad hoc* (nnsight 0.8 runs a module
called inside a trace as an ordinary call) to compute the steered continuations.

This module is self-contained on purpose: it imports only torch and transformers,
which every NDIF server has, so ``nnsight.register`` can ship it by value with a
remote request (``Backend("simulated-remote")`` proves that in-process). Module
handles may be nnsight envoys or plain ``torch.nn.Module``\\ s: both are called the
same way. Attention is never reimplemented: the decoder layers, rotary embedding,
final norm and ``create_causal_mask`` are transformers' own.

What differs between architectures arrives as ``layout`` (plain data, from
``models.architectures.kernel_layout``): each layer's attention mask kind (full or
sliding-window), whether the rotary embedding differs per kind (Gemma 3), and the
final logit soft-cap (Gemma 2). ``layout=None`` is a plain causal decoder.
"""

from __future__ import annotations

import inspect

import torch


class ReadOnlyKV:
    """One layer's cached prefix keys/values, shared by the rows that continue the prefix.

    Transformers' attention calls ``cache.update(new_keys, new_values, layer_idx)`` and
    attends over what it returns. This returns prefix ⊕ new and stores nothing, so the
    prefix stays exactly as the prompt pass left it, for every configuration.
    """

    def __init__(self, keys, values):
        self.keys = keys
        self.values = values

    def update(self, key_states, value_states, *args, **kwargs):
        return torch.cat([self.keys, key_states], dim=-2), torch.cat([self.values, value_states], dim=-2)


def cache_keyword():
    """``cache`` (transformers ≥ 5.2x) or ``past_key_values`` (earlier releases)."""
    from transformers.masking_utils import create_causal_mask

    return "cache" if "cache" in inspect.signature(create_causal_mask).parameters else "past_key_values"


def output_cache(output):
    """The key/value cache a forward pass returned (``use_cache=True``)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


def cache_tensors(cache, prefix):
    """Per-layer (keys, values) of the first ``prefix`` columns: views, no copies."""
    keys = [layer.keys[..., :prefix, :] for layer in cache.layers]
    values = [layer.values[..., :prefix, :] for layer in cache.layers]
    return keys, values


def _device(module):
    for parameter in module.parameters():
        return parameter.device
    return torch.device("cpu")


def _take(tensor, index):
    return None if tensor is None else tensor.index_select(0, index.to(tensor.device))


def _mask(base, embeds, attention_mask, keys, values, position_ids, keyword):
    """Transformers' attention mask for queries ``embeds`` over prefix ⊕ themselves."""
    from transformers import DynamicCache
    from transformers.masking_utils import create_causal_mask

    sizing = None
    if keys:
        # only sizes the mask (prefix length); one layer's prefix is enough
        sizing = DynamicCache(ddp_cache_data=[(keys[0], values[0])])
    return create_causal_mask(
        config=base.config,
        inputs_embeds=embeds,
        attention_mask=attention_mask,
        position_ids=position_ids,
        **{keyword: sizing},
    )


_FULL = "full_attention"


def layer_kind(layout, index):
    """Layer ``index``'s attention mask kind (``full_attention`` without a layout)."""
    return _FULL if layout is None else layout["kinds"][index]


def masks(base, embeds, attention_mask, keys, values, position_ids, keyword, layout):
    """{kind: mask}: transformers' full (and, if any layer slides, sliding-window) mask."""
    out = {_FULL: _mask(base, embeds, attention_mask, keys, values, position_ids, keyword)}
    if layout is not None and layout["sliding"]:
        from transformers import DynamicCache
        from transformers.masking_utils import create_sliding_window_causal_mask

        sizing = DynamicCache(ddp_cache_data=[(keys[0], values[0])]) if keys else None
        out["sliding_attention"] = create_sliding_window_causal_mask(
            config=base.config,
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            **{keyword: sizing},
        )
    return out


def rotary(base, hidden, position_ids, layout):
    """{kind: (cos, sin)}: one rotary embedding, or one per attention kind (Gemma 3)."""
    kinds = sorted(set(layout["kinds"])) if layout is not None else [_FULL]
    if layout is not None and layout["rotary_per_kind"]:
        return {kind: base.rotary_emb(hidden, position_ids, kind) for kind in kinds}
    cos, sin = base.rotary_emb(hidden, position_ids)
    return {kind: (cos, sin) for kind in kinds}


def softcap(logits, cap):
    """cap · tanh(logits / cap) (Gemma's final logit soft-capping); unchanged without a cap."""
    return logits if cap is None else torch.tanh(logits / cap) * cap


def _run_layer(base, index, hidden, mask, position_ids, cos, sin, kv, keyword):  # noqa: PLR0913 - shipped kernel: tensors only (the server has no remote_steer)
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


def answer_diff(base, lm_head, last_hidden, tokens, cap=None):
    """logit[tokens[:, 0]] − logit[tokens[:, 1]] from last-layer hidden states [R, hidden].

    Final norm, then only the two answer rows of the output projection (soft-capped
    when the model caps its logits: ``cap``).
    """
    normed = base.norm(last_hidden.to(_device(base.norm))[:, None, :])[:, 0]
    weight = lm_head.weight
    normed = normed.to(weight.device)
    rows = weight.index_select(0, tokens.reshape(-1).to(weight.device)).reshape(tokens.shape[0], 2, -1)
    picked = torch.einsum("rh,rkh->rk", normed, rows)
    bias = getattr(lm_head, "bias", None)
    if bias is not None:
        picked = picked + bias[tokens.to(bias.device)]
    picked = softcap(picked, cap).float()
    return (picked[:, 0] - picked[:, 1]).cpu()


def sweep(  # noqa: PLR0913 - shipped kernel: tensors only (the server has no remote_steer)
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
    tokens,
    block_rows,
    layout=None,
):
    """Baseline [G] and steered [G, K] logit diffs of one group of prompts.

    ``resid[l]`` is the decoder-layer output of layer l over the window columns
    (``prefix`` onwards) of the group's prompt pass and ``cache`` that pass's cache.
    A configuration k (layer ``config_layers[k]``, strength ``config_strengths[k]``)
    restarts from ``resid[layer]`` plus ``strength × vectors[vector_rows[layer]]`` (or, when
    ``vector_rows`` is a list, ``vectors[vector_rows[k]]``: one vector per configuration) at the
    steered columns (``steer`` [G, C], 1 where steered) and runs the window through the
    layers above, attending to the cached prefix keys/values of each layer. Rows
    (item, configuration) enter at their own layer: a staircase, one pass up the
    stack per block of at most ``block_rows`` rows.
    """
    keyword = cache_keyword()
    n_layers = len(resid)
    groups = resid[0].shape[0]
    keys, values = cache_tensors(cache, prefix) if prefix > 0 else ([], [])
    window_pos = position_ids[:, prefix:]
    first = resid[0]
    cap = None if layout is None else layout["softcap"]
    rope = rotary(base, first, window_pos.to(first.device), layout)
    mask = masks(base, first, attention_mask, keys, values, window_pos, keyword, layout)
    baseline = answer_diff(base, lm_head, resid[-1][:, -1], tokens, cap)

    n_configs = len(config_layers)
    steered = torch.zeros(groups, n_configs, dtype=torch.float32)
    per_block = max(1, block_rows // groups)
    order = sorted(range(n_configs), key=lambda k: config_layers[k])
    for start in range(0, n_configs, per_block):
        block = order[start : start + per_block]
        joining = {}
        for k in block:
            joining.setdefault(int(config_layers[k]), []).append(k)
        hidden = None
        row_item = torch.empty(0, dtype=torch.long)
        row_config = torch.empty(0, dtype=torch.long)
        row_pos = row_mask = row_rope = None
        for layer in range(min(joining), n_layers):
            new = joining.get(layer, [])
            if new:
                # all items × the configurations steered at this layer
                items = torch.arange(groups).repeat(len(new))
                configs = torch.tensor(new, dtype=torch.long).repeat_interleave(groups)
                start_state = resid[layer]
                dev, dtype = start_state.device, start_state.dtype
                strength = torch.tensor([float(config_strengths[k]) for k in configs.tolist()])
                picks = torch.tensor(
                    [
                        int(vector_rows[k] if isinstance(vector_rows, list) else vector_rows[layer])
                        for k in configs.tolist()
                    ]
                )
                delta = strength.to(device=dev, dtype=dtype)[:, None] * vectors.index_select(
                    0, picks.to(vectors.device)
                ).to(device=dev, dtype=dtype)
                rows = _take(start_state, items) + delta[:, None, :] * _take(steer, items).to(dev, dtype)[:, :, None]
                hidden = rows if hidden is None else torch.cat([hidden.to(dev), rows])
                row_item = torch.cat([row_item, items])
                row_config = torch.cat([row_config, configs])
                row_pos = _take(window_pos, row_item)
                row_mask = {kind: _take(m, row_item) for kind, m in mask.items()}
                row_rope = {kind: (_take(c, row_item), _take(s, row_item)) for kind, (c, s) in rope.items()}
            if layer + 1 == n_layers or hidden is None:
                continue
            above = layer + 1
            kind = layer_kind(layout, above)
            kv = ReadOnlyKV(_take(keys[above], row_item), _take(values[above], row_item)) if keys else None
            cos, sin = row_rope[kind]
            hidden = _run_layer(base, above, hidden, row_mask[kind], row_pos, cos, sin, kv, keyword)
        diffs = answer_diff(base, lm_head, hidden[:, -1], _take(tokens, row_item), cap)
        steered[row_item, row_config] = diffs
    return baseline, steered


def masked_norm(hidden, mask):
    """Σ over the positions where ``mask`` [B, T] is 1 of the L2 norm of ``hidden`` [B, T, H] (a float)."""
    norms = hidden.float().norm(dim=-1)
    return (norms * mask.to(norms.device, norms.dtype)).sum().cpu()


def answer_activations(  # noqa: PLR0913 - shipped kernel: tensors only (the server has no remote_steer)
    base, cache, answer_ids, rows, position_ids, attention_mask, signs, layout=None, basis=None
):
    """Signed sum over rows of the decoder-layer output at one appended token, every layer.

    Row r appends token ``answer_ids[r]`` to prompt ``rows[r]`` of the prompt pass whose
    cache is ``cache``; it runs through every layer against that prompt's cached
    keys/values. Returns [layers, hidden] float32: Σ_r signs[r] · output_l(r). With
    ``signs`` a [V, rows] weight matrix, [layers, V, hidden]: V weighted sums at once
    (bootstrap and shuffled-label vectors), reduced here so only V × hidden per layer leaves.

    ``basis`` (decodability by depth): also return every row's output at every layer,
    ``(sums, reads)`` with reads [rows, layers, k] float32: projected onto ``basis``
    [hidden, k], or the whole residual when ``basis`` has no elements.
    """
    keyword = cache_keyword()
    keys = [_take(layer.keys, rows) for layer in cache.layers]
    values = [_take(layer.values, rows) for layer in cache.layers]
    embed = base.embed_tokens
    hidden = embed(answer_ids.to(_device(embed)))
    position_ids = position_ids.to(hidden.device)
    rope = rotary(base, hidden, position_ids, layout)
    mask = masks(base, hidden, attention_mask.to(hidden.device), keys, values, position_ids, keyword, layout)
    sums = []
    reads = []
    for index in range(len(keys)):
        kind = layer_kind(layout, index)
        cos, sin = rope[kind]
        kv = ReadOnlyKV(keys[index], values[index])
        hidden = _run_layer(base, index, hidden, mask[kind], position_ids, cos, sin, kv, keyword)
        answer = hidden[:, -1, :].float()
        weights = signs.to(answer.device, answer.dtype)
        sums.append((weights @ answer).cpu() if weights.dim() == 2 else (weights[:, None] * answer).sum(0).cpu())
        if basis is not None:
            reads.append((answer if basis.numel() == 0 else answer @ basis.to(answer.device)).cpu())
    if basis is not None:
        return torch.stack(sums), torch.stack(reads, dim=1)
    return torch.stack(sums)


def lens(base, lm_head, states, tokens, cap=None):
    """The logit lens [G, layers]: logit[tokens[:, 0]] − logit[tokens[:, 1]] read from each
    layer's residual ``states[l]`` [G, hidden] through the final norm and output projection
    (soft-capped with ``cap``), as the model reads its last layer (``answer_diff``)."""
    return torch.stack([answer_diff(base, lm_head, state, tokens, cap) for state in states], dim=1)
