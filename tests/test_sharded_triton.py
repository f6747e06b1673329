"""The fused stops of the sharded sweeps (dnorm/_triton/sharded.py), participants as threads (tests/_ring.py).

Each participant's forward and backward pass on the Triton passes, under Triton's interpreter in float64, against
the array-API kernels on the whole sequence (spec THM-SHARDED-EQUALS-FULL, THM-ALL-GATHER-EQUALS-FULL) to 1e-12:
every scheme but sigmoid attention (its row bias: the public call on gloo processes, tests/test_distributed.py), causal
or not, on the ring and gathered and over zigzag shards, with grouped heads (2 query heads
per key head), padded keys, a softcap, a hybrid weight per batch entry and a sink; 2, 3 and 4 participants (the
interpreter's time grows with the heads: the longest sweeps take one batch entry and one key head). The
interpreter runs one kernel at a time in a process (it rebinds ``triton.language`` while it runs one, and parses
a kernel's source at its first launch), so the threads' launches take turns (:func:`one_launch_at_a_time`); gloo
processes run the public call (tests/test_distributed.py).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from _ring import run

torch = pytest.importorskip("torch", reason="the Triton kernels take torch tensors")
pytest.importorskip("triton", reason="triton is not installed: pip install -e '.[triton]'")

from dnorm._kernels import attention as kernels  # noqa: E402
from dnorm._kernels import schemes, sharded, sharded_layout  # noqa: E402
from dnorm._kernels.scores import block_bounds  # noqa: E402
from dnorm._routing.sharded import FUSED  # noqa: E402
from dnorm._triton import configs  # noqa: E402

pytestmark = pytest.mark.skipif(not configs.interpreted(), reason="the threads share one process's interpreter")

SCALE = 0.4
RNG = np.random.default_rng(23)


@pytest.fixture(autouse=True)
def one_launch_at_a_time(monkeypatch):
    """Each launch whole under one lock: the kernel's run, and before it its first rewrite (``ast.parse``, which
    two threads of CPython 3.11 may not run at once: "AST constructor recursion depth mismatch")."""
    from triton.runtime import interpreter

    turn = threading.Lock()
    launch = interpreter.InterpretedFunction.run

    def taking_turns(self, *args, **kwargs):
        with turn:
            return launch(self, *args, **kwargs)

    monkeypatch.setattr(interpreter.InterpretedFunction, "run", taking_turns)


def _problem(size, *, n=5, batch=2, heads=2):
    """Whole-sequence arrays in the kernels' grouped layout: queries (B, H, G, L, D), keys (B, H, 1, L, D)."""
    length = n * size
    keep = RNG.random((batch, 1, 1, 1, length)) < 0.8
    keep[-1, ..., 0] = False  # the first key is padding in one batch: under causal the first query sees nothing
    return {
        "q": RNG.normal(size=(batch, heads, 2, length, 4)),
        "k": RNG.normal(size=(batch, heads, 1, length, 4)),
        "v": RNG.normal(size=(batch, heads, 1, length, 3)),
        "d_out": RNG.normal(size=(batch, heads, 2, length, 3)),
        "alpha": RNG.uniform(size=(batch, 1, 1, 1, 1)),
        "sink": RNG.normal(size=(1, heads, 2, 1, 1)),
        "mask": keep,
    }


def _tensor(x):
    return torch.from_numpy(np.ascontiguousarray(x))


def _whole(p, *, scheme, causal, softcap, sink):
    import array_api_compat.torch as xp

    q, k, v, d_out, mask, alpha = (_tensor(p[name]) for name in ("q", "k", "v", "d_out", "mask", "alpha"))
    params = schemes.Parameters(alpha, _tensor(p["sink"])) if sink else alpha
    rows = block_bounds(q.shape[-2], 4)
    options = kernels.BlockedOptions(scheme, causal, 2, SCALE, rows, False, rows, 0, softcap, sink=sink)
    out, residuals = kernels.forward(q, k, v, mask, params, None, options=options, xp=xp)
    grads = kernels.backward(
        q, k, v, mask, params, None, out, residuals, d_out, options=options, mask_grad=False, xp=xp
    )
    return [out, *grads[:3], *_parameters(grads[4], scheme, sink)]


