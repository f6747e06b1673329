"""Checks of array arguments: their library, dtype and shapes; ``alpha``'s range where it can be read."""

from __future__ import annotations

import math
import sys
from numbers import Real
from typing import Any

from array_api_compat import array_namespace, is_jax_array, is_lazy_array

Array = Any


def namespace(**arrays: Array | None) -> Any:
    """The one array namespace of the named arrays (``None`` entries skipped)."""
    found: dict[str, tuple[str, Any]] = {}
    for name, x in arrays.items():
        if x is None:
            continue
        try:
            xp = _namespace_of(x)
        except TypeError:
            msg = f"{name} must be an array, got {type(x).__name__}"
            raise TypeError(msg) from None
        for other, (other_type, other_xp) in found.items():
            if xp is not other_xp:
                msg = (
                    f"{name} is a {type(x).__module__}.{type(x).__name__} but {other} is a "
                    f"{other_type}: pass arrays of one library"
                )
                raise TypeError(msg)
        found[name] = (f"{type(x).__module__}.{type(x).__name__}", xp)
    return next(iter(found.values()))[1]


def _namespace_of(x: Array) -> Any:
    """``array_namespace(x)``, with torch tensors recognized by ``isinstance`` alone.

    array-api-compat's type checks are ``lru_cache``-wrapped, which
    ``torch.compile`` warns about at every call inside a compiled function.
    """
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        import array_api_compat.torch as xp

        return xp
    return array_namespace(x)


def library(xp: Any, /) -> str:
    """``"torch"``, ``"jax"``, ``"numpy"``, ``"dask"``, ``"cupy"`` or ``"other"``: adapters, blocks, generators.

    Read from the namespace's name, not with array-API-compat's cached predicates (``torch.compile`` warns on those).
    """
    name = getattr(xp, "__name__", "")
    return _LIBRARIES.get(name, "other")


_LIBRARIES = {
    "array_api_compat.torch": "torch",
    "jax.numpy": "jax",
    "array_api_compat.numpy": "numpy",
    "array_api_compat.dask.array": "dask",
    "array_api_compat.cupy": "cupy",
}


def accelerated(x: Array, xp: Any, /) -> bool:
    """Whether ``x`` lives on an accelerator (a CUDA torch tensor, a CuPy array): it then gets larger blocks."""
    name = getattr(xp, "__name__", "")
    if name == "array_api_compat.torch":
        return x.device.type != "cpu"
    return "cupy" in name


def floating(x: Array, name: str, /, *, xp: Any, min_ndim: int = 2) -> None:
    """``x`` has a real floating dtype and at least ``min_ndim`` dimensions."""
    if not xp.isdtype(x.dtype, "real floating"):
        msg = f"{name} must have a real floating dtype, got {x.dtype}"
        raise TypeError(msg)
    if x.ndim < min_ndim:
        msg = f"{name} must have at least {min_ndim} dimensions, got shape {tuple(x.shape)}"
        raise ValueError(msg)


def broadcasts_to(shape: tuple[int, ...], target: tuple[int, ...], name: str, what: str, /) -> None:
    """``shape`` broadcasts to ``target`` without enlarging it."""
    ok = len(shape) <= len(target) and all(s in (1, t) for s, t in zip(shape[::-1], target[::-1], strict=False))
    if not ok:
        msg = f"{name} of shape {shape} does not broadcast to the {what} shape {target}"
        raise ValueError(msg)


def broadcast_shapes(shapes: dict[str, tuple[int, ...]], what: str, /) -> tuple[int, ...]:
    """The broadcast of the named shapes, or a ``ValueError`` that names them."""
    ndim = max(len(s) for s in shapes.values())
    result = []
    for axis in range(-ndim, 0):
        sizes = {n: s[axis] for n, s in shapes.items() if len(s) >= -axis and s[axis] != 1}
        if len(set(sizes.values())) > 1:
            given = ", ".join(f"{n} {shapes[n]}" for n in shapes)
            msg = f"the {what} of {given} do not broadcast"
            raise ValueError(msg)
        result.append(next(iter(sizes.values()), 1))
    return tuple(result)


def mask(value: Array | None, target: tuple[int, ...], /, *, name: str, xp: Any) -> None:
    if value is None:
        return
    if not (xp.isdtype(value.dtype, "bool") or xp.isdtype(value.dtype, "real floating")):
        msg = f"{name} must be boolean (True = may attend) or real floating (added), got {value.dtype}"
        raise TypeError(msg)
    broadcasts_to(tuple(value.shape), target, name, "scores")


