"""The routing layer: after the public functions check their arguments, this module decides who computes a call.

Every entry point comes here: :func:`attention` (for :func:`dnorm.attention`
and :func:`dnorm.scaled_dot_product_attention`), :func:`packed` (for
:func:`dnorm.varlen_attention` and torch's nested tensors), :func:`decode` and
:func:`weights` (for :func:`dnorm.normalize`). Each casts to the compute dtype
(half precision computes in float32), splits grouped-query heads, describes
the call (:class:`.contract.Call`), picks an implementation
(:data:`.implementations.IMPLEMENTATIONS`, or the one ``kernel=`` names, which
raises ``ValueError`` saying why when it cannot serve the call: never a silent
fallback), and runs it, through the framework's autodiff adapter
(:mod:`dnorm._autodiff`) when gradients may be asked for. The numbers given per
head (:class:`dnorm._validate.PerHead`) become the queries' length scale and the
sigmoid's bias (:mod:`.family`), and the implementations' parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, NamedTuple, cast

from .. import _validate as check
from .._kernels import _delegation as delegation
from .._kernels import attention as kernels
from .._kernels import budget, schemes
from .._kernels import logsumexp as lse
from .._kernels._device import device_of
from .._kernels.scores import block_bounds
from . import adapt, arrays, empty, family, heads
from .contract import Call, Decoding, Implementation, Packs
from .implementations import IMPLEMENTATIONS
from .plan import symbolic_lengths

Array = Any

__all__ = ["IMPLEMENTATIONS", "attention", "choose", "decode", "packed", "weights"]


class Routed(NamedTuple):
    """A call on its way: the implementation chosen and its arrays (grouped heads split, upcast where it
    ``upcasts``), in the order :func:`route` runs every entry point through.

    ``params``: the parameters the implementation takes (``alpha``, the sink); ``carried``: the arrays given per
    query head beside the query, mask and parameters (decoding's state).
    """

    impl: Implementation
    call: Call
    q: Array
    k: Array
    v: Array
    mask: Array | None
    params: schemes.Parameters
    carried: tuple[Array, ...]
    out_dtype: Any


def route(
    entry: str,
    request: check.Request,
    arrays_in: tuple[Array, Array, Array, Array | None, check.PerHead],
    /,
    *,
    carried: tuple[Array, ...] = (),
    seeded: bool,
    xp: Any,
) -> Routed:
    """The one pipeline of every entry point: the compute dtype, the family's scaled queries and sigmoid bias,
    grouped heads split, the call described, an implementation chosen (the one ``kernel=`` names, or raise saying
    why), and half precision upcast for the implementations that take float32 (the Triton kernels read it as it
    is)."""
    query, key, value, mask, per_head = arrays_in
    work, out_dtype = budget.compute_dtype(query.dtype, xp=xp)
    query, mask = family.scores_and_mask(query, arrays.mask(mask, work, xp=xp), per_head, request, key.shape[-2], xp=xp)
    params = family.parameters(per_head, work, query, xp=xp)
    per_query_head = (query, mask, params.alpha, params.sink, *carried)
    (q, m, a, sink, *rest), (k, v) = heads.split(per_query_head, (key, value), request.groups, xp=xp)
    training = entry == "attention" and adapt.training(xp, q, k, v, m, a, sink)
    call = _call(entry, request, q, k, work, training=training, seeded=seeded, xp=xp)
    impl = choose(call, q, k, v, m)
    if impl.upcasts and not empty.empty(q, k):
        q, k, v = (budget.cast(x, work, xp=xp) for x in (q, k, v))
    return Routed(impl, call, q, k, v, m, schemes.Parameters(a, sink), tuple(rest), out_dtype)


def finish(routed: Routed, out: Array, /, *, xp: Any) -> Array:
    """An implementation's output as the caller's: query heads merged again, in the inputs' dtype."""
    return budget.cast(heads.merge(out, routed.call.request.groups, xp=xp), routed.out_dtype, xp=xp)


def attention(
    query: Array,
    key: Array,
    value: Array,
    mask: Array | None,
    per_head: check.PerHead,
    seed: Array | None,
    request: check.Request,
    /,
    *,
    xp: Any,
) -> Array:
    """The output of :func:`dnorm.attention` for checked arguments, by the implementation the call is routed to."""
    r = route("attention", request, (query, key, value, mask, per_head), seeded=seed is not None, xp=xp)
    if empty.empty(r.q, r.k):  # no queries or no keys: no rows or zero rows (spec DEF-EMPTY-ROWS-AND-KEYS)
        return finish(r, empty.output(r.q, r.k, r.v, xp=xp), xp=xp)
    options = r.impl.options(r.call, r.q, r.k, r.mask, xp=xp)
    return finish(
        r, adapt.run(r.impl, r.call.training, r.q, r.k, r.v, r.mask, r.params, seed, options=options, xp=xp), xp=xp
    )


def packed(
    query: Array,
    key: Array,
    value: Array,
    per_head: check.PerHead,
    sequences: Sequence[tuple[int, int, int, int, check.Request | None, Array | None]],
    lead: tuple[int, ...],
    /,
    *,
    xp: Any,
) -> Array:
    """:func:`dnorm.varlen_attention`: each sequence ``(q0, q1, k0, k1, request, seed)`` of the packed arrays alone.

    A sequence without keys (``request`` None) gets zero rows. An implementation that ``packs`` computes every
    sequence in one launch over the packed arrays; the others, one sequence at a time (and every implementation,
    where the family scales each sequence's rows by what that sequence sees: a length scale, a sigmoid).
    """
    requests = [request for *_, request, _ in sequences if request is not None]
    per_row = per_head.length_scale is not None or (
        bool(requests) and check.described(requests[0].scheme).rows == "gated"
    )
    if requests and not per_row:
        whole = replace(requests[0], offset=max(r.offset or 0 for r in requests) if requests[0].causal else None)
        call = _call("attention", whole, query, key, query.dtype, training=False, seeded=False, xp=xp)
        if isinstance(choose(call, query, key, value, None), Packs):
            return _packed_at_once(query, key, value, per_head, sequences, whole, xp=xp)
    outputs = []
    for q0, q1, k0, k1, request, seed in sequences:
        if q1 == q0:
            continue
        if request is None:  # queries that attend no key get zero rows
            shape = (*lead, q1 - q0, value.shape[-1])
            outputs.append(xp.zeros(shape, dtype=query.dtype, device=device_of(query)))
            continue
        q, k, v = query[..., q0:q1, :], key[..., k0:k1, :], value[..., k0:k1, :]
        outputs.append(attention(q, k, v, None, per_head, seed, request, xp=xp))
    if not outputs:
        return xp.zeros((*lead, 0, value.shape[-1]), dtype=query.dtype, device=device_of(query))
    return outputs[0] if len(outputs) == 1 else xp.concat(outputs, axis=-2)


def _packed_at_once(
    query: Array,
    key: Array,
    value: Array,
    per_head: check.PerHead,
    sequences: Sequence[tuple[int, int, int, int, check.Request | None, Array | None]],
    request: check.Request,
    /,
    *,
    xp: Any,
) -> Array:
    """Every sequence of a packed batch in one launch (an implementation that :class:`.contract.Packs`)."""
    seed = None
    if request.dropout_p > 0:  # a sequence without queries or keys drew no seed, and needs none
        zero = xp.zeros((), dtype=xp.int32, device=device_of(query))
        seed = xp.stack([zero if s is None else xp.reshape(s, ()) for *_, s in sequences])
    r = route("attention", request, (query, key, value, None, per_head), seeded=seed is not None, xp=xp)
    impl = cast(Packs, r.impl)  # packed() offered the batch to it because it packs
    starts_q = (*(s[0] for s in sequences), sequences[-1][1])
    starts_k = (*(s[2] for s in sequences), sequences[-1][3])
    options = impl.packed_options(impl.options(r.call, r.q, r.k, None, xp=xp), starts_q, starts_k)
    return finish(
        r, adapt.run(impl, r.call.training, r.q, r.k, r.v, None, r.params, seed, options=options, xp=xp), xp=xp
    )


def decode(
    query: Array,
    key: Array,
    value: Array,
    mask: Array | None,
    per_head: check.PerHead,
    state: tuple[Array, Array] | None,
    request: check.Request,
    /,
    *,
    xp: Any,
) -> tuple[Array, tuple[Array, Array] | None]:
    """:func:`dnorm.decode` for checked arguments: the new queries' output and the state after them.

    ``state`` holds the ``(max, sum)`` arrays ``(..., Hq, K - T)`` of the
    earlier positions (None when there are none); ``request`` is causal with
    the offset ``K - T``.
    """
    work, _ = budget.compute_dtype(query.dtype, xp=xp)
    earlier = () if state is None else tuple(xp.expand_dims(budget.cast(x, work, xp=xp), axis=-2) for x in state)
    r = route("decode", request, (query, key, value, mask, per_head), carried=earlier, seeded=False, xp=xp)
    impl = cast(Decoding, r.impl)  # every implementation that serves decoding decodes
    if empty.empty(r.q, r.k):  # no new queries: no rows, and the state of the same keys
        if state is None and check.described(request.scheme).causal == "running":  # no earlier keys (checked)
            state = tuple(xp.zeros((*request.out_lead, 0), dtype=work, device=device_of(query)) for _ in range(2))
        return finish(r, empty.output(r.q, r.k, r.v, xp=xp), xp=xp), state
    carry = lse.LogSumExp(*r.carried) if r.carried else None
    options = impl.options(r.call, r.q, r.k, r.mask, xp=xp)
    out, last = impl.decode(r.q, r.k, r.v, r.mask, r.params, carry, options=options, xp=xp)
    new_state = None
    if last is not None:
        groups = request.groups
        new_state = (heads.merge(last.max, groups, xp=xp)[..., 0, :], heads.merge(last.sum, groups, xp=xp)[..., 0, :])
    return finish(r, out, xp=xp), new_state


def weights(
    scores: Array, mask: Array | None, per_head: check.PerHead, request: check.Request, /, *, log: bool, xp: Any
) -> Array:
    """:func:`dnorm.normalize`: the weights of given scores, which only the array-API kernels form."""
    work, out_dtype = budget.compute_dtype(scores.dtype, xp=xp)
    s, m = family.scores_and_mask(
        budget.cast(scores, work, xp=xp), arrays.mask(mask, work, xp=xp), per_head, request, scores.shape[-1], xp=xp
    )
    if s.shape[-2] == 0 or s.shape[-1] == 0:  # no queries or no keys: weights without entries
        return budget.cast(empty.weights(s), out_dtype, xp=xp)
    options = kernels.BlockedOptions(
        scheme=request.scheme,
        causal=request.causal,
        n_iter=request.n_iter,
        scale=1.0,
        rows=block_bounds(s.shape[-2], s.shape[-2]),
        materialize=True,
        backward_rows=(),
        offset=request.offset or 0,
        doubling=symbolic_lengths(xp),
        native_scan=delegation.native_scan(s, xp=xp),
        sink=request.sink,
        attend_current=request.attend_current,
        position=request.first_position,
    )
    w = kernels.weights(s, m, family.parameters(per_head, work, scores, xp=xp), options=options, log=log, xp=xp)
    return budget.cast(w, out_dtype, xp=xp)


def choose(call: Call, query: Array, key: Array, value: Array, mask: Array | None, /) -> Implementation:
    """The implementation of ``call``: the one ``kernel=`` names, or under ``"auto"`` the first that serves it.

    Raises ``ValueError`` with the reason when the named one cannot serve the call.
    """
    name = call.request.kernel
    if name != "auto":
        impl: Implementation = IMPLEMENTATIONS[name]
        reason = impl.refuses(call, query, key, value, mask)
        if reason is not None:
            msg = f"kernel={name!r} cannot serve this call: {reason}"
            raise ValueError(msg)
        return impl
    for impl in IMPLEMENTATIONS.values():
        if impl.refuses(call, query, key, value, mask) is None:
            return impl
    msg = "no implementation serves this call"  # the array-API kernels serve every call
    raise AssertionError(msg)


def _call(
    entry: str, request: check.Request, q: Array, k: Array, work: Any, /, *, training: bool, seeded: bool, xp: Any
) -> Call:
    lead = request.out_lead  # the scores' leading shape: grouped heads split
    if request.groups > 1:  # grouped-query attention: (..., H, G, T, D) queries over (..., H, 1, K, D) keys
        lead = (*lead[:-1], lead[-1] // request.groups, request.groups)
    return Call(
        entry,
        check.library(xp),
        request,
        lead,
        q.shape[-2],
        k.shape[-2],
        work,
        training=training,
        symbolic=symbolic_lengths(xp),
        accelerated=check.accelerated(q, xp),
        seeded=seeded,
    )
