"""transformers cache classes that keep dnorm's decoding state beside the keys and values (imports transformers)."""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import (
    DYNAMIC_LAYER_TYPE_MAPPING,
    DynamicLayer,
    DynamicSlidingWindowLayer,
    get_layer_types_and_kwargs,
)

from dnorm import DecodeState

#: How many earlier calls' states a layer keeps for ``crop`` (each is two floats per key and query head).
KEPT = 8
#: The attention keyword arguments carry the cache layer under this name (set by the layer's ``update``).
LAYER = "dnorm_cache_layer"


class DecodingLayer(DynamicLayer):
    """A ``DynamicLayer`` that also holds ``state``, the :class:`dnorm.DecodeState` of its keys, or None.

    ``update`` hands the layer to the attention function through the
    attention keyword arguments that the model passes to it (under
    :data:`LAYER`); the attention function
    reads and replaces ``state``. ``ends`` are the key lengths at which the
    last :data:`KEPT` calls ended, with the states then, for ``crop``.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.state: DecodeState | None = None
        self.ends: dict[int, DecodeState | None] = {}

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        out = super().update(key_states, value_states, *args, **kwargs)
        for extra in (*args, *kwargs.values()):
            if isinstance(extra, dict):  # the model's attention kwargs (and cache kwargs, which ignore it)
                extra[LAYER] = self
        return out

    def set_state(self, state: DecodeState | None) -> None:
        """Keep the state after a call, and remember it for a later ``crop`` back to this length."""
        self.state = state
        self.ends[self.get_seq_length()] = state
        for old in sorted(self.ends)[:-KEPT]:
            del self.ends[old]

    def reset(self) -> None:
        super().reset()
        self.state, self.ends = None, {}

    def crop(self, tokens_to_remove: int) -> None:
        length = self.get_seq_length() + min(0, tokens_to_remove)
        if tokens_to_remove < 0 and self.is_initialized and length not in self.ends:
            msg = (
                f"cannot crop the cache to {length} positions: dnorm's decoding state is kept at the ends of "
                f"earlier calls only ({sorted(self.ends)}), not inside one (as assisted generation would need)"
            )
            raise ValueError(msg)
        super().crop(tokens_to_remove)
        if tokens_to_remove < 0 and self.is_initialized:
            self.state = self.ends[length]
            self.ends = {n: s for n, s in self.ends.items() if n <= length}

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        super().reorder_cache(beam_idx)
        self._select(lambda x: x.index_select(0, beam_idx.to(x.device)))

    def batch_repeat_interleave(self, repeats: int) -> None:
        super().batch_repeat_interleave(repeats)
        self._select(lambda x: x.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        super().batch_select_indices(indices)
        self._select(lambda x: x[indices, ...])

    def _select(self, pick: Any) -> None:
        """Apply a batch selection to the state and to every remembered one."""

        def apply(state: DecodeState | None) -> DecodeState | None:
            return None if state is None else DecodeState(pick(state.max), pick(state.sum))

        self.state = apply(self.state)
        self.ends = {n: apply(s) for n, s in self.ends.items()}


class SlidingDecodingLayer(DecodingLayer, DynamicSlidingWindowLayer):
    """A ``DynamicSlidingWindowLayer`` that keeps dnorm's state: the keys and the state keep the last window only.

    transformers keeps the last ``sliding_window - 1`` keys (all that a later
    query may attend) and passes the attention function those and the new
    ones, with a mask of the same width. A dropped key is outside every later
    query's window, so its column statistic is never read again: the state
    is cropped to the kept keys after each call, and decoding is exact.
    """

    def set_state(self, state: DecodeState | None) -> None:
        if state is not None and self.keys is not None:
            start = state.max.shape[-1] - self.keys.shape[-2]
            state = DecodeState(state.max[..., start:], state.sum[..., start:])
        super().set_state(state)

    def activate_past_recording(self, **kwargs: Any) -> None:
        msg = "dnorm's sliding-window cache layers keep no past beyond the window (as assisted generation would need)"
        raise NotImplementedError(msg)


#: transformers' dynamic layer classes and the dnorm layers that replace them in a cache built from a config.
LAYERS: dict[type, type[DecodingLayer]] = {DynamicLayer: DecodingLayer, DynamicSlidingWindowLayer: SlidingDecodingLayer}


class DecodingCache(DynamicCache):
    """A ``DynamicCache`` of :class:`DecodingLayer`: see :func:`dnorm.integrations.transformers.cache`."""

    def __init__(self, config: Any = None) -> None:
        if config is None:
            super(DynamicCache, self).__init__(layer_class_to_replicate=DecodingLayer)
            return
        layers: list[Any] = []  # transformers' annotation of Cache(layers=) varies between versions
        layer_types, layer_kwargs = get_layer_types_and_kwargs(config.get_text_config(decoder=True))
        for layer_type, kwargs in zip(layer_types, layer_kwargs, strict=True):
            layer_class = LAYERS.get(DYNAMIC_LAYER_TYPE_MAPPING.get(layer_type, type(None)))
            if layer_class is None:
                msg = f"dnorm's cache has no decoding state for {layer_type!r} layers (full and sliding attention only)"
                raise ValueError(msg)
            layers.append(layer_class(**kwargs))
        super(DynamicCache, self).__init__(layers=layers)
