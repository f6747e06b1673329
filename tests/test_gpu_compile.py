"""The compile-only mode: dnorm's Triton kernels compiled for real GPU targets on the CPU, and their resources.

Triton's interpreter (the other Triton tests) checks what the kernels compute; it applies none of the
compiler's type rules or resource limits. Here the kernels are compiled for sm_80, sm_90 and sm_100 as a GPU
would compile them: CI compiles the covering subset (``dnorm compile``: every switch of every kernel on and
off, each dtype and target), and a kernel the compiler refuses must make the mode fail. The compiling runs
in subprocesses: this process imported the kernels interpreted (conftest sets ``TRITON_INTERPRET=1``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the Triton kernels take torch tensors")
pytest.importorskip("triton", reason="triton is not installed: pip install -e '.[triton]'")

from dnorm._cli import gpu_compile, gpu_table
from dnorm._triton.compile_only import TARGETS, Build

TESTS = Path(__file__).parent


def _compiled_env() -> dict[str, str]:
    """This environment without the interpreter, the tests' folder importable."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    return env


def _python(code: str, /) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], env=_compiled_env(), capture_output=True, text=True, timeout=600, check=False
    )


@pytest.fixture(scope="module")
def covering() -> list[gpu_compile.Row]:
    """The rows of ``dnorm compile --json`` (the covering subset), and its exit status checked."""
    done = subprocess.run(
        [sys.executable, "-m", "dnorm", "compile", "--json"],
        env=_compiled_env(),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr[-3000:]
    rows = [gpu_compile.Row(**{**r, "switches": tuple(map(tuple, r["switches"])), "problems": tuple(r["problems"])})
            for r in json.loads(done.stdout)]  # fmt: skip
    assert (done.returncode == 1) == bool(gpu_table.failures(rows))
    return rows


def test_the_covering_subset_compiles_within_every_limit(covering):
    """Every build compiles; its default configuration fits its architecture and does not spill (head <= 128)."""
    bad = [f"{r.target} {r.dtype} {r.head_dim} {r.kernel} ({r.variant}): {r.problems}" for r in covering if r.problems]
    assert not bad, "\n".join(bad)


def test_the_covering_subset_turns_every_switch_on_and_off(covering):
    """Each boolean compile-time switch of each kernel is seen on and off; each dtype and target at least once."""
    seen: dict[tuple[str, str], set[object]] = {}
    for row in covering:
        for name, value in row.switches:
            seen.setdefault((row.kernel, name), set()).add(value)
    booleans = {key: {v for v in values if isinstance(v, bool)} for key, values in seen.items()}
    one_sided = sorted(key for key, values in booleans.items() if values and values != {True, False})
    assert not one_sided
    assert {r.dtype for r in covering} == set(gpu_compile.DTYPES)
    assert {r.target for r in covering} == set(gpu_compile.TARGETS)
    kernels = {r.kernel for r in covering}
    assert kernels == {"column_stats", "carries", "row_pass", "keys", "queries", "potentials", "split_step", "combine"}


def test_the_covering_subset_compiles_the_sharded_stops_own_launches(covering):
    """The launches only the fused stops of ``dnorm.distributed.attention`` make (spec DEF-SHARDED-ATTENTION) are
    compiled for sm_90, from sharded variants (within every limit: the test above): the key pass for ``gamma``
    alone (``GAMMA_ONLY``) and with every term (``FULL_DS``) at one round, without and with the hybrid's two
    components (``MIXED``), and the running statistic from the carry of an earlier block (``HAS_START``)."""
    sharded = {r.variant for r in covering if r.variant.split()[1:2] == ["sharded"]}
    assert {"softmax", "doubly", "hybrid", "sinkhorn"} >= {name.split()[0] for name in sharded}
    seen = set()
    for row in covering:
        if row.target == "sm_90" and row.variant in sharded:
            on = dict(row.switches)
            if row.kernel == "keys" and on["ROUNDS"] == 1:
                seen |= {("keys", name, on["MIXED"]) for name in ("GAMMA_ONLY", "FULL_DS") if on[name]}
            if row.kernel == "carries" and on["HAS_START"]:
                seen.add(("carries", "HAS_START", False))
    wanted = {("keys", name, mixed) for name in ("GAMMA_ONLY", "FULL_DS") for mixed in (False, True)}
    assert seen == wanted | {("carries", "HAS_START", False)}
    assert {r.target for r in covering if r.variant in sharded} == {"sm_80", "sm_90"}


def test_the_heaviest_variants_take_every_sharded_form_loaded():
    """``dnorm compile --heaviest`` compiles every scheme the sharded stops serve, causal where it has a causal
    form, with a sink where it takes one, each with every option at once."""
    heaviest = [v for v in gpu_compile.heaviest_variants() if v.entry == "sharded"]
    forms = {(v.scheme, v.causal, v.sink) for v in heaviest}
    plain = {(name, None, False) for name in ("softmax", "doubly", "hybrid", "sinkhorn", "sigmoid")}
    causal = {(name, "top-left", False) for name in ("softmax", "doubly", "hybrid", "sigmoid")}
    sinks = {(s, c, True) for s, c, _ in plain | causal if s not in ("sinkhorn", "sigmoid")}
    assert forms == plain | causal | sinks
    assert all(v.mask == "bool" and v.softcap and v.grouped for v in heaviest)
    assert {v for v in gpu_compile.every_variant() if v.entry == "sharded"} >= set(heaviest)


def test_a_kernel_with_operands_of_two_dtypes_fails_to_compile():
    """A float32 by bfloat16 ``tl.dot`` (the half-precision backward's old mistake): the build says so."""
    done = _python(
        "import _compiled_kernels as k\n"
        "from dnorm._triton import compile_only\n"
        "with compile_only.compiling('sm_90') as s:\n"
        "    k.launch(k.mixed_dot)\n"
        "    k.launch(k.product)\n"
        "print([(b.kernel, b.problems()) for b in s.builds])\n"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    builds = eval(done.stdout)
    broken = [problems for kernel, problems in builds if kernel == "mixed_dot"]
    fine = [problems for kernel, problems in builds if kernel == "product"]
    assert broken  # each configuration tried (none may be launched), each refused for the dtypes
    refusal = "does not compile: Both operands must be same dtype. Got fp32 and bf16"
    assert all(len(p) == 1 and p[0].startswith(refusal) for p in broken)
    assert fine == [[]]  # the first configuration is taken, and compiles


def test_the_resources_are_those_of_tritons_own_binary():
    """``ptxas -v`` on the PTX gives the registers ``cuobjdump`` reads from the cubin Triton built, per target."""
    done = _python(
        "import re, subprocess, tempfile, torch, triton, _compiled_kernels as k\n"
        "from pathlib import Path\n"
        "from dnorm._triton import compile_only\n"
        "tool = Path(triton.__file__).parent / 'backends/nvidia/bin/cuobjdump'\n"
        "for name, target in compile_only.TARGETS.items():\n"
        "    with compile_only.compiling(name):\n"
        "        a = torch.zeros(16, 16, dtype=torch.float16)\n"
        "        c = k.product.fixed.warmup(a, a, torch.empty(16, 16), BLOCK=16, grid=(1,))\n"
        "    regs, stores, loads = compile_only.ptxas_resources(c.asm['ptx'], target)\n"
        "    with tempfile.NamedTemporaryFile(suffix='.cubin') as f:\n"
        "        f.write(c.asm['cubin']); f.flush()\n"
        "        usage = subprocess.run([tool, '--dump-resource-usage', f.name], capture_output=True, text=True)\n"
        "    print(name, regs, re.search(r'REG:(\\d+)', usage.stdout).group(1), stores, loads)\n"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line.split() for line in done.stdout.splitlines()]
    assert [line[0] for line in lines] == list(TARGETS)
    for _, ours, theirs, stores, loads in lines:
        assert ours == theirs
        assert int(stores) == int(loads) == 0


def _build(**fields) -> Build:
    base = {"kernel": "keys", "target": "sm_80", "switches": (), "dtype": "torch.bfloat16", "head_dim": 64,
            "num_warps": 4, "num_stages": 2, "default": True, "seconds": 1.0, "shared": 48 * 1024,
            "registers": 128}  # fmt: skip
    return Build(**{**base, **fields})


def test_the_limits_of_each_architecture():
    """Shared memory per block (sm_80: 163 KiB, sm_90 and sm_100: 227 KiB), registers, and what spills count."""
    assert _build().problems() == []
    assert _build().blocks_per_sm() == 3  # 64 warps an SM, 16384 registers a block: 4; 164 KiB / 49 KiB: 3
    too_big = _build(shared=170 * 1024)
    assert too_big.problems() == ["takes 170.0 KiB of shared memory, sm_80 gives a block 163 KiB"]
    assert not too_big.kept()
    assert _build(shared=170 * 1024, target="sm_90").problems() == []
    assert _build(spill_stores=8).problems() == ["spills 8 bytes"]
    assert _build(spill_stores=8, head_dim=256).problems() == []  # allowed at 256, but the autotuner drops it
    assert not _build(spill_stores=8, head_dim=256).kept()
    assert _build(spill_stores=8, default=False).problems() == []  # another configuration: dropped, not launched
    assert _build(registers=255, num_warps=8).blocks_per_sm() == 1
    assert _build(error="Both operands must be same dtype").problems()[0].startswith("does not compile")
    assert TARGETS["sm_90"].blocks(shared=0, registers=32, warps=4) == 16  # 64 warps an SM
