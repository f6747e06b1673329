"""The Triton kernels (``kernel="triton"``): against the array-API kernels and the float64 definitions.

On a machine without a GPU they run on CPU tensors through Triton's
interpreter (conftest sets ``TRITON_INTERPRET=1``), in float64 and float32;
with a GPU the same tests run compiled on CUDA tensors, and the bfloat16 test
checks FlashAttention's rule: the error is at most twice that of the same
computation in PyTorch in the same dtype, both against float64. Shapes are
not multiples of the blocks (16 under the interpreter), T differs from K, and
the head sizes are small.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from oracles import NORMALIZED, oracle

import dnorm

torch = pytest.importorskip("torch", reason="the Triton kernels take torch tensors")
pytest.importorskip("triton", reason="triton is not installed: pip install -e '.[triton]'")

from dnorm._kernels.schemes import Parameters  # noqa: E402
from dnorm._routing import triton as implementation  # noqa: E402
from dnorm._triton import configs, launch  # noqa: E402

DEVICE = "cpu" if configs.interpreted() else "cuda"
CASES = [(s, c) for s in NORMALIZED for c in (False, True) if not (c and s == "sinkhorn")]
GEN = torch.Generator().manual_seed(17)


def _problem(causal, *, t=19, k=13, d=6, dv=5, dtype=torch.float64, kv_heads=1, heads=3, float_mask=False):
    """Query heads over fewer key heads, a mask with a query that sees no key and a key no query sees."""
    k = t if causal else k
    q = torch.randn(2, heads, t, d, generator=GEN, dtype=torch.float64)
    keys, values = torch.randn(2, kv_heads, k, d, generator=GEN), torch.randn(2, kv_heads, k, dv, generator=GEN)
    allowed = torch.rand(2, 1, t, k, generator=GEN) < 0.8
    allowed[0, 0, 3] = False  # a query that sees no key
    allowed[1, 0, :, 2] = False  # a key that no query sees
    mask = torch.where(allowed, torch.randn(allowed.shape, generator=GEN), -torch.inf) if float_mask else allowed
    alpha = torch.linspace(0.1, 0.9, heads, dtype=torch.float64)
    cast = (q, keys.double(), values.double(), mask.double() if float_mask else mask, alpha)
    return [x.to(DEVICE, dtype if x.is_floating_point() and i < 3 else x.dtype) for i, x in enumerate(cast)]


def _both(inputs, scheme, causal, *, grad, seed=None, **options):
    """Output (and gradients of query, key, value, a floating mask and alpha) by the Triton and array-API kernels.

    ``seed``: dropout's generator, the same seed for both.
    """
    results = []
    for kernel in ("triton", "array-api"):
        leaves = [x.detach().clone().requires_grad_(grad and x.is_floating_point()) for x in inputs]
        if seed is not None:
            options["dropout_key"] = torch.Generator(DEVICE).manual_seed(seed)
        out = dnorm.attention(
            *leaves[:3], scheme, mask=leaves[3], alpha=leaves[4], causal=causal, kernel=kernel, **options
        )
        grads = []
        if grad:
            weights = torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype, device=out.device)
            (out * weights).sum().backward()
            grads = [x.grad for x in leaves if x.grad is not None]
        results.append([out, *grads])
    return results


@pytest.mark.theorem("THM-CHUNKED-EQUALS-DENSE")
@pytest.mark.parametrize(("scheme", "causal"), CASES)
def test_forward_equals_the_kernels_and_the_definitions(scheme, causal):
    q, k, v, mask, alpha = _problem(causal)
    (fused,), (kernels,) = _both((q, k, v, mask, alpha), scheme, causal, grad=False)
    torch.testing.assert_close(fused, kernels, rtol=1e-12, atol=1e-12)
    scores = (q.cpu() @ k.cpu().mT * q.shape[-1] ** -0.5).numpy()
    for b, h in np.ndindex(2, 3):
        w = oracle(scheme, scores[b, h], allowed=mask.cpu()[b, 0].numpy(), alpha=float(alpha[h]), causal=causal)
        np.testing.assert_allclose(fused[b, h].cpu().numpy(), w @ v[b, 0].cpu().numpy(), rtol=1e-12, atol=1e-12)
    assert (fused[0, :, 3] == 0).all()  # the query that sees no key: an exact zero row


@pytest.mark.parametrize(("scheme", "causal"), [("doubly", False), ("hybrid", True), ("sinkhorn", False)])
def test_float32_within_rounding(scheme, causal):
    inputs = _problem(causal, dtype=torch.float32)
    fused = dnorm.attention(*inputs[:3], scheme, mask=inputs[3], alpha=inputs[4], causal=causal, kernel="triton")
    assert fused.dtype == torch.float32
    exact = dnorm.attention(*(x.double() for x in inputs[:3]), scheme, mask=inputs[3], alpha=inputs[4], causal=causal)
    torch.testing.assert_close(fused.double(), exact, rtol=2e-5, atol=2e-6)


def test_half_precision_is_read_as_it_is_and_returned_in_its_dtype():
    """float16 in, float32 accumulation, float16 out, against the float32 kernels (bfloat16: the GPU test below)."""
    inputs = _problem(False, dtype=torch.float16)
    fused = dnorm.attention(*inputs[:3], "hybrid", mask=inputs[3], alpha=inputs[4], kernel="triton")
    assert fused.dtype == torch.float16
    exact = dnorm.attention(*(x.float() for x in inputs[:3]), "hybrid", mask=inputs[3], alpha=inputs[4])
    torch.testing.assert_close(fused.float(), exact, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("scheme", ["softmax", "doubly"])
def test_both_causal_alignments(scheme):
    """top-left (torch's is_causal) and bottom-right (the queries the last positions; doubly: from a state)."""
    q, k, v = (torch.randn(2, 2, n, 4, generator=GEN, dtype=torch.float64, device=DEVICE) for n in (7, 12, 12))
    for causal in ("top-left", "bottom-right"):
        if scheme == "doubly" and causal == "bottom-right":
            _, state = dnorm.decode(q[..., :5, :], k[..., :5, :], v[..., :5, :], None, scheme)
            got = dnorm.decode(q, k, v, state, scheme, kernel="triton")[0]
            want = dnorm.decode(q, k, v, state, scheme, kernel="array-api")[0]
        else:
            got, want = (dnorm.attention(q, k, v, scheme, causal=causal, kernel=n) for n in ("triton", "array-api"))
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.theorem("THM-GRADIENT-AS-ATTENTION")
@pytest.mark.theorem("THM-MASK-GRADIENT")
@pytest.mark.parametrize(("scheme", "causal"), CASES)
def test_gradients_equal_the_kernels(scheme, causal):
    """dQ, dK, dV, a floating mask's (a learned bias) and alpha's, to 1e-10 in float64."""
    inputs = _problem(causal, float_mask=True, t=17, k=11)
    fused, kernels = _both(inputs, scheme, causal, grad=True)
    assert len(fused) == len(kernels) == (6 if scheme == "hybrid" else 5)
    for got, want in zip(fused, kernels, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.theorem("THM-SOFTCAP-GRADIENT")
@pytest.mark.theorem("THM-DROPOUT-GRADIENT")
@pytest.mark.parametrize(("scheme", "causal"), [("doubly", False), ("hybrid", True), ("sinkhorn", False)])
def test_softcap_and_dropout_draw_the_array_api_bits(scheme, causal):
    """The same seed drops the same weights as kernel='array-api' (one hash of the positions), with a softcap."""
    inputs = _problem(causal, t=17, k=11, heads=2)
    fused, kernels = _both(inputs, scheme, causal, grad=True, seed=4, softcap=2.5, dropout_p=0.3)
    for got, want in zip(fused, kernels, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    n_keys = inputs[1].shape[-2]
    identity = torch.eye(n_keys, dtype=torch.float64, device=DEVICE).expand(2, 1, n_keys, n_keys)
    dropped = [
        dnorm.attention(inputs[0], inputs[1], identity, scheme, causal=causal and "top-left", kernel=kernel,
                        dropout_p=0.3, dropout_key=torch.Generator(DEVICE).manual_seed(9))
        for kernel in ("triton", "array-api")
    ]  # fmt: skip
    assert torch.equal(dropped[0] == 0, dropped[1] == 0)  # the same bits: identity values show every weight


@pytest.mark.theorem("THM-DECODE-EQUALS-FULL")
@pytest.mark.parametrize("scheme", ["doubly", "hybrid", "softmax"])
def test_decoding_in_random_splits_equals_the_full_causal_rows(scheme):
    q, k, v = (torch.randn(1, h, 23, 6, generator=GEN, dtype=torch.float64).to(DEVICE) for h in (2, 1, 1))
    alpha = torch.tensor([0.3, 0.8], dtype=torch.float64, device=DEVICE)
    full = dnorm.attention(q, k, v, scheme, causal=True, alpha=alpha)
    cuts = sorted({0, 23, *torch.randint(1, 23, (4,), generator=GEN).tolist()})
    outs, state = [], None
    for a, b in itertools.pairwise(cuts):
        if b > a:
            out, state = dnorm.decode(
                q[..., a:b, :], k[..., :b, :], v[..., :b, :], state, scheme, alpha=alpha, kernel="triton"
            )
            outs.append(out)
    torch.testing.assert_close(torch.cat(outs, dim=-2), full, rtol=1e-12, atol=1e-12)
    steps = [dnorm.decode(q[..., :20, :], k[..., :20, :], v[..., :20, :], None, scheme, alpha=alpha, kernel=name)[1]
             for name in ("triton", "array-api")]  # fmt: skip
    if scheme != "softmax":
        for got, want in zip(*steps, strict=True):  # the same state
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.theorem("THM-PACKED-EQUALS-SEPARATE")
@pytest.mark.parametrize(("scheme", "causal"), [("doubly", False), ("hybrid", True)])
def test_a_packed_batch_is_one_launch_and_equals_the_sequences_alone(scheme, causal, monkeypatch):
    lengths = [5, 0, 9, 3]
    starts = np.concatenate(([0], np.cumsum(lengths))).tolist()
    q, k, v = (
        torch.randn(2, 17, 4, generator=GEN, dtype=torch.float64, device=DEVICE).requires_grad_() for _ in range(3)
    )
    launches = []
    original = launch.row_pass
    monkeypatch.setattr(launch, "row_pass", lambda *a, **kw: launches.append(1) or original(*a, **kw))
    out = dnorm.varlen_attention(q, k, v, starts, scheme, causal=causal, kernel="triton")
    assert len(launches) == 1
    (out * out).sum().backward()
    grads = [x.grad.clone() for x in (q, k, v)]
    for b in range(len(lengths)):
        a, z = starts[b], starts[b + 1]
        if z == a:
            continue
        pieces = [x.detach()[..., a:z, :].clone().requires_grad_() for x in (q, k, v)]
        alone = dnorm.attention(*pieces, scheme, causal=causal)
        torch.testing.assert_close(out[..., a:z, :], alone, rtol=1e-12, atol=1e-12)
        (alone * alone).sum().backward()
        for got, piece in zip(grads, pieces, strict=True):
            torch.testing.assert_close(got[..., a:z, :], piece.grad, rtol=1e-10, atol=1e-10)


@pytest.mark.theorem("THM-BACKWARD-FINITE")
@pytest.mark.parametrize(("scheme", "causal"), [("doubly", False), ("hybrid", True)])
def test_fully_masked_rows_and_unseen_keys_give_zeros_and_finite_gradients(scheme, causal):
    q, k, v, mask, alpha = _problem(causal, float_mask=True, t=17, k=11, heads=1)
    leaves = [x.detach().clone().requires_grad_() for x in (q, k, v, mask)]
    out = dnorm.attention(*leaves[:3], scheme, mask=leaves[3], alpha=alpha, causal=causal, kernel="triton")
    assert torch.equal(out[0, :, 3], torch.zeros_like(out[0, :, 3]))
    out.square().sum().backward()
    for x in leaves:
        assert torch.isfinite(x.grad).all()
    assert (leaves[0].grad[0, :, 3] == 0).all()  # the query that sees no key
    assert (leaves[1].grad[1, :, 2] == 0).all()  # the unseen key
    assert (leaves[2].grad[1, :, 2] == 0).all()


def test_the_implementation_says_when_it_cannot_serve(monkeypatch):
    q = torch.randn(1, 5, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"kernel='triton' cannot serve .*torch tensors"):
        dnorm.attention(q.numpy(), q.numpy(), q.numpy(), kernel="triton")
    with pytest.raises(ValueError, match="head sizes up to 256"):
        dnorm.attention(*(torch.zeros(1, 2, 300, dtype=torch.float64, device=DEVICE),) * 3, kernel="triton")
    if configs.interpreted():
        with pytest.raises(ValueError, match="interpreter has no bfloat16"):
            dnorm.attention(*(q.bfloat16(),) * 3, kernel="triton")
        monkeypatch.setattr(implementation, "interpreted", lambda: False)
        with pytest.raises(ValueError, match="need a CUDA device, got cpu; set TRITON_INTERPRET=1"):
            dnorm.attention(q, q, q, kernel="triton")


@pytest.mark.skipif(not configs.interpreted(), reason="on a GPU machine 'auto' takes the compiled kernels")
def test_auto_never_takes_the_interpreter(monkeypatch):
    calls = []
    original = launch.forward
    monkeypatch.setattr(launch, "forward", lambda *a, **kw: calls.append(1) or original(*a, **kw))
    q = torch.randn(1, 5, 4, dtype=torch.float64)
    dnorm.attention(q, q, q, causal=True)
    dnorm.attention(q, q, q, causal=True, kernel="triton")
    assert len(calls) == 1


def test_cupy_arrays_reach_the_kernels_through_dlpack(monkeypatch):
    """CuPy arrays take the Triton kernels on zero-copy torch views; NumPy stands in for CuPy on the CPU."""
    import array_api_compat.numpy as np_xp

    from dnorm._routing.contract import Call
    from dnorm._routing.implementations import TRITON

    request = dnorm._validate.Request("doubly", None, 0.5, (2,), 1, kernel="triton")
    call = Call("attention", "cupy", request, (2,), 7, 7, torch.float64, False, False, True, False)
    reason = TRITON.refuses(call, None, None, None, None)
    assert reason is None or "TRITON_INTERPRET" in reason  # CuPy is on a GPU: compiled kernels only
    monkeypatch.setattr(implementation.importlib.util, "find_spec", lambda name: None)
    assert "torch.from_dlpack, and torch is not installed" in TRITON.refuses(call, None, None, None, None)
    monkeypatch.undo()
    if not configs.interpreted():
        return
    rng = np.random.default_rng(3)
    q, k, v = (rng.normal(size=(2, 7, 4)) for _ in range(3))
    alpha = np.asarray(0.5)
    options = launch.LaunchOptions("doubly", False, 3, 0.5, lead=(2,))
    out = TRITON.infer(q, k, v, None, Parameters(alpha, None), None, options=options, xp=np_xp)
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, dnorm.attention(q, k, v, scale=0.5), rtol=1e-12, atol=1e-12)


LAUNCHED = ("backward.keys", "backward.queries", "columns.column_stats", "columns.carries", "decode.split_step",
            "decode.combine", "potentials.potentials", "rows.row_pass")  # fmt: skip

_COMPILED_LAUNCHERS = f"""
import importlib, os, triton
from dnorm._triton import configs
for name in {LAUNCHED!r}:
    module, kernel = name.split(".")
    launcher = getattr(importlib.import_module("dnorm._triton." + module), kernel)
    switches = {{p.name for p in launcher.fixed.params if p.is_constexpr}}
    assert isinstance(launcher.tuned, triton.runtime.Autotuner), name
    assert switches <= set(launcher.tuned.keys), name  # one tuning per compiled variant
    assert ("d" in launcher.fixed.arg_names) == ("d" in launcher.tuned.keys), name  # and per head size
    assert [(c.num_warps, c.num_stages) for c in launcher.tuned.configs] == [(8, 2), (4, 2), (8, 3), (4, 3)], name
assert configs.autotuning()
os.environ["DNORM_TRITON_AUTOTUNE"] = "0"
assert not configs.autotuning()
"""


def test_every_launched_kernel_is_autotuned_when_compiled_and_fixed_under_the_interpreter():
    """Compiled, each launch goes through an autotuner over warps and stages; interpreted, the kernel itself."""
    import importlib
    import os
    import subprocess
    import sys

    launchers = [getattr(importlib.import_module(f"dnorm._triton.{name.split('.')[0]}"), name.split(".")[1])
                 for name in LAUNCHED]  # fmt: skip
    assert all(isinstance(launcher, configs.Tunable) for launcher in launchers)
    if not configs.interpreted():
        return
    assert not configs.autotuning()
    assert all(launcher.tuned is None for launcher in launchers)  # the interpreter launches the kernel itself
    # compiled launchers with the default settings (the device check turns autotuning off for its other tests)
    env = {key: value for key, value in os.environ.items() if key not in ("TRITON_INTERPRET", "DNORM_TRITON_AUTOTUNE")}
    subprocess.run([sys.executable, "-c", _COMPILED_LAUNCHERS], env=env, check=True, timeout=300)


@pytest.mark.gpu("torch-cuda")
@pytest.mark.parametrize(
    ("scheme", "causal"), [("doubly", False), ("hybrid", False), ("doubly", True), ("softmax", True)]
)
def test_bfloat16_keeps_flash_attention_tolerance(scheme, causal):
    """bfloat16 on a GPU: the error against float64 is at most twice PyTorch's own bfloat16 computation's."""
    q, k, v, mask, alpha = _problem(causal, t=150, k=130, d=64, dv=64, kv_heads=3)
    exact = dnorm.attention(q, k, v, scheme, mask=mask, alpha=alpha, causal=causal, kernel="array-api")
    low = [x.bfloat16() for x in (q, k, v)]
    ours = dnorm.attention(*low, scheme, mask=mask, alpha=alpha.bfloat16(), causal=causal, kernel="triton")
    theirs = _torch_reference(*low, mask, alpha.bfloat16(), scheme, causal)
    err_ours = (ours.double() - exact).abs().max().item()
    err_torch = (theirs.double() - exact).abs().max().item()
    assert err_ours <= 2 * err_torch + 1e-6, (err_ours, err_torch)


@pytest.mark.gpu("torch-cuda")
@pytest.mark.parametrize(("scheme", "causal"), [("doubly", True), ("hybrid", False), ("sinkhorn", False)])
def test_autotuned_launches_compute_what_the_default_configuration_does(monkeypatch, scheme, causal):
    """On a GPU: forward, gradients and a decode step agree with and without the autotuner, to float64 rounding."""
    inputs = _problem(causal, float_mask=True, t=150, k=130, d=64, dv=64, kv_heads=3)
    results = []
    for autotune in ("0", "1"):
        monkeypatch.setenv("DNORM_TRITON_AUTOTUNE", autotune)
        results.append(_both(inputs, scheme, causal, grad=True)[0])
        if causal:
            q, k, v = inputs[:3]
            results[-1].append(dnorm.decode(q[..., -3:, :], k, v, None, scheme, alpha=inputs[4], kernel="triton")[0])
    for fixed, tuned in zip(*results, strict=True):
        torch.testing.assert_close(tuned, fixed, rtol=1e-12, atol=1e-12)


def _torch_reference(q, k, v, mask, alpha, scheme, causal):
    """The scheme written with torch's operations in the inputs' dtype (materialized), as research code writes it."""
    s = (q @ k.mT) * q.shape[-1] ** -0.5
    allowed = mask if not causal else mask & torch.ones(s.shape[-2:], dtype=torch.bool, device=s.device).tril()
    s = s.masked_fill(~allowed, -torch.inf)
    plain = torch.softmax(s, dim=-1).nan_to_num()
    c = torch.logcumsumexp(s, dim=-2) if causal else torch.logsumexp(s, dim=-2, keepdim=True)
    b = torch.exp(s - c).nan_to_num()
    doubly = b / b.sum(-1, keepdim=True).clamp_min(torch.finfo(b.dtype).tiny)
    weights = {
        "softmax": plain,
        "doubly": doubly,
        "hybrid": alpha[:, None, None] * doubly + (1 - alpha[:, None, None]) * plain,
    }
    return weights[scheme] @ v
