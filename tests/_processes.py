"""Participants as processes of their own, for tests/test_distributed.py and tests/test_distributed_jax.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
TOLERANCE = 1e-12
CASES = [f"{s}-{c}" for s in ("softmax", "doubly", "hybrid", "sinkhorn") for c in (False, True)]
CASES.remove("sinkhorn-True")
# scalable softmax (spec DEF-LENGTH-SCALE), n_i counted over the whole sequence: one length scale per head in
# place of alpha, with padded keys and without a key mask (grouped heads sharing no mask)
LENGTH_CASES = [("softmax", False, True), ("doubly", True, True), ("doubly", True, False)]
CASES += [f"{s}-{c}-length{'' if masked else '-unmasked'}" for s, c, masked in LENGTH_CASES]


def start(script: str, *args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-W", "error", str(HERE / script), *args],
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def finish(processes: list[subprocess.Popen[bytes]], *, timeout: float) -> None:
    """Wait for every process (killing all of them past ``timeout`` seconds); fail with the output of one that did."""
    try:
        outputs = [p.communicate(timeout=timeout)[0] for p in processes]
    except subprocess.TimeoutExpired:
        for p in processes:
            p.kill()
        pytest.fail(f"the participants did not finish within {timeout} s")
    for p, output in zip(processes, outputs, strict=True):
        assert p.returncode == 0, output.decode(errors="replace")[-3000:]
