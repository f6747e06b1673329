"""Print the latest asv results as the Markdown tables of README.md: the issue's targets, then time per scheme.

Usage: ``python figures.py [RESULTS.json]``; without an argument, the newest file under results/.
"""

import ast
import itertools
import json
import math
import sys
from datetime import datetime, timezone
from pathlib import Path

#: The issues' targets: (what, benchmark, comparison, bound).
TARGETS = [
    ("doubly fwd+bwd / SDPA fwd+bwd, torch, 4096", "training.TorchTraining.track_doubly_over_sdpa", "<=", 2.5),
    (
        "causal doubly fwd+bwd / SDPA is_causal fwd+bwd, torch, 2048",
        "training.TorchTraining.track_causal_doubly_over_sdpa_causal",
        "<=",
        4,
    ),
    (
        "hand-written DNAS fwd+bwd / doubly fwd+bwd, torch, 4096",
        "training.TorchTraining.track_materialized_dnas_over_doubly",
        ">=",
        2.5,
    ),
    (
        "causal doubly inference / SDPA is_causal, torch, 2048",
        "causal.TorchInference.track_causal_doubly_over_sdpa_causal",
        "<=",
        3,
    ),
    (
        "causal doubly forward / doubly forward, NumPy, 2048",
        "causal.NumPyForward.track_causal_doubly_over_doubly",
        "<=",
        1.3,
    ),
    ("doubly fwd+bwd peak RSS (MiB), torch, 16384", "training.track_torch_doubly_peak_rss", "<=", 1536),
    ("doubly / SDPA fwd+bwd peak RSS, torch, 16384", "training.track_torch_doubly_rss_over_sdpa", "<=", 1.5),
    ("causal doubly fwd+bwd peak RSS (MiB), torch, 8192", "training.track_torch_causal_peak_rss", "<=", 1536),
    (
        "jit(grad) doubly / jax.nn.dot_product_attention, 4096",
        "training.JaxTraining.track_doubly_over_dot_product_attention",
        "<=",
        2.5,
    ),
    ("jit(grad) doubly peak RSS (MiB), JAX, 4096", "training.track_jax_doubly_peak_rss", "<=", 1536),
    ("jax.nn.dot_product_attention peak RSS (MiB), 4096", "training.track_jax_dot_product_attention_peak_rss", "", 0),
    ("doubly / torch SDPA softmax, torch, T = K = 2048", "ratios.Torch.track_doubly_over_sdpa_softmax", "<=", 1.8),
    ("doubly / hand-written DNAS, torch, 2048", "ratios.Torch.track_doubly_over_materialized_dnas", "<=", 1 / 3),
    ("softmax / plain NumPy softmax, NumPy, 2048", "ratios.NumPy.track_softmax_over_plain_numpy", "<=", 1.1),
    ("doubly / softmax, NumPy materialized, 2048", "ratios.NumPy.track_doubly_over_softmax", "<=", 1.5),
    ("chunked doubly / matmul flop rate, NumPy, 8192", "ratios.ChunkedThroughput.track_fraction_of_matmul", ">=", 0.5),
    ("chunked doubly peak RSS (MiB), fresh process, 16384", "memory.track_chunked_peak_rss", "<=", 400),
]


def results_file(args: list[str]) -> Path:
    """The results file named in ``args``, else the last one written under results/."""
    if args:
        return Path(args[0])
    results = Path(__file__).with_name("results")
    paths = [p for p in results.glob("*/*.json") if p.name != "machine.json"]
    if not paths:
        sys.exit(f"no asv results under {results}: run asv first (README.md)")
    return max(paths, key=lambda p: p.stat().st_mtime)


def values(run: dict, name: str) -> dict[tuple[object, ...], float]:
    """Each parameter combination of benchmark ``name`` and its result (NaN where it was skipped or failed)."""
    if name not in run["results"]:
        return {}
    row = dict(zip(run["result_columns"], run["results"][name], strict=False))
    results = [math.nan if x is None else x for x in row["result"]]
    keys = itertools.product(*([ast.literal_eval(p) for p in param] for param in row["params"]))
    return dict(zip(keys, results, strict=True))


def main() -> None:
    path = results_file(sys.argv[1:])
    run = json.loads(path.read_text())
    when = datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = run["params"]
    print(f"{path.name}, written {when}: {machine['cpu']}, {machine['num_cpu']} CPUs, {machine['os']}\n")
    print("| figure | target | measured | met |\n| --- | --- | --- | --- |")
    for what, name, op, bound in TARGETS:
        value = values(run, name).get((), math.nan)
        if not op:
            print(f"| {what} | | {value:.4g} | |")
            continue
        met = "n/a" if math.isnan(value) else "yes" if (value <= bound if op == "<=" else value >= bound) else "**no**"
        print(f"| {what} | {op} {bound:g} | {value:.4g} | {met} |")
    for name, label, bound in (
        ("decoding.DecodeStep.track_doubly_over_softmax", "doubly step / softmax step", 1.3),
        ("decoding.DecodeStep.track_doubly_over_sdpa", "doubly step / SDPA step", 2),
    ):
        for (keys,), value in values(run, name).items():
            met = "n/a" if math.isnan(value) else "yes" if value <= bound else "**no**"
            print(f"| {label}, K = {keys}, torch | <= {bound:g} | {value:.3g} | {met} |")
    for (mode,), value in values(run, "decoding.Generate.track_tokens_per_second").items():
        print(f"| generate tokens/s, {mode}, 512 tokens | | {value:.0f} | |")
    for (scheme,), value in values(run, "dropin.GroupedHeads.track_grouped_over_repeated").items():
        print(f"| {scheme}, 8 query heads over 2 / keys repeated, torch, 4096 | | {value:.3g} | |")
    for suffix, what in (("", "forward"), ("_training", "fwd+bwd")):
        for (scheme, causal), value in values(run, f"dropin.PackedBatch.track_packed_over_padded{suffix}").items():
            kind = "causal " if causal else ""
            print(f"| {kind}{scheme} packed / padded with mask, {what}, 8 sequences of 64-1024 | | {value:.3g} | |")
    tasks = values(run, "dropin.DaskTasks.track_tasks")
    for (causal,), value in values(run, "dropin.DaskChunks.track_dask_over_numpy").items():
        what = "causal doubly, (16, 256, 64)" if causal else "doubly, (16, 512, 64)"
        count = tasks.get((causal,), math.nan)
        print(f"| Dask / NumPy, {what} chunked along the batch ({count:.0f} tasks) | | {value:.3g} | |")
    peaks = values(run, "memory.DoublyPeakMemory.peakmem_doubly")
    for (path,), peak in peaks.items():
        print(f"| doubly peak RSS (MiB) of the asv process, {path}, NumPy, 16384 | | {peak / 2**20:.0f} | |")
    times = values(run, "schemes.Attention.time_attention")
    sizes = sorted({key[2] for key in times})
    print("\n| backend | scheme | " + " | ".join(f"T = K = {s} (ms)" for s in sizes) + " |")
    print("| --- | --- |" + " --- |" * len(sizes))
    for backend, scheme in dict.fromkeys(key[:2] for key in times):
        row = [times[backend, scheme, s] * 1e3 for s in sizes]
        if not all(math.isnan(t) for t in row):
            print(f"| {backend} | {scheme} | " + " | ".join(f"{t:.1f}" for t in row) + " |")


if __name__ == "__main__":
    main()
