"""``decode``: incremental causal attention from a KV cache and a per-key state (spec decoding.md)."""

from __future__ import annotations

from typing import Any, NamedTuple

from . import _routing as routing
from . import _validate as check
from ._docs import shared_docstring

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


@shared_docstring
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
    kernel: str = "auto",
    sink: float | Array | None = None,
    length_scale: float | Array | None = None,
    bias: float | Array | None = None,
    attend_current: bool = False,
    position: int | None = None,
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
    scheme : {"doubly", "hybrid", "softmax", "sigmoid", "stick-breaking"}, default "doubly"
        The strictly causal scheme (spec DEF-CAUSAL-DNAS, DEF-CAUSAL-HYBRID);
        ``"sigmoid"`` and ``"stick-breaking"`` weigh each row from its own
        scores and keep no state, as ``"softmax"``.
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
    {kernel_param}
        Decoding is strictly causal: ``"torch"`` and ``"dask"`` cannot serve it.
    {family_params}
        A sink needs no state: its running statistic at position ``p`` is
        ``sink + log(p + 1)`` (spec DEF-SINK).
    position : int, optional
        The position of the first new query in its sequence: ``K - T`` (the
        default) unless the cache dropped earlier positions (a sliding window
        that keeps the last keys only). Only the sink's running statistic
        under ``"doubly"`` and ``"hybrid"`` reads it.

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
    per_head = check.PerHead(alpha, sink, length_scale, bias)
    arrays = {"mask": mask, **per_head.arrays(), "state.max": parts[0], "state.sum": parts[1]}
    xp = check.namespace(query=query, key=key, value=value, **arrays)
    name = check.scheme(scheme)
    if check.described(name).causal is None:
        msg = f"scheme={name!r} has no strictly causal definition to decode with: use 'doubly' or 'hybrid'"
        raise NotImplementedError(msg)
    lead, groups = check.qkv(query, key, value, xp=xp)
    n_new, n_keys = query.shape[-2], key.shape[-2]
    if n_new > n_keys:
        msg = f"query has {n_new} new positions but key holds only {n_keys}: append the new keys to the cache first"
        raise ValueError(msg)
    factor = check.scale(scale, query.shape[-1])
    cap = check.softcap(softcap)
    check.mask(mask, (*lead, n_new, n_keys), name="mask", xp=xp)
    check.alpha(alpha, lead, xp=xp)
    asked = check.Asked(name, sink=sink, length_scale=length_scale, bias=bias, attend_current=attend_current)
    check.attention_family(name, asked, lead, xp=xp)
    offset = check.causal_offset("bottom-right", n_new, n_keys) or 0  # the new queries are the last positions
    if position is not None and (isinstance(position, bool) or not isinstance(position, int) or position < offset):
        msg = (
            f"position must be an integer >= K - T = {offset} (the positions the cache holds before), got {position!r}"
        )
        raise ValueError(msg)
    earlier = _checked_state(parts, name, lead, offset, xp=xp)
    request = check.Request(
        name, offset, factor, lead, groups, n_iter=1, softcap=cap, kernel=check.kernel(kernel),
        sink=sink is not None, attend_current=attend_current, position=position,
    )  # fmt: skip
    out, new_state = routing.decode(query, key, value, mask, per_head, earlier, request, xp=xp)
    return out, None if new_state is None else DecodeState(*new_state)


def _state_parts(state: object) -> tuple[Array, Array]:
    if not (isinstance(state, tuple) and len(state) == 2):
        msg = f"state must be a DecodeState (a pair of arrays) or None, got {type(state).__name__}"
        raise TypeError(msg)
    return state[0], state[1]


def _checked_state(
    parts: tuple[Array, Array], scheme: str, lead: tuple[int, ...], n_earlier: int, /, *, xp: Any
) -> tuple[Array, Array] | None:
    """The state's two arrays, checked to be real floating of shape ``(..., Hq, K - T)``, or None."""
    keeps = check.described(scheme).causal == "running"  # the running statistic is the state (DEF-DECODE-STATE)
    if parts[0] is None:
        if keeps and n_earlier:
            msg = (
                f"state is None, but key holds {n_earlier} positions before the new queries: pass the state "
                "returned for them, or process them in this call"
            )
            raise ValueError(msg)
        return None
    if not keeps:
        msg = f"scheme={scheme!r} keeps no state: pass state=None"
        raise ValueError(msg)
    expected = (*lead, n_earlier)
    for name, x in zip(("state.max", "state.sum"), parts, strict=True):
        if not xp.isdtype(x.dtype, "real floating"):
            msg = f"{name} must have a real floating dtype, got {x.dtype}"
            raise TypeError(msg)
        if tuple(x.shape) != expected:
            msg = f"{name} must have shape {expected} (query heads, then the K - T earlier keys), got {tuple(x.shape)}"
            raise ValueError(msg)
    return parts
