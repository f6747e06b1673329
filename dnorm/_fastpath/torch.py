"""Torch fast path for softmax, doubly-normalized (DNAS) and hybrid attention, forward and backward.

DNAS is softmax attention with the per-key bias ``-c_j``, where
``c_j = logsumexp_i (q_i . k_j * scale + mask_ij)`` runs over the queries
(spec THM-DNAS-AS-BIASED-SOFTMAX). Without autograd (:func:`infer`),
:func:`column_logsumexp` finds ``c`` without materializing the ``(T, K)``
scores and :func:`biased_attention` runs ``torch``'s fused scaled dot-product
attention with ``-c`` in its additive mask (``(..., 1, K)`` when there is no
mask)::

    c = column_logsumexp(q, k, scale=scale, mask=mask)
    out = biased_attention(q, k, v, -c, scale=scale, mask=mask)

For training, :func:`forward` and :func:`backward` (wrapped by
:mod:`dnorm._autodiff.torch`) run every term of the gradient through torch's
fused attention kernels and their log-sum-exp outputs (spec
THM-GRADIENT-AS-ATTENTION): ``c`` and ``B^T Q`` are an attention with the
roles of queries and keys swapped, the output and ``dZ``'s products are the
fused forward and backward kernels with the bias ``-c``, ``gamma`` is the
gradient of an extra coordinate, and ``B (gamma K)`` one more biased forward.

Masks follow ``torch.nn.functional.scaled_dot_product_attention``: a boolean
mask is True where a query may attend a key, a float mask is added to the
scores; either broadcasts against ``(..., T, K)``.
"""

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Options", "Residuals", "backward", "biased_attention", "column_logsumexp", "forward", "infer", "supported"]

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
    The scores are formed one block of keys at a time, in the layout
    ``(keys, queries)``; an in-place row log-softmax gives
    ``c_j = max_i s_ij - max_i log_softmax(s)_ij`` (the two maxima sit at the
    same query, so no cancellation), and memory stays ``O(block * T)``. It
    writes into its own buffers, so it is for tensors that do not require a
    gradient (:func:`forward` finds ``c`` differently, with ``B^T Q``).
    """
    work = _work_dtype(query.dtype)
    q, k, m = query.to(work), key.to(work), _as_work(mask, work)
    n_queries, n_keys = q.shape[-2], k.shape[-2]
    batch = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], () if m is None else m.shape[:-2])
    if m is not None:
        m = torch.broadcast_to(m, torch.broadcast_shapes(m.shape, (n_queries, n_keys)))
    queries_t = (q * scale).mT.expand(*batch, -1, -1)
    rows = math.prod(batch) * n_queries
    block = n_keys if rows * n_keys <= _BLOCK_ELEMENTS else max(1, _BLOCK_ELEMENTS // rows)
    buffer = q.new_empty(rows * block)
    parts = []
    starts = (0,) if block == n_keys else range(0, n_keys, block)  # one block: no loop over a symbolic length
    for start in starts:
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
    float16 and bfloat16 are computed in float32. The zero rows come from
    ``scaled_dot_product_attention`` itself,
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
        torch 2.5 or later, unless a floating mask requires a gradient (its
        gradient is ``dS`` itself, which the fused kernels never form; the
        array-API kernels give it). Tensor values are never read.
    """
    q, k, v = query, key, value
    if not (isinstance(q, Tensor) and isinstance(k, Tensor) and isinstance(v, Tensor)):
        return False
    if not (mask is None or isinstance(mask, Tensor)):
        return False
    tensors = [q, k, v] if mask is None else [q, k, v, mask]
    if q.dtype not in _FLOATS or k.dtype != q.dtype or v.dtype != q.dtype:
        return False
    if mask is not None and mask.dtype != torch.bool and (mask.dtype not in _FLOATS or mask.requires_grad):
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


@dataclass(frozen=True)
class Options:
    """The static part of a fast-path call: ``"softmax"``, ``"doubly"`` or ``"hybrid"``, and the score scale."""

    scheme: str
    scale: float


def infer(
    query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None, alpha: Tensor, /, *, options: Options, xp: Any
) -> Tensor:
    """``softmax``, ``doubly`` or ``hybrid`` attention (not causal) through torch's fused kernels, no autograd.

    :func:`column_logsumexp` finds ``c``, and :func:`biased_attention` runs
    ``scaled_dot_product_attention`` with it; the hybrid mixes the two
    outputs with ``alpha`` (shape ``(..., 1, 1)``).
    """
    scheme, scale = options.scheme, options.scale
    zero = query.new_zeros(key.shape[:-2] + key.shape[-2:-1])
    if scheme == "softmax":
        return biased_attention(query, key, value, zero, scale=scale, mask=mask)
    c = column_logsumexp(query, key, scale=scale, mask=mask)
    doubly = biased_attention(query, key, value, -c, scale=scale, mask=mask)
    if scheme == "doubly":
        return doubly
    softmax = biased_attention(query, key, value, zero, scale=scale, mask=mask)
    return alpha * doubly + (1 - alpha) * softmax


