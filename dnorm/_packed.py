"""Packed variable-length batches: sequences concatenated along the query axis, each normalized on its own.

:func:`varlen_attention` takes FlashAttention's ``cu_seqlens`` convention and
runs :func:`dnorm.attention` on each sequence's slice of the packed arrays,
so every sequence has its own column statistics and no ``(total, total)``
scores exist (spec DEF-PACKED-BATCH, THM-PACKED-EQUALS-SEPARATE). torch's
nested jagged tensors go through the same path (:func:`nested_attention`):
their values are the packed arrays and their offsets the ``cu_seqlens``.
"""

from __future__ import annotations

import itertools
import operator
from typing import Any

from . import _random as random
from . import _routing as routing
from . import _validate as check
from ._docs import shared_docstring

Array = Any


@shared_docstring
def varlen_attention(
    query: Array,
    key: Array,
    value: Array,
    cu_seqlens_q: object,
    /,
    scheme: str = "doubly",
    *,
    cu_seqlens_k: object = None,
    causal: bool | str = False,
    scale: float | None = None,
    alpha: float | Array = 0.5,
    n_iter: int = 3,
    block_size: int | None = None,
    softcap: float | None = None,
    dropout_p: float = 0.0,
    dropout_key: object = None,
    kernel: str = "auto",
    layout: str = "htd",
    sink: float | Array | None = None,
    length_scale: float | Array | None = None,
    bias: float | Array | None = None,
    attend_current: bool = False,
) -> Array:
    """Attention over a packed batch of sequences of different lengths (spec DEF-PACKED-BATCH).

    Sequence ``b`` holds the queries ``cu_seqlens_q[b]:cu_seqlens_q[b + 1]``
    of the packed axis of ``query`` (axis -2, or axis -3 with
    ``layout="thd"``) and the keys and values
    ``cu_seqlens_k[b]:cu_seqlens_k[b + 1]``. Each is normalized on its own,
    as if it were passed to :func:`attention` alone (spec
    THM-PACKED-EQUALS-SEPARATE): its own column statistics, no mass from
    another sequence's queries, and no work or memory for the pairs of two
    sequences, the padding of a padded batch included.

    {schemes}

    Parameters
    ----------
    query : array of shape (..., total_q, D), or (..., total_q, Hq, D) with ``layout="thd"``
    key : array of shape (..., total_k, D), or (..., total_k, H, D)
    value : array of shape (..., total_k, Dv), or (..., total_k, H, Dv)
        The sequences concatenated along axis -2 (``layout="htd"``, as
        :func:`attention` takes a sequence: the heads before it) or, as
        FlashAttention's ``flash_attn_varlen_func`` takes them, along axis
        -3 with the heads after it (``layout="thd"``); the leading
        dimensions (the heads, grouped-query heads included) as in
        :func:`attention`.
    cu_seqlens_q : sequence of int or 1-D integer array, shape (B + 1,)
        Offsets of the sequences' queries: ``0``, then the cumulative lengths,
        ending at ``total_q``. They decide the blocks, so they must be
        concrete: Python integers or an array whose values can be read (not a
        traced JAX array; under ``jax.jit`` pass a tuple). Reading a torch
        tensor synchronizes with its device.
    cu_seqlens_k : optional
        The same for the keys and values; defaults to ``cu_seqlens_q``.
    {scheme_param}
    {causal_param}
        It applies within each sequence.
    scale, alpha, n_iter, block_size, softcap, dropout_p, dropout_key, kernel
        As in :func:`attention`, for every sequence. Each sequence draws its
        own dropout seed.
    sink, length_scale, bias, attend_current
        As in :func:`attention`, for every sequence: ``n_i`` counts the keys
        of query ``i``'s own sequence, and every query of a sequence sees its
        sink.
    layout : {"htd", "thd"}, default "htd"
        Where the packed axis is: ``"htd"``, axis -2 (``(..., total, D)``,
        heads before it); ``"thd"``, axis -3 (``(..., total, heads, D)``,
        FlashAttention's ``(total, nheads, headdim)``). The output has the
        layout of the inputs.

    Returns
    -------
    array of shape (..., total_q, Dv), or (..., total_q, Hq, Dv) with ``layout="thd"``
        The sequences' outputs, packed as the queries. A sequence without
        keys gets zero rows; one without queries, none.

    {raises}

    See Also
    --------
    attention : one sequence, or a padded batch with a mask.

    Examples
    --------
    >>> import numpy as np, dnorm
    >>> rng = np.random.default_rng(0)
    >>> q, k, v = (rng.normal(size=(2, 7, 4)) for _ in range(3))  # 2 heads, sequences of 3 and 4
    >>> out = dnorm.varlen_attention(q, k, v, [0, 3, 7])
    >>> bool(np.allclose(out[:, 3:], dnorm.attention(q[:, 3:], k[:, 3:], v[:, 3:])))
    True

    FlashAttention's layout, ``(total, heads, head_dim)``:

    >>> packed = np.swapaxes(q, 0, 1)  # (7, 2, 4)
    >>> thd = dnorm.varlen_attention(packed, np.swapaxes(k, 0, 1), np.swapaxes(v, 0, 1), [0, 3, 7], layout="thd")
    >>> bool(np.allclose(np.swapaxes(thd, 0, 1), out))
    True
    """
    asked = check.Asked(
        scheme=scheme, causal=causal, scale=scale, n_iter=n_iter, block_size=block_size, softcap=softcap,
        dropout_p=dropout_p, kernel=kernel, sink=sink, length_scale=length_scale, bias=bias,
        attend_current=attend_current,
    )  # fmt: skip
    per_head = check.per_head_of(alpha, asked)
    xp = check.namespace(query=query, key=key, value=value, **per_head.arrays())
    thd = check.layout(layout) == "thd"
    if thd:  # (..., total, H, D): the packed axis moves to -2, and back at the end
        query, key, value = (heads_first(x, n, xp=xp) for x, n in ((query, "query"), (key, "key"), (value, "value")))
    lead = check.qkv(query, key, value, xp=xp)[0]  # of the output: grouped heads count as query heads
    starts_q = offsets(cu_seqlens_q, query.shape[-2], "cu_seqlens_q")
    starts_k = starts_q if cu_seqlens_k is None else offsets(cu_seqlens_k, key.shape[-2], "cu_seqlens_k")
    if len(starts_k) != len(starts_q):
        msg = (
            f"cu_seqlens_q and cu_seqlens_k must describe as many sequences, got {len(starts_q) - 1} "
            f"and {len(starts_k) - 1}"
        )
        raise ValueError(msg)
    n = len(starts_q) - 1
    keys = random.keys(dropout_key, n, xp=xp) if dropout_p else [dropout_key] * n
    sequences = []
    for b in range(n):
        q0, q1, k0, k1 = starts_q[b], starts_q[b + 1], starts_k[b], starts_k[b + 1]
        request, seed = None, None
        if q1 > q0 and k1 > k0:
            q, k, v = query[..., q0:q1, :], key[..., k0:k1, :], value[..., k0:k1, :]
            request = check.attention_request(q, k, v, None, alpha, asked, xp=xp)
            seed = random.seed(keys[b], query, xp=xp) if request.dropout_p > 0 else None
        sequences.append((q0, q1, k0, k1, request, seed))
    out = routing.packed(query, key, value, per_head, sequences, lead, xp=xp)
    return xp.permute_dims(out, _swap_last_but_one(out.ndim)) if thd else out


