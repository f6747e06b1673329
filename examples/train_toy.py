"""Train a small Transformer on a toy sequence task with softmax and with doubly-normalized attention.

The task is sorting: the input is a sequence of random digits, the target at
every position is the digit that belongs there once the sequence is sorted.
The model is an encoder of pre-norm blocks built from
:class:`dnorm.integrations.torch.MultiheadAttention`. It trains on the CPU and
prints each scheme's time and its ratio to the first scheme's, measured in the
same run (absolute times depend on the machine; the ratio travels better)::

    python examples/train_toy.py             # 400 steps per scheme
    python examples/train_toy.py --steps 60  # a quick look

:func:`train_all` returns the loss curves, for plotting.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from dnorm.integrations.torch import MultiheadAttention

VOCAB = 10
LENGTH = 12


class Curve(NamedTuple):
    """One training run: the loss every ``log_every`` steps and the final held-out accuracy."""

    scheme: str
    steps: list[int]
    losses: list[float]
    accuracy: float
    seconds: float


class Block(nn.Module):
    """Pre-norm Transformer block: attention, then a two-layer MLP, each with a residual."""

    def __init__(self, width: int, heads: int, scheme: str) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = MultiheadAttention(width, heads, batch_first=True, scheme=scheme)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))[0]  # torch's (output, weights)
        return x + self.mlp(self.norm2(x))


class Sorter(nn.Module):
    """Token and position embeddings, ``layers`` blocks, and a per-position digit classifier."""

    def __init__(self, scheme: str, *, width: int = 64, heads: int = 4, layers: int = 2) -> None:
        super().__init__()
        self.tokens = nn.Embedding(VOCAB, width)
        self.positions = nn.Parameter(torch.randn(LENGTH, width) * 0.1)
        self.blocks = nn.Sequential(*(Block(width, heads, scheme) for _ in range(layers)))
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, VOCAB))

    def forward(self, digits: Tensor) -> Tensor:
        return self.head(self.blocks(self.tokens(digits) + self.positions))


def batch(size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Random digit sequences and their sorted versions, both ``(size, LENGTH)``."""
    digits = torch.randint(0, VOCAB, (size, LENGTH), generator=generator)
    return digits, torch.sort(digits, dim=-1).values


def train(scheme: str, *, steps: int = 400, log_every: int = 20, batch_size: int = 64, seed: int = 0) -> Curve:
    """Train a :class:`Sorter` with `scheme` and return its :class:`Curve`.

    Parameters
    ----------
    scheme : str
        The attention scheme of every layer: ``"softmax"``, ``"doubly"``,
        ``"hybrid"`` or ``"sinkhorn"``.
    steps : int, default 400
        Optimizer steps (Adam, learning rate 3e-3 with a cosine decay).
    log_every : int, default 20
        Record the mean training loss of every this many steps.
    batch_size : int, default 64
        Sequences per step.
    seed : int, default 0
        Seeds the model's initialization and the data; equal seeds give
        equal data to every scheme.

    Returns
    -------
    Curve
        The recorded losses and the digit accuracy on 1000 held-out sequences.
    """
    torch.manual_seed(seed)
    data = torch.Generator().manual_seed(seed)
    model = Sorter(scheme)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    logged_steps, losses, window = [], [], []
    for step in range(1, steps + 1):
        digits, target = batch(batch_size, data)
        loss = loss_fn(model(digits).reshape(-1, VOCAB), target.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        window.append(loss.item())
        if step % log_every == 0 or step == steps:
            logged_steps.append(step)
            losses.append(sum(window) / len(window))
            window.clear()
    model.eval()
    with torch.no_grad():
        digits, target = batch(1000, torch.Generator().manual_seed(seed + 1))
        accuracy = (model(digits).argmax(-1) == target).float().mean().item()
    return Curve(scheme, logged_steps, losses, accuracy, time.perf_counter() - start)


def train_all(
    schemes: Sequence[str] = ("softmax", "doubly"),
    *,
    steps: int = 400,
    log_every: int = 20,
    seed: int = 0,
    threads: int = 1,
) -> dict[str, Curve]:
    """Train one model per scheme on the same data; return the curves by scheme name.

    ``threads`` torch CPU threads are used meanwhile (the previous number is
    restored): the model is so small that one thread is as fast as two on a
    quiet machine, and many times faster on a busy one.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return {scheme: train(scheme, steps=steps, log_every=log_every, seed=seed) for scheme in schemes}
    finally:
        torch.set_num_threads(previous)


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: train with each scheme and print the loss curves side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400, help="optimizer steps per scheme (default 400)")
    parser.add_argument("--log-every", type=int, default=20, help="print the loss every this many steps")
    parser.add_argument("--schemes", nargs="+", default=["softmax", "doubly"], help="schemes to train")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args(argv)
    curves = train_all(args.schemes, steps=args.steps, log_every=args.log_every, seed=args.seed, threads=args.threads)
    first = next(iter(curves.values()))
    print(f"sorting {LENGTH} digits; mean training loss (cross-entropy) per {args.log_every} steps")
    print(f"{'step':>6}" + "".join(f"{name:>10}" for name in curves))
    for row, step in enumerate(first.steps):
        print(f"{step:>6}" + "".join(f"{curve.losses[row]:>10.4f}" for curve in curves.values()))
    for name, curve in curves.items():
        print(
            f"{name}: final loss {curve.losses[-1]:.4f}, held-out digit accuracy {curve.accuracy:.3f}, "
            f"{curve.seconds:.1f} s ({curve.seconds / first.seconds:.2f} times {next(iter(curves))}'s)"
        )


if __name__ == "__main__":
    main()
