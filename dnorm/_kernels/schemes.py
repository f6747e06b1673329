"""What a scheme is, written once: every path (kernels, sharded sweeps, Triton launches, decoding, fast paths,
diagnostics, integrations) reads :data:`SCHEMES` and :func:`plan`, and no other module compares scheme names.

The normalized schemes are a row softmax of the scores plus a bias from column statistics (spec
THM-DNAS-AS-BIASED-SOFTMAX); the others weigh each key by a sigmoid, alone (spec DEF-SIGMOID) or broken off a
stick (spec DEF-STICK-BREAKING). A :class:`Scheme` says how its rows weigh the keys, which statistics its bias
takes, whether it has an unbiased component and mixes the two, what form it takes under ``causal=True``, and the
least mass it guarantees a key; a :class:`Plan` is what one call computes: the scheme under its ``causal`` and
``n_iter``, with or without a sink (spec DEF-SINK). :class:`Parameters` are the learned numbers of a call that
reach the implementations as arrays: the hybrid's ``alpha`` and the sink.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

#: How a row turns its scores into weights: a softmax of the (biased) scores, whose weights sum to one
#: (``"normalized"``); a sigmoid of each score alone (``"gated"``, spec DEF-SIGMOID); the stick-breaking process
#: from the nearest key back (``"sticks"``, spec DEF-STICK-BREAKING).
Rows = Literal["normalized", "gated", "sticks"]


@dataclass(frozen=True)
class Scheme:
    """One attention normalization scheme.

    ``columns``: the column statistics of its bias, ``"none"`` (softmax), ``"one"`` (doubly and hybrid: ``c_j =
    logsumexp_i S_ij``, spec DEF-DNAS) or ``"rounds"`` (Sinkhorn: ``n_iter`` of them, spec DEF-SINKHORN).
    ``plain``: it has a component without the bias (softmax itself, and hybrid's second one); ``mixed``: its two
    components are mixed by ``alpha`` (spec DEF-HYBRID). ``causal``: its strictly causal form, ``"mask"`` (the
    triangle alone: softmax), ``"running"`` (the running column statistic, spec DEF-CAUSAL-STATISTIC) or None
    (it has none). ``bound``: the least mass a key receives as a multiple of ``1/k_j`` (spec
    THM-MASS-LOWER-BOUND-MASKED): ``"one"``, ``"alpha"`` (spec THM-HYBRID-MASS-BOUND) or None (no bound, spec
    THM-SOFTMAX-EXPLAINS-AWAY); ``theorem`` the identifier that proves it or its counterexample. ``rows``: how
    a row weighs its keys (:data:`Rows`); ``bidirectional``: it has a form without ``causal`` (stick-breaking has
    none).
    """

    name: str
    columns: Literal["none", "one", "rounds"]
    plain: bool
    mixed: bool
    causal: Literal["mask", "running"] | None
    bound: Literal["one", "alpha"] | None
    theorem: str
    rows: Rows = "normalized"
    bidirectional: bool = True

    @property
    def biased(self) -> bool:
        """Whether it has a component with the bias (doubly, hybrid and Sinkhorn)."""
        return self.columns != "none"

    @property
    def sinks(self) -> bool:
        """Whether a sink joins its rows (spec DEF-SINK): the normalized schemes; a sink of value 0 would change
        nothing where each key is weighed alone."""
        return self.rows == "normalized"


#: Every scheme by its name, in the order the docs list them.
SCHEMES = {
    scheme.name: scheme
    for scheme in (
        Scheme(
            "softmax", "none", plain=True, mixed=False, causal="mask", bound=None, theorem="THM-SOFTMAX-EXPLAINS-AWAY"
        ),
        Scheme(
            "doubly", "one", plain=False, mixed=False, causal="running", bound="one", theorem="THM-MASS-LOWER-BOUND"
        ),
        Scheme(
            "hybrid", "one", plain=True, mixed=True, causal="running", bound="alpha", theorem="THM-HYBRID-MASS-BOUND"
        ),
        Scheme(
            "sinkhorn", "rounds", plain=False, mixed=False, causal=None, bound="one", theorem="THM-SINKHORN-ONE-IS-DNAS"
        ),
        Scheme(
            "sigmoid", "none", plain=True, mixed=False, causal="mask", bound=None,
            theorem="THM-SIGMOID-EXPLAINS-AWAY", rows="gated",
        ),
        Scheme(
            "stick-breaking", "none", plain=True, mixed=False, causal="mask", bound=None,
            theorem="THM-STICK-BREAKING-EXPLAINS-AWAY", rows="sticks", bidirectional=False,
        ),
    )
}  # fmt: skip

#: The names :func:`dnorm._validate.scheme` accepts.
NAMES = tuple(SCHEMES)


class Plan(NamedTuple):
    """What one call of a scheme computes.

    ``rounds`` column statistics of the key alone (0 for softmax and the causal forms, 1 for doubly and hybrid,
    ``n_iter`` for Sinkhorn), or the causal ``running`` statistic; ``plain``: the unbiased component (softmax
    itself, and hybrid, whose biased component is weighted by ``alpha`` and the plain one by ``1 - alpha``:
    ``mixed``). ``doubling``: the running statistic's scans take the chunk totals by doubling (symbolic lengths,
    :func:`.scan.scan`); ``native``: the running statistic comes from the namespace's fused scan
    (:mod:`._delegation`). ``rows``: how the plain component weighs its keys (:data:`Rows`); ``sink``: a sink
    joins every component's rows (spec DEF-SINK); ``strict``: query ``i`` sees the keys before its position only
    (stick-breaking without ``attend_current``: the causal triangle one key shorter).
    """

    rounds: int
    running: bool
    plain: bool
    mixed: bool
    doubling: bool = False
    native: bool = False
    rows: Rows = "normalized"
    sink: bool = False
    strict: bool = False

    @property
    def biased(self) -> bool:
        """Whether a component subtracts column statistics (every scheme but softmax)."""
        return self.running or self.rounds > 0

    @property
    def layered(self) -> bool:
        """Whether a tile holds more than one softmax's worth: a second component, later rounds, or the running
        statistic's scan (the Triton kernels take smaller tiles)."""
        return self.mixed or self.rounds > 1 or self.running


