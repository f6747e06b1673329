"""What a scheme is, written once: every path (kernels, sharded sweeps, Triton launches, decoding, fast paths,
diagnostics, integrations) reads :data:`SCHEMES` and :func:`plan`, and no other module compares scheme names.

Every scheme is a row softmax of the scores plus a bias from column statistics (spec
THM-DNAS-AS-BIASED-SOFTMAX). A :class:`Scheme` says which statistics its bias takes, whether it has an unbiased
component and mixes the two, what form it takes under ``causal=True``, and the least mass it guarantees a key;
a :class:`Plan` is what one call computes: the scheme under its ``causal`` and ``n_iter``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple


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
    THM-SOFTMAX-EXPLAINS-AWAY); ``theorem`` the identifier that proves it or its counterexample.
    """

    name: str
    columns: Literal["none", "one", "rounds"]
    plain: bool
    mixed: bool
    causal: Literal["mask", "running"] | None
    bound: Literal["one", "alpha"] | None
    theorem: str

    @property
    def biased(self) -> bool:
        """Whether it has a component with the bias (every scheme but softmax)."""
        return self.columns != "none"


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
    )
}

#: The names :func:`dnorm._validate.scheme` accepts.
NAMES = tuple(SCHEMES)


class Plan(NamedTuple):
    """What one call of a scheme computes.

    ``rounds`` column statistics of the key alone (0 for softmax and the causal forms, 1 for doubly and hybrid,
    ``n_iter`` for Sinkhorn), or the causal ``running`` statistic; ``plain``: the unbiased component (softmax
    itself, and hybrid, whose biased component is weighted by ``alpha`` and the plain one by ``1 - alpha``:
    ``mixed``). ``doubling``: the running statistic's scans take the chunk totals by doubling (symbolic lengths,
    :func:`.scan.scan`); ``native``: the running statistic comes from the namespace's fused scan
    (:mod:`._delegation`).
    """

    rounds: int
    running: bool
    plain: bool
    mixed: bool
    doubling: bool = False
    native: bool = False

    @property
    def biased(self) -> bool:
        """Whether a component subtracts column statistics (every scheme but softmax)."""
        return self.running or self.rounds > 0

    @property
    def layered(self) -> bool:
        """Whether a tile holds more than one softmax's worth: a second component, later rounds, or the running
        statistic's scan (the Triton kernels take smaller tiles)."""
        return self.mixed or self.rounds > 1 or self.running


def plan(name: str, /, *, causal: bool, n_iter: int, doubling: bool = False, native: bool = False) -> Plan:
    """The :class:`Plan` of scheme ``name`` for a call; ``causal`` selects its causal form (None raises)."""
    scheme = SCHEMES[name]
    if causal and scheme.causal is None:
        msg = f"the {name} scheme has no causal form"
        raise ValueError(msg)
    running = causal and scheme.causal == "running"
    rounds = 0 if running else {"none": 0, "one": 1, "rounds": n_iter}[scheme.columns]
    return Plan(rounds, running, scheme.plain, scheme.mixed, doubling and running, native and running)
