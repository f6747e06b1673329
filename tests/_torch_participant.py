"""One process of a torch.distributed (gloo) group for tests/test_distributed.py: ``python _torch_participant.py OUT``.

The environment gives ``RANK``, ``WORLD_SIZE`` and ``INIT`` (a ``file://`` rendezvous). Every case runs
:func:`dnorm.distributed.attention` on this process's shard and :func:`dnorm.attention` on the whole sequence
(every process draws the same inputs), and records the largest differences of the output and the gradients; the
results go to ``OUT`` as JSON. The cases are those of ``_processes.cases`` (with two processes every scheme with
every combination of the optional inputs, both layouts and both strategies), in one process group.
"""

from __future__ import annotations

import json
import os
import sys
import warnings

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as collective
from _processes import Case, cases

import dnorm


def main(out_path: str) -> None:
    torch.set_num_threads(1)
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group("gloo", init_method=os.environ["INIT"], rank=rank, world_size=size)
    results: dict[str, object] = {}
    generator = torch.Generator().manual_seed(2009)
    n = 4
    for case in cases(size):
        results[case.name] = compare(case, generator, rank, size, n)
    everything = Case("doubly", True, True, True, True, "zigzag", "ring")
    results["gathered"] = compare(everything, generator, rank, size, n, gather=True)
    odd = [r for r in range(size) if r % 2]  # a group of its own: the odd ranks share another sequence
    group = dist.new_group(odd)
    if rank in odd:
        results["group"] = compare(
            everything._replace(scheme="hybrid"), generator, odd.index(rank), len(odd), n, group=group
        )
    results["half"] = half_precision(torch.Generator().manual_seed(18), rank, size, n)  # the odd ranks drew more
    if os.environ.get("TRITON_INTERPRET") == "1":  # the fused stops read float16 as it is (the interpreter: no bf16)
        results["half_fused"] = half_precision(torch.Generator().manual_seed(18), rank, size, n, kernel="triton")
    results["unequal"] = unequal_shards(rank, n)
    with open(out_path, "w") as f:
        json.dump(results, f)
    dist.destroy_process_group()


