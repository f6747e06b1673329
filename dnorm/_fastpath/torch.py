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
from typing import Any

import array_api_compat.torch as torch_xp
import torch
import torch.nn.functional as F
from torch import Tensor

from .._kernels import budget, masks, rows
from .torch_fused import FusedOptions, Residuals, backward, forward, four_d

__all__ = [
    "FusedOptions",
    "Residuals",
    "backward",
    "biased_attention",
    "column_logsumexp",
    "forward",
    "infer",
    "refuses",
]

_TORCH_VERSION = tuple(int(part) for part in torch.__version__.split(".")[:2])
_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _as_work(mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """Cast a float mask to ``dtype``; leave a boolean mask or None alone."""
    if mask is None or mask.dtype == torch.bool:
        return mask
    return mask.to(dtype)


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
    work = budget.compute_dtype(query.dtype, xp=torch_xp)[0]
    q, k, m = query.to(work), key.to(work), _as_work(mask, work)
    n_queries, n_keys = q.shape[-2], k.shape[-2]
    batch = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], () if m is None else m.shape[:-2])
    if m is not None:
        m = torch.broadcast_to(m, torch.broadcast_shapes(m.shape, (n_queries, n_keys)))
    queries_t = (q * scale).mT.expand(*batch, -1, -1)
    n_rows = math.prod(batch) * n_queries
    elements = budget.KEY_BLOCK_BYTES // 4 * (1 if q.device.type == "cpu" else budget.ACCELERATOR_SCALE)
    block = n_keys if n_rows * n_keys <= elements else max(1, elements // n_rows)
    buffer = q.new_empty(n_rows * block)
    parts = []
    starts = (0,) if block == n_keys else range(0, n_keys, block)  # one block: no loop over a symbolic length
    for start in starts:
        keys = k[..., start : start + block, :]
        scores = buffer[: n_rows * keys.shape[-2]].view(*batch, keys.shape[-2], n_queries)
        torch.matmul(keys.expand(*batch, -1, -1), queries_t, out=scores)
        if m is not None:
            scores = masks.apply(scores, m[..., start : start + block].mT, xp=torch_xp)
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
    float16 and bfloat16 are computed in float32. On the CPU the zero rows
    come from ``scaled_dot_product_attention`` itself, which returns zeros
    for an all ``-inf`` row since torch 2.5 (its ``_safe_softmax``);
    :func:`refuses` turns down older versions. On CUDA a ``where`` on the
    rows of the mask makes them, whichever kernel runs.
    """
    work = budget.compute_dtype(query.dtype, xp=torch_xp)[0]
    q, k, v, b = (t.to(work) for t in (query, key, value, bias))
    b = torch.where(b == math.inf, 0.0, b)  # a key that no query sees: its bias is never read
    attn_mask = masks.apply(b[..., None, :], _as_work(mask, work), xp=torch_xp)
    batch = tuple(torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2], attn_mask.shape[:-2]))
    # SDPA does not broadcast them against the mask, and takes its fused kernel in 4-D only (grouped heads are 5-D)
    q, k, v, attn_mask = (four_d(t, batch) for t in (q, k, v, attn_mask))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale)
    if mask is not None and out.device.type != "cpu":  # zero rows by construction, whatever the CUDA kernel gives
        out = torch.where(masks.allowed(attn_mask, xp=torch_xp).any(dim=-1, keepdim=True), out, 0.0)
    return out.reshape(*batch, *out.shape[-2:]).to(query.dtype)


def refuses(query: object, key: object, value: object, mask: object, *, training: bool = False) -> str | None:
    """Why the fast path cannot take these arguments, or None when it can (static checks only).

    Parameters
    ----------
    query, key, value : object
        Candidate ``(..., T, D)``, ``(..., K, D)`` and ``(..., K, Dv)`` tensors.
    mask : object
        None, or a boolean or float tensor broadcastable to ``(..., T, K)``.
    training : bool
        Whether a gradient may be asked for (:func:`forward` and
        :func:`backward` then run, else :func:`infer`).

    Returns
    -------
    str or None
        None for tensors of one float dtype (float16, bfloat16, float32,
        float64), with ``T, K >= 1`` and matching, broadcastable shapes, on
        torch 2.5 or later, unless a floating mask requires a gradient (its
        gradient is ``dS`` itself, which the fused kernels never form; the
        array-API kernels give it); on the CPU, and on CUDA for inference
        in float16, bfloat16 and float32 (``scaled_dot_product_attention``
        with a float mask takes the memory-efficient kernel there; training
        on CUDA takes the array-API kernels). Else the reason, in words.
        Tensor values are never read.
    """
    q, k, v = query, key, value
    if not (isinstance(q, Tensor) and isinstance(k, Tensor) and isinstance(v, Tensor)):
        return f"it takes torch tensors, got {type(q).__module__}.{type(q).__name__}"
    if not (mask is None or isinstance(mask, Tensor)):
        return f"it takes a torch tensor as the mask, got {type(mask).__name__}"
    tensors = [q, k, v] if mask is None else [q, k, v, mask]
    if q.dtype not in _FLOATS or k.dtype != q.dtype or v.dtype != q.dtype:
        return f"it takes query, key and value of one floating dtype, got {q.dtype}, {k.dtype}, {v.dtype}"
    if mask is not None and mask.dtype != torch.bool and mask.dtype not in _FLOATS:
        return f"it takes a boolean or floating mask, got {mask.dtype}"
    if mask is not None and mask.dtype != torch.bool and mask.requires_grad:
        return "a floating mask that requires a gradient needs dS itself, which torch's fused kernels never form"
    if _TORCH_VERSION < (2, 5):
        return f"it needs torch 2.5 or later, got {torch.__version__}"
    if min(q.ndim, k.ndim, v.ndim) < 2:
        return "query, key and value need at least two dimensions"
    where = _device_refusal(tensors, training)
    if where is not None:
        return where
    n_queries, n_keys = q.shape[-2], k.shape[-2]
    if min(n_queries, n_keys) < 1 or k.shape[-1] != q.shape[-1] or v.shape[-2] != n_keys:
        return f"the shapes {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)} have no query, no key or do not fit"
    mask_shape = () if mask is None else mask.shape
    try:
        torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2], mask_shape[:-2])
        torch.broadcast_shapes(mask_shape[-2:], (n_queries, n_keys))
    except RuntimeError:
        return "the leading shapes of query, key, value and mask do not broadcast"
    return None


def _device_refusal(tensors: list[Tensor], training: bool, /) -> str | None:
    """All on the CPU; or all on one CUDA device, for inference and not in float64 (the efficient kernel's dtypes)."""
    device = tensors[0].device
    if any(t.device != device for t in tensors):
        return f"it takes tensors on one device, got {sorted({str(t.device) for t in tensors})}"
    if device.type == "cuda":
        if training:
            return "on CUDA it serves inference only (training there takes the array-API kernels)"
        if tensors[0].dtype == torch.float64:
            return "on CUDA it takes float16, bfloat16 and float32 (the memory-efficient kernel's dtypes), not float64"
        return None
    return None if device.type == "cpu" else f"it runs on the CPU and CUDA, got the device {device}"


def infer(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    mask: Tensor | None,
    alpha: Tensor,
    seed: None,
    /,
    *,
    options: FusedOptions,
    xp: Any,
) -> Tensor:
    """``softmax``, ``doubly`` or ``hybrid`` attention (not causal) through torch's fused kernels, no autograd.

    ``seed`` is always None: calls with dropout take the kernels.

    :func:`column_logsumexp` finds ``c``, and :func:`biased_attention` runs
    ``scaled_dot_product_attention`` with it; the hybrid mixes the two
    outputs with ``alpha`` (shape ``(..., 1, 1)``).
    """
    how, scale = options.plan(), options.scale
    zero = query.new_zeros(key.shape[:-2] + key.shape[-2:-1])
    if not how.biased:
        return biased_attention(query, key, value, zero, scale=scale, mask=mask)
    c = column_logsumexp(query, key, scale=scale, mask=mask)
    doubly = biased_attention(query, key, value, -c, scale=scale, mask=mask)
    if not how.mixed:
        return doubly
    return rows.mix(doubly, biased_attention(query, key, value, zero, scale=scale, mask=mask), alpha)
