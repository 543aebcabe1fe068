"""Read the attention of a few query tokens on chosen layers, without every layer's [L, L].

``output_attentions=True`` makes every layer materialise its full [heads, L, L] weights,
and with the fused kernels (sdpa) it is not available at all. Decoding-free rerankers (ICR)
need far less: the rows of the query tokens appended after a long prefix, on the layers whose
heads they score. This module gets them through transformers' attention-function interface:
a function registered once under :data:`READ_IMPLEMENTATION` receives each layer's query
and key states after RoPE (and any norm the architecture applies), the cache's keys and the
model's own 4-D mask, so no architecture-specific projection code is repeated here. It
computes the layer's output with sdpa and, only where a :class:`Reader` passed through the
forward's keyword arguments asks for that layer, the softmax of the query rows. After the
deepest layer asked for, it stops the forward pass (depth truncation): later layers cannot
change what was read. The prefix pass before it runs with the model's own attention and is
stopped after the same layer by a forward hook, so its KV cache holds exactly the layers the
query pass needs.

The model's ``config._attn_implementation`` is switched to the reading function for the
duration of one call and restored after it (backends are called from one thread at a time).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.backends.base import QueryAttention
from harness.errors import HarnessError

if TYPE_CHECKING:
    import torch

READ_IMPLEMENTATION = "harness_query_read"


class _Stop(Exception):
    """Raised after the deepest layer a reader needs: the rest of the pass is not computed."""


@dataclass
class Reader:
    """Which layers to read, where the query rows are, and what was read.

    ``rows``: bool [B, T], True for the query tokens whose attention is averaged (padding and
    anything else excluded); ``keys``: how many leading keys (the prefix) are kept.
    """

    layers: tuple[int, ...]
    rows: torch.Tensor | None
    keys: int
    stop_after: int | None
    read: dict[int, torch.Tensor] = field(default_factory=dict)
    peak_bytes: int = 0


def _read_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    harness_reader: Reader | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """sdpa for the layer's output; the query rows' softmax for the layers a reader asks for."""
    import torch
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    reader = harness_reader
    if reader is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
        )
    layer = module.layer_idx
    if reader.rows is not None and layer in reader.layers:
        if key.shape[-2] != reader.keys + query.shape[-2]:
            raise HarnessError(
                f"layer {layer} does not attend to the whole prefix (a sliding-window layer?); "
                "score with full-attention layers only (heads)"
            )
        keys = repeat_kv(key, query.shape[1] // key.shape[1])
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        logits = torch.matmul(query.float(), keys.float().transpose(2, 3)) * scale
        if attention_mask is not None:
            logits = logits + attention_mask[:, :, :, : keys.shape[-2]].float()
        weights = torch.softmax(logits, dim=-1)  # [B, H, T, K]
        reader.peak_bytes = max(reader.peak_bytes, weights.numel() * weights.element_size())
        rows = reader.rows.to(weights.dtype)[:, None, :, None]  # [B, 1, T, 1]
        mean = (weights * rows).sum(dim=2) / rows.sum(dim=2)  # [B, H, K]
        reader.read[layer] = mean[..., : reader.keys]
    if reader.stop_after is not None and layer >= reader.stop_after:
        raise _Stop  # nothing after this layer can change what was read
    return sdpa_attention_forward(
        module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
    )


def _register() -> None:
    """Register the reading function and the eager (always materialised) mask under one name;
    idempotent."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import eager_mask

    AttentionInterface.register(READ_IMPLEMENTATION, _read_attention)
    AttentionMaskInterface.register(READ_IMPLEMENTATION, eager_mask)


@contextmanager
def _reading(model: Any) -> Iterator[None]:
    _register()
    config = model.config
    before = config._attn_implementation
    config._attn_implementation = READ_IMPLEMENTATION
    try:
        yield
    finally:
        config._attn_implementation = before


def check_readable(model: Any) -> None:
    """HarnessError for models whose attention is not a plain softmax of scaled q·k + mask
    (logit soft-capping, attention sinks): the reading function would not reproduce it."""
    config = model.config
    for name in ("attn_logit_softcapping",):
        if getattr(config, name, None):
            raise HarnessError(
                f"reading attention weights does not support {name} (model "
                f"{getattr(config, 'model_type', '?')!r})"
            )
    for module in model.modules():
        if hasattr(module, "sinks"):
            raise HarnessError("reading attention weights does not support attention sinks")


