"""Attention over one sequence sharded across processes or devices: context parallelism (all but stick-breaking).

:func:`attention` is :func:`dnorm.attention` for a sequence whose positions are
split into shards, one per participant (consecutive, or the balanced zigzag of
:func:`shard`): the processes of a ``torch.distributed`` group or the devices
of a JAX mesh axis inside ``jax.shard_map``. Softmax attention needs only every key for each query; the
column statistic of doubly, hybrid and Sinkhorn attention runs over every
*query*, so a model that called :func:`dnorm.attention` on each shard alone
would normalize each shard's columns alone: another model, without an error.
Here the statistics travel with the key blocks (spec DEF-SHARDED-ATTENTION), and
each participant gets its rows of the whole sequence's attention (spec
THM-SHARDED-EQUALS-FULL).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import _validate as check
from ._distributed import participants
from ._docs import shared_docstring
from ._kernels import sharded_layout as layouts
from ._routing import sharded as routing

Array = Any

__all__ = ["attention", "shard", "unshard"]

LAYOUTS = layouts.LAYOUTS
STRATEGIES = ("ring", "all-gather")


@shared_docstring
def attention(
    query: Array,
    key: Array,
    value: Array,
    /,
    scheme: str = "doubly",
    *,
    causal: bool | str = False,
    group: Any = None,
    axis_name: str | None = None,
    scale: float | None = None,
    alpha: float | Array = 0.5,
    n_iter: int = 3,
    softcap: float | None = None,
    key_padding_mask: Array | None = None,
    sink: float | Array | None = None,
    length_scale: float | Array | None = None,
    bias: float | Array | None = None,
    layout: str = "contiguous",
    strategy: str = "ring",
    kernel: str = "auto",
) -> Array:
    """This participant's shard of ``dnorm.attention`` over a sequence sharded along its positions (axis -2).

    Participant ``r`` of ``P`` passes its positions of the queries, keys and
    values (``shard(x, rank=r, size=P, layout=layout)``: positions ``r * L /
    P`` to ``(r + 1) * L / P - 1`` for ``"contiguous"``), and gets the same
    positions of the output of :func:`dnorm.attention` on the whole sequence.
    Every participant must call it, with shards of one shape. With the
    ``"ring"`` strategy key blocks travel around the participants (ring
    attention) with their statistics: the column statistic of doubly and of
    each Sinkhorn round is collected by the keys as they visit every
    participant; the running statistic of causal doubly and hybrid visits
    them in position order over contiguous shards, in one sweep as causal
    ring softmax, and takes a two-level scan over zigzag shards (spec
    DEF-SHARDED-ATTENTION, DEF-ZIGZAG-LAYOUT, complexity.md). A participant
    holds its shard, the key block at hand and the next one in flight (the
    transfer overlaps the computation), nothing of size ``(T, K)``. With
    ``"all-gather"`` (non-causal) every participant gathers every key and
    value once; the column statistics are all-reduced (spec
    DEF-ALL-GATHER-STRATEGY).

    {schemes}

    Parameters
    ----------
    query : array of shape (..., T_local, D)
    key : array of shape (..., K_local, D)
    value : array of shape (..., K_local, Dv)
        This participant's shards: torch tensors (``torch.distributed``) or
        JAX arrays (inside ``jax.shard_map``). Leading dimensions as in
        :func:`dnorm.attention`, grouped-query heads included.
    {scheme_param}
    causal : {False, True, "top-left", "bottom-right"}, default False
        Strictly causal attention over the whole sequence (spec
        DEF-CAUSAL-DNAS); needs query and key shards of one length
        (self-attention, where both alignments are the same).
        ``"sinkhorn"`` has no causal form and raises ``NotImplementedError``.
    group : torch.distributed.ProcessGroup, optional
        The processes that share the sequence, in the order of their shards
        (their ranks in the group); None is the default group. Torch only.
    axis_name : str, optional
        The ``shard_map`` mesh axis the sequence is sharded along. JAX only,
        and required there.
    scale : float, optional
        Multiplies ``query @ key.T``; defaults to ``1 / sqrt(D)``.
    {alpha_param}
        The gradient of an array ``alpha`` is, under torch, this process's
        share (as for any parameter every process holds: sum or average the
        shares with the others, as DDP does); under JAX, for an ``alpha``
        that does not vary along the axis, the sum of the shares.
    {n_iter_param}
    softcap : float, optional
        ``softcap * tanh(S / softcap)`` before masking (spec DEF-SOFTCAP).
    key_padding_mask : boolean array of shape (..., K_local), optional
        This participant's keys that may be attended (True) or are padding
        (False: no query sees them), sharded like the keys; its leading
        dimensions are the batch dimensions, those of the keys before the
        heads (for example ``(B, K_local)`` for keys ``(B, H, K_local, D)``).
        dnorm's convention, as torch's ``scaled_dot_product_attention``;
        torch's ``nn.MultiheadAttention`` marks padding with True instead.
    sink : float or array, optional
        A learned sink (spec DEF-SINK), as in :func:`dnorm.attention`, for
        ``"softmax"``, ``"doubly"`` and ``"hybrid"``: its column statistic is
        in closed form, so nothing more travels. A number, or an array over
        the leading dims (one per head); differentiable, its gradient shared
        among the participants as ``alpha``'s.
    length_scale : float or array, optional
        Scalable softmax (spec DEF-LENGTH-SCALE), as in :func:`dnorm.attention`:
        the scores of query ``i`` times ``length_scale * log n_i``, ``n_i`` the
        keys of the whole sequence it may attend (every participant's key
        padding mask and the causal triangle counted). A number, or an array
        over the leading dims (one per head); differentiable, its gradient
        shared among the participants as ``alpha``'s.
    bias : float or array, optional
        The bias of ``scheme="sigmoid"`` (spec DEF-SIGMOID), as in
        :func:`dnorm.attention`: ``sigmoid(S_ij + b_i)``, by default ``b_i =
        -log n_i`` counted over the whole sequence. A number, or an array over
        the leading dims (one per head); differentiable, its gradient shared
        among the participants as ``alpha``'s. The family's other forms
        (``"stick-breaking"``, a sink under ``"sinkhorn"``) are not sharded
        yet. ``sink``, ``length_scale``, ``bias`` and ``scheme="sigmoid"``
        take the contiguous layout and the ring strategy (the defaults); with
        ``layout="zigzag"`` or ``strategy="all-gather"`` they raise
        ``ValueError``.
    layout : {"contiguous", "zigzag"}, default "contiguous"
        Which positions each participant holds (:func:`shard`): consecutive
        shards, or chunks ``r`` and ``2P - 1 - r`` of the sequence cut in
        ``2P``, which gives every participant the same causal work (spec
        DEF-ZIGZAG-LAYOUT). Zigzag shards hold an even number of positions.
    strategy : {"ring", "all-gather"}, default "ring"
        How the keys reach the queries: key blocks passed around the
        participants, or, for non-causal calls, gathered once by every
        participant (memory ``O(L D)`` per participant against fewer bytes
        sent: spec DEF-ALL-GATHER-STRATEGY, complexity.md).
    kernel : {"auto", "array-api", "triton"}, default "auto"
        Each participant's stops: the array-API kernels, or the fused Triton
        passes (torch tensors on a CUDA device, or CPU tensors under
        ``TRITON_INTERPRET=1``; half precision read as it is), which
        ``"auto"`` takes where they serve the call. The other names raise
        ``ValueError``: their kernels take no key block from elsewhere.

    Returns
    -------
    array of shape (..., T_local, Dv)
        This participant's positions of the output, in the namespace, device
        and dtype of ``query``. Differentiable (torch autograd, JAX ``grad``):
        the backward pass runs the matching sweeps, and the gradients of the
        keys and values are those of the whole sequence's loss, returned to
        the shard's owner, contiguous.

    Raises
    ------
    TypeError
        For arrays of a library other than torch and JAX, and the errors of
        :func:`dnorm.attention`.
    ValueError
        For shards of different shapes on different participants, a torch
        process group that is not initialized, a JAX call outside a
        ``shard_map`` with ``axis_name``, causal shards of queries and keys of
        different lengths, an unknown ``layout`` or ``strategy``, zigzag shards
        of an odd length, ``strategy="all-gather"`` with ``causal``, the
        normalization family's options (``sink``, ``length_scale``, ``bias``,
        ``scheme="sigmoid"``) with ``layout="zigzag"`` or
        ``strategy="all-gather"``, a ``kernel`` other than ``"auto"``,
        ``"array-api"`` or ``"triton"``, ``kernel="triton"`` where its stops
        cannot serve (as :func:`dnorm.attention`'s Triton kernels, the reason
        named), and the errors of :func:`dnorm.attention`.
    NotImplementedError
        For ``scheme="sinkhorn"`` with ``causal`` or a ``sink``, and
        ``"stick-breaking"``, not sharded yet.

    Examples
    --------
    torch, one process per shard (``torchrun --nproc-per-node 2 script.py``)::

        torch.distributed.init_process_group("gloo")
        r, p = torch.distributed.get_rank(), torch.distributed.get_world_size()
        n = q.shape[-2] // p
        mine = slice(r * n, (r + 1) * n)
        out = dnorm.distributed.attention(q[..., mine, :], k[..., mine, :], v[..., mine, :], causal=True)

    JAX, one device per shard::

        mesh = jax.make_mesh((4,), ("seq",))
        spec = jax.P(None, None, "seq", None)
        f = jax.shard_map(
            lambda q, k, v: dnorm.distributed.attention(q, k, v, axis_name="seq"),
            mesh=mesh, in_specs=(spec, spec, spec), out_specs=spec,
        )
    """
    xp = check.namespace(
        query=query,
        key=key,
        value=value,
        key_padding_mask=key_padding_mask,
        alpha=check.array_or_none(alpha),
        sink=check.array_or_none(sink),
        length_scale=check.array_or_none(length_scale),
        bias=check.array_or_none(bias),
    )
    library = check.library(xp)
    if kernel not in routing.KERNELS:
        check.kernel(kernel)  # an unknown name: the error that lists the names
        msg = (
            f"kernel={kernel!r} cannot serve a sharded call: its kernels take no key block from another "
            f"participant; use one of {routing.KERNELS}"
        )
        raise ValueError(msg)
    if causal is not False and isinstance(causal, bool | str) and query.shape[-2] != key.shape[-2]:
        msg = (
            f"causal sharded attention needs query and key shards of one length (self-attention), got "
            f"{query.shape[-2]} queries and {key.shape[-2]} keys on this participant"
        )
        raise ValueError(msg)
    check.sharded_scheme(scheme, sink=sink is not None)  # the normalization family's other forms: not yet
    asked = check.Asked(
        scheme=scheme, causal=causal, scale=scale, n_iter=n_iter, softcap=softcap, kernel=kernel, sink=sink,
        length_scale=length_scale, bias=bias,
    )  # fmt: skip
    request = check.attention_request(query, key, value, None, alpha, asked, xp=xp)
    participants.transport(layout, strategy, request.causal, query.shape[-2], layouts=LAYOUTS, strategies=STRATEGIES)
    participants.family_transport(layout, strategy, scheme=scheme, sink=sink, length_scale=length_scale, bias=bias)
    mask = participants.key_mask(key_padding_mask, key, xp=xp)
    ring = participants.ring(library, group, axis_name, (query, key, value))
    per_head = check.PerHead(alpha, sink, length_scale, bias)
    return routing.attention(query, key, value, mask, per_head, request, ring, layout=layout, strategy=strategy, xp=xp)


def shard(x: Array, /, *, rank: int, size: int, layout: str = "contiguous", axis: int = -2) -> Array:
    """Participant ``rank``'s part of a whole array, the positions :func:`attention` expects from it.

    Parameters
    ----------
    x : array
        The whole sequence along ``axis``, of a length that ``size``
        (``"contiguous"``) or ``2 * size`` (``"zigzag"``) divides. Any
        array-API library.
    rank, size : int
        This participant's place ``0 <= rank < size`` and the number of participants.
    layout : {"contiguous", "zigzag"}, default "contiguous"
        ``"contiguous"``: the ``rank``-th of ``size`` equal parts.
        ``"zigzag"``: chunks ``rank`` and ``2 * size - 1 - rank`` of the
        sequence cut in ``2 * size``, one after the other (spec
        DEF-ZIGZAG-LAYOUT).
    axis : int, default -2
        The sequence axis (-1 for a key padding mask).

    Returns
    -------
    array
        A view of ``x`` for contiguous shards, a new array for zigzag ones.

    Raises
    ------
    TypeError, ValueError
        For a ``rank``, ``size``, ``layout`` or ``axis`` out of range, and a
        length the chunks do not divide.

    Examples
    --------
    >>> import numpy as np
    >>> import dnorm
    >>> x = np.arange(8)[:, None]
    >>> dnorm.distributed.shard(x, rank=1, size=2, layout="zigzag")[:, 0]
    array([2, 3, 4, 5])
    """
    xp = check.namespace(x=x)
    for name, number in (("rank", rank), ("size", size)):
        if isinstance(number, bool) or not isinstance(number, int):
            msg = f"{name} must be an int, got {type(number).__name__}"
            raise TypeError(msg)
    if not 0 <= rank < size:
        msg = f"rank must satisfy 0 <= rank < size, got rank={rank} and size={size}"
        raise ValueError(msg)
    participants.choose(layout, "layout", LAYOUTS)
    axis = participants.axis(axis, x.ndim)
    parts = layouts.parts(size, layout)
    if x.shape[axis] % parts:
        msg = (
            f"a {layout} layout over {size} participants cuts the sequence into {parts} equal chunks: its length "
            f"along axis {axis} must be a multiple of {parts}, got {x.shape[axis]}"
        )
        raise ValueError(msg)
    return layouts.shard(x, rank=rank, size=size, layout=layout, axis=axis, xp=xp)


def unshard(parts: Sequence[Array], /, *, layout: str = "contiguous", axis: int = -2) -> Array:
    """The whole array from every participant's part (:func:`shard`'s inverse), as an all-gather returns them.

    Parameters
    ----------
    parts : sequence of arrays of one shape
        Every participant's part, in the order of their places.
    layout : {"contiguous", "zigzag"}, default "contiguous"
        The layout of :func:`shard` that cut them.
    axis : int, default -2
        The sequence axis.

    Returns
    -------
    array
        The positions in the order of the whole sequence.

    Raises
    ------
    TypeError, ValueError
        For no parts, parts of different shapes, an unknown ``layout``, an
        ``axis`` out of range, and zigzag parts of an odd length.

    Examples
    --------
    >>> import numpy as np
    >>> import dnorm
    >>> x = np.arange(8)[:, None]
    >>> parts = [dnorm.distributed.shard(x, rank=r, size=2, layout="zigzag") for r in range(2)]
    >>> bool((dnorm.distributed.unshard(parts, layout="zigzag") == x).all())
    True
    """
    if isinstance(parts, str) or not isinstance(parts, Sequence) or not parts:
        msg = f"parts must be a non-empty sequence of arrays (every participant's), got {type(parts).__name__}"
        raise TypeError(msg)
    xp = check.namespace(**{f"parts[{i}]": x for i, x in enumerate(parts)})
    shapes = {tuple(x.shape) for x in parts}
    if len(shapes) > 1:
        msg = f"parts must all have one shape (equal shards), got {sorted(shapes)}"
        raise ValueError(msg)
    participants.choose(layout, "layout", LAYOUTS)
    axis = participants.axis(axis, parts[0].ndim)
    if layout == "zigzag" and parts[0].shape[axis] % 2:
        msg = (
            f"zigzag parts hold two equal chunks: their length along axis {axis} must be even, got "
            f"{parts[0].shape[axis]}"
        )
        raise ValueError(msg)
    return layouts.unshard(parts, layout=layout, axis=axis, xp=xp)
