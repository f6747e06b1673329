"""A ring over the processes of a ``torch.distributed`` group (gloo on the CPU, NCCL on GPUs)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True, eq=False)
class GroupRing:
    """The processes of ``group`` (None: the default group), in the order of their ranks in it."""

    group: Any
    size: int
    place: int

    def rank(self) -> int:
        return self.place

    def pass_on(self, arrays: tuple[torch.Tensor, ...], by: int, /) -> Callable[[], tuple[torch.Tensor, ...]]:
        """Post the sends to the rank ``by`` places after this one and the receives from the one ``by`` places
        before, at once; the function returned waits for them.

        The arrays of one dtype travel as one message (booleans as bytes): every message costs a round of the
        processes, which on a busy machine or a slow link takes longer than copying the arrays into one buffer.
        """
        to, source = (self.place + by) % self.size, (self.place - by) % self.size
        wires = [x.to(torch.uint8) if x.dtype == torch.bool else x for x in arrays]
        kinds = sorted({w.dtype for w in wires}, key=str)
        ops, received = [], []
        for tag, kind in enumerate(kinds):  # a tag each: gloo may match messages between two processes in any order
            message = torch.cat([w.reshape(-1) for w in wires if w.dtype == kind])
            buffer = torch.empty_like(message)
            ops.append(dist.P2POp(dist.isend, message, group=self.group, group_peer=to, tag=tag))
            ops.append(dist.P2POp(dist.irecv, buffer, group=self.group, group_peer=source, tag=tag))
            received.append(buffer)
        works = dist.batch_isend_irecv(ops)

        def wait() -> tuple[torch.Tensor, ...]:
            for work in works:
                work.wait()
            parts = {
                kind: iter(b.split([w.numel() for w in wires if w.dtype == kind]))
                for kind, b in zip(kinds, received, strict=True)
            }
            out = []
            for x, w in zip(arrays, wires, strict=True):
                part = next(parts[w.dtype]).view(w.shape)
                out.append(part.to(torch.bool) if x.dtype == torch.bool else part)
            return tuple(out)

        return wait

    def shared_gradient(self, grad: torch.Tensor, primal: torch.Tensor, /) -> torch.Tensor:
        """The gradient of an input every process holds (``alpha``): this process's share, as for any parameter."""
        return grad

    def gather(self, x: torch.Tensor, axis: int, /) -> torch.Tensor:
        """``all_gather_single`` along ``axis`` (moved first, where the collective joins); booleans as bytes."""
        wire = _first(x, axis)
        out = torch.empty((self.size * wire.shape[0], *wire.shape[1:]), dtype=wire.dtype, device=wire.device)
        dist.all_gather_single(out, wire, group=self.group)
        return _back(out, axis, x.dtype)

    def total(self, x: torch.Tensor, /) -> torch.Tensor:
        out = x.clone(memory_format=torch.contiguous_format)  # all_reduce writes in place
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=self.group)
        return out

    def largest(self, x: torch.Tensor, /) -> torch.Tensor:
        out = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, op=dist.ReduceOp.MAX, group=self.group)
        return out

    def scatter_total(self, x: torch.Tensor, axis: int, /) -> torch.Tensor:
        """``reduce_scatter_single`` along ``axis`` (moved first, where the collective cuts)."""
        wire = _first(x, axis)
        out = torch.empty((wire.shape[0] // self.size, *wire.shape[1:]), dtype=wire.dtype, device=wire.device)
        dist.reduce_scatter_single(out, wire, group=self.group)
        return _back(out, axis, x.dtype)


def _first(x: torch.Tensor, axis: int, /) -> torch.Tensor:
    """``x`` with ``axis`` first, contiguous (a collective reads the storage), booleans as bytes."""
    return (x.to(torch.uint8) if x.dtype == torch.bool else x).movedim(axis, 0).contiguous()


def _back(x: torch.Tensor, axis: int, dtype: torch.dtype, /) -> torch.Tensor:
    """:func:`_first` undone: the axis back in its place (contiguous there) and the dtype restored."""
    return x.movedim(0, axis).to(dtype).contiguous()


def ring(group: Any, /) -> GroupRing:
    """The ring of ``group``: its size and this process's rank in it."""
    return GroupRing(group, dist.get_world_size(group), dist.get_rank(group))


def lengths_agree(lengths: tuple[int, ...], group: Any, device: Any, /) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The smallest and the largest of each of ``lengths`` over the processes of ``group`` (one all-reduce)."""
    both = torch.tensor([*lengths, *(-n for n in lengths)], dtype=torch.int64, device=device)
    dist.all_reduce(both, op=dist.ReduceOp.MAX, group=group)
    n = len(lengths)
    return tuple(-int(x) for x in both[n:]), tuple(int(x) for x in both[:n])
