"""How many graphs ``torch.compile(dynamic=True)`` makes of causal ``dnorm.attention`` over a range of lengths.

    python scripts/compile_graphs.py                  # forward, every length from 17 to 256
    python scripts/compile_graphs.py --backward 3     # forward and backward, every third length

Each length is checked against eager on ``(1, 2, T, 8)`` inputs with ``T = K``; torch's recompile limit is raised
so that the count is the whole count.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch._dynamo.utils import counters

import dnorm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backward", type=int, metavar="STEP", help="also differentiate, every STEP-th length")
    parser.add_argument("--scheme", default="doubly")
    parser.add_argument("--lengths", type=int, nargs=2, default=(17, 256), metavar=("FIRST", "LAST"))
    args = parser.parse_args()
    torch._dynamo.config.recompile_limit = 1024

    def function(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return dnorm.attention(q, k, v, args.scheme, causal=True)

    training = args.backward is not None
    compiled = torch.compile(function, fullgraph=True, dynamic=True, backend="aot_eager" if training else "eager")
    first, last = args.lengths
    start = time.perf_counter()
    for t in range(first, last + 1, args.backward or 1):
        q, k, v = (torch.randn(1, 2, t, 8, requires_grad=training) for _ in range(3))
        with torch.set_grad_enabled(training):
            out, expected = compiled(q, k, v), function(q, k, v)
            torch.testing.assert_close(out, expected)
            if training:
                for a, b in zip(*(torch.autograd.grad(x.sum(), (q, k, v)) for x in (out, expected)), strict=True):
                    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    graphs = counters["stats"]["unique_graphs"]
    what = "forward and backward" if training else "forward"
    seconds = time.perf_counter() - start
    print(f"causal {args.scheme}, {what}, lengths {first}..{last}: {graphs} graphs, {seconds:.0f} s")


if __name__ == "__main__":
    main()
