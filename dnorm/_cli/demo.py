"""What ``python -m dnorm`` prints: explaining away in a real model, and the same example on every backend."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import SCHEMES, normalize, received_mass
from ..data import load_example_scores
from ..diagnostics import report
from . import text
from .backends import installed

#: The backend example: sentence, layer and head (0-based) of the embedded scores.
EXAMPLE = (0, 0, 2)


def layers(
    *, threshold: float, alpha: float, schemes: tuple[str, ...] = SCHEMES, sink: float | None = None
) -> dict[str, Any]:
    """Per layer and scheme: mean explained-away share, least mass, least guaranteed mass, and the sink's mean
    share where a sink joins the scheme."""
    ex = load_example_scores()
    result = report(ex.scores, mask=ex.mask, schemes=schemes, alpha=alpha, threshold=threshold, sink=sink)
    lengths = ex.key_mask.sum(axis=1)
    rows = []
    for layer in range(ex.scores.shape[1]):
        row: dict[str, Any] = {"layer": layer + 1}
        for name, r in result.schemes.items():
            row[name] = {
                "share": float(np.mean(r.share[:, layer])),
                "least_mass": float(np.min(r.least_mass[:, layer])),
                "bound": None if r.bound is None else float(np.min(r.bound[:, layer])),
                "sink_share": None if r.sink_share is None else float(np.mean(r.sink_share[:, layer])),
            }
        rows.append(row)
    return {
        "model": ex.model_name,
        "sentences": len(ex.sentences),
        "heads": ex.scores.shape[2],
        "tokens": [int(lengths.min()), int(lengths.max())],
        "threshold": threshold,
        "alpha": alpha,
        "schemes": list(schemes),
        "sink": sink,
        "definitions": {
            "share": "mean over sentences and heads of the share of a head's real tokens explained away",
            "least_mass": "smallest received mass of any real token over sentences and heads",
            "bound": (
                "smallest mass the scheme guarantees over sentences and heads "
                "(doubly: 1/K, K the tokens of the longest sentence; 1/(K + 1) with a sink)"
            ),
            "sink_share": "mean over sentences, heads and rows of the sink's weight (with --sink)",
            "stick-breaking": "causal only: reported on the causal triangle of the same scores",
        },
        "layers": rows,
    }


def backends() -> dict[str, Any]:
    """Least received mass under softmax and doubly of one embedded head, on every installed backend."""
    ex = load_example_scores()
    sentence, layer, head = EXAMPLE
    n = int(ex.key_mask[sentence].sum())
    scores, tokens = ex.scores[EXAMPLE][:n, :n], [str(t) for t in ex.tokens[sentence, :n]]
    found, skipped = installed()
    masses = {
        backend.name: {
            scheme: backend.numpy(received_mass(normalize(backend.asarray(scores), scheme)))
            for scheme in ("softmax", "doubly")
        }
        for backend in found
    }
    reference = masses["numpy"]
    results = []
    for name, by_scheme in masses.items():
        row: dict[str, Any] = {"backend": name}
        for scheme, mass in by_scheme.items():
            key = int(np.argmin(mass))
            row[scheme] = {"least_mass": float(mass[key]), "key": tokens[key], "mass": mass.tolist()}
        row["max_abs_diff_vs_numpy"] = max(float(np.max(np.abs(m - reference[s]))) for s, m in by_scheme.items())
        results.append(row)
    return {
        "sentence": ex.sentences[sentence],
        "layer": layer + 1,
        "head": head + 1,
        "tokens": tokens,
        "bound": 1.0 / n,
        "results": results,
        "skipped": skipped,
    }


def render(summary: dict[str, Any], /) -> str:
    """The two tables of :func:`layers` and :func:`backends` results, as text."""
    lay, back = summary["layers"], summary["backends"]
    intro = [
        f"{lay['model'].split('/')[-1]} on {lay['sentences']} sentences ({lay['tokens'][0]}-{lay['tokens'][1]} "
        f"tokens, padding masked), {len(lay['layers'])} layers x {lay['heads']} heads.",
        f"Key j is explained away when its received mass m_j = sum_i A[i, j] < {lay['threshold']:g} x mean (T/K).",
        "away  = share of a head's keys explained away, mean over sentences and heads",
        "least = smallest m_j of any key, over sentences and heads",
        "bound = the least mass the scheme guarantees (doubly: 1/K, K the tokens of the longest sentence)",
        f"hybrid = {lay['alpha']:g} x doubly + {1 - lay['alpha']:g} x softmax; stick-breaking on the causal triangle",
        *(
            [f"sink = the sink's mean weight in a row (sink score {lay['sink']:g}, every normalized scheme)"]
            if lay["sink"] is not None
            else []
        ),
        "",
    ]
    schemes = lay["schemes"]
    columns = {s: [("share", "away", text.percent), ("least_mass", "least", text.mass)] for s in schemes}
    for s in schemes:
        if lay["layers"][0][s]["sink_share"] is not None:
            columns[s].append(("sink_share", "sink", text.percent))
    rows = [[str(row["layer"])] + [f(row[s][k]) for s in schemes for k, _, f in columns[s]] for row in lay["layers"]]
    bounds = {s: min(row[s]["bound"] for row in lay["layers"]) for s in schemes}
    rows.append(["bound"] + [c for s in schemes for c in ("", text.mass(bounds[s]), "")[: len(columns[s])]])
    header = ["layer"] + [label for s in schemes for _, label, _ in columns[s]]
    first = text.table(header, rows, groups=[(s, len(columns[s])) for s in schemes])
    least = [
        [r["backend"]]
        + [f"{text.mass(r[s]['least_mass'])} ({r[s]['key']})" for s in ("softmax", "doubly")]
        + [f"{r['max_abs_diff_vs_numpy']:.1e}"]
        for r in back["results"]
    ]
    second = [
        "",
        f'One head on every backend: "{back["sentence"]}" (layer {back["layer"]}, head {back["head"]}, '
        f"{len(back['tokens'])} keys).",
        f"Least received mass and its key; doubly guarantees 1/K = {back['bound']:.3g}.",
        "",
        text.table(["backend", "softmax least", "doubly least", "max |diff| vs numpy"], least),
        *(f"skipped {name}: {reason}" for name, reason in back["skipped"].items()),
    ]
    return "\n".join([*intro, first, *second])