def plan(
    name: str,
    /,
    *,
    causal: bool,
    n_iter: int,
    doubling: bool = False,
    native: bool = False,
    sink: bool = False,
    attend_current: bool = False,
) -> Plan:
    """The :class:`Plan` of scheme ``name`` for a call; ``causal`` selects its causal form (None raises), ``sink``
    adds a sink to its rows and ``attend_current`` lets stick-breaking's queries weigh their own position."""
    scheme = SCHEMES[name]
    if causal and scheme.causal is None:
        msg = f"the {name} scheme has no causal form"
        raise ValueError(msg)
    running = causal and scheme.causal == "running"
    rounds = 0 if running else {"none": 0, "one": 1, "rounds": n_iter}[scheme.columns]
    strict = scheme.rows == "sticks" and not attend_current
    return Plan(
        rounds, running, scheme.plain, scheme.mixed, doubling and running, native and running, scheme.rows,
        sink and scheme.sinks, strict,
    )  # fmt: skip


class Parameters(NamedTuple):
    """The learned numbers of a call as arrays of the compute dtype (the implementations' ``params``).

    ``alpha``: the hybrid's weight (spec DEF-HYBRID), broadcasting against ``(..., T, K)``; ``sink``: the sink's
    score (spec DEF-SINK) of shape ``(..., 1, 1)``, or None without a sink.
    """

    alpha: Any
    sink: Any = None


def parameters(given: Any, /) -> Parameters:
    """``given`` as :class:`Parameters`: itself, or a plain ``alpha`` array (a caller with no sink)."""
    return given if isinstance(given, Parameters) else Parameters(given)
