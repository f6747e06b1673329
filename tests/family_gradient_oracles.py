"""Reference gradients of the normalization family: torch float64 autograd through the definitions of
spec/family.md written out, sharing no code with dnorm (the sink as one more column, Sinkhorn's rounds on the
extended scores, the stick broken key by key).

``reference(q, k, v, d_out, form=..., ...)`` returns the output and the gradients of ``sum(out * d_out)`` for
NumPy inputs of shape ``(H, T, D)`` (one leading axis: the heads, each with its own sink, length scale or bias).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch gives the reference gradients")

NEG = -float("inf")


def _lse(y, ok, dim):
    top = torch.where(ok, y, NEG).amax(dim=dim, keepdim=True).detach()
    top = torch.where(torch.isinf(top), torch.zeros_like(top), top)
    total = torch.where(ok, torch.exp(y - top), torch.zeros_like(y)).sum(dim=dim, keepdim=True)
    return top + torch.log(torch.where(total == 0, torch.ones_like(total), total))


def _rows(y, ok):
    return torch.where(ok, torch.exp(y - _lse(y, ok, -1)), torch.zeros_like(y))


def _with_sink(s, ok, sink):
    """The scores with the sink's column (every row sees it) and the extended allowed set."""
    column = sink[:, None, None].expand(*s.shape[:-1], 1)
    return torch.cat([s, column], dim=-1), torch.cat([ok, torch.ones_like(ok[..., :1])], dim=-1)


def _normalized(s, ok, scheme, sink, causal, n_iter):
    if sink is not None:
        s, ok = _with_sink(s, ok, sink)
    if scheme == "softmax":
        return _rows(s, ok)
    if causal:  # the running column statistic, one row at a time
        rows = [s[..., i : i + 1, :] - _lse(s[..., : i + 1, :], ok[..., : i + 1, :], -2) for i in range(s.shape[-2])]
        return _rows(torch.cat(rows, dim=-2), ok)
    log_a = torch.where(ok, s, NEG)
    rounds = n_iter if scheme == "sinkhorn" else 1
    for t in range(rounds):
        log_a = torch.where(ok, log_a - _lse(log_a, ok, -2), NEG)
        if t < rounds - 1:
            log_a = torch.where(ok, log_a - _lse(log_a, ok, -1), NEG)
    return _rows(log_a, ok)


def _sticks(s, ok):
    """``A_ij = beta_ij prod_(k > j, allowed) (1 - beta_ik)``, key by key from the nearest back."""
    beta = torch.where(ok, torch.sigmoid(s), torch.zeros_like(s))
    columns = []
    left = torch.ones_like(s[..., :1])
    for j in range(s.shape[-1] - 1, -1, -1):
        columns.insert(0, beta[..., j : j + 1] * left)
        left = left * (1 - beta[..., j : j + 1])
    return torch.cat(columns, dim=-1)


def reference(
    q, k, v, d_out, *, scheme, mask=None, causal=False, alpha=None, sink=None, length_scale=None, bias=None,
    attend_current=False, n_iter=3,
):  # fmt: skip
    """``(out, {name: gradient})`` in float64 NumPy; ``alpha``, ``sink``, ``length_scale``, ``bias`` one per head."""
    given_qkv = zip("qkv", (q, k, v), strict=True)
    leaves = {n: torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=True) for n, a in given_qkv}
    for name, given in (("alpha", alpha), ("sink", sink), ("length_scale", length_scale), ("bias", bias)):
        if given is not None:
            leaves[name] = torch.tensor(np.asarray(given, dtype=np.float64), requires_grad=True)
    t, n_keys, d = q.shape[-2], k.shape[-2], q.shape[-1]
    ok = torch.ones(q.shape[0], t, n_keys, dtype=torch.bool)
    if mask is not None:
        ok = ok & torch.from_numpy(np.broadcast_to(mask, ok.shape).copy())
    if causal:
        reach = 0 if scheme != "stick-breaking" or attend_current else -1
        ok = ok & torch.ones(t, n_keys, dtype=torch.bool).tril(reach)
    s = leaves["q"] @ leaves["k"].transpose(-1, -2) * d**-0.5
    n = ok.sum(-1, keepdim=True).clamp(min=1).double()
    if length_scale is not None:
        s = s * (leaves["length_scale"][:, None, None] * torch.log(n))
    if scheme == "sigmoid":
        b = -torch.log(n) if bias is None else leaves["bias"][:, None, None]
        w = torch.where(ok, torch.sigmoid(s + b), torch.zeros_like(s))
    elif scheme == "stick-breaking":
        w = _sticks(torch.where(ok, s, NEG), ok)
    else:
        s = torch.where(ok, s, NEG)
        mixed = scheme == "hybrid"
        w = _normalized(s, ok, "doubly" if mixed else scheme, leaves.get("sink"), causal, n_iter)
        if mixed:
            a = leaves["alpha"][:, None, None]
            w = a * w + (1 - a) * _normalized(s, ok, "softmax", leaves.get("sink"), causal, n_iter)
        w = w[..., :n_keys]
    out = w @ leaves["v"]
    (out * torch.from_numpy(np.asarray(d_out, dtype=np.float64))).sum().backward()
    return out.detach().numpy(), {n: x.grad.numpy() for n, x in leaves.items() if x.grad is not None}