def query_attention(
    model: Any,
    decoder: Any,
    prefixes: np.ndarray,
    queries: Sequence[Sequence[int]],
    layers: Sequence[int],
    pad_id: int,
) -> QueryAttention:
    """See :meth:`harness.backends.base.Backend.query_attention`.

    Two model calls: the P prefixes (one batch of equal-length rows) stopped after the deepest
    layer asked for; then the P x Q query rows (left-aligned, padding at the end, which causal
    attention keeps every real token from seeing) on the prefixes' KV cache, each prefix's
    cache repeated for its Q queries.
    """
    import torch
    from transformers import DynamicCache

    wanted = tuple(sorted(set(int(layer) for layer in layers)))
    total = model.config.num_hidden_layers
    if not wanted or wanted[0] < 0 or wanted[-1] >= total:
        raise HarnessError(f"layers to read must be in 0..{total - 1}, got {list(layers)}")
    if not queries or any(len(q) == 0 for q in queries):
        raise HarnessError("every query must have at least one token")
    deepest = wanted[-1]
    stop = deepest if deepest < total - 1 else None
    device = next(model.parameters()).device
    ids = torch.as_tensor(np.asarray(prefixes), dtype=torch.long, device=device)
    p, s = ids.shape
    q, width = len(queries), max(len(x) for x in queries)
    with torch.inference_mode():
        # The prefixes run with the model's own attention (no weights read), stopped by a
        # hook after the deepest layer needed; the query pass reads.
        cache = DynamicCache(config=model.config)
        positions = torch.arange(s, device=device).expand(p, s)
        with _stopping_after(decoder, stop):
            _run(decoder, input_ids=ids, position_ids=positions, cache=cache)
        # (a DynamicCache's layers are DynamicLayers, with keys and values once filled)
        layers_cached: list[Any] = [
            (layer.keys, layer.values)  # type: ignore[union-attr]
            for layer in cache.layers[: deepest + 1]
        ]
        repeated = [
            (k.repeat_interleave(q, dim=0), v.repeat_interleave(q, dim=0)) for k, v in layers_cached
        ]
        query_cache = DynamicCache(ddp_cache_data=repeated, config=model.config)
        tokens = torch.full((q, width), pad_id, dtype=torch.long, device=device)
        rows = torch.zeros((q, width), dtype=torch.bool, device=device)
        for i, query in enumerate(queries):
            tokens[i, : len(query)] = torch.as_tensor(list(query), device=device)
            rows[i, : len(query)] = True
        tokens, rows = tokens.repeat(p, 1), rows.repeat(p, 1)  # row p*Q + i: prefix p, query i
        mask = torch.cat([torch.ones(p * q, s, dtype=torch.long, device=device), rows.long()], 1)
        reader = Reader(wanted, rows, s, stop)
        with _reading(model):
            _run(
                decoder,
                input_ids=tokens,
                attention_mask=mask,
                position_ids=(s + torch.arange(width, device=device)).expand(p * q, width),
                cache=query_cache,
                harness_reader=reader,
            )
        stacked = torch.stack([reader.read[layer] for layer in wanted], dim=1)  # [PQ, L', H, S]
    heads = stacked.shape[2]
    weights = stacked.reshape(p, q, len(wanted), heads, s).float().cpu().numpy()
    full = total * heads * p * q * (s + width) ** 2 * 4  # output_attentions, one pass per query
    return QueryAttention(weights, deepest + 1, 2, reader.peak_bytes, full)


@contextmanager
def _stopping_after(decoder: Any, layer: int | None) -> Iterator[None]:
    """Stop a forward pass once decoder layer ``layer`` has run (its KV cache is filled)."""
    if layer is None:
        yield
        return

    def stop(*_: Any) -> None:
        raise _Stop

    handle = decoder.layers[layer].register_forward_hook(stop)
    try:
        yield
    finally:
        handle.remove()


def _run(decoder: Any, **inputs: Any) -> None:
    with suppress(_Stop):
        decoder(use_cache=True, **inputs)
