"""``dnorm.integrations.torch.MultiheadAttention`` as a drop-in for ``torch.nn.MultiheadAttention``."""

from __future__ import annotations

import doctest
import math
from typing import Any

import pytest
from oracles import NORMALIZED

torch = pytest.importorskip("torch", reason="the torch layer needs torch")
import dnorm.integrations.torch as integration  # noqa: E402
from dnorm.integrations.torch import MultiheadAttention  # noqa: E402

E, H, N, L, S = 16, 4, 3, 5, 7
TIGHT = {"rtol": 1e-10, "atol": 1e-12}


def _gen(seed: int) -> Any:
    return torch.Generator().manual_seed(seed)


def _randomized(module: Any, seed: int = 0) -> Any:
    """`module` in float64 with every parameter random (torch starts the biases at zero)."""
    module = module.double()
    generator = _gen(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=torch.float64) * 0.5)
    return module


def _reference(**kwargs: Any) -> Any:
    return _randomized(torch.nn.MultiheadAttention(E, H, **kwargs))


def _inputs(kind: str, batch_first: bool, seed: int = 1) -> tuple[Any, Any, Any]:
    """Query, key and value, batch first or not; self-attention passes the query three times."""
    generator = _gen(seed)

    def rand(length: int, width: int) -> Any:
        x = torch.randn(N, length, width, generator=generator, dtype=torch.float64)
        return x if batch_first else x.transpose(0, 1)

    query = rand(L, E)
    if kind == "self":
        return query, query, query
    kdim, vdim = (6, 10) if kind == "kvdim" else (E, E)
    return query, rand(S, kdim), rand(S, vdim)


def _dims(kind: str) -> dict[str, int]:
    return {"kdim": 6, "vdim": 10} if kind == "kvdim" else {}


def _assert_same(ours: tuple[Any, Any], theirs: tuple[Any, Any]) -> None:
    torch.testing.assert_close(ours[0], theirs[0], **TIGHT)
    if theirs[1] is None:
        assert ours[1] is None
    else:
        torch.testing.assert_close(ours[1], theirs[1], **TIGHT)


# --- (1) torch's results with scheme="softmax" -----------------------------------------------------