class Residuals(NamedTuple):
    """What :func:`forward` keeps: ``(c, B^T Q, r, out)`` of the doubly part and ``(r, out)`` of the softmax part."""

    doubly: tuple[Tensor, Tensor, Tensor, Tensor] | None
    softmax: tuple[Tensor, Tensor] | None


def forward(
    query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None, alpha: Tensor, /, *, options: Options, xp: Any
) -> tuple[Tensor, Residuals]:
    """The output and the :class:`Residuals`, all from the fused kernels (spec THM-GRADIENT-AS-ATTENTION).

    ``c_j`` is the log-sum-exp of the swapped attention (key ``j`` as the
    query, the queries as keys and values), whose output is ``sum_i B_ij
    q_i``; ``r`` are the row log-sum-exps of the biased attention.
    """
    scale, lead = options.scale, _lead(query, key, value, mask)
    q, k, v = (_four_d(t, lead) for t in (query, key, value))
    m = None if mask is None else _four_d(mask, lead)
    doubly = softmax = None
    if options.scheme != "softmax":
        q_bar, c = _fused(k, q, q, _additive(None if m is None else m.mT, None), scale)
        out, r = _fused(q, k, v, _additive(m, -c), scale)
        doubly = (c, q_bar, r, out)
    if options.scheme != "doubly":
        softmax = _fused(q, k, v, _additive(m, None), scale)[::-1]
    if doubly is None or softmax is None:
        out = (doubly or softmax)[-1]  # type: ignore[index]
    else:
        a = _four_d(alpha, lead) if alpha.ndim else alpha
        out = a * doubly[-1] + (1 - a) * softmax[-1]
    return out.reshape(*lead, *out.shape[-2:]), Residuals(doubly, softmax)


def backward(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    mask: Tensor | None,
    alpha: Tensor,
    out: Tensor,
    residuals: Residuals,
    grad: Tensor,
    /,
    *,
    options: Options,
    mask_grad: bool,
    xp: Any,
) -> tuple[Tensor, Tensor, Tensor, None, Tensor | None]:
    """Gradients of ``query``, ``key``, ``value`` and ``alpha`` from the fused kernels (spec THM-GRADIENT-AS-ATTENTION).

    For the doubly part, with ``dZ = A * (dP - delta)`` and ``gamma_j = sum_i
    dZ_ij``: the fused backward kernel on ``[q, 1]``, ``[k, 0]``, ``[v, 0]``
    gives ``dZ K``, ``dZ^T Q``, ``A^T dO`` and, in the extra coordinate,
    ``gamma``; then ``dq -= scale exp(r) * (A (gamma K))`` (one more biased
    forward) and ``dk -= scale gamma * B^T Q``.
    """
    scale, lead = options.scale, _lead(query, key, value, mask)
    q, k, v, g = (_four_d(t, lead) for t in (query, key, value, grad))
    m = None if mask is None else _four_d(mask, lead)
    a = _four_d(alpha, lead) if alpha.ndim else alpha
    mixed = residuals.doubly is not None and residuals.softmax is not None
    parts = []
    if residuals.doubly is not None:
        c, q_bar, r, out_doubly = residuals.doubly
        bias = _additive(m, -c)
        dq, dk, dv, gamma = _fused_backward_with_column_sums(a * g if mixed else g, q, k, v, out_doubly, r, bias, scale)
        weighted_keys, _ = _fused(q, k, k * gamma[..., None], bias, scale)
        parts.append((dq - scale * torch.exp(r)[..., None] * weighted_keys, dk - scale * gamma[..., None] * q_bar, dv))
    if residuals.softmax is not None:
        r, out_softmax = residuals.softmax
        parts.append(_fused_backward((1 - a) * g if mixed else g, q, k, v, out_softmax, r, _additive(m, None), scale))
    d_query, d_key, d_value = (
        sum(grads[1:], grads[0]).reshape(*lead, *grads[0].shape[-2:]) for grads in zip(*parts, strict=True)
    )
    d_alpha = None
    if residuals.doubly is not None and residuals.softmax is not None:
        d_alpha = torch.sum(g * (residuals.doubly[-1] - residuals.softmax[-1]), dim=(-2, -1), keepdim=True)
        d_alpha = _sum_to(d_alpha.reshape(*lead, 1, 1), alpha.shape)
    return _sum_to(d_query, query.shape), _sum_to(d_key, key.shape), _sum_to(d_value, value.shape), None, d_alpha


