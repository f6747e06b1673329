"""The ``"triton"`` implementation: dnorm's fused Triton kernels (:mod:`dnorm._triton`) behind the contract.

They run on CUDA torch tensors, and on CPU tensors through Triton's
interpreter when ``TRITON_INTERPRET=1`` is set (how the tests run them).
Inputs arrive in their own dtype: half precision is read as it is and every
product accumulates in float32 (float64 for float64 inputs); the output comes
back in the compute dtype, which the routing layer casts to the input's.
"""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from typing import Any

from .._kernels import schemes
from .._triton.mode import compile_only, interpreted  # without importing triton: routing must not need it
from .contract import Call

Array = Any

#: Head sizes the kernels take (the tiles pad them to a power of two, at least 16).
MAX_HEAD_DIM = 256
_FLOATS = ("torch.float16", "torch.bfloat16", "torch.float32", "torch.float64")


class Triton:
    """Fused forward, backward and decoding kernels for every scheme, in Triton."""

    name = "triton"
    upcasts = False  # the kernels read half precision as it is and accumulate in float32 themselves

    def refuses(self, call: Call, query: Array, key: Array, value: Array, mask: Array | None, /) -> str | None:
        if interpreted() and call.request.kernel != "triton":
            return "the interpreter (TRITON_INTERPRET=1) runs the kernels when asked for, kernel='triton', only"
        if call.library == "cupy":
            return _dlpack_refusal(call)
        if call.library != "torch":
            return f"it takes torch tensors (and CuPy arrays, through DLPack), got {type(query).__module__}"
        if call.symbolic:  # first: what follows reads the compile-only session, which torch.compile cannot trace
            return "under torch.compile it is not traced (its launches are Python); compile with kernel='array-api'"
        if importlib.util.find_spec("triton") is None:
            return "triton is not installed: pip install 'dnorm[triton]'"
        devices = {x.device for x in (query, key, value, mask) if x is not None}
        if len(devices) > 1:
            return f"it takes tensors on one device, got {sorted(str(d) for d in devices)}"
        device = next(iter(devices))
        if interpreted() and device.type != "cpu":
            return "TRITON_INTERPRET=1 runs the kernels on CPU tensors; unset it for CUDA tensors"
        if not interpreted() and device.type != "cuda" and compile_only() is None:
            return (
                f"the Triton kernels need a CUDA device, got {device}; set TRITON_INTERPRET=1 to run them on the "
                "CPU through Triton's interpreter"
            )
        if str(query.dtype) not in _FLOATS:
            return f"it takes float16, bfloat16, float32 and float64, got {query.dtype}"
        if interpreted() and str(query.dtype) == "torch.bfloat16":
            return "Triton's interpreter has no bfloat16 arithmetic (triton#4972): bfloat16 runs on a GPU only"
        if max(query.shape[-1], value.shape[-1]) > MAX_HEAD_DIM:
            return f"it takes head sizes up to {MAX_HEAD_DIM}, got {query.shape[-1]} and {value.shape[-1]}"
        if mask is not None and str(mask.dtype) not in ("torch.bool", *_FLOATS):
            return f"it takes a boolean or floating mask, got {mask.dtype}"
        if schemes.SCHEMES[call.request.scheme].rows == "sticks":
            return "its kernels have no stick-breaking pass yet: kernel='array-api' computes scheme='stick-breaking'"
        return None

    def options(self, call: Call, query: Array, key: Array, mask: Array | None, /, *, xp: Any) -> Any:
        from .._triton import configs, launch

        request = call.request
        return launch.LaunchOptions(
            scheme=request.scheme,
            causal=request.causal,
            n_iter=request.n_iter,
            scale=request.scale,
            softcap=request.softcap,
            dropout=request.dropout_p,
            align_end=bool(request.offset),
            blocks=configs.blocks_for(str(query.dtype), max(query.shape[-1], key.shape[-1]), heavy=_heavy(call, mask)),
            lead=call.lead,
            sink=request.sink,
            attend_current=request.attend_current,
            dropped=request.first_position - (request.offset or 0),
        )

    def infer(self, *arrays: Array, options: Any, xp: Any) -> Array:
        if not _is_torch(arrays[0]):  # CuPy arrays: the same kernels on torch views of them, on CuPy's stream
            q, k, v, mask, params, seed = arrays
            flat = (q, k, v, mask, *params, seed)

            def run(*ts: Any) -> Any:
                given = (*ts[:4], schemes.Parameters(ts[4], ts[5]), ts[6])
                return self.forward(*given, options=options, xp=_torch_xp())[0]

            return through_dlpack(run, flat, xp=xp)
        return self.forward(*arrays, options=options, xp=xp)[0]

    def forward(
        self,
        q: Array,
        k: Array,
        v: Array,
        mask: Array | None,
        params: schemes.Parameters,
        seed: Array | None,
        /,
        *,
        options: Any,
        xp: Any,
    ) -> tuple[Array, Any]:
        from .._triton import launch

        alpha, sink = params
        layout = _layout(q, k, v, mask, alpha, seed, options)
        out, residuals = launch.forward(q, k, v, mask, alpha, seed, options=options, layout=layout, sink=sink)
        return _unflatten(out, q, options), residuals

    def backward(
        self,
        q: Array,
        k: Array,
        v: Array,
        mask: Array | None,
        params: schemes.Parameters,
        seed: Array | None,
        out: Array,
        residuals: Any,
        grad: Array,
        /,
        *,
        options: Any,
        mask_grad: bool,
        xp: Any,
    ) -> tuple[Array, Array, Array, Array | None, schemes.Parameters]:
        from .._kernels.shapes import sum_to
        from .._triton import gradients

        alpha, sink = params
        lead = options.lead
        # dO in the inputs' dtype, as the products read V: the output reaches the caller cast to that dtype, so the
        # gradient arriving here holds values of that dtype (half precision: exactly representable)
        flat = grad.to(v.dtype).reshape(-1, grad.shape[-1]).contiguous()
        layout = _layout(q, k, v, mask, alpha, seed, options)
        d_q, d_k, d_v, d_mask, d_alpha, d_sink = gradients.backward(
            q, k, v, mask, alpha, seed, out.reshape(flat.shape), residuals, flat, options=options,
            mask_grad=mask_grad, layout=layout,
        )  # fmt: skip
        d, dv = q.shape[-1], v.shape[-1]
        grads = (  # (rows, padded head size) buffers, rows lead index-major: dense or packed alike
            d_q[..., :d].reshape(*lead, q.shape[-2], d),
            d_k[..., :d].reshape(*lead, k.shape[-2], d),
            d_v[..., :dv].reshape(*lead, k.shape[-2], dv),
        )
        shaped = [sum_to(g, tuple(x.shape), xp=xp).to(x.dtype) for g, x in zip(grads, (q, k, v), strict=True)]
        mask_out = None
        if d_mask is not None and mask is not None:
            mask_out = sum_to(d_mask.reshape(*lead, *d_mask.shape[-2:]), tuple(mask.shape), xp=xp).to(mask.dtype)
        alpha_out = None
        if d_alpha is not None:
            full = d_alpha.reshape(*lead, 1, 1) if alpha.ndim else d_alpha.sum()
            alpha_out = sum_to(full, tuple(alpha.shape), xp=xp).to(alpha.dtype)
        sink_out = None
        if sink is not None:  # per program: a packed batch's sequences of one lead index summed
            per_lead = sink.new_zeros(lead) if d_sink is None else d_sink.reshape(-1, *lead).sum(0)
            sink_out = sum_to(per_lead.reshape(*lead, 1, 1), tuple(sink.shape), xp=xp).to(sink.dtype)
        return shaped[0], shaped[1], shaped[2], mask_out, schemes.Parameters(alpha_out, sink_out)

    def decode(
        self, q: Array, k: Array, v: Array, mask: Array | None, params: Any, carry: Any, /, *, options: Any, xp: Any
    ) -> tuple[Array, Any]:
        from .._kernels.logsumexp import LogSumExp
        from .._triton import decode as split

        if not _is_torch(q):  # CuPy arrays, through DLPack
            flat = (q, k, v, mask, *params, *(carry if carry is not None else (None, None)))

            def step(*ts: Any) -> tuple[Any, ...]:
                carried = None if ts[6] is None else LogSumExp(*ts[6:])
                given = schemes.Parameters(ts[4], ts[5])
                out, state = split.decode(ts[0], ts[1], ts[2], ts[3], given, carried, options=options)
                return (out,) if state is None else (out, *state)

            results = through_dlpack(step, flat, xp=xp, many=True)
            return results[0], None if len(results) == 1 else LogSumExp(*results[1:])
        return split.decode(q, k, v, mask, params, carry, options=options)

    def packed_options(self, options: Any, starts_q: tuple[int, ...], starts_k: tuple[int, ...], /) -> Any:
        """The options of a packed batch: the same passes, one program per sequence and lead index."""
        return replace(options, packed=(starts_q, starts_k))