@pytest.mark.parametrize("weights", ["none", "averaged", "per-head"])
@pytest.mark.parametrize("kind", ["self", "cross", "kvdim"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch_first", [True, False])
def test_from_torch_reproduces_torch(batch_first: bool, bias: bool, kind: str, weights: str) -> None:
    reference = _reference(bias=bias, batch_first=batch_first, **_dims(kind))
    layer = MultiheadAttention.from_torch(reference, scheme="softmax")
    assert layer.batch_first is batch_first
    assert layer.kdim == reference.kdim
    assert layer.vdim == reference.vdim
    q, k, v = _inputs(kind, batch_first)
    options = {"need_weights": weights != "none", "average_attn_weights": weights == "averaged"}
    ours, theirs = layer(q, k, v, **options), reference(q, k, v, **options)
    _assert_same(ours, theirs)
    assert ours[0].shape == q.shape
    if weights != "none":
        keys = k.shape[1 if batch_first else 0]
        assert ours[1].shape == ((N, L, keys) if weights == "averaged" else (N, H, L, keys))


def _padding(dtype: str) -> tuple[Any, Any]:
    """A (N, S) key padding mask as torch takes it: bool True = padding, or float added (-inf = padding)."""
    padded = torch.zeros(N, S, dtype=torch.bool)
    padded[0, -2:] = padded[2, -1] = True
    if dtype == "bool":
        return padded, padded
    bias = torch.randn(N, S, generator=_gen(5), dtype=torch.float64).masked_fill(padded, -math.inf)
    return bias, bias


def _attn_mask(dtype: str, ndim: int) -> Any:
    """(L, S) or (N * H, L, S): bool True = may not attend, or float added; every query keeps keys 0..4."""
    i = torch.arange(L)[:, None]
    j = torch.arange(S)[None, :]
    if ndim == 2:
        blocked = (i + j) % 3 == 0
    else:
        shift = torch.arange(N * H)[:, None, None]
        blocked = (i + j + shift) % 3 == 0
    if dtype == "bool":
        return blocked
    noise = torch.randn(blocked.shape, generator=_gen(6), dtype=torch.float64)
    return noise.masked_fill(blocked, -math.inf)


MASKS = [
    ("bool", None, None),
    ("float", None, None),
    (None, "bool", 2),
    (None, "float", 2),
    (None, "bool", 3),
    (None, "float", 3),
    ("bool", "bool", 3),
    ("float", "float", 2),
    ("bool", "float", 2),
]


@pytest.mark.parametrize("weights", [False, True])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize(("padding", "attn", "ndim"), MASKS)
def test_torch_masks_reproduce_torch(
    padding: str | None, attn: str | None, ndim: int | None, batch_first: bool, weights: bool
) -> None:
    reference = _reference(batch_first=batch_first)
    layer = MultiheadAttention.from_torch(reference, scheme="softmax")
    q, k, v = _inputs("cross", batch_first)
    key_padding_mask, torch_padding = _padding(padding) if padding else (None, None)
    attn_mask = _attn_mask(attn, ndim) if attn and ndim else None
    if padding == "bool" and attn == "float":  # torch deprecates mixing them: give it the float form
        torch_padding = torch.zeros(N, S, dtype=torch.float64).masked_fill(key_padding_mask, -math.inf)
    ours = layer(q, k, v, key_padding_mask=key_padding_mask, attn_mask=attn_mask, need_weights=weights)
    theirs = reference(q, k, v, key_padding_mask=torch_padding, attn_mask=attn_mask, need_weights=weights)
    _assert_same(ours, theirs)


@pytest.mark.parametrize("padding", ["bool", "float"])
def test_self_attention_padding_rows(padding: str) -> None:
    """Real positions get torch's result; padding positions attend nothing and return ``out_proj.bias``."""
    reference = _reference(batch_first=True)
    layer = MultiheadAttention.from_torch(reference, scheme="softmax")
    x = torch.randn(N, S, E, generator=_gen(2), dtype=torch.float64)
    mask, _ = _padding(padding)
    real = ~torch.isneginf(mask) if padding == "float" else ~mask
    out, weights = layer(x, x, x, key_padding_mask=mask, need_weights=True, average_attn_weights=False)
    want, want_weights = reference(x, x, x, key_padding_mask=mask, need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(out[real], want[real], **TIGHT)
    torch.testing.assert_close(weights.transpose(1, 2)[real], want_weights.transpose(1, 2)[real], **TIGHT)
    torch.testing.assert_close(out[~real], reference.out_proj.bias.expand(int((~real).sum()), E), **TIGHT)
    assert torch.all(weights.transpose(1, 2)[~real] == 0)
    torch.testing.assert_close(layer(x, key_padding_mask=mask)[0], out, **TIGHT)  # key omitted: self-attention


@pytest.mark.parametrize("scheme", NORMALIZED)
def test_float_padding_counts_as_padding(scheme: str) -> None:
    """Padding positions change no real position's output, and the float form (-inf at padding), which torch's
    TransformerEncoder passes on, acts as the boolean form (spec DEF-PADDING-QUERIES)."""
    layer = _randomized(MultiheadAttention(E, H, batch_first=True, scheme=scheme))
    x = torch.randn(N, S, E, generator=_gen(2), dtype=torch.float64)
    padded, _ = _padding("bool")
    additive = torch.zeros(N, S, dtype=torch.float64).masked_fill(padded, -math.inf)
    torch.testing.assert_close(layer(x, key_padding_mask=additive)[0], layer(x, key_padding_mask=padded)[0], **TIGHT)
    changed = x.masked_fill(padded[..., None], 50.0)
    real = ~padded
    torch.testing.assert_close(
        layer(changed, key_padding_mask=padded)[0][real], layer(x, key_padding_mask=padded)[0][real], **TIGHT
    )


@pytest.mark.parametrize("batch_first", [True, False])
def test_unbatched_reproduces_torch(batch_first: bool) -> None:
    reference = _reference(batch_first=batch_first, kdim=6, vdim=10)
    layer = MultiheadAttention.from_torch(reference, scheme="softmax")
    generator = _gen(3)
    q, k, v = (torch.randn(n, d, generator=generator, dtype=torch.float64) for n, d in ((L, E), (S, 6), (S, 10)))
    padding = torch.zeros(S, dtype=torch.bool)
    padding[-1] = True
    attn_mask = _attn_mask("bool", 3)[:H]
    for average in (True, False):
        options = {"key_padding_mask": padding, "attn_mask": attn_mask, "average_attn_weights": average}
        ours = layer(q, k, v, need_weights=True, **options)
        _assert_same(ours, reference(q, k, v, need_weights=True, **options))
        assert ours[1].shape == ((L, S) if average else (H, L, S))
    assert layer(q, k, v)[0].shape == (L, E)


def test_is_causal_reproduces_torch() -> None:
    reference = _reference(batch_first=True)
    layer = MultiheadAttention.from_torch(reference, scheme="softmax")
    x = torch.randn(N, L, E, generator=_gen(4), dtype=torch.float64)
    causal = torch.nn.Transformer.generate_square_subsequent_mask(L, dtype=torch.float64)
    want = reference(x, x, x, attn_mask=causal, is_causal=True, need_weights=False)
    _assert_same(layer(x, x, x, attn_mask=causal, is_causal=True), want)
    _assert_same(layer(x, is_causal=True), want)  # no attn_mask needed
    _assert_same(MultiheadAttention.from_torch(reference, scheme="softmax", causal=True)(x), want)


def test_load_state_dict_reads_torch_layouts() -> None:
    """Both torch layouts load strictly (inside a model: test_inside_torch_transformer_layers); so does dnorm's."""
    layouts: list[dict[str, Any]] = [{}, {"kdim": 6, "vdim": 10}]  # in_proj_weight; q/k/v_proj_weight
    for dims in layouts:
        reference = _reference(batch_first=False, **dims)
        layer = MultiheadAttention(E, H, scheme="softmax", batch_first=False, **dims).double()
        layer.load_state_dict(reference.state_dict())
        q, k, v = _inputs("kvdim" if dims else "cross", batch_first=False)
        _assert_same(layer(q, k, v, need_weights=True), reference(q, k, v, need_weights=True))
        copy = MultiheadAttention(E, H, scheme="softmax", batch_first=False, **dims).double()
        copy.load_state_dict(layer.state_dict())
        _assert_same(copy(q, k, v), layer(q, k, v))
    grouped = MultiheadAttention(E, H, batch_first=True, scheme="softmax", num_kv_heads=2)
    with pytest.raises(RuntimeError, match="in_proj_weight"):
        grouped.load_state_dict(torch.nn.MultiheadAttention(E, H).state_dict())


def test_from_torch_takes_a_hybrid_alpha_and_torch_weights() -> None:
    """Hybrid: torch's layer has no alpha, so its weights load (from_torch, and a strict load of its state dict)
    beside the layer's own alpha; a dnorm state dict without alpha_logit is still reported missing."""
    reference = torch.nn.MultiheadAttention(E, H, batch_first=True).double().eval()
    layer = MultiheadAttention.from_torch(reference, scheme="hybrid", alpha_init=0.3)
    torch.testing.assert_close(layer.alpha, torch.full((H,), 0.3, dtype=torch.float64), **TIGHT)
    torch.testing.assert_close(layer.q_proj.weight, reference.in_proj_weight[:E], **TIGHT)
    torch.testing.assert_close(layer.v_proj.bias, reference.in_proj_bias[2 * E :], **TIGHT)
    fresh = MultiheadAttention(E, H, batch_first=True, scheme="hybrid", alpha_init=0.7).double()
    fresh.load_state_dict(reference.state_dict(), strict=True)
    # its logit was made in float32 before .double(): 0.7 to float32's rounding
    torch.testing.assert_close(fresh.alpha, torch.full((H,), 0.7, dtype=torch.float64), rtol=1e-6, atol=0)
    own = {k: v for k, v in layer.state_dict().items() if k != "alpha_logit"}
    with pytest.raises(RuntimeError, match="alpha_logit"):
        fresh.load_state_dict(own, strict=True)


def test_from_torch_copies_the_configuration() -> None:
    reference = torch.nn.MultiheadAttention(E, H, dropout=0.25, bias=False, batch_first=True).double().eval()
    layer = MultiheadAttention.from_torch(reference, scheme="doubly", causal=True)
    assert (layer.dropout, layer.batch_first, layer.causal, layer.scheme) == (0.25, True, True, "doubly")
    assert not layer.training
    assert layer.q_proj.bias is None
    assert layer.out_proj.weight.dtype == torch.float64
    assert layer.out_proj.weight.data_ptr() != reference.out_proj.weight.data_ptr()
    assert "batch_first=True" in repr(layer)


def test_inside_torch_transformer_layers() -> None:
    """Swapped into torch's encoder and decoder layers, softmax keeps their outputs on the real positions."""
    torch.manual_seed(0)
    encoder = torch.nn.TransformerEncoderLayer(E, H, dim_feedforward=32, dropout=0.0, batch_first=True)
    encoder = encoder.double().eval()
    swapped = torch.nn.TransformerEncoderLayer(E, H, dim_feedforward=32, dropout=0.0, batch_first=True)
    swapped.self_attn = MultiheadAttention(E, H, batch_first=True, scheme="softmax")
    swapped = swapped.double().eval()
    swapped.load_state_dict(encoder.state_dict())  # torch's in_proj_weight, under self_attn.
    x = torch.randn(N, S, E, generator=_gen(7), dtype=torch.float64)
    padded, _ = _padding("bool")
    with torch.no_grad():
        torch.testing.assert_close(swapped(x), encoder(x), **TIGHT)
        real = ~padded
        got, want = swapped(x, src_key_padding_mask=padded), encoder(x, src_key_padding_mask=padded)
        torch.testing.assert_close(got[real], want[real], **TIGHT)

    decoder = torch.nn.TransformerDecoderLayer(E, H, dim_feedforward=32, dropout=0.0).double()
    reference = [decoder.self_attn, decoder.multihead_attn]
    want = decoder(
        x.transpose(0, 1)[:L],
        x.transpose(0, 1),
        tgt_is_causal=True,
        memory_key_padding_mask=padded,
        tgt_mask=torch.nn.Transformer.generate_square_subsequent_mask(L, dtype=torch.float64),
    )
    decoder.self_attn, decoder.multihead_attn = (MultiheadAttention.from_torch(m, scheme="softmax") for m in reference)
    got = decoder(
        x.transpose(0, 1)[:L],
        x.transpose(0, 1),
        tgt_is_causal=True,
        memory_key_padding_mask=padded,
        tgt_mask=torch.nn.Transformer.generate_square_subsequent_mask(L, dtype=torch.float64),
    )
    torch.testing.assert_close(got, want, **TIGHT)


# --- (2) grouped-query attention -------------------------------------------------------------------


def _repeated(grouped: MultiheadAttention) -> MultiheadAttention:
    """The full-head layer whose key/value heads are those of `grouped`, repeated per group."""
    full = MultiheadAttention(
        E, H, batch_first=True, scheme=grouped.scheme, kdim=grouped.kdim, vdim=grouped.vdim
    ).double()
    groups = H // grouped.num_kv_heads
    state = grouped.state_dict()
    for name in ("k_proj.weight", "k_proj.bias", "v_proj.weight", "v_proj.bias"):
        heads = state[name].unflatten(0, (grouped.num_kv_heads, grouped.head_dim))
        state[name] = heads.repeat_interleave(groups, dim=0).flatten(0, 1)
    full.load_state_dict(state)
    return full


@pytest.mark.parametrize(
    ("scheme", "causal"), [(s, c) for s in NORMALIZED for c in (False, True) if not (c and s == "sinkhorn")]
)
@pytest.mark.parametrize("num_kv_heads", [1, 2])
def test_grouped_query_attention_is_repeated_heads(num_kv_heads: int, scheme: str, causal: bool) -> None:
    grouped = _randomized(
        MultiheadAttention(E, H, batch_first=True, scheme=scheme, num_kv_heads=num_kv_heads, kdim=6, vdim=10)
    )
    assert grouped.k_proj.out_features == num_kv_heads * E // H
    full = _repeated(grouped)
    q, k, v = _inputs("kvdim", batch_first=True)
    padding, _ = _padding("bool")
    options = {"key_padding_mask": padding, "attn_mask": _attn_mask("float", 3), "is_causal": causal}
    for weights in (False, True):
        ours = grouped(q, k, v, need_weights=weights, average_attn_weights=False, **options)
        _assert_same(ours, full(q, k, v, need_weights=weights, average_attn_weights=False, **options))
    assert f"num_kv_heads={num_kv_heads}" in repr(grouped)


# --- (3) the other schemes: weights, gradients, causality ----------------------------------------


@pytest.mark.parametrize("scheme", NORMALIZED)
def test_weights_and_output_agree(scheme: str) -> None:
    """The materialized weights (need_weights) give the output of the unmaterialized path and respect the masks."""
    layer = _randomized(MultiheadAttention(E, H, scheme=scheme, batch_first=False))
    q, k, v = _inputs("cross", batch_first=False)
    padding, _ = _padding("float")
    attn_mask = _attn_mask("bool", 2)
    fast, _ = layer(q, k, v, key_padding_mask=padding, attn_mask=attn_mask)
    out, weights = layer(q, k, v, key_padding_mask=padding, attn_mask=attn_mask, need_weights=True)
    torch.testing.assert_close(out, fast, **TIGHT)
    torch.testing.assert_close(weights.sum(-1), torch.ones(N, L, dtype=torch.float64), **TIGHT)
    assert torch.all(weights.masked_select(attn_mask) == 0)
    assert torch.all(weights.masked_select(torch.isneginf(padding)[:, None, :]) == 0)


@pytest.mark.parametrize("need_weights", [False, True])
@pytest.mark.parametrize("scheme", ["doubly", "hybrid"])
def test_gradients_reach_alpha_and_projections(scheme: str, need_weights: bool) -> None:
    layer = _randomized(MultiheadAttention(E, H, batch_first=True, scheme=scheme, num_kv_heads=2, kdim=6, vdim=10))
    q, k, v = _inputs("kvdim", batch_first=True)
    padding, _ = _padding("bool")
    out, _ = layer(q, k, v, key_padding_mask=padding, need_weights=need_weights, is_causal=True)
    out.square().sum().backward()
    for name, parameter in layer.named_parameters():
        assert parameter.grad is not None, name
        assert torch.all(torch.isfinite(parameter.grad)), name
        assert torch.any(parameter.grad != 0), name
    assert (layer.alpha_logit is not None) == (scheme == "hybrid")


@pytest.mark.parametrize("where", ["call", "layer"])
@pytest.mark.parametrize("need_weights", [False, True])
@pytest.mark.parametrize("scheme", ["softmax", "doubly", "hybrid"])
def test_is_causal_is_strictly_causal(scheme: str, need_weights: bool, where: str) -> None:
    """``is_causal=True`` in the call, or ``causal=True`` for the layer: rows up to i bit for bit, whatever follows."""
    layer = _randomized(MultiheadAttention(E, H, batch_first=True, scheme=scheme, causal=where == "layer"))
    flags = {"is_causal": where == "call", "need_weights": need_weights}
    x = torch.randn(N, L, E, generator=_gen(8), dtype=torch.float64)
    out, _ = layer(x, **flags)
    for i in range(L - 1):
        later = x.clone()
        later[:, i + 1 :] = torch.randn(N, L - 1 - i, E, generator=_gen(i), dtype=torch.float64)
        assert torch.equal(layer(later, **flags)[0][:, : i + 1], out[:, : i + 1])


def test_causal_mask_alone_is_not_strictly_causal_for_doubly() -> None:
    """As documented: a causal attn_mask masks, but doubly's column statistic still reads later queries."""
    layer = _randomized(MultiheadAttention(E, H, batch_first=True, scheme="doubly"))
    x = torch.randn(N, L, E, generator=_gen(8), dtype=torch.float64)
    blocked = torch.ones(L, L, dtype=torch.bool).triu(1)
    later = x.clone()
    later[:, -1] = 10.0
    assert not torch.allclose(layer(x, attn_mask=blocked)[0][:, 1], layer(later, attn_mask=blocked)[0][:, 1])
    torch.testing.assert_close(
        layer(x, attn_mask=blocked, is_causal=True)[0][:, 1], layer(later, attn_mask=blocked, is_causal=True)[0][:, 1]
    )


def test_alpha_is_learned_in_zero_one_or_frozen() -> None:
    with pytest.raises(ValueError, match="a learned alpha must start inside"):
        MultiheadAttention(E, H, batch_first=True, alpha_init=0.0)
    torch.manual_seed(0)
    layer = MultiheadAttention(E, H, batch_first=True, alpha_init=0.3).double()
    out, _ = layer(torch.randn(N, L, E, generator=_gen(1), dtype=torch.float64))
    torch.testing.assert_close(layer.alpha, torch.full((H,), 0.3, dtype=torch.float64))
    out.square().sum().backward()
    assert torch.all(layer.alpha_logit.grad != 0)
    with torch.no_grad():
        layer.alpha_logit.fill_(50.0)
    assert torch.all((layer.alpha >= 0) & (layer.alpha <= 1))
    frozen = MultiheadAttention(E, H, batch_first=True, alpha_init=1.0, learn_alpha=False).double()  # logit +inf
    assert not frozen.alpha_logit.requires_grad
    doubly = _randomized(MultiheadAttention(E, H, batch_first=True, scheme="doubly"))
    assert doubly.alpha is None
    x = torch.randn(N, L, E, generator=_gen(2), dtype=torch.float64)
    frozen.load_state_dict({**doubly.state_dict(), "alpha_logit": frozen.alpha_logit})
    torch.testing.assert_close(frozen(x)[0], doubly(x)[0], **TIGHT)  # alpha = 1 is doubly


def test_dropout_in_training_only() -> None:
    layer = _randomized(MultiheadAttention(E, H, batch_first=True, scheme="doubly", dropout=0.5))
    plain = _randomized(MultiheadAttention(E, H, batch_first=True, scheme="doubly"))
    x = torch.randn(N, L, E, generator=_gen(9), dtype=torch.float64)
    layer.eval()
    torch.testing.assert_close(layer(x, need_weights=True), plain(x, need_weights=True), **TIGHT)
    layer.train()
    torch.manual_seed(0)
    out, weights = layer(x, need_weights=True, average_attn_weights=False)
    assert torch.any(weights == 0)
    assert not torch.allclose(out, plain(x)[0])
    torch.manual_seed(0)
    assert not torch.allclose(layer(x)[0], plain(x)[0])


def test_docstring_examples() -> None:
    result = doctest.testmod(integration, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


# --- (4) errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"embed_dim": 10, "num_heads": 4}, ValueError, r"embed_dim \(10\) must be a multiple of num_heads \(4\)"),
        ({"num_kv_heads": 3}, ValueError, r"num_heads \(4\) must be a multiple of num_kv_heads \(3\)"),
        ({"num_kv_heads": 0}, ValueError, "num_kv_heads must be an integer >= 1, got 0"),
        ({"kdim": 2.0}, TypeError, "kdim must be an integer"),
        ({"dropout": 1.0}, ValueError, r"dropout must be a number in \[0, 1\), got 1.0"),
        ({"batch_first": 1}, TypeError, "batch_first must be True or False, got 1"),
        ({"add_bias_kv": True}, NotImplementedError, "add_bias_kv"),
        ({"scheme": "max"}, ValueError, "max"),
    ],
)
def test_bad_constructor_arguments(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    arguments = {"embed_dim": E, "num_heads": H, **kwargs}
    with pytest.raises(error, match=match):
        MultiheadAttention(**arguments)


def test_bad_from_torch_arguments() -> None:
    with pytest.raises(TypeError, match=r"module must be a torch\.nn\.MultiheadAttention, got Linear"):
        MultiheadAttention.from_torch(torch.nn.Linear(2, 2), scheme="doubly")
    with pytest.raises(NotImplementedError, match="add_bias_kv"):
        MultiheadAttention.from_torch(torch.nn.MultiheadAttention(E, H, add_bias_kv=True), scheme="doubly")
    with pytest.raises(TypeError, match="scheme"):
        MultiheadAttention.from_torch(torch.nn.MultiheadAttention(E, H))  # type: ignore[call-arg]


def test_bad_forward_arguments() -> None:
    layer = MultiheadAttention(E, H, batch_first=True, kdim=6).double()
    q, k, v = _inputs("cross", batch_first=True)
    k6 = k[..., :6]
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        (
            {"attn_mask": torch.zeros(L, L, dtype=torch.bool)},
            ValueError,
            r"attn_mask must have shape \(L, S\) = \(5, 7\) or \(N \* num_heads, L, S\) = \(12, 5, 7\), got \(5, 5\)",
        ),
        ({"attn_mask": torch.zeros(H, L, S, dtype=torch.bool)}, ValueError, r"got \(4, 5, 7\)"),
        (
            {"key_padding_mask": torch.zeros(N, L, dtype=torch.bool)},
            ValueError,
            r"key_padding_mask must have shape \(N, S\) = \(3, 7\), got \(3, 5\)",
        ),
        (
            {"key_padding_mask": torch.zeros(N, S, dtype=torch.int64)},
            TypeError,
            "key_padding_mask must be a boolean .* got torch.int64",
        ),
        ({"attn_mask": [[True]]}, TypeError, "attn_mask must be .* got list"),
        ({"need_weights": 1}, TypeError, "need_weights must be True or False, got 1"),
        ({"is_causal": None}, TypeError, "is_causal must be True or False"),
    ]
    for kwargs, error, match in cases:
        with pytest.raises(error, match=match):
            layer(q, k6, v, **kwargs)
    with pytest.raises(ValueError, match=r"key must have 6 features in its last dimension, got shape \(3, 7, 16\)"):
        layer(q, k, v)
    with pytest.raises(
        TypeError, match=r"key must be a floating torch\.Tensor .*key and value, as in torch.*torch\.bool"
    ):
        layer(q, torch.zeros(N, L, dtype=torch.bool))  # the old layer(x, key_padding_mask) form
    with pytest.raises(ValueError, match="key and value must have the same length"):
        layer(q, k6, v[:, :3])
    with pytest.raises(ValueError, match="same batch size"):
        layer(q, k6[:2], v[:2])
    with pytest.raises(ValueError, match=r"value must be 3-D .* got 2-D"):
        layer(q, k6, v[0])
    with pytest.raises(NotImplementedError):
        MultiheadAttention(E, H, batch_first=True, scheme="sinkhorn")(q.float(), is_causal=True)
