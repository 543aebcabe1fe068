"""A KV cache that reserves room for the tokens still to come, so decoding never copies it.

transformers' ``DynamicLayer`` grows by ``torch.cat`` at every step: the whole cache is
copied once per generated token (for 4 rows of ~2,000 tokens on SmolLM2-135M that is ~370 MB
per step, more than the weights the step reads). A :class:`ReservedLayer` keeps one buffer
per layer with room for ``room`` more positions than it was filled with; an update writes the
new keys and values into the next free columns and hands attention a view of the filled part.
The view has the same shape and values as the concatenated tensor, so attention computes the
same numbers; only its stride differs.

Imports transformers at module level: the backend imports this module inside its functions.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class ReservedLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys/values live in a buffer with ``room`` free positions;
    an update that would overflow it reallocates once (room again), as a growing list does."""

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room
        self._key_buffer: torch.Tensor | None = None
        self._value_buffer: torch.Tensor | None = None
        self._length = 0

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start, end = self._length, self._length + key_states.shape[-2]
        if self._key_buffer is None or end > self._key_buffer.shape[-2]:
            self._key_buffer = self._grown(self._key_buffer, key_states, end)
            self._value_buffer = self._grown(self._value_buffer, value_states, end)
        assert self._value_buffer is not None
        self._key_buffer[..., start:end, :].copy_(key_states)
        self._value_buffer[..., start:end, :].copy_(value_states)
        self._length = end
        self.keys = self._key_buffer[..., :end, :]
        self.values = self._value_buffer[..., :end, :]
        return self.keys, self.values

    def _grown(
        self, buffer: torch.Tensor | None, states: torch.Tensor, needed: int
    ) -> torch.Tensor:
        shape = (*states.shape[:-2], needed + self.room, states.shape[-1])
        grown = torch.empty(shape, dtype=states.dtype, device=states.device)
        if buffer is not None:
            grown[..., : self._length, :].copy_(buffer[..., : self._length, :])
        return grown

    def get_seq_length(self) -> int:
        return self._length

    def reset(self) -> None:
        self._key_buffer = self._value_buffer = None
        self._length = 0
        super().reset()

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("a reserved cache is never cropped")

    def batch_repeat_interleave(self, repeats: int) -> None:
        raise NotImplementedError("a reserved cache is never re-batched")

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        raise NotImplementedError("a reserved cache is never re-batched")


def reserved_cache(
    config: Any, room: int, layers: list[tuple[torch.Tensor, torch.Tensor]] | None = None
) -> DynamicCache:
    """A ``DynamicCache`` with ``room`` free positions per layer beyond ``layers`` (keys,
    values per layer, e.g. a shared prefix; broadcast views are fine: they are copied into the
    buffers). Layers the model does not run as plain full attention (sliding windows, linear
    attention) keep transformers' own layer type."""
    cache = DynamicCache(config=config)
    if not cache.layers:  # a config that names no layer types: one plain layer per block
        count = config.get_text_config(decoder=True).num_hidden_layers
        cache = DynamicCache(ddp_cache_data=[(None, None)] * count)
    for index, layer in enumerate(cache.layers):
        if type(layer) is DynamicLayer:
            cache.layers[index] = ReservedLayer(room)
    if layers is not None:
        for layer, (keys, values) in zip(cache.layers, layers, strict=True):
            layer.update(keys, values)  # type: ignore[union-attr]  # all DynamicLayer-like here
    return cache
