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

    Every field but the sizes is a tensor with one entry per program, named as the kernels' parameters: the
    element offsets of its queries, keys, values and mask in their tensors (``q_off``, ``k_off``, ``v_off``,
    ``mask_off``), of its outputs (``o_off``, in a contiguous ``(q_rows, Dv)`` buffer), of its per-key and
    per-query statistics (``kstat_off``, ``qstat_off``: buffers of ``k_rows`` and ``q_rows`` entries, ``P * n_k``
    and ``P * n_q``, or for a packed batch the packed lengths per leading index), of ``alpha`` (``alpha_off``),
    its lengths (``n_q_of``, ``n_k_of``), the flat leading index dropout's hash mixes in (``head_of``;
    ``has_lead``: the arrays have leading dimensions, else there is none to mix), and its seed (``seed_of``).
    """

    programs: int
    has_lead: bool
    n_q: int
    n_k: int
    q_rows: int
    k_rows: int
    q_off: Tensor
    k_off: Tensor
    v_off: Tensor
    mask_off: Tensor
    o_off: Tensor
    kstat_off: Tensor
    qstat_off: Tensor
    alpha_off: Tensor
    n_q_of: Tensor
    n_k_of: Tensor
    head_of: Tensor
    seed_of: Tensor

    def offsets(self) -> dict[str, Tensor]:
        """The per-program arrays, by the kernels' parameter names."""
        return {name: value for name, value in self._asdict().items() if isinstance(value, Tensor)}


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
        programs=programs,
        has_lead=len(lead) > 0,
        n_q=n_q,
        n_k=n_k,
        q_rows=programs * n_q,
        k_rows=programs * n_k,
        q_off=offsets(q, lead),
        k_off=offsets(k, lead),
        v_off=offsets(v, lead),
        mask_off=zero if mask is None else offsets(mask, lead),
        o_off=every * (n_q * dv),
        kstat_off=every * n_k,
        qstat_off=every * n_q,
        alpha_off=offsets(alpha, lead) if alpha.ndim else zero,
        n_q_of=torch.full((programs,), n_q, dtype=torch.int32, device=dev),
        n_k_of=torch.full((programs,), n_k, dtype=torch.int32, device=dev),
        head_of=every.to(torch.int32),
        seed_of=(torch.zeros((), dtype=torch.int32, device=dev) if seed is None else seed)
        .expand(programs)
        .contiguous(),
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
        programs=n_seq * heads,
        has_lead=len(lead) > 0,
        n_q=int(len_q.max()) if n_seq else 0,
        n_k=int(len_k.max()) if n_seq else 0,
        q_rows=heads * total_q,
        k_rows=heads * total_k,
        q_off=per(offsets(q, lead), begin_q, q.stride(-2)),
        k_off=per(offsets(k, lead), begin_k, k.stride(-2)),
        v_off=per(offsets(v, lead), begin_k, v.stride(-2)),
        mask_off=torch.zeros(n_seq * heads, dtype=torch.int64, device=dev),
        o_off=(head * (total_q * dv) + begin_q[:, None] * dv).reshape(-1),
        kstat_off=(head * total_k + begin_k[:, None]).reshape(-1),
        qstat_off=(head * total_q + begin_q[:, None]).reshape(-1),
        alpha_off=offsets(alpha, lead).repeat(n_seq) if alpha.ndim else zero_of(n_seq * heads, dev),
        n_q_of=len_q.repeat_interleave(heads).to(torch.int32),
        n_k_of=len_k.repeat_interleave(heads).to(torch.int32),
        head_of=head.expand(n_seq, heads).reshape(-1).to(torch.int32),
        seed_of=seed.repeat_interleave(heads).to(torch.int32),
    )


def zero_of(n: int, device: torch.device, /) -> Tensor:
    return torch.zeros(n, dtype=torch.int64, device=device)
