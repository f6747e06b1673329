"""Torch fast path for the doubly-normalized attention (DNAS).

DNAS is softmax attention with the per-key bias ``-c_j``, where
``c_j = logsumexp_i (q_i . k_j * scale + mask_ij)`` runs over the queries.
:func:`column_logsumexp` finds ``c`` without materializing the ``(T, K)``
scores and :func:`biased_attention` runs ``torch``'s fused scaled dot-product
attention with ``-c`` in its additive mask (``(..., 1, K)`` when there is no
mask)::

    c = column_logsumexp(q, k, scale=scale, mask=mask)
    out = biased_attention(q, k, v, -c, scale=scale, mask=mask)

Masks follow ``torch.nn.functional.scaled_dot_product_attention``: a boolean
mask is True where a query may attend a key, a float mask is added to the
scores; either broadcasts against ``(..., T, K)``.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["biased_attention", "column_logsumexp", "supported"]

_TORCH_VERSION = tuple(int(part) for part in torch.__version__.split(".")[:2])
_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# Scores held per block of keys (8 MiB in float32): few blocks, each cache-friendly.
_BLOCK_ELEMENTS = 1 << 21


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """Return float64 for float64 input and float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _as_work(mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """Cast a float mask to ``dtype``; leave a boolean mask or None alone."""
    if mask is None or mask.dtype == torch.bool:
        return mask
    return mask.to(dtype)


def _mask_scores(scores: Tensor, mask: Tensor | None) -> Tensor:
    """Return ``scores`` with ``mask`` applied; masked entries become ``-inf``.

    The ``where`` keeps the gradient of masked entries exactly zero, also
    where a column or a row is masked entirely.
    """
    if mask is None:
        return scores
    if mask.dtype == torch.bool:
        return torch.where(mask, scores, -math.inf)
    return torch.where(mask > -math.inf, scores + mask, -math.inf)


def _needs_grad(*tensors: Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def column_logsumexp(query: Tensor, key: Tensor, /, *, scale: float, mask: Tensor | None = None) -> Tensor:
    """Log-sum-exp of the attention scores over the queries, one value per key.

    Parameters
    ----------
    query : Tensor
        Queries, shape ``(..., T, D)``.
    key : Tensor
        Keys, shape ``(..., K, D)``.
    scale : float
        Factor applied to the dot products.
    mask : Tensor, optional
        Boolean (True = may attend) or additive float mask broadcastable to
        ``(..., T, K)``.

    Returns
    -------
    Tensor
        ``c`` of shape ``(..., K)``: ``c_j = logsumexp_i (q_i . k_j * scale +
        mask_ij)``, ``-inf`` for a key that no query sees. float64 input gives
        float64, any other float dtype gives float32.

    Notes
    -----
    Without autograd the scores are formed one block of keys at a time, in
    the layout ``(keys, queries)``; an in-place row log-softmax gives
    ``c_j = max_i s_ij - max_i log_softmax(s)_ij`` (the two maxima sit at the
    same query, so no cancellation), and memory stays ``O(block * T)``. When
    ``query``, ``key`` or ``mask`` requires a gradient, ``torch.logsumexp``
    over the materialized scores is used instead: autograd of any order is
    exact, and masked entries receive zero gradient.
    """
    work = _work_dtype(query.dtype)
    q, k, m = query.to(work), key.to(work), _as_work(mask, work)
    if _needs_grad(query, key, mask):
        return torch.logsumexp(_mask_scores(q @ k.mT * scale, m), dim=-2)
    n_queries, n_keys = q.shape[-2], k.shape[-2]
    batch = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], () if m is None else m.shape[:-2])
    if m is not None:
        m = torch.broadcast_to(m, torch.broadcast_shapes(m.shape, (n_queries, n_keys)))
    queries_t = (q * scale).mT.expand(*batch, -1, -1)
    rows = math.prod(batch) * n_queries
    block = max(1, min(n_keys, _BLOCK_ELEMENTS // rows))
    buffer = q.new_empty(rows * block)
    parts = []
    for start in range(0, n_keys, block):
        keys = k[..., start : start + block, :]
        scores = buffer[: rows * keys.shape[-2]].view(*batch, keys.shape[-2], n_queries)
        torch.matmul(keys.expand(*batch, -1, -1), queries_t, out=scores)
        if m is not None and m.dtype == torch.bool:
            scores.masked_fill_(m[..., start : start + block].mT.logical_not(), -math.inf)
        elif m is not None:
            scores.add_(m[..., start : start + block].mT)
        top = scores.amax(dim=-1)
        torch.log_softmax(scores, dim=-1, out=scores)
        parts.append(torch.where(top > -math.inf, top - scores.amax(dim=-1), top))
    return torch.cat(parts, dim=-1)


def biased_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    bias: Tensor,
    /,
    *,
    scale: float,
    mask: Tensor | None = None,
) -> Tensor:
    """Softmax attention with an additive per-key bias.

    Parameters
    ----------
    query : Tensor
        Queries, shape ``(..., T, D)``.
    key : Tensor
        Keys, shape ``(..., K, D)``.
    value : Tensor
        Values, shape ``(..., K, Dv)``.
    bias : Tensor
        Per-key bias, shape ``(..., K)``, added to every query's scores;
        ``-inf`` masks the key. Entries at keys the mask hides from every
        query are ignored, so ``-column_logsumexp(...)`` (``+inf`` at keys no
        query sees) is a valid bias.
    scale : float
        Factor applied to the dot products.
    mask : Tensor, optional
        Boolean (True = may attend) or additive float mask broadcastable to
        ``(..., T, K)``.

    Returns
    -------
    Tensor
        ``softmax_j(q . k * scale + mask + bias) @ value``, shape
        ``(..., T, Dv)``, in the dtype of ``query``; zero rows for queries
        that may attend no key.

    Notes
    -----
    float16 and bfloat16 are computed in float32. The zero rows (and their
    zero, finite gradients) come from ``scaled_dot_product_attention`` itself,
    which returns zeros for an all ``-inf`` row since torch 2.5 (its
    ``_safe_softmax``); :func:`supported` rejects older versions.
    """
    work = _work_dtype(query.dtype)
    q, k, v, b = (t.to(work) for t in (query, key, value, bias))
    attn_mask = _mask_scores(b[..., None, :], _as_work(mask, work))
    batch = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2], attn_mask.shape[:-2])
    q, k, v = (t.expand(*batch, -1, -1) for t in (q, k, v))  # SDPA does not broadcast them against the mask
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale).to(query.dtype)


