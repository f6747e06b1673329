"""Checks of the options of the public functions: scheme, causal alignment, numbers and flags."""

from __future__ import annotations

import math
from numbers import Real

from .._kernels.schemes import NAMES as SCHEMES
from .._kernels.schemes import SCHEMES as _DESCRIPTIONS
from .._kernels.schemes import Scheme


def scheme(value: object, /) -> str:
    """A scheme name, one of :data:`SCHEMES`."""
    return _choice(value, "scheme", SCHEMES)


def described(name: str, /) -> Scheme:
    """What the scheme ``name`` (a checked name) is: :class:`dnorm._kernels.schemes.Scheme`."""
    return _DESCRIPTIONS[name]


def _choice(value: object, name: str, choices: tuple[str, ...], /) -> str:
    """``value`` if it is one of the names ``choices``; else the error that names the argument and the choices."""
    if not isinstance(value, str):
        msg = f"{name} must be a string, one of {choices}, got {type(value).__name__}"
        raise TypeError(msg)
    if value not in choices:
        msg = f"{name} must be one of {choices}, got {value!r}"
        raise ValueError(msg)
    return value


def flag(value: object, name: str, /) -> bool:
    if not isinstance(value, bool):
        msg = f"{name} must be True or False, got {value!r}"
        raise TypeError(msg)
    return value


ALIGNMENTS = ("top-left", "bottom-right")


def causal_offset(value: object, n_queries: int, n_keys: int, /) -> int | None:
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
        if head_dim == 0:
            msg = "scale defaults to 1 / sqrt(D), which has no value for D = 0: pass scale explicitly"
            raise ValueError(msg)
        return 1.0 / math.sqrt(head_dim)
    if isinstance(value, bool) or not isinstance(value, Real):
        msg = f"scale must be a real number or None, got {type(value).__name__}"
        raise TypeError(msg)
    if not math.isfinite(value):
        msg = f"scale must be finite, got {value}"
        raise ValueError(msg)
    return float(value)


def scheme_and_offset(
    scheme_name: object, /, *, causal: object, n_iter: object, shape: tuple[int, int]
) -> tuple[str, int | None]:
    """Check the options every scheme function takes; return the scheme and the causal offset (None: not causal)."""
    name = scheme(scheme_name)
    positive_int(n_iter, "n_iter")
    if not described(name).bidirectional and causal is False:
        msg = (
            f"scheme={name!r} is causal only (query i weighs the keys before it, the nearest first): pass "
            "causal=True, or a scheme with a bidirectional form"
        )
        raise NotImplementedError(msg)
    if described(name).causal is None and causal is not False and isinstance(causal, bool | str):
        msg = (
            f"scheme={name!r} has no strictly causal definition: use causal=False with an "
            "explicit triangular mask (bidirectional), or scheme='doubly' with causal=True"
        )
        raise NotImplementedError(msg)
    offset = causal_offset(causal, *shape)
    if offset is not None and offset > 0 and shape[0] > 0 and described(name).causal == "running":
        msg = (
            f"causal='bottom-right' with {shape[0]} queries for {shape[1]} keys needs the running column statistic "
            f"of the {offset} earlier queries, which scheme={name!r} cannot recover from the keys: use dnorm.decode "
            "with the state of the earlier positions"
        )
        raise ValueError(msg)
    return name, offset


def family(name: str, /, *, sink: object, bias: object, attend_current: bool) -> None:
    """Refuse an option of the normalization family given to a scheme it does not apply to, naming what to use."""
    found = described(name)
    if sink is not None and not found.sinks:
        msg = (
            f"sink= joins the normalized rows of 'softmax', 'doubly', 'hybrid' and 'sinkhorn' (spec DEF-SINK); "
            f"scheme={name!r} weighs each key on its own, where a sink of value 0 changes nothing: leave sink out"
        )
        raise ValueError(msg)
    if bias is not None and found.rows != "gated":
        msg = (
            f"bias= is the bias of scheme='sigmoid' (spec DEF-SIGMOID), not of scheme={name!r}: to add a bias "
            "to every score of another scheme, pass it as a floating mask="
        )
        raise ValueError(msg)
    if attend_current and found.rows != "sticks":
        msg = (
            f"attend_current=True lets scheme='stick-breaking' weigh a query's own position; scheme={name!r} "
            "already does under causal=True: leave attend_current out"
        )
        raise ValueError(msg)


def sharded_scheme(value: object, /, *, sink: bool) -> str:
    """A scheme :func:`dnorm.distributed.attention` shards: the normalized ones and sigmoid attention (not yet
    stick-breaking), with a sink all but Sinkhorn (whose sink column joins every round)."""
    name = scheme(value)
    if described(name).rows == "sticks":
        msg = (
            f"scheme={name!r} is not sharded yet: dnorm.distributed.attention takes 'softmax', 'doubly', 'hybrid', "
            "'sinkhorn' and 'sigmoid'; run dnorm.attention on the whole sequence"
        )
        raise NotImplementedError(msg)
    if sink and described(name).columns == "rounds":
        msg = (
            f"a sink with scheme={name!r} is not sharded yet (its column joins every round): "
            "dnorm.distributed.attention takes a sink under 'softmax', 'doubly' and 'hybrid'; run dnorm.attention "
            "on the whole sequence"
        )
        raise NotImplementedError(msg)
    return name


#: Where :func:`dnorm.varlen_attention` finds the packed axis: -2 (``(..., total, D)``) or -3 (FlashAttention's).
LAYOUTS = ("htd", "thd")


def layout(value: object, /) -> str:
    """A packed ``layout=``, one of :data:`LAYOUTS`."""
    return _choice(value, "layout", LAYOUTS)


#: The implementations a call can ask for with ``kernel=`` (:mod:`dnorm._routing` holds them); ``"auto"`` chooses.
KERNELS = ("auto", "array-api", "torch", "dask", "triton", "numba")


def kernel(value: object, /) -> str:
    """A ``kernel=`` name, one of :data:`KERNELS`."""
    return _choice(value, "kernel", KERNELS)
