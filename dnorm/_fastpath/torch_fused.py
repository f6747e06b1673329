"""The torch fast path's training passes: every term of the DNAS gradient through torch's fused attention kernels.

The forward pass keeps ``c`` and ``B^T Q`` (one attention with the roles of
queries and keys swapped, whose log-sum-exp is ``c``), the biased output and
its row log-sum-exps; the backward pass is the fused backward kernel on
``[q, 1]``, ``[k, 0]``, ``[v, 0]`` (whose extra coordinate gives ``gamma``) and
one more biased forward call (spec THM-GRADIENT-AS-ATTENTION). The kernels take
4-D ``(batch, heads, rows, head dim)`` tensors of one head size, so leading
dimensions are viewed as two and head sizes padded with zeros.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import array_api_compat.torch as torch_xp
import torch
from torch import Tensor

from .._kernels import masks, rows, schemes
from .._kernels.shapes import pad, sum_to

__all__ = ["FusedOptions", "Residuals", "backward", "forward", "four_d", "key_bias"]


@dataclass(frozen=True)
class FusedOptions:
    """The static part of a fast-path call: ``"softmax"``, ``"doubly"`` or ``"hybrid"``, and the score scale."""

    scheme: str
    scale: float

    def plan(self) -> schemes.Plan:
        """What the call computes: a statistic of the key alone or none, no causal form."""
        return schemes.plan(self.scheme, causal=False, n_iter=1)


def key_bias(c: Tensor, /) -> Tensor:
    """The per-key bias ``-c`` (spec THM-DNAS-AS-BIASED-SOFTMAX), 0 for a key no query sees (``c = -inf``).

    Every query's mask hides such a key, so its bias is never read; 0 keeps
    ``-c + mask`` from being ``inf - inf``.
    """
    return torch.where(c == -math.inf, 0.0, -c)


class Residuals(NamedTuple):
    """What :func:`forward` keeps: ``(c, B^T Q, r, out)`` of the doubly part and ``(r, out)`` of the softmax part."""

    doubly: tuple[Tensor, Tensor, Tensor, Tensor] | None
    softmax: tuple[Tensor, Tensor] | None


def forward(
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
) -> tuple[Tensor, Residuals]:
    """The output and the :class:`Residuals`, all from the fused kernels (spec THM-GRADIENT-AS-ATTENTION).

    ``seed`` is always None: calls with dropout take the kernels.

    ``c_j`` is the log-sum-exp of the swapped attention (key ``j`` as the
    query, the queries as keys and values), whose output is ``sum_i B_ij
    q_i``; ``r`` are the row log-sum-exps of the biased attention.
    """
    scale, lead = options.scale, _lead(query, key, value, mask)
    q, k, v = (four_d(t, lead) for t in (query, key, value))
    m = None if mask is None else four_d(mask, lead)
    doubly = softmax = None
    how = options.plan()
    if how.biased:
        q_bar, c = _fused(k, q, q, _additive(None if m is None else m.mT, None), scale)
        out, r = _fused(q, k, v, _additive(m, key_bias(c)), scale)
        doubly = (c, q_bar, r, out)
    if how.plain:
        softmax = _fused(q, k, v, _additive(m, None), scale)[::-1]
    if doubly is None or softmax is None:
        out = (doubly or softmax)[-1]  # type: ignore[index]
    else:
        out = rows.mix(doubly[-1], softmax[-1], four_d(alpha, lead) if alpha.ndim else alpha)
    return out.reshape(*lead, *out.shape[-2:]), Residuals(doubly, softmax)


def backward(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    mask: Tensor | None,
    alpha: Tensor,
    seed: None,
    out: Tensor,
    residuals: Residuals,
    grad: Tensor,
    /,
    *,
    options: FusedOptions,
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
    q, k, v, g = (four_d(t, lead) for t in (query, key, value, grad))
    m = None if mask is None else four_d(mask, lead)
    share, rest = rows.shares(four_d(alpha, lead) if alpha.ndim else alpha)
    mixed = residuals.doubly is not None and residuals.softmax is not None
    parts = []
    if residuals.doubly is not None:
        c, q_bar, r, out_doubly = residuals.doubly
        bias = _additive(m, key_bias(c))
        dq, dk, dv, gamma = _fused_backward_with_column_sums(
            share * g if mixed else g, q, k, v, out_doubly, r, bias, scale
        )
        weighted_keys, _ = _fused(q, k, k * gamma[..., None], bias, scale)
        parts.append((dq - scale * torch.exp(r)[..., None] * weighted_keys, dk - scale * gamma[..., None] * q_bar, dv))
    if residuals.softmax is not None:
        r, out_softmax = residuals.softmax
        parts.append(_fused_backward(rest * g if mixed else g, q, k, v, out_softmax, r, _additive(m, None), scale))
    d_query, d_key, d_value = (
        sum(grads[1:], grads[0]).reshape(*lead, *grads[0].shape[-2:]) for grads in zip(*parts, strict=True)
    )
    d_alpha = None
    if residuals.doubly is not None and residuals.softmax is not None:
        d_alpha = rows.mix_gradient(g, residuals.doubly[-1], residuals.softmax[-1], xp=xp)
        d_alpha = sum_to(d_alpha.reshape(*lead, 1, 1), tuple(alpha.shape), xp=xp)
    shapes = (query.shape, key.shape, value.shape)
    d_query, d_key, d_value = (
        sum_to(g, tuple(shape), xp=xp) for g, shape in zip((d_query, d_key, d_value), shapes, strict=True)
    )
    return d_query, d_key, d_value, None, d_alpha


def _lead(*tensors: Tensor | None) -> tuple[int, ...]:
    return tuple(torch.broadcast_shapes(*(t.shape[:-2] for t in tensors if t is not None)))


def four_d(t: Tensor, lead: tuple[int, ...]) -> Tensor:
    """``t`` broadcast to the leading shape ``lead`` and viewed as ``(B, H, rows, cols)`` (a view when it can be)."""
    t = t.expand(*lead, *t.shape[-2:]) if t.ndim >= 2 else t.expand(*lead, 1, 1)
    if len(lead) <= 2:
        return t.reshape(*(1,) * (2 - len(lead)), *t.shape)
    return t.reshape(-1, lead[-1], *t.shape[-2:])


def _additive(mask: Tensor | None, bias: Tensor | None) -> Tensor | None:
    """The fused kernels' float ``attn_mask``: ``mask`` in its additive form, plus a per-key ``bias``."""
    if bias is None:  # a boolean mask as 0 / -inf (exact in any float dtype); a floating one as it is
        return mask if mask is None or mask.dtype != torch.bool else masks.additive(mask, torch.float32, xp=torch_xp)
    return masks.apply(bias.contiguous()[..., None, :], mask, xp=torch_xp)  # the kernels' log-sum-exps: (B, T, H)


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
    return pad(t, size, 0.0, axis=-1, xp=torch_xp)
