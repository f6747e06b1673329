"""Explaining-away diagnostics: how much attention each key receives, and what each scheme guarantees.

A key is *explained away* when its received mass ``m_j = sum_i A[i, j]``
(spec DEF-RECEIVED-MASS) is close to zero: no query looks at it. Softmax
attention can explain keys away; doubly-normalized attention gives every key
a mass ``m_j >= 1 / K`` while the ``K`` masses sum to ``T``, and under a mask
``1 / k_j``, ``k_j`` the largest number of keys a query attending ``j`` may
attend (spec THM-MASS-LOWER-BOUND, THM-MASS-LOWER-BOUND-MASKED); the hybrid
``alpha`` times that (spec THM-HYBRID-MASS-BOUND).

Masks are those of :func:`dnorm.normalize` (boolean True = may attend, or
floating with ``-inf`` = removed). A key is *visible* when some query may
attend it, a query *active* when it may attend some key. Results are per
leading (batch, head) element, in the namespace and on the device of the input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

import array_api_compat.numpy as np_xp
from array_api_compat import device

from . import _mass
from . import _validate as check
from ._api import normalize, received_mass

Array = Any

__all__ = ["MassReport", "Report", "explained_away_share", "least_received_mass", "mass_lower_bound", "report"]


def explained_away_share(weights: Array, /, *, mask: Array | None = None, threshold: float = 0.1) -> Array:
    """Share of keys whose received mass is below ``threshold`` times the mean mass.

    The rule, per leading element: without a mask, key ``j`` is explained
    away when ``m_j < threshold * T / K``, and the share is their number over
    ``K``. With a mask only visible keys count: with ``T'`` active queries and
    ``K'`` visible keys (the rows of active queries sum to one, so the masses of
    the visible keys average ``T' / K'``), a visible key is explained away when
    ``m_j < threshold * T' / K'``, and the share is their number over ``K'``
    (0 when ``K' = 0``). NaN in the masses gives a NaN share.

    Parameters
    ----------
    weights : array of shape (..., T, K)
        Attention weights whose rows sum to one, e.g. from :func:`dnorm.normalize`.
    mask : array, optional
        The attention mask the weights were computed with; it also leaves
        masked entries out of the masses, as in :func:`dnorm.received_mass`.
    threshold : float, default 0.1
        Relative to the mean mass; a finite number >= 0.

    Returns
    -------
    array of shape (...)
        The share in [0, 1], in the dtype of ``weights``.

    Raises
    ------
    TypeError
        For non-floating ``weights``, a mask of another dtype or library, a non-numeric ``threshold``.
    ValueError
        For fewer than two dimensions, ``K = 0``, a mask that does not broadcast, a
        negative or infinite ``threshold``.

    Examples
    --------
    >>> import numpy as np
    >>> from dnorm.diagnostics import explained_away_share
    >>> float(explained_away_share(np.array([[0.99, 0.01], [0.99, 0.01]])))
    0.5
    """
    xp = check.namespace(weights=weights, mask=mask)
    _mass.check_input(weights, "weights", mask, xp=xp)
    limit = _mass.threshold(threshold)
    allowed = _mass.allowed_pairs(mask, tuple(weights.shape), xp=xp)
    return _mass.share(received_mass(weights, mask=mask), allowed, limit, n_queries=weights.shape[-2], xp=xp)


def least_received_mass(weights: Array, /, *, mask: Array | None = None) -> Array:
    """The smallest received mass ``min_j m_j`` over the visible keys (spec DEF-RECEIVED-MASS).

    Parameters
    ----------
    weights : array of shape (..., T, K)
        Attention weights, e.g. from :func:`dnorm.normalize`; ``K >= 1``.
    mask : array, optional
        The attention mask: only keys some query may attend count, and masked
        entries are left out of the masses.

    Returns
    -------
    array of shape (...)
        In the dtype of ``weights``; ``+inf`` for an element without visible keys.

    Raises
    ------
    TypeError, ValueError
        As :func:`explained_away_share`.

    Examples
    --------
    >>> import numpy as np, dnorm
    >>> from dnorm.diagnostics import least_received_mass
    >>> scores = np.array([[0.0, 20.0], [0.0, 20.0]])
    >>> [f"{float(least_received_mass(dnorm.normalize(scores, s))):.2g}" for s in ("softmax", "doubly")]
    ['4.1e-09', '1']
    """
    xp = check.namespace(weights=weights, mask=mask)
    _mass.check_input(weights, "weights", mask, xp=xp)
    mass = received_mass(weights, mask=mask)
    visible = _mass.visible(_mass.allowed_pairs(mask, tuple(weights.shape), xp=xp), xp=xp)
    return _mass.least(mass, visible, xp=xp)


def mass_lower_bound(
    scheme: str,
    /,
    *,
    shape: Sequence[int] | None = None,
    mask: Array | None = None,
    alpha: float | Array = 0.5,
    sink: bool = False,
) -> Array:
    """The received mass each key is guaranteed under a scheme, whatever the scores.

    * ``"softmax"``: 0; no bound exists (spec THM-SOFTMAX-EXPLAINS-AWAY).
    * ``"doubly"``: ``1 / K`` without a mask (spec THM-MASS-LOWER-BOUND); with a
      mask ``1 / k̄_j``, where ``k̄_j`` is the largest number of keys that any
      query seeing key ``j`` may attend, and 0 for keys no query sees
      (spec THM-MASS-LOWER-BOUND-MASKED).
    * ``"hybrid"``: ``alpha`` times the doubly bound (spec THM-HYBRID-MASS-BOUND).
    * ``"sinkhorn"``: the doubly bound, for every ``n_iter``. The proof of
      THM-MASS-LOWER-BOUND-MASKED applies to the last round verbatim: its
      column normalization gives a matrix whose columns sum to one over the
      queries seeing each key (so entries are at most 1 and row ``i`` sums to
      at most ``k_i``), and the final row normalization divides by those sums.
    * ``"sigmoid"``, ``"stick-breaking"``: 0 (spec THM-SIGMOID-EXPLAINS-AWAY,
      THM-STICK-BREAKING-EXPLAINS-AWAY).
    * with ``sink=True`` every row has one more key: ``1 / (K + 1)`` and
      ``1 / (k̄_j + 1)`` (spec THM-SINK-MASS-BOUND).

    The bounds are tight for doubly (spec THM-MASS-BOUND-TIGHT). They are for
    ``causal=False``; describe a causal or ``-inf``-score pattern by the mask.

    Parameters
    ----------
    scheme : {"softmax", "doubly", "hybrid", "sinkhorn"}
    shape : sequence of int, optional
        The scores' shape ``(..., T, K)``; defaults to the mask's shape, which
        then must have at least two dimensions.
    mask : array, optional
        The attention mask, broadcastable to ``shape``.
    alpha : float or array, default 0.5
        The hybrid weight, in [0, 1]: a number or an array broadcastable over
        the leading dimensions.
    sink : bool, default False
        The rows have a sink (spec DEF-SINK).

    Returns
    -------
    array of shape (..., K)
        In the namespace and on the device of ``mask`` (or of an array
        ``alpha``), NumPy float64 when neither is an array; dtype: that of a
        floating mask, else of an array ``alpha``, else the namespace's default float.

    Raises
    ------
    TypeError
        For a scheme that is not a string, a non-integer shape, a mask of another dtype or library.
    ValueError
        For an unknown scheme, neither ``shape`` nor ``mask``, a shape of fewer than two
        non-negative sizes, a mask that does not broadcast to it, ``alpha`` outside [0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> from dnorm.diagnostics import mass_lower_bound
    >>> mass_lower_bound("doubly", shape=(3, 4))
    array([0.25, 0.25, 0.25, 0.25])
    >>> allowed = np.array([[True, True, False], [False, True, True], [False, False, True]])
    >>> mass_lower_bound("hybrid", mask=allowed, alpha=0.5)
    array([0.25, 0.25, 0.25])
    """
    name = check.scheme(scheme)
    check.flag(sink, "sink")
    alpha_array: Array | None = None if isinstance(alpha, Real) else alpha
    xp = np_xp if mask is None and alpha_array is None else check.namespace(mask=mask, alpha=alpha_array)
    full = _mass.full_shape(shape, mask, xp=xp)
    check.alpha(alpha, full[:-2], xp=xp)
    given = [x for x in (mask, alpha_array) if x is not None]
    floating = [x.dtype for x in given if xp.isdtype(x.dtype, "real floating")]
    dtype = floating[0] if floating else xp.asarray(0.0).dtype
    where = device(given[0]) if given else None
    allowed = _mass.allowed_pairs(mask, full, xp=xp)
    return _mass.key_bound(name, full, allowed, alpha, dtype=dtype, device=where, xp=xp, sink=sink)


@dataclass(frozen=True)
class MassReport:
    """Diagnostics of one weight array; ``(...)`` are the leading (batch, head) dims.

    Attributes
    ----------
    mass : array of shape (..., K)
        Received mass of every key (0 for keys no query sees).
    share : array of shape (...)
        :func:`explained_away_share`.
    least_mass : array of shape (...)
        :func:`least_received_mass`.
    bound : array of shape (...) or None
        The least mass the scheme guarantees, the smallest :func:`mass_lower_bound`
        over the visible keys, so that ``least_mass >= bound``; ``None`` for
        weights of unknown origin.
    sink_share : array of shape (...) or None
        With a sink (spec DEF-SINK): the sink's mean weight over the rows that
        see a key, what the rows leave the real keys; None without one.
    """

    mass: Array
    share: Array
    least_mass: Array
    bound: Array | None
    sink_share: Array | None = None


@dataclass(frozen=True)
class Report:
    """The result of :func:`report`: one :class:`MassReport` per scheme (or ``"weights"``)."""

    kind: str
    threshold: float
    schemes: dict[str, MassReport]


def report(
    x: Array,
    /,
    *,
    kind: str = "scores",
    mask: Array | None = None,
    schemes: Sequence[str] | None = None,
    alpha: float | Array = 0.5,
    n_iter: int = 3,
    threshold: float = 0.1,
    sink: float | Array | None = None,
    length_scale: float | Array | None = None,
) -> Report:
    """Explaining-away diagnostics of scores under every scheme side by side, or of given weights.

    Parameters
    ----------
    x : array of shape (..., T, K)
        Pre-softmax scores (``kind="scores"``) or attention weights
        (``kind="weights"``). For scores, ``-inf`` entries count as masked.
    kind : {"scores", "weights"}, default "scores"
    mask : array, optional
        The attention mask, as in :func:`dnorm.normalize`.
    schemes : sequence of str, optional
        Schemes to apply to scores; default :data:`dnorm.SCHEMES`. Not allowed
        with ``kind="weights"``, which reports the weights as ``"weights"``.
        ``"stick-breaking"``, causal only, is reported on the causal triangle
        of the scores.
    alpha, n_iter
        As in :func:`dnorm.normalize`, for the hybrid and Sinkhorn schemes.
    sink, length_scale
        As in :func:`dnorm.normalize`: the sink joins the schemes it applies
        to (the normalized ones: where each key is weighed alone it would
        change nothing), each reporting its share; the length scale every
        scheme.
    threshold : float, default 0.1
        As in :func:`explained_away_share`.

    Returns
    -------
    Report
        ``report(...).schemes["doubly"].share`` and so on; see :class:`MassReport`.

    Raises
    ------
    TypeError, ValueError
        As :func:`dnorm.normalize` and :func:`explained_away_share`, and for an
        unknown ``kind`` or ``schemes`` given with weights.

    Examples
    --------
    >>> import numpy as np
    >>> from dnorm.diagnostics import report
    >>> r = report(np.array([[0.0, 20.0], [0.0, 20.0]]), schemes=["softmax", "doubly"])
    >>> float(r.schemes["softmax"].share), float(r.schemes["doubly"].share)
    (0.5, 0.0)
    """
    xp = check.namespace(x=x, mask=mask, alpha=None if isinstance(alpha, Real) else alpha)
    if kind not in ("scores", "weights"):
        msg = f"kind must be 'scores' or 'weights', got {kind!r}"
        raise ValueError(msg)
    _mass.check_input(x, "x", mask, xp=xp)
    limit = _mass.threshold(threshold)
    shape = tuple(x.shape)
    if kind == "weights":
        if schemes is not None:
            msg = "schemes applies to kind='scores' only: weights are reported as they are"
            raise ValueError(msg)
        allowed = _mass.allowed_pairs(mask, shape, xp=xp)
        mass = received_mass(x, mask=mask)
        only = _mass.summary(mass, allowed, limit, None, n_queries=shape[-2], xp=xp)
        return Report(kind, limit, {"weights": MassReport(mass, *only)})
    names = [check.scheme(name) for name in (check.SCHEMES if schemes is None else schemes)]
    allowed = x != -xp.inf
    if mask is not None:
        allowed = xp.logical_and(allowed, _mass.allowed_pairs(mask, shape, xp=xp))
    results = {}
    for name in names:
        scheme = check.described(name)
        joined = sink if scheme.sinks else None
        causal = not scheme.bidirectional  # stick-breaking: its causal form, the only one
        pairs = xp.logical_and(allowed, _before(shape, x, xp=xp)) if causal else allowed
        w = normalize(x, name, mask=mask, alpha=alpha, n_iter=n_iter, causal="top-left" if causal else False,
                      sink=joined, length_scale=length_scale)  # fmt: skip
        mass = received_mass(w)
        bound = _mass.key_bound(
            name, shape, pairs, alpha, dtype=mass.dtype, device=device(x), xp=xp, sink=joined is not None
        )
        found = _mass.summary(mass, pairs, limit, bound, n_queries=shape[-2], xp=xp)
        results[name] = MassReport(mass, *found, _mass.sink_share(w, pairs, xp=xp) if joined is not None else None)
    return Report(kind, limit, results)


def _before(shape: tuple[int, ...], like: Array, /, *, xp: Any) -> Array:
    """Boolean ``(T, K)``: key ``j`` is before query ``i`` (stick-breaking's strict triangle)."""
    rows = xp.arange(shape[-2], device=device(like))[:, None]
    return xp.arange(shape[-1], device=device(like))[None, :] < rows
