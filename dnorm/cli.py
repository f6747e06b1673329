"""The ``dnorm`` command: explaining-away reports, file inspection and timings.

``dnorm`` (or ``python -m dnorm``) without a command prints the report on the
embedded scores of a real model (all-MiniLM-L6-v2) and the same small example
on every installed backend. ``dnorm inspect FILE`` reports on a user's scores
or weights, ``dnorm bench`` times the schemes, ``dnorm compile`` compiles the
Triton kernels for GPU targets without a GPU. Every command takes ``--json``.
Exit status: 0 on success, 2 for bad arguments or files (one line on stderr),
1 when ``dnorm compile`` finds a kernel that may not be launched.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ._cli import CommandError

_LAYOUT = """\
FILE holds an array of shape (..., T, K): T queries by K keys, x[..., i, j] the
score (or weight) of query i for key j. Leading axes (batch, layer, head, ...)
are independent (T, K) elements. .npy files hold one array; .npz files and .pt
files saved with torch.save (a tensor or a dict of tensors, loaded with
weights_only=True) hold several: the first is used unless --key names one.
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "inspect":
            output = _inspect(args)
        elif args.command == "compile":
            return _compile(args)
        elif args.command == "bench":
            from ._cli import bench

            summary = bench.run(size=args.size, repeat=args.repeat, heads=args.heads, dim=args.dim, stream=sys.stderr)
            output = json.dumps(summary, indent=2) if args.json else bench.render(summary)
        else:
            from ._cli import demo

            summary = {
                "layers": demo.layers(
                    threshold=args.threshold, alpha=args.alpha, schemes=tuple(args.schemes), sink=args.sink
                ),
                "backends": demo.backends(),
            }
            output = json.dumps(summary, indent=2) if args.json else demo.render(summary)
    except CommandError as exc:
        print(f"dnorm: error: {exc}", file=sys.stderr)
        return 2
    print(output)
    return 0


def _inspect(args: argparse.Namespace, /) -> str:
    from ._cli import inspect

    summary, result, x, mask = inspect.summarize(args)
    if args.plot is not None:
        from ._cli import plot

        plot.write(args.plot, x, mask, result, head=args.head, alpha=args.alpha, title=args.file)
        summary["plot"] = args.plot
    if args.json:
        return json.dumps(summary, indent=2)
    written = f"\nwrote {args.plot}" if args.plot is not None else ""
    return inspect.render(summary) + written


