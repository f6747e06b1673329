"""Sharded attention on CPU gloo processes: time, bytes sent and peak RSS per process, against ring softmax.

    python scripts/sharded_bench.py                  # 2 processes, L = 8192: time and bytes, every layout and strategy
    python scripts/sharded_bench.py --balance        # 4 processes, L = 8192: causal work per process, both layouts
    python scripts/sharded_bench.py --memory         # 4 processes, L = 32768: peak RSS, ring against all-gather
    python scripts/sharded_bench.py --jax            # 4 JAX host devices, L = 4096: causal, masked or skipped blocks
    python scripts/sharded_bench.py --processes 2 --length 2048 --repeat 1   # a quick look

``(1, H = 4, L / P, D = 64)`` float32 shards, one thread per process. Ring softmax is dnorm's own
(``dnorm.distributed.attention(..., "softmax")``): torch's ``context_parallel`` does not run on the CPU at torch
2.13 (its SDPA op for the CPU has no sharding strategy). Every case runs in the same processes, alternating, after
one warm-up each; times are medians of ``--repeat`` runs. A process's *time* is the wall time of its call from a
barrier; its *CPU* time that of its main thread (``time.thread_time``: the computation and the copies into sockets,
not the waits). The table's time and CPU time are each the largest over the processes (CPU time is the figure a
loaded machine distorts least); ``--balance`` reports the slowest and the fastest process's CPU time, the work each
one does, since on this machine four processes share two cores and a process that waits lends its core to the
others. Bytes are those this process hands to ``torch.distributed``: point-to-point sends as they are, and the
collectives as their bandwidth-optimal (ring) algorithms send them (all-gather and reduce-scatter ``(P - 1) / P`` of
the whole array, all-reduce twice that). Peak RSS is measured in a fresh set of processes per case
(``resource.getrusage``), and includes torch's import.
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
NON_CAUSAL = [
    ("softmax", "contiguous", "ring"),
    ("doubly", "contiguous", "ring"),
    ("doubly", "contiguous", "all-gather"),
]
CAUSAL = [("softmax", "contiguous", "ring"), ("doubly", "contiguous", "ring")]
CAUSAL += [("softmax", "zigzag", "ring"), ("doubly", "zigzag", "ring")]


def name(scheme: str, causal: bool, train: bool, layout: str, strategy: str) -> str:
    return f"{scheme}-{causal}-{train}-{layout}-{strategy}"


def cases(kind: str) -> list[tuple[str, bool, bool, str, str]]:
    """The cases of a run: the table (both passes), the balance of causal work, or one case per process set."""
    if kind == "balance":
        return [(s, True, True, layout, strategy) for s, layout, strategy in CAUSAL]
    both = [(s, False, t, lay, st) for t in (False, True) for s, lay, st in NON_CAUSAL]
    return both + [(s, True, t, lay, st) for t in (False, True) for s, lay, st in CAUSAL]


def participant(args: argparse.Namespace) -> None:
    """One process: run the cases and write this process's figures to ``args.out``."""
    import torch
    import torch.distributed as dist

    import dnorm

    torch.set_num_threads(1)
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group("gloo", init_method=os.environ["INIT"], rank=rank, world_size=size)
    sent = [0.0]
    count(dist, sent, size)
    n = args.length // size
    generator = torch.Generator().manual_seed(rank)
    q, k, v, d_out = (torch.randn(1, HEADS, n, D, generator=generator) for _ in range(4))

    def step(scheme: str, causal: bool, train: bool, layout: str, strategy: str) -> tuple[float, float]:
        inputs = [x.clone().requires_grad_(train) for x in (q, k, v)]
        dist.barrier()
        start, cpu = time.perf_counter(), time.thread_time()
        out = dnorm.distributed.attention(*inputs, scheme, causal=causal, layout=layout, strategy=strategy)
        if train:
            out.backward(d_out)
        return time.perf_counter() - start, time.thread_time() - cpu

    todo = [case for case in cases(args.kind) if args.only in (None, name(*case))]
    for case in todo:
        step(*case)  # warm-up
    times: dict[tuple[str, bool, bool, str, str], list[tuple[float, float]]] = {case: [] for case in todo}
    volume: dict[tuple[str, bool, bool, str, str], float] = {}
    for _ in range(args.repeat):
        for case in todo:  # alternating, so that every case sees the same noise
            before = sent[0]
            times[case].append(step(*case))
            volume[case] = sent[0] - before
    results = {
        name(*case): {
            "seconds": statistics.median(t for t, _ in times[case]),
            "cpu": statistics.median(c for _, c in times[case]),
            "bytes": volume[case],
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
        for case in todo
    }
    Path(args.out).write_text(json.dumps(results))
    dist.destroy_process_group()


def count(dist: object, sent: list[float], size: int) -> None:
    """Count the bytes this process sends: point-to-point as they are, collectives as their ring algorithms."""
    d: object = dist
    batch = d.batch_isend_irecv  # type: ignore[attr-defined]
    gather, scatter, reduce = d.all_gather_single, d.reduce_scatter_single, d.all_reduce  # type: ignore[attr-defined]
    share = (size - 1) / size

    def nbytes(x: object) -> int:
        return x.numel() * x.element_size()  # type: ignore[attr-defined]

    def batch_counting(ops):
        sent[0] += sum(nbytes(op.tensor) for op in ops if op.op is d.isend)  # type: ignore[attr-defined]
        return batch(ops)

    def gather_counting(out, inp, **kw):
        sent[0] += share * nbytes(out)
        return gather(out, inp, **kw)

    def scatter_counting(out, inp, **kw):
        sent[0] += share * nbytes(inp)
        return scatter(out, inp, **kw)

    def reduce_counting(x, **kw):
        sent[0] += 2 * share * nbytes(x)
        return reduce(x, **kw)

    d.batch_isend_irecv, d.all_gather_single = batch_counting, gather_counting  # type: ignore[attr-defined]
    d.reduce_scatter_single, d.all_reduce = scatter_counting, reduce_counting  # type: ignore[attr-defined]


def launch(processes: int, length: int, repeat: int, kind: str, only: str | None = None) -> list[dict]:
    """Run ``processes`` participants; every process's figures, in the order of their ranks."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "WORLD_SIZE": str(processes), "INIT": Path(tmp, "rendezvous").as_uri()}
        env["OMP_NUM_THREADS"] = "1"
        command = [sys.executable, __file__, "--participant", "--length", str(length), "--repeat", str(repeat)]
        command += ["--kind", kind] + (["--only", only] if only else [])
        running = [
            subprocess.Popen([*command, "--out", str(Path(tmp, f"{r}.json"))], env={**env, "RANK": str(r)})
            for r in range(processes)
        ]
        for p in running:
            if p.wait() != 0:
                msg = f"a participant failed with exit status {p.returncode}"
                raise SystemExit(msg)
        return [json.loads(Path(tmp, f"{r}.json").read_text()) for r in range(processes)]


def slowest(everyone: list[dict]) -> dict[str, dict[str, float]]:
    """Per case the largest figure over the processes (the slowest sets a step's time)."""
    return {case: {k: max(one[case][k] for one in everyone) for k in everyone[0][case]} for case in everyone[0]}


def table(processes: int, length: int, repeat: int) -> None:
    f = slowest(launch(processes, length, repeat, "table"))
    print(
        f"{processes} gloo processes, L = {length}, H = {HEADS}, D = {D}, float32; slowest process, medians of {repeat}"
    )
    print(
        "| pass | causal | case | time (s) | time / ring softmax | CPU (s) | CPU / ring softmax | MiB sent "
        "| bytes / ring softmax |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for causal, configs in ((False, NON_CAUSAL), (True, CAUSAL)):
        for train in (False, True):
            for scheme, layout, strategy in configs:
                base = f[name("softmax", causal, train, layout if causal else "contiguous", "ring")]
                x = f[name(scheme, causal, train, layout, strategy)]
                print(
                    f"| {'fwd+bwd' if train else 'forward'} | {causal} | {scheme} {layout} {strategy} | "
                    f"{x['seconds']:.2f} | {x['seconds'] / base['seconds']:.2f} | {x['cpu']:.2f} | "
                    f"{x['cpu'] / base['cpu']:.2f} | {x['bytes'] / 2**20:.1f} | "
                    f"{x['bytes'] / base['bytes']:.2f} |"
                )


def balance(processes: int, length: int, repeat: int) -> None:
    everyone = launch(processes, length, repeat, "balance")
    print(f"causal forward + backward, {processes} gloo processes, L = {length}; medians of {repeat}")
    print("| case | CPU s per process (rank 0 ..) | slowest / fastest CPU | wall s (slowest) |")
    print("| --- | --- | --- | --- |")
    for case in everyone[0]:
        cpu = [one[case]["cpu"] for one in everyone]
        wall = max(one[case]["seconds"] for one in everyone)
        print(f"| {case} | {' '.join(f'{c:.2f}' for c in cpu)} | {max(cpu) / min(cpu):.2f} | {wall:.2f} |")


def memory(processes: int, length: int) -> None:
    print(
        f"peak RSS per process (MiB), forward and backward, {processes} gloo processes, L = {length}, fresh processes"
    )
    print("| case | peak RSS (largest process) |\n| --- | --- |")
    for scheme, layout, strategy in NON_CAUSAL:
        case = name(scheme, False, True, layout, strategy)
        rss = max(one[case]["peak_rss_mib"] for one in launch(processes, length, 1, "table", only=case))
        print(f"| {case} | {rss:.0f} |")


def jax_devices(processes: int, length: int, repeat: int) -> None:
    """Causal forward and backward inside ``shard_map`` on host devices: over contiguous shards a device computes
    the blocks it may not see too (masked), over zigzag shards only its tiles. In a process of its own (the device
    count is fixed when JAX starts); one XLA program for all devices, which share this machine's cores."""
    if "XLA_FLAGS" not in os.environ:
        env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={processes}", "JAX_PLATFORMS": "cpu"}
        command = [sys.executable, __file__, "--jax", "--processes", str(processes), "--length", str(length)]
        subprocess.run([*command, "--repeat", str(repeat)], env=env, check=True)
        return
    import jax
    import jax.numpy as jnp

    import dnorm

    mesh = jax.make_mesh((processes,), ("seq",))
    seq = jax.P(None, None, "seq", None)
    on_devices = jax.sharding.NamedSharding(mesh, seq)
    q, k, v = (
        jax.device_put(jax.random.normal(jax.random.key(i), (1, HEADS, length, D)), on_devices) for i in range(3)
    )
    print(f"causal forward + backward inside shard_map, {processes} JAX host devices, L = {length}; median of {repeat}")
    print("| scheme | layout | compile + first run (s) | time (s) |\n| --- | --- | --- | --- |")
    for scheme in ("softmax", "doubly"):
        for layout in ("contiguous", "zigzag"):

            def loss(q, k, v, scheme=scheme, layout=layout):
                attend = jax.shard_map(
                    lambda q, k, v: dnorm.distributed.attention(
                        q, k, v, scheme, causal=True, axis_name="seq", layout=layout
                    ),
                    mesh=mesh,
                    in_specs=(seq, seq, seq),
                    out_specs=seq,
                )
                return jnp.sum(attend(q, k, v))

            step = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
            start = time.perf_counter()
            jax.block_until_ready(step(q, k, v))
            first = time.perf_counter() - start
            times = []
            for _ in range(repeat):
                start = time.perf_counter()
                jax.block_until_ready(step(q, k, v))
                times.append(time.perf_counter() - start)
            print(f"| {scheme} | {layout} | {first:.1f} | {statistics.median(times):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=None)
    parser.add_argument("--length", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--memory", action="store_true", help="peak RSS of a training step, fresh processes")
    parser.add_argument("--balance", action="store_true", help="causal work per process, both layouts")
    parser.add_argument("--jax", action="store_true", help="causal under JAX host devices, both layouts")
    parser.add_argument("--participant", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kind", default="table", help=argparse.SUPPRESS)
    parser.add_argument("--only", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.participant:
        participant(args)
    elif args.memory:
        memory(args.processes or 4, args.length or 32768)
    elif args.balance:
        balance(args.processes or 4, args.length or 8192, args.repeat)
    elif args.jax:
        jax_devices(args.processes or 4, args.length or 4096, args.repeat)
    else:
        table(args.processes or 2, args.length or 8192, args.repeat)


if __name__ == "__main__":
    main()
