"""Float64 definitions of the normalization family, written out as spec/family.md states them, sharing no code with
dnorm: loops over one ``(T, K)`` score matrix, ``scipy.special`` for the log-sum-exp.

``allowed`` is a boolean ``(T, K)`` matrix (None: all); ``causal`` adds the triangle ``j <= i + offset``.
The sink is one more key with score ``sink`` that every query sees, value 0; the returned weights are the real
keys'.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import logsumexp


def _ok(scores, allowed, causal, offset=0):
    t, k = scores.shape
    ok = np.ones((t, k), dtype=bool) if allowed is None else np.array(allowed, dtype=bool)
    if causal:
        ok &= np.arange(k)[None, :] <= np.arange(t)[:, None] + offset
    return ok & (scores > -np.inf)


def sink_weights(scheme, scores, sink, *, allowed=None, causal=False, alpha=0.5, n_iter=3):
    """Softmax, doubly, hybrid or Sinkhorn with a sink column (spec DEF-SINK), its weights on the real keys."""
    t, k = scores.shape
    ok = _ok(scores, allowed, causal)
    softmax = np.zeros((t, k))
    for i in range(t):
        denominator = math.exp(sink) + sum(math.exp(scores[i, j]) for j in range(k) if ok[i, j])
        for j in range(k):
            if ok[i, j]:
                softmax[i, j] = math.exp(scores[i, j]) / denominator
    if scheme == "softmax":
        return softmax
    if scheme == "sinkhorn":
        log_a = np.concatenate([np.where(ok, scores, -np.inf), np.full((t, 1), float(sink))], axis=1)
        every = np.concatenate([ok, np.ones((t, 1), dtype=bool)], axis=1)
        for _ in range(n_iter):
            for j in range(k + 1):
                if every[:, j].any():
                    log_a[:, j] -= logsumexp(log_a[every[:, j], j])
            for i in range(t):
                log_a[i] -= logsumexp(log_a[i, every[i]])
        return np.where(ok, np.exp(log_a[:, :k]), 0.0)
    b = np.zeros((t, k))
    b_sink = np.zeros(t)
    for i in range(t):
        rows = range(i + 1) if causal else range(t)  # the queries so far (causal), or all of them: all see the sink
        b_sink[i] = math.exp(sink - logsumexp([sink] * len(rows)))
        for j in range(k):
            if ok[i, j]:
                b[i, j] = math.exp(scores[i, j] - logsumexp([scores[p, j] for p in rows if ok[p, j]]))
    doubly = b / (b.sum(axis=1, keepdims=True) + b_sink[:, None])
    return doubly if scheme == "doubly" else alpha * doubly + (1 - alpha) * softmax


def length_scaled(scores, length_scale, *, allowed=None, causal=False, offset=0):
    """The scores of row ``i`` times ``length_scale * log(n_i)`` (spec DEF-LENGTH-SCALE); ``log 1 = 0``."""
    n = _ok(np.zeros(scores.shape), allowed, causal, offset).sum(axis=1)
    return scores * (length_scale * np.log(np.maximum(n, 1)))[:, None]


def sigmoid_weights(scores, *, bias=None, allowed=None, causal=False, offset=0):
    """``1 / (1 + exp(-(S + b)))`` on the allowed pairs; ``b = -log n_i`` by default (spec DEF-SIGMOID)."""
    ok = _ok(scores, allowed, causal, offset)
    out = np.zeros(scores.shape)
    for i in range(scores.shape[0]):
        b = -math.log(max(ok[i].sum(), 1)) if bias is None else bias
        for j in range(scores.shape[1]):
            if ok[i, j]:
                out[i, j] = 1.0 / (1.0 + math.exp(-(scores[i, j] + b)))
    return out


def stick_breaking_weights(scores, *, allowed=None, attend_current=False, offset=0):
    """``A_ij = beta_ij prod_(j < k, k allowed) (1 - beta_ik)``, ``beta = sigmoid(S)``, the keys before query ``i``
    (its own too with ``attend_current``), the nearest first (spec DEF-STICK-BREAKING)."""
    ok = _ok(scores, allowed, True, offset - (0 if attend_current else 1))
    out = np.zeros(scores.shape)
    for i in range(scores.shape[0]):
        left = 1.0
        for j in range(scores.shape[1] - 1, -1, -1):
            if ok[i, j]:
                beta = 1.0 / (1.0 + math.exp(-scores[i, j]))
                out[i, j] = beta * left
                left *= 1.0 - beta
    return out