def alpha(value: object, lead: tuple[int, ...], /, *, xp: Any) -> None:
    """``alpha`` is a number or an array broadcastable over the leading dims, in [0, 1]."""
    if isinstance(value, bool):
        msg = f"alpha must be a number in [0, 1] or an array, got {value!r}"
        raise TypeError(msg)
    if isinstance(value, Real):
        if not 0.0 <= float(value) <= 1.0:  # NaN fails this too
            msg = f"alpha must be in [0, 1], got {value}"
            raise ValueError(msg)
        return
    if not xp.isdtype(value.dtype, "real floating"):  # type: ignore[attr-defined]
        msg = f"alpha must be a number or a real floating array, got dtype {value.dtype}"  # type: ignore[attr-defined]
        raise TypeError(msg)
    broadcasts_to(tuple(value.shape), lead, "alpha", "leading (batch, head)")  # type: ignore[attr-defined]
    if _is_concrete(value):
        outside = xp.any(~((value >= 0) & (value <= 1)))  # type: ignore[operator]
        if bool(outside):
            msg = "alpha must be in [0, 1] everywhere, got values outside it (or NaN)"
            raise ValueError(msg)


def per_head(value: object, lead: tuple[int, ...], name: str, /, *, xp: Any) -> None:
    """``value`` is None, a finite real number, or a real floating array broadcastable over the leading dims (a
    sink, a length scale, a sigmoid's bias: one per head, say)."""
    if value is None:
        return
    if isinstance(value, bool) or not (isinstance(value, Real) or hasattr(value, "dtype")):
        msg = f"{name} must be a real number or a real floating array, got {type(value).__name__}"
        raise TypeError(msg)
    if isinstance(value, Real):
        if not math.isfinite(float(value)):
            msg = f"{name} must be finite, got {value}"
            raise ValueError(msg)
        return
    array: Array = value
    if not xp.isdtype(array.dtype, "real floating"):
        msg = f"{name} must be a number or a real floating array, got dtype {array.dtype}"
        raise TypeError(msg)
    broadcasts_to(tuple(array.shape), lead, name, "leading (batch, head)")


def qkv(
    query: Array, key: Array, value: Array, /, *, xp: Any, grouped: bool | None = None
) -> tuple[tuple[int, ...], int]:
    """Check query, key and value against each other; return the leading shape of the output and the head groups.

    The leading dimensions broadcast together, or (grouped-query attention)
    those before axis -3 do and the query heads (axis -3) are a multiple of
    the key heads, which equal the value heads; the second number is then
    query heads per key head, else 1. ``grouped`` says, as torch's
    ``enable_gqa``, whether heads may be grouped (True, and then they must
    be) or not (False); None lets the shapes decide.
    """
    for name, x in (("query", query), ("key", key), ("value", value)):
        floating(x, name, xp=xp, min_ndim=3 if grouped else 2)
    if not query.dtype == key.dtype == value.dtype:
        msg = f"query, key and value must share one dtype, got {query.dtype}, {key.dtype}, {value.dtype}"
        raise TypeError(msg)
    if query.shape[-1] != key.shape[-1]:
        msg = f"query and key must have the same feature size D, got {query.shape[-1]} and {key.shape[-1]}"
        raise ValueError(msg)
    if key.shape[-2] != value.shape[-2]:
        msg = f"key and value must have the same length K, got {key.shape[-2]} and {value.shape[-2]}"
        raise ValueError(msg)
    shapes = {"query": query.shape[:-2], "key": key.shape[:-2], "value": value.shape[:-2]}
    heads, kv_heads = (query.shape[-3], key.shape[-3]) if min(query.ndim, key.ndim, value.ndim) >= 3 else (0, 0)
    if grouped is False and kv_heads not in (0, 1, heads):
        msg = f"query has {heads} heads and key {kv_heads}: pass enable_gqa=True to group them"
        raise ValueError(msg)
    if grouped and (kv_heads == 0 or heads % kv_heads or value.shape[-3] != kv_heads):
        msg = (
            f"enable_gqa needs query heads ({heads}) to be a multiple of key heads ({kv_heads}) "
            f"and value heads ({value.shape[-3]}) equal to key heads"
        )
        raise ValueError(msg)
    if kv_heads in (0, 1) or heads == kv_heads or heads % kv_heads or value.shape[-3] != kv_heads:
        return broadcast_shapes(shapes, "leading dimensions"), 1
    outer = broadcast_shapes({n: s[:-1] for n, s in shapes.items()}, "leading dimensions before the heads")
    return (*outer, heads), heads // kv_heads


def array_or_none(alpha: object, /) -> Array | None:
    """``alpha`` (or a sink, a length scale, a bias) when it is an array (whose library must match the others'),
    None for a number or None."""
    return None if alpha is None or isinstance(alpha, Real) else alpha


def _is_concrete(x: Array) -> bool:
    """Whether reading ``x``'s values costs no graph computation and no tracing error."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        return not torch.compiler.is_compiling()  # a traced tensor's value would break the graph
    if is_jax_array(x):
        import jax

        return not isinstance(x, jax.core.Tracer)
    return not is_lazy_array(x)
