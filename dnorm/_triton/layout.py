"""Where each program of a launch finds its sequence: element offsets per program, no copies of any input.

A program serves one lead index of the arrays (one head of one batch entry,
grouped-query heads included) or, for a packed batch, one sequence of one
head. Inputs broadcast against the lead shape through stride-0 views, so that
grouped keys and values, masks and ``alpha`` shared across heads are read in
place; every program reads its offsets, lengths, dropout seed and head index
from small int64 / int32 arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor


class Layout(NamedTuple):
    """The programs of a launch: ``P`` of them, of at most ``n_q`` queries and ``n_k`` keys.

    Every field but the sizes is a tensor with one entry per program: the
    element offsets of its queries, keys, values and mask in their tensors,
    of its outputs (``out``, in a contiguous ``(q_rows, Dv)`` buffer), of its
    per-key and per-query statistics (buffers of ``k_rows`` and ``q_rows``
    entries: ``P * n_k`` and ``P * n_q``, or for a packed batch the packed
    lengths per lead index), of ``alpha``, its
    lengths, the flat lead index dropout's hash mixes in (``has_lead``: the
    arrays have leading dimensions, else there is none to mix), and its seed.
    """

    programs: int
    has_lead: bool
    n_q: int
    n_k: int
    q_rows: int
    k_rows: int
    q: Tensor
    k: Tensor
    v: Tensor
    mask: Tensor
    out: Tensor
    kstat: Tensor
    qstat: Tensor
    alpha: Tensor
    len_q: Tensor
    len_k: Tensor
    head: Tensor
    seed: Tensor


def offsets(x: Tensor, lead: tuple[int, ...], /) -> Tensor:
    """The element offset of ``x``'s last two axes at every lead index, ``x`` broadcast to ``lead`` (int64, flat)."""
    view = x.expand(*lead, *x.shape[-2:]) if x.ndim >= 2 else x.expand(*lead)
    total = torch.zeros((), dtype=torch.int64, device=x.device)
    for axis, size in enumerate(lead):
        shape = [1] * len(lead)
        shape[axis] = size
        positions = torch.arange(size, dtype=torch.int64, device=x.device).reshape(shape)
        total = total + positions * view.stride(axis)
    return total.expand(lead).reshape(-1) if lead else total.reshape(1)


def dense(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, alpha: Tensor, seed: Tensor | None, lead: Sequence[int], /
) -> Layout:
    """The layout of one call: a program per lead index, every sequence of the call's lengths."""
    lead = tuple(lead)
    programs = math.prod(lead)
    n_q, n_k, dv = q.shape[-2], k.shape[-2], v.shape[-1]
    dev = q.device
    every = torch.arange(programs, dtype=torch.int64, device=dev)
    zero = torch.zeros(programs, dtype=torch.int64, device=dev)
    return Layout(
        programs,
        len(lead) > 0,
        n_q,
        n_k,
        programs * n_q,
        programs * n_k,
        offsets(q, lead),
        offsets(k, lead),
        offsets(v, lead),
        zero if mask is None else offsets(mask, lead),
        every * (n_q * dv),
        every * n_k,
        every * n_q,
        offsets(alpha, lead) if alpha.ndim else zero,
        torch.full((programs,), n_q, dtype=torch.int32, device=dev),
        torch.full((programs,), n_k, dtype=torch.int32, device=dev),
        every.to(torch.int32),
        (torch.zeros((), dtype=torch.int32, device=dev) if seed is None else seed).expand(programs).contiguous(),
    )


def packed(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    alpha: Tensor,
    starts_q: Sequence[int],
    starts_k: Sequence[int],
    seeds: Tensor | None,
    lead: Sequence[int],
    /,
) -> Layout:
    """A packed batch: a program per (sequence, lead index), each reading its slice of the packed axis -2.

    Outputs and statistics are packed as the inputs: per lead index, ``(total, ...)``; the head index of
    dropout's hash is the lead index (each sequence draws its own seed, ``seeds[b]``).
    """
    lead = tuple(lead)
    heads = math.prod(lead)
    dev = q.device
    begin_q = torch.tensor(list(starts_q[:-1]), dtype=torch.int64, device=dev)
    begin_k = torch.tensor(list(starts_k[:-1]), dtype=torch.int64, device=dev)
    len_q = torch.tensor(list(starts_q[1:]), dtype=torch.int64, device=dev) - begin_q
    len_k = torch.tensor(list(starts_k[1:]), dtype=torch.int64, device=dev) - begin_k
    total_q, total_k, dv = q.shape[-2], k.shape[-2], v.shape[-1]
    head = torch.arange(heads, dtype=torch.int64, device=dev)[None, :]

    def per(base: Tensor, rows: Tensor, stride: int) -> Tensor:  # (sequences, heads) -> flat
        return (base[None, :] + rows[:, None] * stride).reshape(-1)

    n_seq = len(starts_q) - 1
    seed = torch.zeros(n_seq, dtype=torch.int32, device=dev) if seeds is None else seeds
    return Layout(
        n_seq * heads,
        len(lead) > 0,
        int(len_q.max()) if n_seq else 0,
        int(len_k.max()) if n_seq else 0,
        heads * total_q,
        heads * total_k,
        per(offsets(q, lead), begin_q, q.stride(-2)),
        per(offsets(k, lead), begin_k, k.stride(-2)),
        per(offsets(v, lead), begin_k, v.stride(-2)),
        torch.zeros(n_seq * heads, dtype=torch.int64, device=dev),
        (head * (total_q * dv) + begin_q[:, None] * dv).reshape(-1),
        (head * total_k + begin_k[:, None]).reshape(-1),
        (head * total_q + begin_q[:, None]).reshape(-1),
        offsets(alpha, lead).repeat(n_seq) if alpha.ndim else zero_of(n_seq * heads, dev),
        len_q.repeat_interleave(heads).to(torch.int32),
        len_k.repeat_interleave(heads).to(torch.int32),
        head.expand(n_seq, heads).reshape(-1).to(torch.int32),
        seed.repeat_interleave(heads).to(torch.int32),
    )


def zero_of(n: int, device: torch.device, /) -> Tensor:
    return torch.zeros(n, dtype=torch.int64, device=device)
