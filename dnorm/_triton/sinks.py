"""The sink's numbers per program and its gradients, in torch: O(T) work beside the kernels (spec DEF-SINK).

The row passes take each component's sink logit per program (``SINK_B``, ``SINK_P``; the running statistic's is
``-log(p_i + 1)``, formed in the kernel) and fold it into their row statistics, which the backward passes read:
the real keys' weights need nothing more. What is left is per row: the sink's own weight, its gradient
``-a_sink delta`` (spec THM-SINK-GRADIENT), and Sinkhorn's sink column in every round's potentials (spec
THM-SINK-IN-EVERY-ROUND), each a reduction over the rows of a program, done here.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .layout import Layout


class Rows(NamedTuple):
    """Where each program's rows lie in the ``q_rows`` buffers: ``at[r]`` the row, ``program[r]`` its program."""

    at: Tensor
    program: Tensor

    def sum(self, per_row: Tensor, programs: int, /) -> Tensor:
        """Per program, the sum of ``per_row`` (a ``q_rows`` buffer) over its rows."""
        out = torch.zeros(programs, dtype=per_row.dtype, device=per_row.device)
        return out.index_add_(0, self.program, per_row[self.at])

    def spread(self, per_program: Tensor, like: Tensor, /) -> Tensor:
        """A ``q_rows`` buffer holding each row's program's value (rows no program reads: 0)."""
        out = torch.zeros_like(like)
        out[self.at] = per_program[self.program].to(like.dtype)
        return out


def rows_of(layout: Layout, /) -> Rows:
    """The rows of every program of ``layout`` (dense: consecutive ``n_q`` per program; packed: each sequence's)."""
    counts = layout.n_q_of.long()
    program = torch.arange(layout.programs, device=counts.device).repeat_interleave(counts)
    starts = torch.cumsum(counts, 0) - counts
    within = torch.arange(int(counts.sum()), device=counts.device) - starts.repeat_interleave(counts)
    return Rows(layout.qstat_off.repeat_interleave(counts) + within, program)


def per_program(sink: Tensor, layout: Layout, lead: tuple[int, ...], dtype: torch.dtype, /) -> Tensor:
    """The sink's score of every program, ``(P,)``: per lead index, repeated per sequence of a packed batch."""
    flat = sink.expand(*lead, 1, 1).reshape(-1).to(dtype)
    return flat.repeat(layout.programs // max(flat.numel(), 1)).contiguous()


def first_round(layout: Layout, dtype: torch.dtype, /) -> Tensor:
    """The biased sink logit after one column normalization, ``-log n_q`` per program (every query sees it)."""
    return -torch.log(layout.n_q_of.to(dtype).clamp(min=1)).contiguous()


def value(pair: tuple[Tensor, Tensor], /) -> Tensor:
    """``max + log(sum)`` of a row pair (finite: with a sink no row is empty)."""
    top, total = pair
    return torch.where(top == -torch.inf, 0.0, top) + torch.log(total.clamp(min=1.0))


def next_round(rows: Rows, potential: tuple[Tensor, Tensor], programs: int, /) -> Tensor:
    """A later Sinkhorn round's sink logit ``-LSE_i(-r_i)`` per program from the row potentials ``r``."""
    minus = -value(potential)[rows.at]
    top = torch.full((programs,), -torch.inf, dtype=minus.dtype, device=minus.device)
    top = top.scatter_reduce(0, rows.program, minus, reduce="amax")
    total = torch.zeros_like(top).index_add_(0, rows.program, torch.exp(minus - top[rows.program]))
    return -(top + torch.log(total)).contiguous()


def weight(logit: Tensor, rows: Rows, pair: tuple[Tensor, Tensor], /) -> Tensor:
    """The sink's weight in each row, ``exp(logit - r_i)``, a ``q_rows`` buffer (``logit`` per program, or per row
    where it is a ``q_rows`` buffer already)."""
    per_row = logit if logit.numel() == pair[0].numel() else rows.spread(logit, pair[0])
    return torch.exp(per_row - value(pair))
