"""Reference gradients that share no code with dnorm: torch float64 autograd through the plain definitions.

The definitions are written out as in spec/schemes.md: softmax over the
allowed keys; DNAS as a column softmax then a row normalization; Sinkhorn as
alternating column and row log-normalizations; strictly causal DNAS with the
column log-sum-exp over the rows up to each row, one row at a time. Removed
pairs are excluded with ``where`` so that their gradients are exact zeros.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch gives the reference gradients")

NEG = -float("inf")


def _masked_lse(y, ok, dim):
    top = torch.where(ok, y, NEG).amax(dim=dim, keepdim=True)
    top = torch.where(torch.isinf(top), torch.zeros_like(top), top)
    total = torch.where(ok, torch.exp(y - top), torch.zeros_like(y)).sum(dim=dim, keepdim=True)
    return top + torch.log(torch.where(total == 0, torch.ones_like(total), total))


def _normalized(y, ok, dim):
    """exp(y - LSE) over dim on the allowed entries, 0 elsewhere."""
    return torch.where(ok, torch.exp(y - _masked_lse(y, ok, dim)), torch.zeros_like(y))


def _weights(s, ok, scheme, *, causal, alpha, n_iter):
    softmax = _normalized(s, ok, -1)
    if scheme == "softmax":
        return softmax
    if causal:
        rows = []
        for i in range(s.shape[-2]):
            c = _masked_lse(s[..., : i + 1, :], ok[..., : i + 1, :], -2)
            rows.append(s[..., i : i + 1, :] - c)
        doubly = _normalized(torch.cat(rows, dim=-2), ok, -1)
    else:
        log_a = torch.where(ok, s, NEG)
        rounds = n_iter if scheme == "sinkhorn" else 1
        for t in range(rounds):
            log_a = torch.where(ok, log_a - _masked_lse(log_a, ok, -2), NEG)
            if t < rounds - 1:
                log_a = torch.where(ok, log_a - _masked_lse(log_a, ok, -1), NEG)
        doubly = _normalized(log_a, ok, -1)
    if scheme != "hybrid":
        return doubly
    a = alpha[..., None, None]
    return a * doubly + (1 - a) * softmax


def attention_and_grads(
    q, k, v, d_out, *, scheme, mask=None, causal=False, alpha=None, n_iter=3, scale=None, softcap=None, keep=None
):
    """``(out, {name: gradient})`` of ``sum(out * d_out)`` for NumPy inputs, all float64 NumPy.

    ``softcap`` caps the scaled scores before the mask; ``keep`` (dropout's ``M / (1 - p)``) multiplies the weights.
    """
    tq, tk, tv = (torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=True) for a in (q, k, v))
    inputs = {"query": tq, "key": tk, "value": tv}
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    s = tq @ tk.transpose(-1, -2) * scale
    if softcap is not None:
        s = softcap * torch.tanh(s / softcap)
    ok = torch.ones(s.shape, dtype=torch.bool)
    if mask is not None and mask.dtype == bool:
        ok = ok & torch.from_numpy(np.broadcast_to(mask, s.shape).copy())
    elif mask is not None:
        tm = torch.tensor(mask, dtype=torch.float64, requires_grad=True)
        inputs["mask"] = tm
        s = s + tm
        ok = ok & torch.from_numpy(np.broadcast_to(np.isfinite(mask), s.shape).copy())
    if causal:
        ok = ok & torch.ones(s.shape[-2:], dtype=torch.bool).tril()
    s = torch.where(ok, s, NEG)
    ta = None
    if scheme == "hybrid":
        ta = torch.tensor(np.asarray(alpha, dtype=np.float64), requires_grad=True)
        inputs["alpha"] = ta
    w = _weights(s, ok, scheme, causal=causal, alpha=ta, n_iter=n_iter)
    if keep is not None:
        w = w * torch.from_numpy(np.asarray(keep, dtype=np.float64))
    out = w @ tv
    (out * torch.from_numpy(np.asarray(d_out, dtype=np.float64))).sum().backward()
    grads = {name: t.grad.numpy() for name, t in inputs.items()}
    return out.detach().numpy(), grads
