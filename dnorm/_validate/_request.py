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
    routing layer chooses).
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

    @property
    def causal(self) -> bool:
        return self.offset is not None


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
    )