def _lead(*tensors: Tensor | None) -> tuple[int, ...]:
    return tuple(torch.broadcast_shapes(*(t.shape[:-2] for t in tensors if t is not None)))


def _four_d(t: Tensor, lead: tuple[int, ...]) -> Tensor:
    """``t`` broadcast to the leading shape ``lead`` and viewed as ``(B, H, rows, cols)`` (a view when it can be)."""
    t = t.expand(*lead, *t.shape[-2:]) if t.ndim >= 2 else t.expand(*lead, 1, 1)
    if len(lead) <= 2:
        return t.reshape(*(1,) * (2 - len(lead)), *t.shape)
    return t.reshape(-1, lead[-1], *t.shape[-2:])


def _additive(mask: Tensor | None, bias: Tensor | None) -> Tensor | None:
    """The fused kernels' float ``attn_mask``: ``mask`` as ``0 / -inf`` or added, plus a per-key ``bias``."""
    if bias is None:
        return mask if mask is None or mask.dtype != torch.bool else torch.where(mask, 0.0, -math.inf)
    return _mask_scores(bias.contiguous()[..., None, :], mask)  # the kernels' log-sum-exps are (B, T, H) in memory


def _fused(query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None, scale: float) -> tuple[Tensor, Tensor]:
    """Softmax attention and its row log-sum-exp, from torch's fused kernel (value head size padded to D)."""
    d, dv = query.shape[-1], value.shape[-1]
    size = max(d, dv)
    q, k, v = (_pad_last(t, size) for t in (query, key, value))
    mask = None if attn_mask is None else attn_mask.to(q.dtype)
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, attn_mask=mask, scale=scale)
    return out[..., :dv], lse


def _fused_backward(
    grad: Tensor,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    out: Tensor,
    lse: Tensor,
    attn_mask: Tensor | None,
    scale: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """The fused kernel's gradients ``(dZ K, dZ^T Q, A^T dO)`` of softmax attention with ``attn_mask``."""
    d, dv = query.shape[-1], value.shape[-1]
    size = max(d, dv)
    q, k, v, o, g = (_pad_last(t, size) for t in (query, key, value, out, grad))
    mask = None if attn_mask is None else attn_mask.to(q.dtype)
    dq, dk, dvv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
        g.contiguous(), q, k, v, o, lse, 0.0, False, attn_mask=mask, scale=scale
    )
    return dq[..., :d], dk[..., :d], dvv[..., :dv]


def _fused_backward_with_column_sums(
    grad: Tensor,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    out: Tensor,
    lse: Tensor,
    attn_mask: Tensor | None,
    scale: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """:func:`_fused_backward` and ``gamma_j = sum_i dZ_ij``, from one extra coordinate.

    With ``q' = [q, 1]`` and ``k' = [k, 0]`` the scores do not change, and the
    extra coordinate of ``dZ^T Q'`` is ``scale * sum_i dZ_ij``.
    """
    d = query.shape[-1]
    size = max(d, value.shape[-1]) + 1
    ones = query.new_ones(*query.shape[:-1], 1)
    q = torch.cat((_pad_last(query, size - 1), ones), dim=-1)
    dq, dk, dv = _fused_backward(grad, q, _pad_last(key, size), value, out, lse, attn_mask, scale)
    return dq[..., :d], dk[..., :d], dv, dk[..., -1] / scale


def _pad_last(t: Tensor, size: int) -> Tensor:
    """``t`` with zeros appended along the last axis up to ``size``."""
    missing = size - t.shape[-1]
    return t if missing == 0 else torch.cat((t, t.new_zeros(*t.shape[:-1], missing)), dim=-1)


def _sum_to(t: Tensor, shape: torch.Size | tuple[int, ...]) -> Tensor:
    """``t`` (any leading shape that broadcasting ``shape`` can give) summed back to ``shape``."""
    extra = t.ndim - len(shape)
    if extra > 0:
        t = t.sum(dim=tuple(range(extra)))
    dims = tuple(i for i, (n, m) in enumerate(zip(shape, t.shape, strict=True)) if n == 1 and m != 1)
    return t.sum(dim=dims, keepdim=True) if dims else t