def supported(query: object, key: object, value: object, mask: object) -> bool:
    """Whether the fast path accepts these arguments (static checks only).

    Parameters
    ----------
    query, key, value : object
        Candidate ``(..., T, D)``, ``(..., K, D)`` and ``(..., K, Dv)`` tensors.
    mask : object
        None, or a boolean or float tensor broadcastable to ``(..., T, K)``.

    Returns
    -------
    bool
        True for CPU tensors of one float dtype (float16, bfloat16, float32,
        float64), with ``T, K >= 1`` and matching, broadcastable shapes, on
        torch 2.5 or later. Tensor values are never read. Gradients are allowed: both functions
        keep autograd exact (see :func:`column_logsumexp`).
    """
    q, k, v = query, key, value
    if not (isinstance(q, Tensor) and isinstance(k, Tensor) and isinstance(v, Tensor)):
        return False
    if not (mask is None or isinstance(mask, Tensor)):
        return False
    tensors = [q, k, v] if mask is None else [q, k, v, mask]
    if q.dtype not in _FLOATS or k.dtype != q.dtype or v.dtype != q.dtype:
        return False
    if mask is not None and mask.dtype != torch.bool and mask.dtype not in _FLOATS:
        return False
    if _TORCH_VERSION < (2, 5) or any(t.device.type != "cpu" for t in tensors) or min(q.ndim, k.ndim, v.ndim) < 2:
        return False
    n_queries, n_keys = q.shape[-2], k.shape[-2]
    if min(n_queries, n_keys) < 1 or k.shape[-1] != q.shape[-1] or v.shape[-2] != n_keys:
        return False
    mask_shape = () if mask is None else mask.shape
    try:
        torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2], mask_shape[:-2])
        torch.broadcast_shapes(mask_shape[-2:], (n_queries, n_keys))
    except RuntimeError:
        return False
    return True


def attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    /,
    *,
    scheme: str,
    scale: float,
    mask: Tensor | None,
    alpha: Tensor,
) -> Tensor:
    """``softmax``, ``doubly`` or ``hybrid`` attention (not causal) through torch's fused kernels.

    DNAS is softmax attention with the per-key bias ``-c`` (spec
    THM-DNAS-AS-BIASED-SOFTMAX): :func:`column_logsumexp` finds ``c``, and
    :func:`biased_attention` runs ``scaled_dot_product_attention`` with it;
    the hybrid mixes the two outputs with ``alpha`` (shape ``(..., 1, 1)``).
    """
    zero = query.new_zeros(key.shape[:-2] + key.shape[-2:-1])
    if scheme == "softmax":
        return biased_attention(query, key, value, zero, scale=scale, mask=mask)
    c = column_logsumexp(query, key, scale=scale, mask=mask)
    doubly = biased_attention(query, key, value, -c, scale=scale, mask=mask)
    if scheme == "doubly":
        return doubly
    softmax = biased_attention(query, key, value, zero, scale=scale, mask=mask)
    return alpha * doubly + (1 - alpha) * softmax
