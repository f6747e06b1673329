"""Participants as processes of their own, for tests/test_distributed.py and tests/test_distributed_jax.py."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

HERE = Path(__file__).parent
TOLERANCE = 1e-12
SCHEMES = [
    (s, c) for s in ("softmax", "doubly", "hybrid", "sinkhorn") for c in (False, True) if (s, c) != ("sinkhorn", True)
]


class Case(NamedTuple):
    """One sharded call with grouped heads (4 query heads over 2): which optional inputs it passes, and how the
    sequence is split (``layout``) and reaches the queries (``strategy``)."""

    scheme: str
    causal: bool
    padding: bool  # a key_padding_mask
    alpha_array: bool  # one alpha per query head rather than a number
    softcap: bool
    layout: str
    strategy: str
    family: str = "alpha"  # the per-head parameter: alpha, or the family's length_scale, sink or bias
    kernel: str = "auto"  # "triton": the fused stops, under Triton's interpreter

    @property
    def name(self) -> str:
        return "-".join(str(x) for x in self)


# the normalization family, one parameter per head in place of alpha, contiguous shards on the ring (their only
# transport): scalable softmax (spec DEF-LENGTH-SCALE, n_i counted over the whole sequence), a sink (spec DEF-SINK:
# the plain component's logit, doubly's -log T and the running -log(p_i + 1)) and sigmoid attention (spec
# DEF-SIGMOID: its bias, or by default -log n_i); padded keys, or no key mask at all; a softcap
FAMILY_CASES = [
    Case(scheme, causal, padding, True, True, "contiguous", "ring", family)
    for family, scheme, causal, padding in [
        ("length_scale", "softmax", False, True),
        ("length_scale", "doubly", True, True),
        ("length_scale", "doubly", True, False),
        ("sink", "softmax", False, True),
        ("sink", "hybrid", False, True),
        ("sink", "doubly", True, False),
        ("bias", "sigmoid", True, True),
        ("length_scale", "sigmoid", False, True),
    ]
]
# under JAX (each case compiles for seconds) the ones whose counts and logits read a traced place on the axis
JAX_FAMILY_CASES = [FAMILY_CASES[1], FAMILY_CASES[4], FAMILY_CASES[5], FAMILY_CASES[6]]


# the fused stops (kernel="triton", spec THM-SHARDED-EQUALS-FULL on the Triton passes), where Triton's interpreter
# runs them (no GPU): every scheme and form once, each optional input both ways, both layouts and both strategies
FUSED_CASES = [
    Case("softmax", False, True, True, True, "contiguous", "ring", "alpha", "triton"),
    Case("doubly", True, True, True, True, "contiguous", "ring", "alpha", "triton"),
    Case("hybrid", False, True, True, False, "contiguous", "all-gather", "alpha", "triton"),
    Case("sinkhorn", False, False, False, True, "contiguous", "ring", "alpha", "triton"),
    Case("hybrid", True, False, True, True, "contiguous", "ring", "sink", "triton"),
    Case("doubly", True, True, True, False, "contiguous", "ring", "length_scale", "triton"),
    Case("hybrid", True, True, True, True, "zigzag", "ring", "alpha", "triton"),
    Case("sigmoid", True, True, True, True, "contiguous", "ring", "bias", "triton"),
    Case("sigmoid", False, False, True, False, "contiguous", "ring", "length_scale", "triton"),
]


def fused_cases(size: int) -> list[Case]:
    """The fused stops' cases of a group of ``size``: all with two processes, causal doubly with three (more
    processes than cores take turns at the interpreter: 4 processes ran three of these cases in 82 s;
    tests/test_sharded_triton.py runs 4 threads instead); none unless Triton's interpreter runs the kernels on the
    CPU tensors of these processes (``TRITON_INTERPRET=1``)."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        return []
    return {2: FUSED_CASES, 3: [FUSED_CASES[1]]}.get(size, [])


def every_case() -> list[Case]:
    """Every scheme, causal or not, with every combination of the optional inputs, each combination under both
    layouts (causal) or both strategies (not causal): the product the gloo processes run."""
    cases = []
    for scheme, causal in SCHEMES:
        for padding, alpha_array, softcap in itertools.product((False, True), repeat=3):
            for other in (False, True):
                layout = "zigzag" if causal and other else "contiguous"
                strategy = "all-gather" if not causal and other else "ring"
                cases.append(Case(scheme, causal, padding, alpha_array, softcap, layout, strategy))
    return cases


def covering_cases() -> list[Case]:
    """Every scheme and causal form once, the optional inputs and the transports varied so that each value of each
    meets every other's: under JAX every case is a compilation of its own (seconds), so the whole product of
    :func:`every_case` runs on gloo processes and in threads (tests/test_sharded_kernels.py) instead."""
    return [
        Case("softmax", False, True, True, True, "contiguous", "ring"),
        Case("softmax", True, False, False, False, "zigzag", "ring"),
        Case("doubly", False, False, True, True, "contiguous", "all-gather"),
        Case("doubly", True, True, False, True, "contiguous", "ring"),
        Case("doubly", True, True, True, False, "zigzag", "ring"),
        Case("hybrid", False, True, False, False, "contiguous", "all-gather"),
        Case("hybrid", True, False, True, True, "zigzag", "ring"),
        Case("sinkhorn", False, False, False, True, "contiguous", "ring"),
    ]


def cases(size: int) -> list[Case]:
    """The cases of a group of ``size`` gloo processes: the whole product with two, the covering set with more
    (each case costs a few rounds of every process, and more processes than cores wait on each other's turns)."""
    return (every_case() if size == 2 else covering_cases()) + FAMILY_CASES + fused_cases(size)


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