def _compile(args: argparse.Namespace, /) -> int:
    from ._cli import gpu_compile, gpu_table

    if args.all or args.heaviest:
        variants = gpu_compile.every_variant() if args.all else gpu_compile.heaviest_variants()
        cases = gpu_compile.matrix(variants, args.dtypes, args.head_dims, args.targets)
    else:
        cases = [c for c in gpu_compile.COVERING if c.target in args.targets and c.dtype in args.dtypes]

    def progress(done: int, total: int) -> None:
        print(f"compiled {done}/{total} cases", file=sys.stderr, flush=True)

    every_config = args.all or args.every_config
    rows = gpu_compile.run(cases, every_config=every_config, jobs=args.jobs, progress=progress, log=args.log)
    command = "dnorm compile " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["compile"] else "dnorm compile"
    table = gpu_table.render(rows, command=command)
    if args.markdown is not None:
        with open(args.markdown, "w") as f:
            f.write(table)
    print(json.dumps(gpu_compile.as_dicts(rows), indent=1) if args.json else table)
    return 1 if gpu_table.failures(rows) else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dnorm",
        description="Explaining away in attention: which keys receive (almost) no attention under "
        "softmax, doubly-normalized, hybrid, Sinkhorn, sigmoid and stick-breaking attention, with or without "
        "a sink. Without a COMMAND: the report on the embedded scores of all-MiniLM-L6-v2, then one of its "
        "heads on every installed backend.",
    )
    _report_options(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    inspect = commands.add_parser(
        "inspect",
        help="report on your own scores or weights",
        description="The explaining-away report on your own scores or weights.\n\n" + _LAYOUT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    inspect.add_argument("file", metavar="FILE", help="a .npy, .npz or .pt file")
    inspect.add_argument(
        "--kind",
        choices=("scores", "weights"),
        default="scores",
        help="pre-softmax scores (default; reported under every scheme) or attention weights",
    )
    inspect.add_argument("--key", help="the array of a .npz file or a saved dict to use")
    inspect.add_argument(
        "--mask-file",
        metavar="MASK",
        help="boolean (True = may attend) or float (added) mask broadcastable to FILE's array",
    )
    inspect.add_argument("--mask-key", help="the array of the mask file to use")
    inspect.add_argument(
        "--head", type=int, default=0, help="element to plot: index into the flattened leading axes (default 0)"
    )
    inspect.add_argument("--plot", metavar="PNG", help="write heatmaps and mass distributions there")
    _report_options(inspect)
    bench = commands.add_parser(
        "bench",
        help="time the schemes on the installed backends",
        description=(
            "Median time of dnorm.attention per scheme on every installed backend, float32. Progress goes to "
            "stderr: a bar on a terminal, a plain line per run otherwise."
        ),
    )
    bench.add_argument("--size", type=_positive, default=512, help="T = K (default 512)")
    bench.add_argument("--repeat", type=_positive, default=5, help="timed runs per scheme (default 5)")
    bench.add_argument("--heads", type=_positive, default=4, help="attention heads (default 4)")
    bench.add_argument("--dim", type=_positive, default=64, help="head dimension D (default 64)")
    bench.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _compile_parser(commands)
    return parser


def _compile_parser(commands: Any, /) -> None:
    from ._cli.gpu_compile import DTYPES, HEAD_DIMS, TARGETS

    compile_ = commands.add_parser(
        "compile",
        help="compile the Triton kernels for GPU targets, on this machine (no GPU needed)",
        description="Compile every Triton kernel dnorm would launch, for GPU targets, without a GPU (triton and "
        "torch installed), and check registers, spills and shared memory against each architecture's limits. "
        "Without --all: the covering subset CI compiles (every switch on and off, each dtype and target). "
        "Exit status 1 when a kernel does not compile, exceeds a limit or spills in its default configuration.",
    )
    scope = compile_.add_mutually_exclusive_group()
    scope.add_argument("--all", action="store_true", help="the whole matrix, every launch configuration")
    scope.add_argument(
        "--heaviest", action="store_true", help="each form with all its options at once, and the lightest forms"
    )
    compile_.add_argument("--targets", type=_listed(TARGETS, str), default=list(TARGETS), help="comma-separated")
    compile_.add_argument("--dtypes", type=_listed(DTYPES, str), default=list(DTYPES), help="comma-separated")
    compile_.add_argument(
        "--head-dims",
        type=_listed(HEAD_DIMS, int),
        default=list(HEAD_DIMS),
        help="comma-separated (with --all or --heaviest)",
    )
    compile_.add_argument("--every-config", action="store_true", help="the autotuner's configurations too")
    compile_.add_argument("--jobs", type=_positive, default=1, help="worker processes (default 1)")
    compile_.add_argument("--markdown", metavar="FILE", help="write the table there too")
    compile_.add_argument(
        "--log", metavar="FILE", help="append every build to this JSON-lines file; resume from the cases it holds"
    )
    compile_.add_argument("--json", action="store_true", help="print every build as JSON instead of the table")


def _report_options(parser: argparse.ArgumentParser, /) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--threshold",
        metavar="X",
        type=_ranged(0.0, float("inf")),
        default=0.1,
        help="a key is explained away below X times the mean mass T/K (default 0.1)",
    )
    parser.add_argument(
        "--alpha",
        metavar="A",
        type=_ranged(0.0, 1.0),
        default=0.5,
        help="hybrid = A doubly + (1 - A) softmax (default 0.5)",
    )
    from . import SCHEMES

    parser.add_argument(
        "--schemes",
        metavar="S",
        type=_listed(SCHEMES, str),
        default=list(SCHEMES),
        help=f"comma-separated schemes to report on scores (default all: {','.join(SCHEMES)})",
    )
    parser.add_argument(
        "--sink",
        metavar="X",
        type=_finite,
        default=None,
        help="add a sink of score X to the normalized schemes and report its share (0: the off-by-one softmax)",
    )


def _listed(allowed: Sequence[Any], kind: Callable[[str], Any], /) -> Callable[[str], list[Any]]:
    def parse(value: str) -> list[Any]:
        chosen = [kind(part) for part in value.split(",") if part]
        unknown = [c for c in chosen if c not in allowed]
        if unknown or not chosen:
            msg = f"choose from {', '.join(map(str, allowed))}, got {value!r}"
            raise argparse.ArgumentTypeError(msg)
        return chosen

    return parse


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        msg = f"must be at least 1, got {number}"
        raise argparse.ArgumentTypeError(msg)
    return number


def _finite(value: str) -> float:
    number = float(value)
    if number in (float("inf"), float("-inf")) or number != number:
        msg = f"must be a finite number, got {value}"
        raise argparse.ArgumentTypeError(msg)
    return number


def _ranged(low: float, high: float) -> Callable[[str], float]:
    def parse(value: str) -> float:
        number = float(value)
        if not low <= number <= high or number == float("inf"):
            msg = f"must be a finite number in [{low:g}, {high:g}], got {value}"
            raise argparse.ArgumentTypeError(msg)
        return number

    return parse
