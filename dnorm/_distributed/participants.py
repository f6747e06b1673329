"""The participants of a call of :func:`dnorm.distributed.attention`: its ring, checked, and its key mask."""

from __future__ import annotations

from typing import Any

from .. import _validate as check

Array = Any


def key_mask(mask: Array | None, key: Array, /, *, xp: Any) -> Array | None:
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


def ring(library: str, group: Any, axis_name: str | None, arrays: tuple[Array, ...], /) -> Any:
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
        from . import torch as collectives

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
        from . import jax as collectives_jax

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


def choose(value: object, name: str, choices: tuple[str, ...], /) -> None:
    if not isinstance(value, str) or value not in choices:
        msg = f"{name} must be one of {choices}, got {value!r}"
        raise (ValueError if isinstance(value, str) else TypeError)(msg)


def axis(axis: object, ndim: int, /) -> int:
    """``axis`` as a negative index of an array of ``ndim`` dimensions."""
    if isinstance(axis, bool) or not isinstance(axis, int):
        msg = f"axis must be an int, got {type(axis).__name__}"
        raise TypeError(msg)
    if not -ndim <= axis < ndim:
        msg = f"axis must be an axis of the array ({-ndim} <= axis < {ndim}), got {axis}"
        raise ValueError(msg)
    return axis - ndim if axis >= 0 else axis


def transport(
    layout: object,
    strategy: object,
    causal: bool,
    length: int,
    /,
    *,
    layouts: tuple[str, ...],
    strategies: tuple[str, ...],
) -> None:
    """``layout`` and ``strategy`` checked against the call."""
    choose(layout, "layout", layouts)
    choose(strategy, "strategy", strategies)
    if strategy == "all-gather" and causal:
        msg = (
            "strategy='all-gather' serves non-causal calls; causal attention takes strategy='ring' (with "
            "layout='zigzag' for balanced work)"
        )
        raise ValueError(msg)
    if layout == "zigzag" and length % 2:
        msg = (
            f"layout='zigzag' shards hold two equal chunks: an even number of positions, got {length} on this "
            "participant"
        )
        raise ValueError(msg)


def family_transport(layout: str, strategy: str, /, *, scheme: str, **given: object) -> None:
    """The normalization family's options take the contiguous layout and the ring strategy: their sharded forms
    (the sink's running logit, the counts of the length scale and of the sigmoid's default bias) count positions
    over consecutive shards, and no other transport has been tested with them."""
    if layout == "contiguous" and strategy == "ring":
        return
    named = [f"{name}=" for name, value in given.items() if value is not None]
    if check.described(scheme).rows == "gated":
        named.insert(0, f"scheme={scheme!r}")
    if named:
        msg = (
            f"{', '.join(named)} with layout={layout!r} and strategy={strategy!r} is not sharded yet: the "
            "normalization family's options take layout='contiguous' and strategy='ring' (the defaults)"
        )
        raise ValueError(msg)
