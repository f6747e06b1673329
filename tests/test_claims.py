"""What README.md, the docs and the docstrings claim: the guarantee in the words of its theorems, and every
deterministic figure (a byte budget, a count of bytes) against what computes it.

Timings and peak memory are not here: they live in asv and in scripts/ with their commands (README.md says which).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from _ring import run

import dnorm
from dnorm._docs import GUARANTEE
from dnorm._kernels import budget, sharded, sharded_backward
from dnorm._kernels.scores import block_bounds

ROOT = Path(__file__).resolve().parent.parent
README, DOCS = ROOT / "README.md", ROOT / "docs"


def _plain(text: str) -> str:
    """Text without markup: Markdown links as their text, no backticks, single spaces."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return " ".join(text.replace("`", "").split())


@pytest.mark.parametrize(
    "where",
    ["README.md", "docs/index.md", "normalize", "attention", "scaled_dot_product_attention", "varlen_attention"],
)
def test_the_guarantee_is_stated_in_the_same_words_everywhere(where):
    text = (ROOT / where).read_text() if where.endswith(".md") else getattr(dnorm, where).__doc__
    assert _plain(GUARANTEE) in _plain(text)


def test_the_guarantee_cites_theorems_whose_statements_it_repeats():
    """Each identifier it cites is a theorem of spec/, and its bounds are those theorems' bounds."""
    spec = "".join(p.read_text() for p in (ROOT / "spec").glob("*.md"))
    for identifier in re.findall(r"THM-[A-Z-]+[A-Z]", GUARANTEE):
        assert f"({identifier})=" in spec, identifier
    statements = {
        "THM-MASS-LOWER-BOUND": r"m_j \ge 1/K",
        "THM-MASS-LOWER-BOUND-MASKED": r"m_j \;\ge\; \frac{1}{\bar k_j}, \qquad \bar k_j = \max_{i \in Q_j} k_i",
        "THM-CAUSAL-MASS-LOWER-BOUND": r"m^{\mathrm{CD}}_j \ge A^{\mathrm{CD}}_{i_0 j} \ge",
    }
    for identifier, formula in statements.items():
        assert formula in spec, identifier


def test_block_budgets_as_documented():
    """The budgets that attention's docstring, the architecture notes and the docs quote are the kernels' own."""
    mib = 2**20
    doc = _plain(dnorm.attention.__doc__)
    assert f"materialized when they fit in {budget.MATERIALIZE_BYTES // mib} MiB" in doc
    assert f"in blocks of about {budget.BLOCK_BYTES // mib} MiB" in doc
    assert f"causal streams blocks of about {budget.CAUSAL_BYTES // mib} MiB" in doc
    assert f"every byte budget is {budget.ACCELERATOR_SCALE} times larger" in doc
    model = _plain((DOCS / "using_in_a_model.md").read_text())
    assert f"about {budget.CAUSAL_BYTES // mib} MiB of scores" in model
    assert f"{budget.ACCELERATOR_SCALE} times more on a GPU" in model


class _Counting:
    """A thread participant (tests/_ring.py) that adds up the bytes it hands on, as scripts/sharded_bench.py does."""

    def __init__(self, ring, sent):
        self._ring, self._sent = ring, sent

    def __getattr__(self, name):
        return getattr(self._ring, name)

    def pass_on(self, arrays, by, /):
        self._sent[self._ring.place] += sum(x.nbytes for x in arrays)
        return self._ring.pass_on(arrays, by)


def _bytes_sent(scheme, *, processes=2, n=8, heads=4, dim=64):
    """Bytes the last participant sends, forward and forward + backward, shards (1, heads, n, dim) as the script's."""
    rng = np.random.default_rng(0)
    q, k, v, d_out = (rng.normal(size=(1, heads, 1, processes * n, dim)) for _ in range(4))
    sent_forward, sent = [0] * processes, [0] * processes

    def participant(ring):
        mine = slice(ring.place * n, (ring.place + 1) * n)
        counting = _Counting(ring, sent)
        options = sharded.ShardedOptions(scheme, False, 3, 0.125, block_bounds(n, n), counting)
        shard = [x[..., mine, :] for x in (q, k, v, d_out)]
        out, residuals = sharded.forward(*shard[:3], None, np.asarray(0.5), options=options, xp=np)
        sent_forward[ring.place] = sent[ring.place]
        sharded_backward.backward(*shard[:3], None, np.asarray(0.5), out, residuals, shard[3], options=options, xp=np)

    run(processes, participant)
    return max(sent_forward), max(sent)


@pytest.mark.parametrize("where", ["README.md", "docs/training_across_devices.md"])
def test_bytes_a_sharded_sequence_sends_as_documented(where):
    """README.md and the docs quote scripts/sharded_bench.py's byte ratios (2 processes, D = Dv = 64): counted here."""
    text = _plain((ROOT / where).read_text())
    found = re.search(r"([\d.]+) times ring softmax's bytes forward and ([\d.]+) times forward and backward", text)
    assert found, f"{where} states no byte ratio"
    forward, both = (float(x) for x in found.groups())
    (soft_forward, soft_both), (doubly_forward, doubly_both) = _bytes_sent("softmax"), _bytes_sent("doubly")
    assert doubly_forward / soft_forward == pytest.approx(forward, abs=0.01)
    assert doubly_both / soft_both == pytest.approx(both, abs=0.01)
