"""Attention over one sequence sharded across processes or devices: context parallelism (all but stick-breaking).

:func:`attention` is :func:`dnorm.attention` for a sequence whose positions are
split into consecutive shards, one per participant: the processes of a
``torch.distributed`` group or the devices of a JAX mesh axis inside
``jax.shard_map``. Softmax attention needs only every key for each query; the
column statistic of doubly, hybrid and Sinkhorn attention runs over every
*query*, so a model that called :func:`dnorm.attention` on each shard alone
would normalize each shard's columns alone: another model, without an error.
Here the statistics travel with the key blocks (spec DEF-SHARDED-ATTENTION), and
each participant gets its rows of the whole sequence's attention (spec
THM-SHARDED-EQUALS-FULL).
"""

from __future__ import annotations

from typing import Any

from . import _validate as check
from ._docs import shared_docstring
from ._routing import sharded as routing

Array = Any

__all__ = ["attention"]


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
    kernel: str = "auto",
) -> Array:
    """This participant's shard of ``dnorm.attention`` over a sequence sharded along its positions (axis -2).

    Participant ``r`` of ``P`` passes positions ``r * L / P`` to ``(r + 1) * L
    / P - 1`` of the queries, keys and values, and gets the same positions of
    the output of :func:`dnorm.attention` on the whole sequence. Every
    participant must call it, with shards of one shape. Key blocks travel
    around the participants (ring attention) with their statistics: the
    column statistic of doubly and of each Sinkhorn round is collected by the
    keys as they visit every participant; the running statistic of causal
    doubly and hybrid visits them in position order, so causal attention
    takes the one sweep of ring softmax (spec DEF-SHARDED-ATTENTION,
    complexity.md). No participant holds more than its own shard, the key
    block it computes with and the next one in flight (sent off before the
    computation, so that the transfer overlaps it), and nothing of size
    ``(T, K)``.

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
        A learned sink (spec DEF-SINK), as in :func:`dnorm.attention`: one more
        key of score ``sink`` and value 0 that every query of the whole
        sequence sees (gpt-oss's sinks), for ``"softmax"``, ``"doubly"`` and
        ``"hybrid"``; its column statistic is in closed form, so nothing more
        travels. A number, or an array over the leading dims (one per head);
        differentiable, its gradient shared among the participants as
        ``alpha``'s.
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
        yet.
    kernel : {"auto", "array-api"}, default "auto"
        The implementation of each participant's blocks: the array-API
        kernels. The other names of :func:`dnorm.attention` raise
        ``ValueError``: their fused kernels take no key block from elsewhere.

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
        different lengths, a ``kernel`` other than ``"auto"`` or
        ``"array-api"``, and the errors of :func:`dnorm.attention`.
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
    mask = _key_mask(key_padding_mask, key, xp=xp)
    ring = _ring(library, group, axis_name, (query, key, value))
    per_head = check.PerHead(alpha, sink, length_scale, bias)
    return routing.attention(query, key, value, mask, per_head, request, ring, xp=xp)


def _key_mask(mask: Array | None, key: Array, /, *, xp: Any) -> Array | None:
    """``key_padding_mask`` checked, as a boolean ``(..., 1, 1, K_local)`` mask (key heads and query rows of one)."""
    if mask is None:
        return None
    if not xp.isdtype(mask.dtype, "bool"):
        msg = f"key_padding_mask must be boolean (True: a key that may be attended), got {mask.dtype}"
        raise TypeError(msg)
    batch = tuple(key.shape[:-3])
    if mask.ndim < 1 or mask.shape[-1] != key.shape[-2]:
        msg = (
            f"key_padding_mask must have shape (..., {key.shape[-2]}): one entry per key of this participant, "
            f"got {tuple(mask.shape)}"
        )
        raise ValueError(msg)
    check.broadcasts_to(tuple(mask.shape[:-1]), batch, "key_padding_mask's batch dimensions", "keys' batch")
    rows = (1, 1) if key.ndim >= 3 else (1,)
    return xp.reshape(mask, (*mask.shape[:-1], *rows, mask.shape[-1]))


def _ring(library: str, group: Any, axis_name: str | None, arrays: tuple[Array, ...], /) -> Any:
    """The participants: the processes of a torch group (whose shards must be of one shape), or the devices of a
    JAX mesh axis (``shard_map`` gives every device shards of one shape)."""
    if library == "torch":
        if axis_name is not None:
            msg = "axis_name is for JAX arrays inside shard_map; torch tensors take group= (a torch.distributed group)"
            raise ValueError(msg)
        import torch.distributed as dist

        if group is not None and not isinstance(group, dist.ProcessGroup):
            msg = f"group must be a torch.distributed ProcessGroup or None (the default), got {type(group).__name__}"
            raise TypeError(msg)
        if not dist.is_available() or not dist.is_initialized():
            msg = (
                "dnorm.distributed.attention on torch tensors needs torch.distributed: call "
                "torch.distributed.init_process_group(...) in every process first (or pass group=)"
            )
            raise ValueError(msg)
        from ._distributed import torch as collectives

        ring = collectives.ring(group)
        shapes = tuple(tuple(x.shape) for x in arrays)
        low, high = collectives.lengths_agree(tuple(n for shape in shapes for n in shape), group, arrays[0].device)
        if low != high:
            msg = (
                f"every process must pass shards of one shape (query, key, value: equal shards of the sequence), "
                f"got shapes between {_shapes(low, shapes)} and {_shapes(high, shapes)} across the group; this one "
                f"has {shapes}: split the sequence into {ring.size} equal parts"
            )
            raise ValueError(msg)
        return ring
    if library == "jax":
        if group is not None:
            msg = "group is a torch.distributed process group; JAX arrays take axis_name= (a shard_map mesh axis)"
            raise ValueError(msg)
        if axis_name is None:
            msg = (
                "JAX arrays need axis_name=, the name of the mesh axis the sequence is sharded along (call "
                "dnorm.distributed.attention inside jax.shard_map)"
            )
            raise ValueError(msg)
        if not isinstance(axis_name, str):
            msg = f"axis_name must be the name of a shard_map mesh axis (a string), got {type(axis_name).__name__}"
            raise TypeError(msg)
        from ._distributed import jax as collectives_jax

        try:
            return collectives_jax.ring(axis_name)
        except NameError:
            msg = (
                f"axis_name={axis_name!r} is not an axis of an enclosing jax.shard_map: call "
                "dnorm.distributed.attention inside shard_map over a mesh with that axis"
            )
            raise ValueError(msg) from None
    msg = (
        f"dnorm.distributed.attention takes torch tensors (torch.distributed) or JAX arrays (inside jax.shard_map), "
        f"got {library} arrays"
    )
    raise TypeError(msg)


def _shapes(flat: tuple[int, ...], like: tuple[Any, ...], /) -> tuple[tuple[int, ...], ...]:
    """``flat`` cut back into the shapes of ``like``."""
    out, at = [], 0
    for shape in like:
        out.append(tuple(flat[at : at + len(shape)]))
        at += len(shape)
    return tuple(out)
