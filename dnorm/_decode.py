"""``decode``: incremental causal attention from a KV cache and a per-key state (spec decoding.md)."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from . import _api
from . import _dispatch as dispatch
from . import _heads as heads
from . import _validate as check
from ._kernels import blocked
from ._kernels import logsumexp as lse
from ._kernels.scores import block_bounds, from_projections

Array = Any


class DecodeState(NamedTuple):
    """The running column statistic of the strictly causal ``"doubly"`` and ``"hybrid"`` (spec DEF-DECODE-STATE).

    For every cached key ``j`` and query head, the pair ``(max, sum)`` with
    ``C_j = max + log(sum)`` the log-sum-exp of key ``j``'s scores over the
    queries so far. Both arrays have shape ``(..., query_heads, K)``, in
    float32 for float16 and bfloat16 models (the compute dtype), else in the
    model's dtype: two floats per key and query head. A plain tuple of
    arrays, so JAX carries it through ``jit`` and ``lax`` loops.
    """

    max: Array
    sum: Array


def decode(
    query: Array,
    key: Array,
    value: Array,
    state: DecodeState | tuple[Array, Array] | None = None,
    /,
    scheme: str = "doubly",
    *,
    mask: Array | None = None,
    scale: float | None = None,
    alpha: float | Array = 0.5,
    softcap: float | None = None,
) -> tuple[Array, DecodeState | None]:
    """Strictly causal attention of new queries against a KV cache, and the state for the next call.

    The ``T`` queries are the last ``T`` of the ``K`` positions the cache
    holds (bottom-right alignment, spec DEF-CAUSAL-MASK): query ``i`` sees the
    keys ``j <= K - T + i``. ``state`` is what the previous call returned
    for the first ``K - T`` keys (None for the first call, which then sees
    as many keys as queries). Prefill is a call with the whole prompt, a step
    a call with one new query; several new queries (chunked prefill, a
    speculative draft) work alike. Any split of a sequence into calls gives
    the rows of ``attention(q, k, v, scheme, causal=True)`` on the whole
    sequence (spec THM-DECODE-EQUALS-FULL).

    Parameters
    ----------
    query : array of shape (..., Hq, T, D)
        The new queries.
    key : array of shape (..., H, K, D)
    value : array of shape (..., H, K, Dv)
        The whole cache, the new positions' keys and values appended.
        Grouped-query attention: ``Hq`` may be a multiple of ``H``.
    state : DecodeState or (max, sum), optional
        The state returned by the call that processed positions ``< K - T``,
        arrays of shape ``(..., Hq, K - T)``; None when there are none.
        ``"softmax"`` keeps no state: pass None.
    scheme : {"doubly", "hybrid", "softmax"}, default "doubly"
        The strictly causal scheme (spec DEF-CAUSAL-DNAS, DEF-CAUSAL-HYBRID).
    mask : array, optional
        Broadcastable to ``(..., Hq, T, K)``, as in :func:`attention`, combined
        with the causal mask: for instance the padding of a left-padded batch.
    scale : float, optional
        Multiplies ``query @ key.T``; defaults to ``1 / sqrt(D)``.
    alpha : float or array, default 0.5
        The hybrid weight, as in :func:`attention` (one per head, say).
    softcap : float, optional
        Cap the scores at ``softcap * tanh(S / softcap)``, as in
        :func:`attention`; the state holds statistics of the capped scores,
        so every call of one sequence takes the same ``softcap``.

    Returns
    -------
    out : array of shape (..., Hq, T, Dv)
        In the dtype of ``query``.
    state : DecodeState or None
        The state after the new queries, for all ``K`` keys; None for
        ``"softmax"``.

    Raises
    ------
    TypeError
        For arrays of different libraries or dtypes, and a ``state`` that is
        not a pair of real floating arrays.
    ValueError
        For more queries than keys, a ``state`` whose shape is not
        ``(..., Hq, K - T)``, no ``state`` while the cache holds earlier
        positions, a state for ``"softmax"``, and the errors of
        :func:`attention`.
    NotImplementedError
        For ``scheme="sinkhorn"``, which has no causal form.

    Examples
    --------
    >>> import numpy as np, dnorm
    >>> rng = np.random.default_rng(0)
    >>> q, k, v = (rng.normal(size=(2, 6, 4)) for _ in range(3))
    >>> out, state = dnorm.decode(q[:, :4], k[:, :4], v[:, :4])  # prefill four positions
    >>> step, state = dnorm.decode(q[:, 4:5], k[:, :5], v[:, :5], state)  # one more
    >>> full = dnorm.attention(q[:, :5], k[:, :5], v[:, :5], causal=True)
    >>> bool(np.allclose(step, full[:, 4:5]))
    True
    """
    parts = (None, None) if state is None else _state_parts(state)
    arrays = {"mask": mask, "alpha": dispatch.array_or_none(alpha), "state.max": parts[0], "state.sum": parts[1]}
    xp = check.namespace(query=query, key=key, value=value, **arrays)
    name = check.scheme(scheme)
    if name == "sinkhorn":
        msg = "scheme='sinkhorn' has no strictly causal definition to decode with: use 'doubly' or 'hybrid'"
        raise NotImplementedError(msg)
    lead, groups = _api.checked_qkv(query, key, value, xp=xp)
    n_new, n_keys = query.shape[-2], key.shape[-2]
    if n_new > n_keys:
        msg = f"query has {n_new} new positions but key holds only {n_keys}: append the new keys to the cache first"
        raise ValueError(msg)
    factor = check.scale(scale, query.shape[-1])
    softcap = check.softcap(softcap)
    check.mask(mask, (*lead, n_new, n_keys), name="mask", xp=xp)
    check.alpha(alpha, lead, xp=xp)
    work, out_dtype = dispatch.compute_dtype(query.dtype, xp=xp)
    earlier = _checked_state(parts, name, lead, n_keys - n_new, work, xp=xp)
    q, k, v = (dispatch.cast(x, work, xp=xp) for x in (query, key, value))
    work_mask = dispatch.cast_mask(mask, work, xp=xp)
    work_alpha = dispatch.alpha_array(alpha, work, query, xp=xp)
    per_query_head = (q, work_mask, work_alpha, *(earlier or ()))
    (q, work_mask, work_alpha, *earlier), (k, v) = heads.split(per_query_head, (k, v), groups, xp=xp)
    carry = lse.LogSumExp(*earlier) if earlier else None
    scores = from_projections(q * factor, k, mask=work_mask, causal=True, offset=n_keys - n_new, softcap=softcap)
    row_bytes = math.prod(lead) * n_keys * (xp.finfo(work).bits // 8)
    rows = block_bounds(n_new, max(dispatch.MIN_ROWS, dispatch.rows_within(dispatch.CAUSAL_BYTES, row_bytes)))
    out, residuals = blocked.attend(
        scores,
        v,
        rows,
        scheme=name,
        causal=True,
        alpha=work_alpha,
        n_iter=1,
        xp=xp,
        carry=carry,
        doubling=dispatch.symbolic_lengths(xp),
    )
    last = residuals.carries[-1] if residuals.carries else None
    new_state = None
    if last is not None:
        new_state = DecodeState(*(heads.merge(x, groups, xp=xp)[..., 0, :] for x in last))
    return dispatch.cast(heads.merge(out, groups, xp=xp), out_dtype, xp=xp), new_state


def _state_parts(state: object) -> tuple[Array, Array]:
    if not (isinstance(state, tuple) and len(state) == 2):
        msg = f"state must be a DecodeState (a pair of arrays) or None, got {type(state).__name__}"
        raise TypeError(msg)
    return state[0], state[1]


def _checked_state(
    parts: tuple[Array, Array], scheme: str, lead: tuple[int, ...], n_earlier: int, dtype: Any, /, *, xp: Any
) -> list[Array] | None:
    """The state as ``(..., Hq, 1, K - T)`` arrays of the compute dtype, or None; errors name what is wrong."""
    if parts[0] is None:
        if scheme != "softmax" and n_earlier:
            msg = (
                f"state is None, but key holds {n_earlier} positions before the new queries: pass the state "
                "returned for them, or process them in this call"
            )
            raise ValueError(msg)
        return None
    if scheme == "softmax":
        msg = "scheme='softmax' keeps no state: pass state=None"
        raise ValueError(msg)
    expected = (*lead, n_earlier)
    for name, x in zip(("state.max", "state.sum"), parts, strict=True):
        if not xp.isdtype(x.dtype, "real floating"):
            msg = f"{name} must have a real floating dtype, got {x.dtype}"
            raise TypeError(msg)
        if tuple(x.shape) != expected:
            msg = f"{name} must have shape {expected} (query heads, then the K - T earlier keys), got {tuple(x.shape)}"
            raise ValueError(msg)
    return [xp.expand_dims(dispatch.cast(x, dtype, xp=xp), axis=-2) for x in parts]
