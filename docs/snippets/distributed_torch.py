"""One sequence over two processes of this machine (gloo): doubly-normalized attention, forward and backward.

Causal attention over zigzag shards (every process meets the same amount of work), then non-causal attention with
the keys and values gathered once.

``torchrun --nproc-per-node 2 distributed_torch.py`` runs it as a real job would; run as ``python
distributed_torch.py`` it starts its two processes itself.
"""

import os
import socket
import subprocess
import sys

import torch
import torch.distributed as dist

import dnorm


def participant():
    dist.init_process_group("gloo")  # RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT from the environment
    rank, size = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)  # every process draws the same whole sequence, to check its shard against it
    q, k, v = (torch.randn(1, 4, 512, 32, dtype=torch.float64) for _ in range(3))

    def mine(x, layout):  # this process's positions (in a model: its tokens)
        return dnorm.distributed.shard(x, rank=rank, size=size, layout=layout)

    # causal: chunks rank and 2 * size - 1 - rank of the sequence cut in 2 * size
    shard = [mine(x, "zigzag").clone().requires_grad_() for x in (q, k, v)]
    out = dnorm.distributed.attention(*shard, "doubly", causal=True, layout="zigzag")
    out.square().mean().backward()  # the backward pass runs the matching exchanges
    whole = mine(dnorm.attention(q, k, v, "doubly", causal=True), "zigzag")
    print(f"process {rank}, causal zigzag: largest difference {float((out.detach() - whole).abs().max()):.1e}")

    # not causal: every process gathers the keys and values once (memory O(L D) per process)
    out = dnorm.distributed.attention(*(mine(x, "contiguous") for x in (q, k, v)), "doubly", strategy="all-gather")
    whole = mine(dnorm.attention(q, k, v, "doubly"), "contiguous")
    print(f"process {rank}, all-gather: largest difference {float((out - whole).abs().max()):.1e}")
    dist.destroy_process_group()


if "RANK" in os.environ:
    participant()
else:
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    processes = [subprocess.Popen([sys.executable, __file__], env={**env, "RANK": str(r)}) for r in range(2)]
    assert all(p.wait(timeout=300) == 0 for p in processes)