def compare(case, generator, rank, size, n, *, gather=False, group=None):
    """Largest differences (output, d_query, d_key, d_value, d_alpha), and whether every gradient is laid out as
    its input (contiguous, or with ``gather`` in the strides of ``(B, T, H, D)`` activations).

    Grouped heads (4 query heads over 2); the case says whether keys are padded, ``alpha`` (or the family's length
    scale, sink or sigmoid bias: ``case.family``) is one number or one per head, there is a softcap, and how the
    sequence is split. With ``gather`` the outputs are gathered by
    ``torch.distributed.nn.functional.all_gather`` and every process takes the gradient of the whole sequence's
    loss (divided by the processes, whose gradients the gather's backward sums). ``rank`` and ``size`` are those
    in ``group`` (None: the default group).
    """
    length = n * size
    q = torch.randn(2, 4, length, 3, generator=generator, dtype=torch.float64)
    k, v = (torch.randn(2, 2, length, 3, generator=generator, dtype=torch.float64) for _ in range(2))
    d_out = torch.randn(2, 4, length, 3, generator=generator, dtype=torch.float64)
    keep = torch.rand(2, length, generator=generator) < 0.8
    keep[1, 0] = False
    alpha = torch.tensor([0.2, 0.4, 0.6, 0.9], dtype=torch.float64) if case.alpha_array else torch.tensor(0.3)
    options = {"causal": case.causal, "softcap": 2.0 if case.softcap else None, "scale": 0.5}
    whole = [x.clone().requires_grad_() for x in (q, k, v, alpha)]
    want = dnorm.attention(
        *whole[:3],
        case.scheme,
        mask=keep[:, None, None, :] if case.padding else None,
        **{case.family: whole[3] if case.alpha_array else 0.3},
        **options,
        kernel="array-api",
    )
    want.backward(d_out)

    def mine(x, axis=-2):
        return dnorm.distributed.shard(x, rank=rank, size=size, layout=case.layout, axis=axis)

    shards = [mine(x).contiguous() for x in (q, k, v)]
    if gather:  # in the layout of (B, T, H, D) activations: the gradients must come back in it
        shards = [x.transpose(1, 2).contiguous().transpose(1, 2) for x in shards]
    ours = [x.detach().requires_grad_() for x in shards] + [alpha.clone().requires_grad_()]
    got = dnorm.distributed.attention(
        *ours[:3],
        case.scheme,
        key_padding_mask=mine(keep, -1) if case.padding else None,
        **{case.family: ours[3] if case.alpha_array else 0.3},
        group=group,
        layout=case.layout,
        strategy=case.strategy,
        kernel=case.kernel,
        **options,
    )
    if gather:
        with warnings.catch_warnings():  # deprecated for a private module, but it is the collective users call
            warnings.simplefilter("ignore", FutureWarning)
            everything = dnorm.distributed.unshard(collective.all_gather(got), layout=case.layout)
        ((everything * d_out).sum() / size).backward()
        got = mine(everything)
    else:
        got.backward(mine(d_out))
    mixed = case.alpha_array and (case.scheme == "hybrid" or case.family != "alpha")  # a gradient to compare
    d_alpha = _grad(ours[3]).clone() if mixed else torch.zeros(())
    if not gather:  # each process holds its rows' share of alpha's gradient
        dist.all_reduce(d_alpha, group=group)
    errors = [(got - mine(want)).abs().max().item()]
    errors += [(a.grad - mine(b.grad)).abs().max().item() for a, b in zip(ours[:3], whole[:3], strict=True)]
    errors.append((d_alpha - _grad(whole[3])).abs().max().item() if mixed else 0.0)
    return {"errors": errors, "laid_out": all(x.grad.stride() == x.stride() for x in ours[:3])}


def _grad(x):
    """``x``'s gradient; zeros where autograd gave none (doubly's sink, on which nothing depends)."""
    return torch.zeros_like(x) if x.grad is None else x.grad


def half_precision(generator, rank, size, n, *, kernel="auto"):
    """Half-precision shards (bfloat16; float16 for ``kernel="triton"`` under the interpreter), forward and backward:
    computed in float32, returned in the inputs' dtype; the largest difference from float64, output and gradients."""
    dtype = torch.float16 if kernel == "triton" else torch.bfloat16
    q, k, v = (torch.randn(1, 2, n * size, 8, generator=generator, dtype=torch.float64) for _ in range(3))
    whole = [x.clone().requires_grad_() for x in (q, k, v)]
    want = dnorm.attention(*whole, "doubly", causal=True)
    want.sum().backward()
    mine = slice(rank * n, (rank + 1) * n)
    ours = [x[..., mine, :].to(dtype).requires_grad_() for x in (q, k, v)]
    got = dnorm.distributed.attention(*ours, causal=True, kernel=kernel)
    got.sum().backward()
    errors = [(got.double() - want[..., mine, :]).abs().max().item()]
    errors += [(a.grad.double() - b.grad[..., mine, :]).abs().max().item() for a, b in zip(ours, whole, strict=True)]
    dtypes = {str(x.dtype) for x in (got, *(a.grad for a in ours))}
    return {"dtype": dtypes.pop() if len(dtypes) == 1 else str(sorted(dtypes)), "error": max(errors)}


def unequal_shards(rank, n):
    """Shards of different lengths: every process raises the same ValueError (none waits for the others)."""
    q = torch.randn(1, 2, n + rank, 3, dtype=torch.float64)
    try:
        dnorm.distributed.attention(q, q, q)
    except ValueError as error:
        return str(error)
    return None


if __name__ == "__main__":
    main(sys.argv[1])
