"""The diagnostics across the normalization family: received mass with the sink's share, the guaranteed bounds
with a sink (spec THM-SINK-MASS-BOUND), the report of every scheme, and the ``dnorm`` command's ``--schemes`` and
``--sink``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from family_oracles import sink_weights

import dnorm
from dnorm.cli import main
from dnorm.diagnostics import mass_lower_bound, report

RNG = np.random.default_rng(7)


@pytest.mark.theorem("THM-SINK-MASS-BOUND")
def test_the_report_gives_the_bound_with_a_sink_and_its_share():
    s = RNG.normal(size=(3, 6, 5)) * 4
    allowed = RNG.random((3, 6, 5)) < 0.7
    result = report(s, mask=allowed, sink=0.5, alpha=0.4)
    assert set(result.schemes) == set(dnorm.SCHEMES)
    for name, found in result.schemes.items():
        assert np.all(found.least_mass >= found.bound - 1e-12), name
        has_sink = name in ("softmax", "doubly", "hybrid", "sinkhorn")
        assert (found.sink_share is None) != has_sink, name
    rows = 1 - sink_weights("softmax", s[0], 0.5, allowed=allowed[0]).sum(axis=1)
    expected = rows[allowed[0].any(axis=1)].mean()  # the rows that see a key
    np.testing.assert_allclose(result.schemes["softmax"].sink_share[0], expected, rtol=1e-12)
    np.testing.assert_allclose(mass_lower_bound("doubly", shape=(2, 4), sink=True), np.full(4, 1 / 5))
    np.testing.assert_allclose(mass_lower_bound("hybrid", shape=(2, 4), sink=True, alpha=0.5), np.full(4, 0.1))
    assert np.all(mass_lower_bound("stick-breaking", shape=(2, 4)) == 0)


def test_the_command_reports_the_schemes_asked_for_with_a_sink(capsys):
    assert main(["--json", "--schemes", "doubly,stick-breaking", "--sink", "0"]) == 0
    layers = json.loads(capsys.readouterr().out)["layers"]
    assert layers["schemes"] == ["doubly", "stick-breaking"]
    for row in layers["layers"]:
        assert set(row) == {"layer", "doubly", "stick-breaking"}
        assert row["doubly"]["bound"] == pytest.approx(1 / 30)  # the longest sentence's 29 tokens and the sink
        assert row["doubly"]["least_mass"] >= row["doubly"]["bound"]
        assert 0 < row["doubly"]["sink_share"] < 1
        assert row["stick-breaking"]["sink_share"] is None
    assert main(["--schemes", "doubly,sigmoid", "--sink", "1"]) == 0
    table = capsys.readouterr().out
    assert "sink score 1" in table
    assert "sigmoid" in table
    for wrong in (["--schemes", "unknown"], ["--sink", "inf"]):
        with pytest.raises(SystemExit):
            main(wrong)
