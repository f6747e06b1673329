"""Argument checks of the public functions, and their error messages.

Every check names the argument, what was expected and what came.  Nothing
here reads array values except :func:`alpha`'s range check on arrays that are
already computed (never on JAX tracers or Dask graphs).
"""

from __future__ import annotations

import math
import sys
from numbers import Real
from typing import Any

from array_api_compat import array_namespace, is_jax_array, is_lazy_array

Array = Any

SCHEMES = ("softmax", "doubly", "hybrid", "sinkhorn")


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
    """``"torch"``, ``"jax"``, ``"numpy"``, ``"dask"`` or ``"other"``: adapters, block sizes and generators.

    Read from the namespace's name, not with array-API-compat's cached predicates (``torch.compile`` warns on those).
    """
    name = getattr(xp, "__name__", "")
    return _LIBRARIES.get(name, "other")


_LIBRARIES = {
    "array_api_compat.torch": "torch",
    "jax.numpy": "jax",
    "array_api_compat.numpy": "numpy",
    "array_api_compat.dask.array": "dask",
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


def scheme(value: object, /) -> str:
    if not isinstance(value, str):
        msg = f"scheme must be a string, one of {SCHEMES}, got {type(value).__name__}"
        raise TypeError(msg)
    if value not in SCHEMES:
        msg = f"scheme must be one of {SCHEMES}, got {value!r}"
        raise ValueError(msg)
    return value


def flag(value: object, name: str, /) -> bool:
    if not isinstance(value, bool):
        msg = f"{name} must be True or False, got {value!r}"
        raise TypeError(msg)
    return value


ALIGNMENTS = ("top-left", "bottom-right")


def causal(value: object, n_queries: int, n_keys: int, /) -> int | None:
    """The causal mask's offset: query ``i`` sees the keys ``j <= i + offset`` (None: not causal).

    ``"top-left"`` is offset 0 (torch's ``is_causal``); ``"bottom-right"`` is
    ``K - T``, the queries being the last ``T`` positions (decoding). ``True``
    is either when ``T == K`` and ambiguous otherwise: a single new query
    under top-left alignment sees key 0 only.
    """
    if value is False:
        return None
    if value is True:
        if n_queries == n_keys:
            return 0
        msg = (
            f"causal=True is ambiguous with {n_queries} queries and {n_keys} keys: pass causal='top-left' "
            "(query i sees keys j <= i, as torch's is_causal) or causal='bottom-right' (the queries are the last "
            "positions, as in decoding)"
        )
        raise ValueError(msg)
    msg = f"causal must be True, False, 'top-left' or 'bottom-right', got {value!r}"
    if not isinstance(value, str):
        raise TypeError(msg)
    if value not in ALIGNMENTS:
        raise ValueError(msg)
    return 0 if value == "top-left" else n_keys - n_queries


def positive_int(value: object, name: str, /) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"{name} must be an integer >= 1, got {value!r}"
        raise TypeError(msg)
    if value < 1:
        msg = f"{name} must be an integer >= 1, got {value}"
        raise ValueError(msg)
    return value


def softcap(value: object, /) -> float | None:
    """The softcap: None, or a positive finite real number."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Real):
        msg = f"softcap must be a positive real number or None, got {type(value).__name__}"
        raise TypeError(msg)
    cap = float(value)
    if not (math.isfinite(cap) and cap > 0):
        msg = f"softcap must be positive and finite, got {value}"
        raise ValueError(msg)
    return cap


def probability(value: object, name: str, /) -> float:
    """A dropout probability, in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        msg = f"{name} must be a number in [0, 1), got {type(value).__name__}"
        raise TypeError(msg)
    p = float(value)
    if not 0.0 <= p < 1.0:
        msg = f"{name} must be a number in [0, 1), got {value}"
        raise ValueError(msg)
    return p


def scale(value: object, head_dim: int, /) -> float:
    """The score scale; ``None`` means ``1 / sqrt(head_dim)``."""
    if value is None:
        return 1.0 / math.sqrt(head_dim)
    if isinstance(value, bool) or not isinstance(value, Real):
        msg = f"scale must be a real number or None, got {type(value).__name__}"
        raise TypeError(msg)
    if not math.isfinite(value):
        msg = f"scale must be finite, got {value}"
        raise ValueError(msg)
    return float(value)


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


def _is_concrete(x: Array) -> bool:
    """Whether reading ``x``'s values costs no graph computation and no tracing error."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        return not torch.compiler.is_compiling()  # a traced tensor's value would break the graph
    if is_jax_array(x):
        import jax

        return not isinstance(x, jax.core.Tracer)
    return not is_lazy_array(x)
