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

        Tensors go contiguous (a collective reads the storage, not the view); booleans travel as bytes.
        """
        to, source = (self.place + by) % self.size, (self.place - by) % self.size
        ops, received = [], []
        for tag, x in enumerate(arrays):  # a tag each: gloo may match messages between two processes in any order
            wire = (x.to(torch.uint8) if x.dtype == torch.bool else x).contiguous()
            buffer = torch.empty_like(wire)
            ops.append(dist.P2POp(dist.isend, wire, group=self.group, group_peer=to, tag=tag))
            ops.append(dist.P2POp(dist.irecv, buffer, group=self.group, group_peer=source, tag=tag))
            received.append(buffer)
        works = dist.batch_isend_irecv(ops)

        def wait() -> tuple[torch.Tensor, ...]:
            for work in works:
                work.wait()
            return tuple(
                b.to(torch.bool) if x.dtype == torch.bool else b for b, x in zip(received, arrays, strict=True)
            )

        return wait

    def shared_gradient(self, grad: torch.Tensor, primal: torch.Tensor, /) -> torch.Tensor:
        """The gradient of an input every process holds (``alpha``): this process's share, as for any parameter."""
        return grad


def ring(group: Any, /) -> GroupRing:
    """The ring of ``group``: its size and this process's rank in it."""
    return GroupRing(group, dist.get_world_size(group), dist.get_rank(group))


def lengths_agree(lengths: tuple[int, ...], group: Any, device: Any, /) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The smallest and the largest of each of ``lengths`` over the processes of ``group`` (one all-reduce)."""
    both = torch.tensor([*lengths, *(-n for n in lengths)], dtype=torch.int64, device=device)
    dist.all_reduce(both, op=dist.ReduceOp.MAX, group=group)
    n = len(lengths)
    return tuple(-int(x) for x in both[n:]), tuple(int(x) for x in both[:n])
