"""torch.nn.MultiheadAttention's inputs and masks, checked and turned into what dnorm's functions take.

torch's boolean ``attn_mask`` and ``key_padding_mask`` are True where a pair
is left out, the opposite of dnorm's (and of ``scaled_dot_product_attention``'s)
True = may attend; floating masks are added, as in dnorm. In self-attention a
padding position is hidden as a query too (spec DEF-PADDING-QUERIES).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

import dnorm
from dnorm import masks

from .. import _validate as check


def checked_sizes(
    embed_dim: int, num_heads: int, num_kv_heads: int | None, kdim: int | None, vdim: int | None, /
) -> tuple[int, int, int]:
    """``(num_kv_heads, kdim, vdim)`` with their defaults, after checking every size against the others."""
    check.positive_int(embed_dim, "embed_dim")
    check.positive_int(num_heads, "num_heads")
    if embed_dim % num_heads:
        msg = f"embed_dim ({embed_dim}) must be a multiple of num_heads ({num_heads})"
        raise ValueError(msg)
    kv_heads = num_heads if num_kv_heads is None else check.positive_int(num_kv_heads, "num_kv_heads")
    if num_heads % kv_heads:
        msg = f"num_heads ({num_heads}) must be a multiple of num_kv_heads ({kv_heads})"
        raise ValueError(msg)
    kdim = embed_dim if kdim is None else check.positive_int(kdim, "kdim")
    vdim = embed_dim if vdim is None else check.positive_int(vdim, "vdim")
    return kv_heads, kdim, vdim


def checked_inputs(
    query: Tensor, key: Tensor, value: Tensor, widths: tuple[int, int, int], /, *, batch_first: bool
) -> bool:
    """Whether the inputs are batched; raise for inputs that do not fit the layer's ``widths`` or each other."""
    for name, x, width in zip(("query", "key", "value"), (query, key, value), widths, strict=True):
        if not isinstance(x, Tensor) or not x.is_floating_point():
            got = x.dtype if isinstance(x, Tensor) else type(x).__name__
            hint = " (the second and third arguments are key and value, as in torch)" if name != "query" else ""
            msg = f"{name} must be a floating torch.Tensor{hint}, got {got}"
            raise TypeError(msg)
        if x.ndim not in (2, 3) or x.ndim != query.ndim:
            msg = f"{name} must be 3-D (batched) or 2-D (unbatched) like query ({query.ndim}-D), got {x.ndim}-D"
            raise ValueError(msg)
        if x.shape[-1] != width:
            msg = f"{name} must have {width} features in its last dimension, got shape {tuple(x.shape)}"
            raise ValueError(msg)
    batched = query.ndim == 3
    seq = 1 if batched and batch_first else 0
    if key.shape[seq] != value.shape[seq]:
        msg = f"key and value must have the same length, got shapes {tuple(key.shape)} and {tuple(value.shape)}"
        raise ValueError(msg)
    if batched:
        axis = 0 if batch_first else 1
        if not query.shape[axis] == key.shape[axis] == value.shape[axis]:
            shapes = ", ".join(str(tuple(x.shape)) for x in (query, key, value))
            msg = f"query, key and value must have the same batch size (dimension {axis}), got shapes {shapes}"
            raise ValueError(msg)
    return batched


def merged_mask(
    attn_mask: Tensor | None,
    key_padding_mask: Tensor | None,
    /,
    *,
    self_attention: bool,
    batched: bool,
    sizes: tuple[int, int, int, int],
    dtype: torch.dtype,
) -> Tensor | None:
    """torch's masks as one dnorm mask, broadcastable to ``sizes`` ``(N, H, L, S)``: True = may attend, floats added."""
    batch, num_heads, length, n_keys = sizes
    parts: list[Tensor] = []
    padding = None
    if attn_mask is not None:
        _check_mask_dtype(attn_mask, "attn_mask")
        heads = batch * num_heads if batched else num_heads
        if tuple(attn_mask.shape) == (heads, length, n_keys):
            attn_mask = attn_mask.reshape(batch, num_heads, length, n_keys)
        elif tuple(attn_mask.shape) != (length, n_keys):
            what = "N * num_heads" if batched else "num_heads"
            msg = (
                f"attn_mask must have shape (L, S) = ({length}, {n_keys}) or ({what}, L, S) = "
                f"({heads}, {length}, {n_keys}), got {tuple(attn_mask.shape)}"
            )
            raise ValueError(msg)
        parts.append(~attn_mask if attn_mask.dtype == torch.bool else attn_mask.to(dtype))
    if key_padding_mask is not None:
        _check_mask_dtype(key_padding_mask, "key_padding_mask")
        expected = (batch, n_keys) if batched else (n_keys,)
        if tuple(key_padding_mask.shape) != expected:
            what = "(N, S)" if batched else "(S,) unbatched"
            msg = f"key_padding_mask must have shape {what} = {expected}, got {tuple(key_padding_mask.shape)}"
            raise ValueError(msg)
        per_key = key_padding_mask.reshape(batch, 1, 1, n_keys)
        parts.append(~per_key if per_key.dtype == torch.bool else per_key.to(dtype))
        padding = per_key if per_key.dtype == torch.bool else ~masks.allowed(per_key)  # a float's -inf: padding
    merged = masks.combine(*parts, dtype=dtype)
    if self_attention and padding is not None and merged is not None:  # the padding positions are not queries either
        merged = masks.hide_queries(
            torch.broadcast_to(merged, (*merged.shape[:-2], length, n_keys)), padding[..., 0, :]
        )
    return merged


def weights_and_output(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, /, *, causal: bool, dropout: float, options: dict[str, Any]
) -> tuple[Tensor, Tensor]:
    """The weights of the scheme (after dropout, as torch returns them) and the output, for ``need_weights``.

    ``q`` is ``(N, H, L, D)``, ``k`` and ``v`` ``(N, H_kv, S, D)``; the
    weights are ``(N, H, L, S)``, materialized.
    """
    kv_heads = k.shape[1]
    groups = q.shape[1] // kv_heads
    scores = q.unflatten(1, (kv_heads, groups)) @ k.unsqueeze(2).transpose(-1, -2)
    scores = scores.flatten(1, 2) * (1.0 / math.sqrt(q.shape[-1]))
    weights = dnorm.normalize(scores, mask=mask, causal="top-left" if causal else False, **options)
    if dropout:
        weights = torch.nn.functional.dropout(weights, p=dropout)
    return weights, (weights.unflatten(1, (kv_heads, groups)) @ v.unsqueeze(2)).flatten(1, 2)


def _check_mask_dtype(mask: object, name: str) -> None:
    """A mask is a boolean or floating tensor."""
    if not isinstance(mask, Tensor) or not (mask.dtype == torch.bool or mask.is_floating_point()):
        got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
        msg = f"{name} must be a boolean (True = leave out) or floating (added) torch.Tensor, got {got}"
        raise TypeError(msg)
