"""The checked description of one attention call: every option, and the shapes that decide the work."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from . import _arrays as arrays
from . import _options as options

Array = Any


@dataclass(frozen=True)
class Request:
    """What a call to :func:`dnorm.attention` asks for, checked; everything but the arrays.

    ``offset``: query ``i`` sees the keys ``j <= i + offset`` (None: not
    causal, spec DEF-CAUSAL-MASK). ``out_lead`` is the leading shape of the output
    and ``groups`` the query heads per key head (1 unless grouped-query
    attention). ``kernel`` is the implementation asked for (``"auto"``: the
    routing layer chooses). ``sink``: a sink joins the rows (spec DEF-SINK;
    its score travels in :class:`PerHead`); ``attend_current``: stick-breaking's
    queries weigh their own position too; ``position``: decoding's first new
    query's position in its sequence when the cache dropped earlier positions
    (a sliding window; None: ``offset``), which the sink's running statistic
    counts.
    """

    scheme: str
    offset: int | None
    scale: float
    out_lead: tuple[int, ...]
    groups: int
    n_iter: int = 3
    block_size: int | None = None
    softcap: float | None = None
    dropout_p: float = 0.0
    kernel: str = "auto"
    sink: bool = False
    attend_current: bool = False
    position: int | None = None

    @property
    def causal(self) -> bool:
        return self.offset is not None

    @property
    def first_position(self) -> int:
        """The position of the first query row in its sequence: what the running sink statistic counts from."""
        return self.position if self.position is not None else (self.offset or 0)


class PerHead(NamedTuple):
    """The numbers of a call given per head (or per batch entry): numbers or arrays, checked.

    ``alpha``: the hybrid's weight; ``sink``: the sink's score (spec DEF-SINK); ``length_scale``: scalable
    softmax's factor (spec DEF-LENGTH-SCALE); ``bias``: the sigmoid's bias (spec DEF-SIGMOID). None: not given.
    """

    alpha: Any = 0.5
    sink: Any = None
    length_scale: Any = None
    bias: Any = None

    def arrays(self) -> dict[str, Array | None]:
        """The ones given as arrays, by name (their library must be the call's)."""
        return {name: arrays.array_or_none(value) for name, value in self._asdict().items()}


class Asked(NamedTuple):
    """The options of an attention call as its caller gave them, before their checks (see :func:`dnorm.attention`)."""

    scheme: object
    causal: object = False
    scale: object = None
    n_iter: object = 3
    block_size: object = None
    softcap: object = None
    dropout_p: object = 0.0
    kernel: object = "auto"
    sink: object = None
    length_scale: object = None
    bias: object = None
    attend_current: object = False


def attention_request(
    query: Array, key: Array, value: Array, mask: Array | None, alpha: object, asked: Asked, /, *, xp: Any
) -> Request:
    """Check the arguments of :func:`dnorm.attention` (and of the functions built on it) against each other."""
    lead, groups = arrays.qkv(query, key, value, xp=xp)
    n_queries, n_keys = query.shape[-2], key.shape[-2]
    name, offset = options.scheme_and_offset(
        asked.scheme, causal=asked.causal, n_iter=asked.n_iter, shape=(n_queries, n_keys)
    )
    factor = options.scale(asked.scale, query.shape[-1])
    arrays.mask(mask, (*lead, n_queries, n_keys), name="mask", xp=xp)
    arrays.alpha(alpha, lead, xp=xp)
    family(name, asked, lead, xp=xp)
    if asked.block_size is not None:
        options.positive_int(asked.block_size, "block_size")
    return Request(
        name,
        offset,
        factor,
        lead,
        groups,
        n_iter=asked.n_iter,  # type: ignore[arg-type]  # checked by scheme_and_offset
        block_size=asked.block_size,  # type: ignore[arg-type]
        softcap=options.softcap(asked.softcap),
        dropout_p=options.probability(asked.dropout_p, "dropout_p"),
        kernel=options.kernel(asked.kernel),
        sink=asked.sink is not None,
        attend_current=bool(asked.attend_current),
    )


def family(name: str, asked: Asked, lead: tuple[int, ...], /, *, xp: Any) -> None:
    """Check the options of the normalization family: each a number or an array over the leading dims, and each
    given to a scheme it applies to (spec DEF-SINK, DEF-LENGTH-SCALE, DEF-SIGMOID, DEF-STICK-BREAKING)."""
    for label in ("sink", "length_scale", "bias"):
        arrays.per_head(getattr(asked, label), lead, label, xp=xp)
    options.flag(asked.attend_current, "attend_current")
    options.family(name, sink=asked.sink, bias=asked.bias, attend_current=bool(asked.attend_current))


def per_head(alpha: object, asked: Asked, /) -> PerHead:
    """The numbers of an attention call given per head, from its checked options."""
    return PerHead(alpha, asked.sink, asked.length_scale, asked.bias)
