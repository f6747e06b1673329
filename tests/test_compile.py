"""torch.compile(fullgraph=True) of the public functions: no graph breaks, no warnings, results equal to eager."""

from __future__ import annotations

import pytest

import dnorm

torch = pytest.importorskip("torch", reason="torch is not installed")
dynamo = pytest.importorskip("torch._dynamo", reason="torch has no dynamo")

#: torch's own warnings, which a minimal autograd.Function under torch.compile gives too: its modules use
#: torch.jit.script_method (the first compile of a process), and dynamo instantiates the Function it traces.
TORCH_OWN = [
    pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated"),
    pytest.mark.filterwarnings("ignore:<class 'torch.autograd.function.Function'> should not be:DeprecationWarning"),
]

pytestmark = TORCH_OWN

CASES = {
    "doubly": lambda q, k, v, m: dnorm.attention(q, k, v, "doubly"),
    "softmax-masked": lambda q, k, v, m: dnorm.attention(q, k, v, "softmax", mask=m),
    "hybrid-blocks": lambda q, k, v, m: dnorm.attention(q, k, v, "hybrid", block_size=5, alpha=0.3),
    "sinkhorn": lambda q, k, v, m: dnorm.attention(q, k, v, "sinkhorn", mask=m),
    "causal-doubly": lambda q, k, v, m: dnorm.attention(q, k, v, "doubly", causal=True),
    "causal-hybrid-blocks": lambda q, k, v, m: dnorm.attention(q, k, v, "hybrid", causal=True, block_size=4),
    "normalize-causal": lambda q, k, v, m: dnorm.normalize(q @ k.mT, "doubly", causal=True) @ v,
    "sdpa-gqa": lambda q, k, v, m: dnorm.scaled_dot_product_attention(
        q, k[:, :1], v[:, :1], is_causal=True, enable_gqa=True
    ),
    "decode": lambda q, k, v, m: dnorm.decode(q, k, v, None, "hybrid")[0],
    "varlen-softcap": lambda q, k, v, m: dnorm.varlen_attention(q, k, v, (0, 5, 12), "doubly", softcap=2.0),
}


def _inputs(t: int = 12):
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, t, 8, generator=gen, requires_grad=True) for _ in range(3))
    mask = torch.rand(1, 1, t, t, generator=gen) < 0.8
    return q, k, v, mask


@pytest.mark.parametrize("name", list(CASES))
def test_fullgraph_traces_forward_and_backward_and_equals_eager(name):
    dynamo.reset()
    function = CASES[name]
    compiled = torch.compile(function, fullgraph=True, backend="aot_eager")  # traces the backward too
    q, k, v, mask = _inputs()
    eager = function(q, k, v, mask)
    out = compiled(q, k, v, mask)
    torch.testing.assert_close(out, eager, rtol=1e-6, atol=1e-6)
    expected = torch.autograd.grad(eager.sum(), (q, k, v))
    got = torch.autograd.grad(out.sum(), (q, k, v))
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_dropout_draws_the_same_mask_compiled_and_eager(causal):
    """The seed comes from torch's generator inside the graph: after one torch.manual_seed, the same weights drop."""
    dynamo.reset()

    def function(q, k, v):
        return dnorm.attention(q, k, v, "hybrid", causal=causal, dropout_p=0.3, softcap=3.0)

    compiled = torch.compile(function, fullgraph=True, backend="aot_eager")
    q, k, v, _ = _inputs()
    torch.manual_seed(5)
    eager = function(q, k, v)
    torch.manual_seed(5)
    out = compiled(q, k, v)
    torch.testing.assert_close(out, eager, rtol=1e-6, atol=1e-6)
    got, expected = (torch.autograd.grad(x.sum(), (q, k, v)) for x in (out, eager))
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_inductor_compiles_the_fused_training_step():
    """The default backend, code generation included, on the fast path's forward and backward."""
    dynamo.reset()
    compiled = torch.compile(CASES["doubly"], fullgraph=True)
    q, k, v, mask = _inputs()
    out = compiled(q, k, v, mask)
    torch.testing.assert_close(out, CASES["doubly"](q, k, v, mask), rtol=1e-6, atol=1e-6)
    out.sum().backward()
    assert torch.isfinite(q.grad).all()


