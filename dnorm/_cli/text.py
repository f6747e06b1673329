"""Plain-text output: aligned tables, number formats and a progress bar on stderr."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TextIO

GAP = "  "


def mass(value: float, /) -> str:
    """A received mass or bound: three significant digits, exact zero as ``0``."""
    if value == 0.0:
        return "0"
    if math.isinf(value):
        return "-"
    return f"{value:.3g}"


def percent(value: float, /) -> str:
    return f"{100 * value:.1f}%"


def table(header: Sequence[str], rows: Sequence[Sequence[str]], /, *, groups: Sequence[tuple[str, int]] = ()) -> str:
    """Columns aligned (the first to the left, the others to the right) under a rule.

    ``groups`` labels consecutive runs of columns after the first, as
    ``(label, number of columns)``, centred over them on a line of its own.
    """
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    lines, start = [], 1
    for label, span in groups:  # widen a group's last column until its label fits
        room = sum(widths[start : start + span]) + len(GAP) * (span - 1)
        widths[start + span - 1] += max(0, len(label) - room)
        start += span
    if groups:
        labels, start = [" " * widths[0]], 1
        for label, span in groups:
            labels.append(label.center(sum(widths[start : start + span]) + len(GAP) * (span - 1)))
            start += span
        lines.append(GAP.join(labels).rstrip())
    for cells in (header, *rows):
        padded = [cells[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        lines.append(GAP.join(padded).rstrip())
    lines.insert(len(lines) - len(rows), "-" * len(GAP.join(" " * w for w in widths)))
    return "\n".join(lines)


class Progress:
    """Progress on ``stream`` (stderr): a one-line bar redrawn in place on a terminal, else a plain line per step.

    A log captured from a pipe or a file then reads one step per line, without carriage returns.
    """

    def __init__(self, total: int, stream: TextIO, /, *, width: int = 30) -> None:
        self.total, self.done, self.stream, self.width = total, 0, stream, width
        isatty = getattr(stream, "isatty", None)
        self.terminal = bool(isatty()) if callable(isatty) else False

    def advance(self, label: str, /) -> None:
        """Count one step done: redraw the bar with ``label``, or write the step's line."""
        self.done += 1
        if self.terminal:
            filled = self.width * self.done // max(self.total, 1)
            bar = "#" * filled + "." * (self.width - filled)
            self.stream.write(f"\r[{bar}] {self.done}/{self.total} {label:<32}")
        else:
            self.stream.write(f"{self.done}/{self.total} {label}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.terminal:  # end the bar's line
            self.stream.write("\n")
            self.stream.flush()
