"""Sharded attention on CPU gloo processes: time, bytes sent and peak RSS per process, doubly against ring softmax.

    python scripts/sharded_bench.py                      # 2 processes, L = 8192: time and bytes (the issue's table)
    python scripts/sharded_bench.py --memory             # 4 processes, L = 32768: peak RSS of a training step
    python scripts/sharded_bench.py --processes 2 --length 2048 --repeat 1   # a quick look

Every figure is the largest over the processes (the slowest one sets a step's time; under causal the last
process meets every key block, the first only its own), ``(1, H = 4, L / P, D = 64)`` float32 shards, one thread
per process. Ring softmax is dnorm's own (``dnorm.distributed.attention(...,
"softmax")``): torch's ``context_parallel`` does not run on the CPU at torch 2.13 (its SDPA op for the CPU has no
sharding strategy). Bytes are those this process hands to ``torch.distributed`` sends. Times are medians of
``--repeat`` runs after one warm-up, alternating the schemes; peak RSS is measured in a fresh set of processes per
scheme (``resource.getrusage``), and includes torch's import.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEADS, D = 4, 64
TARGETS = {"time": 1.6, "bytes": 1.1, "rss": 1.3}


def participant(args: argparse.Namespace) -> None:
    """One process: run the cases and write this process's figures to ``args.out``."""
    import torch
    import torch.distributed as dist

    import dnorm

    torch.set_num_threads(1)
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group("gloo", init_method=os.environ["INIT"], rank=rank, world_size=size)
    sent = [0]
    batch = dist.batch_isend_irecv

    def counting(ops):  # the bytes of this process's sends
        sent[0] += sum(op.tensor.numel() * op.tensor.element_size() for op in ops if op.op is dist.isend)
        return batch(ops)

    dist.batch_isend_irecv = counting
    n = args.length // size
    generator = torch.Generator().manual_seed(rank)
    q, k, v, d_out = (torch.randn(1, HEADS, n, D, generator=generator) for _ in range(4))

    def step(scheme: str, causal: bool, train: bool) -> float:
        inputs = [x.clone().requires_grad_(train) for x in (q, k, v)]
        dist.barrier()
        start = time.perf_counter()
        out = dnorm.distributed.attention(*inputs, scheme, causal=causal)
        if train:
            out.backward(d_out)
        return time.perf_counter() - start

    results: dict[str, dict[str, float]] = {}
    cases = [(s, c, t) for c in (False, True) for t in (False, True) for s in ("softmax", "doubly")]
    if args.only:
        cases = [case for case in cases if f"{case[0]}-{case[1]}-{case[2]}" == args.only]
    for case in cases:
        step(*case)  # warm-up
    times: dict[tuple[str, bool, bool], list[float]] = {case: [] for case in cases}
    volume: dict[tuple[str, bool, bool], int] = {}
    for _ in range(args.repeat):
        for case in cases:  # alternating, so that both schemes see the same noise
            before = sent[0]
            times[case].append(step(*case))
            volume[case] = sent[0] - before
    for case in cases:
        results["-".join(map(str, case))] = {
            "seconds": statistics.median(times[case]),
            "bytes": volume[case],
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    Path(args.out).write_text(json.dumps(results))
    dist.destroy_process_group()


def launch(processes: int, length: int, repeat: int, only: str | None = None) -> dict[str, dict[str, float]]:
    """Run ``processes`` participants; per case the largest figure over them (the slowest sets the step's time)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "WORLD_SIZE": str(processes), "INIT": Path(tmp, "rendezvous").as_uri()}
        env["OMP_NUM_THREADS"] = "1"
        command = [sys.executable, __file__, "--participant", "--length", str(length), "--repeat", str(repeat)]
        if only:
            command += ["--only", only]
        running = [
            subprocess.Popen([*command, "--out", str(Path(tmp, f"{r}.json"))], env={**env, "RANK": str(r)})
            for r in range(processes)
        ]
        for p in running:
            if p.wait() != 0:
                msg = f"a participant failed with exit status {p.returncode}"
                raise SystemExit(msg)
        everyone = [json.loads(Path(tmp, f"{r}.json").read_text()) for r in range(processes)]
    return {case: {k: max(one[case][k] for one in everyone) for k in everyone[0][case]} for case in everyone[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=None)
    parser.add_argument("--length", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--memory", action="store_true", help="peak RSS of a training step, fresh processes")
    parser.add_argument("--participant", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--only", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.participant:
        participant(args)
        return
    if args.memory:
        processes, length = args.processes or 4, args.length or 32768
        print(f"peak RSS per process (MiB), forward and backward, {processes} gloo processes, L = {length}")
        print("| causal | ring softmax | doubly | doubly / softmax | target |\n| --- | --- | --- | --- | --- |")
        for causal in (False, True):
            rss = {
                s: launch(processes, length, 1, only=f"{s}-{causal}-True")[f"{s}-{causal}-True"]["peak_rss_mib"]
                for s in ("softmax", "doubly")
            }
            ratio = rss["doubly"] / rss["softmax"]
            print(f"| {causal} | {rss['softmax']:.0f} | {rss['doubly']:.0f} | {ratio:.2f} | <= {TARGETS['rss']} |")
        return
    processes, length = args.processes or 2, args.length or 8192
    figures = launch(processes, length, args.repeat)
    print(
        f"{processes} gloo processes, L = {length}, H = {HEADS}, D = {D}, float32; "
        f"slowest process, medians of {args.repeat}"
    )
    print(
        "| pass | causal | ring softmax (s) | doubly (s) | time ratio | MiB sent, softmax | MiB sent, doubly | "
        "bytes ratio |\n| --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    for causal in (False, True):
        for train in (False, True):
            soft, doubly = (figures[f"{s}-{causal}-{train}"] for s in ("softmax", "doubly"))
            print(
                f"| {'fwd+bwd' if train else 'forward'} | {causal} | {soft['seconds']:.2f} | {doubly['seconds']:.2f} "
                f"| {doubly['seconds'] / soft['seconds']:.2f} | {soft['bytes'] / 2**20:.1f} | "
                f"{doubly['bytes'] / 2**20:.1f} | {doubly['bytes'] / soft['bytes']:.2f} |"
            )
    print(f"targets: time ratio <= {TARGETS['time']}, bytes ratio <= {TARGETS['bytes']} + O(K H) floats")


if __name__ == "__main__":
    main()