#: Lengths that share every guard of the causal scan: chunks of 4 rows, 9 to 15 of them, whose doubling scan runs on
#: 16 rows (:mod:`dnorm._kernels.scan` keeps one graph between such comparisons with powers of two).
LENGTHS = (33, 42, 58)


@pytest.mark.parametrize("name", ["doubly", "softmax-masked", "sinkhorn", "causal-doubly", "normalize-causal"])
def test_dynamic_shapes_compile_once_for_every_length(name):
    """A new sequence length reuses the graph, causal included.

    Fewer than 16 rows (decoding steps) take another product (blocked.ONE_PRODUCT_ROWS); the causal scans are
    guarded by comparisons of the length with powers of two (a few graphs per doubling, never one per length).
    """
    dynamo.reset()
    from torch._dynamo.utils import counters

    counters.clear()
    compiled = torch.compile(CASES[name], fullgraph=True, dynamic=True, backend="eager")
    with torch.no_grad():
        for t in LENGTHS:
            q, k, v, mask = _inputs(t)
            torch.testing.assert_close(compiled(q, k, v, mask), CASES[name](q, k, v, mask), rtol=1e-6, atol=1e-6)
    assert counters["stats"]["unique_graphs"] == 1


def test_marking_the_sequence_axis_dynamic_compiles_once_for_every_length():
    """``torch._dynamo.mark_dynamic`` on the sequence axis, instead of ``dynamic=True``."""
    dynamo.reset()
    from torch._dynamo.utils import counters

    counters.clear()
    compiled = torch.compile(CASES["causal-doubly"], fullgraph=True, backend="eager")
    with torch.no_grad():
        for t in LENGTHS:
            q, k, v, mask = _inputs(t)
            for x in (q, k, v):
                dynamo.mark_dynamic(x, 2)
            out = compiled(q, k, v, mask)
            torch.testing.assert_close(out, CASES["causal-doubly"](q, k, v, mask), rtol=1e-6, atol=1e-6)
    assert counters["stats"]["unique_graphs"] == 1


def test_dynamic_causal_training_compiles_once_for_every_length():
    """Forward and backward: the reverse scan of the gradient takes the doubling form too."""
    dynamo.reset()
    from torch._dynamo.utils import counters

    counters.clear()
    name = "causal-doubly"
    compiled = torch.compile(CASES[name], fullgraph=True, dynamic=True, backend="aot_eager")
    for t in LENGTHS:
        q, k, v, mask = _inputs(t)
        out, eager = compiled(q, k, v, mask), CASES[name](q, k, v, mask)
        torch.testing.assert_close(out, eager, rtol=1e-6, atol=1e-6)
        got, expected = (torch.autograd.grad(x.sum(), (q, k, v)) for x in (out, eager))
        for a, b in zip(got, expected, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert counters["stats"]["unique_graphs"] == 1


_COMPILED_TRITON = """
import torch, dnorm
q, k, v = (torch.randn(1, 2, 12, 8, requires_grad=True) for _ in range(3))
f = torch.compile(lambda q, k, v: dnorm.attention(q, k, v, "doubly", causal=True), fullgraph=True)
out = f(q, k, v)
out.sum().backward()
torch.testing.assert_close(out, dnorm.attention(q, k, v, "doubly", causal=True))
print("traced")
"""


def test_fullgraph_traces_with_triton_installed_and_not_interpreted():
    """With triton importable and TRITON_INTERPRET unset (a user's CPU machine; the suite itself interprets), the
    routing layer's questions to the Triton implementation trace: it refuses a traced call before it reads the
    compile-only session, which dynamo cannot trace (this raised Unsupported method call)."""
    import os
    import subprocess
    import sys

    pytest.importorskip("triton", reason="triton is not installed")
    env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, "-c", _COMPILED_TRITON], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("traced")