def _parameters(d_params, scheme, sink):
    """The gradients of the per-head parameters that the scheme reads: the hybrid's ``alpha``, the sink."""
    d_alpha, d_sink = d_params if isinstance(d_params, tuple) else (d_params, None)
    return ([d_alpha] if scheme == "hybrid" else []) + ([d_sink] if sink and scheme != "doubly" else [])


def _sharded(p, size, *, scheme, causal, softcap, sink, strategy, layout="contiguous"):
    def participant(ring):
        def mine(x, axis=-2):
            return _tensor(sharded_layout.shard(x, rank=ring.place, size=size, layout=layout, axis=axis, xp=np))

        q, k, v, d_out = (mine(p[name]) for name in ("q", "k", "v", "d_out"))
        mask, alpha = mine(p["mask"], -1), _tensor(p["alpha"])
        params = schemes.Parameters(alpha, _tensor(p["sink"])) if sink else alpha
        rows = ((0, q.shape[-2]),)  # the fused stops take every row at once
        options = sharded.ShardedOptions(scheme, causal, 2, SCALE, rows, ring, softcap, layout, strategy)
        out, residuals = FUSED.forward(q, k, v, mask, params, None, options=options, xp=None)
        grads = FUSED.backward(q, k, v, mask, params, None, out, residuals, d_out, options=options, mask_grad=False,
                               xp=None)  # fmt: skip
        return [x.numpy() for x in (out, *grads[:3], *_parameters(grads[4], scheme, sink))]

    shards = run(size, participant)
    joined = [_tensor(sharded_layout.unshard([s[i] for s in shards], layout=layout, axis=-2, xp=np)) for i in range(4)]
    return joined + [_tensor(sum(s[i] for s in shards)) for i in range(4, len(shards[0]))]  # parameters: summed


CASES = [  # scheme, causal, participants, strategy, softcap, sink: every scheme and form, each option both ways
    ("softmax", False, 2, "ring", 2.0, True),
    ("softmax", True, 3, "ring", None, False),
    ("doubly", False, 3, "all-gather", None, True),
    ("doubly", True, 4, "ring", 2.0, False),
    ("hybrid", False, 2, "ring", None, True),
    ("hybrid", True, 2, "ring", 2.0, True),
    ("sinkhorn", False, 3, "ring", 2.0, False),
    ("sinkhorn", False, 2, "all-gather", None, False),
]


@pytest.mark.theorem("THM-SHARDED-EQUALS-FULL")
@pytest.mark.theorem("THM-ALL-GATHER-EQUALS-FULL")
@pytest.mark.parametrize(("scheme", "causal", "size", "strategy", "softcap", "sink"), CASES)
def test_fused_stops_compute_the_whole_sequence(scheme, causal, size, strategy, softcap, sink):
    p = _problem(size) if size < 4 else _problem(size, batch=1, heads=1)
    want = _whole(p, scheme=scheme, causal=causal, softcap=softcap, sink=sink)
    got = _sharded(p, size, scheme=scheme, causal=causal, softcap=softcap, sink=sink, strategy=strategy)
    _assert_equal(got, want)


@pytest.mark.theorem("THM-ZIGZAG-EQUALS-FULL")
@pytest.mark.parametrize(("scheme", "size", "softcap"), [("softmax", 3, None), ("doubly", 3, 2.0), ("hybrid", 2, None)])
def test_fused_stops_over_zigzag_shards_compute_the_causal_sequence(scheme, size, softcap):
    """Chunks ``r`` and ``2P - 1 - r``: the tiles of the array-API zigzag sweeps on the Triton passes, the running
    statistic and the reverse recurrence by the two-level scans over the chunks (spec DEF-ZIGZAG-LAYOUT)."""
    p = _problem(size, n=4, batch=1, heads=1)
    want = _whole(p, scheme=scheme, causal=True, softcap=softcap, sink=False)
    got = _sharded(p, size, scheme=scheme, causal=True, softcap=softcap, sink=False, strategy="ring", layout="zigzag")
    _assert_equal(got, want)


def _assert_equal(got, want):
    assert len(got) == len(want)
    names = ("output", "d_query", "d_key", "d_value", "d_alpha or d_sink", "d_sink")
    for name, a, b in zip(names, got, want, strict=False):
        assert a.shape == b.shape, name
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-12, err_msg=name)
