"""Reference implementations that share no code with dnorm: plain loops over the
definitions of spec/schemes.md in float64, with ``scipy.special`` for the
log-sum-exp.  Slow; for small sizes only.  Shapes: scores (T, K), allowed (T, K)
boolean (default all True).  Disallowed entries get weight 0."""

from __future__ import annotations

import math

import numpy as np
from scipy.special import logsumexp, softmax

#: The schemes whose rows are a softmax of the scores plus a bias (spec schemes.md): what these oracles and the
#: tests of the normalized schemes cover. The rest of the family (sigmoid, stick-breaking, sinks, the length
#: scale) has its definitions in family_oracles.py and its tests in test_family*.py.
NORMALIZED = ("softmax", "doubly", "hybrid", "sinkhorn")


def _allowed(scores: np.ndarray, allowed: np.ndarray | None) -> np.ndarray:
    ok = np.ones(scores.shape, dtype=bool) if allowed is None else np.broadcast_to(allowed, scores.shape)
    return ok & (scores > -np.inf)


def softmax_weights(scores: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
    ok = _allowed(scores, allowed)
    out = np.zeros(scores.shape)
    for i in range(scores.shape[0]):
        if ok[i].any():
            out[i, ok[i]] = softmax(scores[i, ok[i]])
    return out


def doubly_weights(scores: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
    """B = normalize over queries (each key's column), then A = normalize B over keys."""
    ok = _allowed(scores, allowed)
    n_q, n_k = scores.shape
    b = np.zeros(scores.shape)
    for j in range(n_k):
        if ok[:, j].any():
            c = logsumexp(scores[ok[:, j], j])
            for i in range(n_q):
                if ok[i, j]:
                    b[i, j] = math.exp(scores[i, j] - c)
    return _rows_normalized(b)


def sinkhorn_weights(scores: np.ndarray, n_iter: int, allowed: np.ndarray | None = None) -> np.ndarray:
    """Alternate column and row normalization of exp(scores), column first, n_iter times each."""
    ok = _allowed(scores, allowed)
    log_a = np.where(ok, scores, -np.inf)
    for _ in range(n_iter):
        for j in range(scores.shape[1]):
            if ok[:, j].any():
                log_a[:, j] -= logsumexp(log_a[ok[:, j], j])
        for i in range(scores.shape[0]):
            if ok[i].any():
                log_a[i] -= logsumexp(log_a[i, ok[i]])
    return np.where(ok, np.exp(log_a), 0.0)


def causal_doubly_weights(scores: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
    """Row i: B[i, j] = exp(S[i, j] - logsumexp_{i' <= i, allowed} S[i', j]) for j <= i, then normalized."""
    n_q, n_k = scores.shape
    ok = _allowed(scores, allowed) & (np.arange(n_k)[None, :] <= np.arange(n_q)[:, None])
    b = np.zeros(scores.shape)
    for i in range(n_q):
        for j in range(n_k):
            if ok[i, j]:
                b[i, j] = math.exp(scores[i, j] - logsumexp([scores[p, j] for p in range(i + 1) if ok[p, j]]))
    return _rows_normalized(b)


def _rows_normalized(b: np.ndarray) -> np.ndarray:
    sums = b.sum(axis=1, keepdims=True)
    return np.divide(b, sums, out=np.zeros_like(b), where=sums > 0)


def oracle(scheme: str, scores: np.ndarray, *, allowed=None, alpha=0.5, n_iter=3, causal=False) -> np.ndarray:
    """The weights of ``scheme`` over the last two axes of ``scores``, looping over leading ones."""
    lead = scores.shape[:-2]
    out = np.zeros(scores.shape)
    allowed_b = None if allowed is None else np.broadcast_to(allowed, scores.shape)
    tri = np.tril(np.ones(scores.shape[-2:], dtype=bool))
    alpha_b = np.broadcast_to(np.asarray(alpha, dtype=float), lead)
    for idx in np.ndindex(*lead):
        s = scores[idx]
        ok = None if allowed_b is None else allowed_b[idx]
        if causal:
            ok = tri if ok is None else ok & tri
        if scheme == "softmax":
            out[idx] = softmax_weights(s, ok)
        elif scheme == "doubly":
            out[idx] = causal_doubly_weights(s, ok) if causal else doubly_weights(s, ok)
        elif scheme == "hybrid":
            d = causal_doubly_weights(s, ok) if causal else doubly_weights(s, ok)
            out[idx] = alpha_b[idx] * d + (1 - alpha_b[idx]) * softmax_weights(s, ok)
        else:
            out[idx] = sinkhorn_weights(s, n_iter, ok)
    return out
