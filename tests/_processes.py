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
# the normalization family, one parameter per head in place of alpha (per_head, scheme, causal, masked): scalable
# softmax (spec DEF-LENGTH-SCALE, n_i counted over the whole sequence), a sink (spec DEF-SINK: the plain
# component's logit, doubly's -log T and the running -log(p_i + 1)) and sigmoid attention (spec DEF-SIGMOID: its
# bias, or by default -log n_i); padded keys, or no key mask at all
FAMILY_CASES = [
    ("length_scale", "softmax", False, True),
    ("length_scale", "doubly", True, True),
    ("length_scale", "doubly", True, False),
    ("sink", "softmax", False, True),
    ("sink", "hybrid", False, True),
    ("sink", "doubly", True, False),
    ("bias", "sigmoid", True, True),
    ("length_scale", "sigmoid", False, True),
]


def family_case(per_head: str, scheme: str, causal: bool, masked: bool) -> str:
    return f"{scheme}-{causal}-{per_head}{'' if masked else '-unmasked'}"


# under JAX (each case compiles for seconds) the ones whose counts and logits read a traced place on the axis
JAX_FAMILY_CASES = [FAMILY_CASES[1], FAMILY_CASES[4], FAMILY_CASES[5], FAMILY_CASES[6]]
JAX_CASES = CASES + [family_case(*case) for case in JAX_FAMILY_CASES]
CASES += [family_case(*case) for case in FAMILY_CASES]


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