def nested_attention(query: Any, key: Any, value: Any, /, scheme: str, **options: Any) -> Any:
    """:func:`varlen_attention` on torch nested jagged tensors of shape ``(B, ..., j, D)`` (ragged axis -2)."""
    import torch

    for name, x in (("query", query), ("key", key), ("value", value)):
        if not (isinstance(x, torch.Tensor) and x.is_nested and x.layout == torch.jagged):
            msg = f"with a nested query, {name} must be a nested tensor of layout torch.jagged too, got {type(x)}"
            raise TypeError(msg)
        if getattr(x, "_ragged_idx", None) != x.dim() - 2:
            msg = (
                f"{name} must be ragged along axis -2 (B, ..., j, D), as torch's scaled_dot_product_attention "
                f"takes nested tensors (transpose (B, j, H, D) to (B, H, j, D)); got shape {tuple(x.shape)}"
            )
            raise ValueError(msg)
    if "mask" in options:
        msg = "nested tensors take no mask: their sequences are already of their own lengths"
        raise TypeError(msg)
    offsets_q, offsets_k = query.offsets(), key.offsets()
    out = varlen_attention(
        query.values(),
        key.values(),
        value.values(),
        offsets_q.tolist(),
        scheme,
        cu_seqlens_k=offsets_k.tolist(),
        **options,
    )
    packed = torch.movedim(out, -2, 0)  # (total, ..., Dv): the jagged layout's values
    return torch.movedim(torch.nested.nested_tensor_from_jagged(packed, offsets_q), 1, -2)


def offsets(value: object, total: int, name: str, /) -> list[int]:
    """``cu_seqlens`` as Python integers: non-decreasing from 0 to ``total``."""
    try:
        listed = value.tolist() if hasattr(value, "tolist") else list(value)  # type: ignore[call-overload]
        starts = [operator.index(x) for x in listed]
    except Exception as error:  # a traced JAX array, floats, or not a sequence
        msg = (
            f"{name} must be concrete integer offsets (a sequence of int or an integer array whose values can be "
            f"read, not a traced array), got {type(value).__name__}"
        )
        raise TypeError(msg) from error
    ok = len(starts) >= 2 and starts[0] == 0 and starts[-1] == total
    if not ok or any(b < a for a, b in itertools.pairwise(starts)):
        msg = (
            f"{name} must rise from 0 to the packed length {total} without decreasing, got {starts}; the packed "
            "length is axis -2, (..., total, D): for FlashAttention's (total, heads, head_dim) pass layout='thd' "
            "(or move the axes, for instance swapaxes(x, -3, -2))"
        )
        raise ValueError(msg)
    return starts


def heads_first(x: Array, name: str, /, *, xp: Any) -> Array:
    """``x`` of shape ``(..., total, H, D)`` (``layout="thd"``) as ``(..., H, total, D)``, a view where it can be."""
    if x.ndim < 3:
        msg = f"with layout='thd', {name} must have shape (..., total, heads, D), got {tuple(x.shape)}"
        raise ValueError(msg)
    return xp.permute_dims(x, _swap_last_but_one(x.ndim))


def _swap_last_but_one(ndim: int, /) -> tuple[int, ...]:
    """The axes order that swaps axes -3 and -2."""
    return (*range(ndim - 3), ndim - 2, ndim - 3, ndim - 1)
