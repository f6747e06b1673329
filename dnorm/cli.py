"""The ``dnorm`` command: explaining-away reports, file inspection and timings.

``dnorm`` (or ``python -m dnorm``) without a command prints the report on the
embedded scores of a real model (all-MiniLM-L6-v2) and the same small example
on every installed backend. ``dnorm inspect FILE`` reports on a user's scores
or weights, ``dnorm bench`` times the schemes. Every command takes ``--json``.
Exit status: 0 on success, 2 for bad arguments or files (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

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
        elif args.command == "bench":
            from ._cli import bench

            summary = bench.run(size=args.size, repeat=args.repeat, heads=args.heads, dim=args.dim, stream=sys.stderr)
            output = json.dumps(summary, indent=2) if args.json else bench.render(summary)
        else:
            from ._cli import demo

            summary = {
                "layers": demo.layers(threshold=args.threshold, alpha=args.alpha),
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dnorm",
        description="Explaining away in attention: which keys receive (almost) no attention under "
        "softmax, doubly-normalized, hybrid and Sinkhorn attention. Without a COMMAND: the report on "
        "the embedded scores of all-MiniLM-L6-v2, then one of its heads on every installed backend.",
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
    return parser


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


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        msg = f"must be at least 1, got {number}"
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