def _heavy(call: Call, mask: Array | None, /) -> bool:
    """Whether the kernels' tiles hold more than one softmax's worth (configs.blocks_for takes smaller ones)."""
    request = call.request
    how = schemes.plan(request.scheme, causal=request.causal, n_iter=request.n_iter)
    extras = request.softcap is not None or request.dropout_p > 0 or (mask is not None and mask.dtype.is_floating_point)
    return how.layered or extras


def _layout(q: Array, k: Array, v: Array, mask: Array | None, alpha: Array, seed: Array | None, options: Any) -> Any:
    from .._triton import layout

    if options.packed is None:
        return layout.dense(q, k, v, mask, alpha, seed, options.lead)
    starts_q, starts_k = options.packed
    return layout.packed(q, k, v, alpha, starts_q, starts_k, seed, options.lead)


def _unflatten(out: Array, q: Array, options: Any) -> Array:
    """The ``(rows, Dv)`` output as ``(*lead, T, Dv)`` (a packed batch: ``(*lead, total, Dv)``)."""
    return out.reshape(*options.lead, q.shape[-2], out.shape[-1])


def _dlpack_refusal(call: Call, /) -> str | None:
    """Why CuPy arrays cannot take the kernels (through DLPack, no copy): torch and triton are needed; no autodiff."""
    for module in ("torch", "triton"):
        if importlib.util.find_spec(module) is None:
            return f"CuPy arrays reach the Triton kernels through torch.from_dlpack, and {module} is not installed"
    if interpreted():
        return "CuPy arrays live on a GPU: unset TRITON_INTERPRET to run the kernels compiled"
    if call.symbolic:
        return "under a tracing compiler it is not traced"
    return None


def through_dlpack(run: Any, arrays: tuple[Array | None, ...], /, *, xp: Any, many: bool = False) -> Any:
    """``run`` on zero-copy torch views (``torch.from_dlpack``) of ``arrays``, its results back in ``xp``.

    On CUDA the launches go to CuPy's current stream (``torch.cuda.ExternalStream``), so that they are ordered
    with the caller's CuPy work; the results come back as ``xp.from_dlpack`` views, no copy either.
    """
    import contextlib

    import torch

    views = tuple(None if x is None else torch.from_dlpack(x) for x in arrays)
    device = next(t.device for t in views if t is not None)
    stream: Any = contextlib.nullcontext()
    if device.type == "cuda":
        import cupy

        external: Any = torch.cuda.ExternalStream  # untyped in torch
        stream = torch.cuda.stream(external(cupy.cuda.get_current_stream().ptr, device=device))
    with stream:
        results = run(*views)
    results = results if many else (results,)
    back = tuple(xp.from_dlpack(r.contiguous()) for r in results)
    return back if many else back[0]


def _is_torch(x: Array, /) -> bool:
    return type(x).__module__.startswith("torch")


def _torch_xp() -> Any:
    import array_api_compat.torch as torch_xp

    return torch_xp
