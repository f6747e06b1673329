"""``dnorm inspect FILE``: the explaining-away report on a user's own scores or weights.

Layout: the last two axes are ``(T, K)``, queries by keys, with ``x[..., i, j]``
the score (or weight) of query ``i`` for key ``j``; all leading axes (batch,
layer, head, ...) are independent elements and are summarized together.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import _validate as check
from ..diagnostics import Report, report
from . import CommandError, files, text


def summarize(args: argparse.Namespace, /) -> tuple[dict[str, Any], Report, np.ndarray, np.ndarray | None]:
    """Read the files named in ``args`` and report on them: (summary, report, array, mask)."""
    x = files.check_values(files.load(args.file, key=args.key), args.file, kind=args.kind)
    mask = None
    if args.mask_file is not None:
        mask = files.check_mask(files.load(args.mask_file, key=args.mask_key), args.mask_file, x.shape)
    elements = math.prod(x.shape[:-2])
    if not -elements <= args.head < elements:
        msg = f"--head {args.head} is out of range: the file has {elements} (T, K) elements"
        raise CommandError(msg)
    options: dict[str, Any] = {"kind": args.kind, "mask": mask, "threshold": args.threshold}
    if args.kind == "scores":
        options |= {"alpha": args.alpha, "schemes": tuple(args.schemes), "sink": args.sink}
    result = report(x, **options)
    schemes = {
        name: {
            "share_mean": _finite(np.mean(r.share)),
            "share_max": _finite(np.max(r.share)),
            "least_mass": _finite(np.min(r.least_mass)),
            "bound": None if r.bound is None else _finite(np.min(r.bound)),
            "sink_share": None if r.sink_share is None else _finite(np.mean(r.sink_share)),
        }
        for name, r in result.schemes.items()
    }
    summary = {
        "file": args.file,
        "kind": args.kind,
        "shape": list(x.shape),
        "dtype": str(x.dtype),
        "mask_file": args.mask_file,
        "elements": elements,
        "threshold": args.threshold,
        "alpha": args.alpha if args.kind == "scores" else None,
        "sink": args.sink if args.kind == "scores" else None,
        "schemes": schemes,
    }
    return summary, result, x, mask


def render(summary: dict[str, Any], /) -> str:
    """The summary as a table, one row per scheme (or one for the weights)."""
    *lead, t, k = summary["shape"]
    masked = f", mask {summary['mask_file']}" if summary["mask_file"] else ""
    lines = [
        f"{summary['file']}: {summary['kind']} of shape {tuple(summary['shape'])}, {summary['dtype']}{masked}",
        f"read as (..., T, K): {summary['elements']} elements of {t} queries x {k} keys (leading axes {tuple(lead)}).",
        f"Key j is explained away when its received mass m_j = sum_i A[i, j] < {summary['threshold']:g} x mean (T/K).",
        "away: share of an element's keys explained away (mean and max over elements);",
        "least: smallest m_j over all elements; bound: the least mass the scheme guarantees.",
        "",
    ]
    rows = [
        [
            f"{name} (alpha={summary['alpha']:g})" if name in check.SCHEMES and check.described(name).mixed else name,
            _cell(s["share_mean"], text.percent),
            _cell(s["share_max"], text.percent),
            _cell(s["least_mass"], text.mass),
            "n/a" if s["bound"] is None else _cell(s["bound"], text.mass),
            *([_cell(s["sink_share"], text.percent)] if summary["sink"] is not None else []),
        ]
        for name, s in summary["schemes"].items()
    ]
    header = ["scheme" if summary["kind"] == "scores" else "", "away (mean)", "away (max)", "least", "bound"]
    if summary["sink"] is not None:
        lines.insert(-1, f"sink: a sink of score {summary['sink']:g} joins the normalized schemes; its mean weight.")
        header.append("sink")
    return "\n".join([*lines, text.table(header, rows)])


def _finite(value: Any, /) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


def _cell(value: float | None, fmt: Callable[[float], str], /) -> str:
    return "-" if value is None else fmt(value)
