"""transformers decoders built from configs: Gemma's softcapping and sliding windows, Mistral, Llama, dropout.

The oracle is transformers' own eager attention: ``"dnorm_softmax"`` must give
its logits, so every softcap, window and cache offset is checked against it.
The other schemes are checked against themselves: cached decoding (dnorm's
cache, with and without the model's config) must give the logits and tokens
of recomputing the whole sequence.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

torch = pytest.importorskip("torch", reason="the transformers integration needs torch")
transformers = pytest.importorskip("transformers", reason="needs transformers")

from dnorm.integrations.transformers import cache, register  # noqa: E402

WINDOW = 4
VOCAB = 100
COMMON = {
    "vocab_size": VOCAB, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "max_position_embeddings": 64,
    "initializer_range": 0.2,  # scores of a few units: the softcap of 2 bends them
}  # fmt: skip
GEMMA = {"sliding_window": WINDOW, "query_pre_attn_scalar": 8, "final_logit_softcapping": 10.0}
KINDS = ("gemma2", "gemma3", "mistral", "llama")


@pytest.fixture(scope="module", autouse=True)
def _registered() -> None:
    register()


def _model(kind: str, dtype: Any = torch.float64, **overrides: Any) -> Any:
    """A random tiny decoder: Gemma 2 alternates sliding and full layers, Gemma 3 says so in ``layer_types``."""
    if kind == "gemma2":  # layers: sliding, full, sliding
        config = transformers.Gemma2Config(**COMMON, **GEMMA, attn_logit_softcapping=2.0, **overrides)
        model_class = transformers.Gemma2ForCausalLM
    elif kind == "gemma3":  # Gemma 3 caps the final logits only
        types = ["sliding_attention", "full_attention", "sliding_attention"]
        config = transformers.Gemma3TextConfig(**COMMON, **GEMMA, layer_types=types, **overrides)
        model_class = transformers.Gemma3ForCausalLM
    elif kind == "mistral":  # every layer slides
        config = transformers.MistralConfig(**COMMON, sliding_window=WINDOW, **overrides)
        model_class = transformers.MistralForCausalLM
    else:
        config = transformers.LlamaConfig(**COMMON, **overrides)
        model_class = transformers.LlamaForCausalLM
    torch.manual_seed(0)
    return model_class(config).eval().to(dtype)


def _batch(length: int = 12) -> tuple[Any, Any]:
    """Two sequences, the second left-padded by three positions."""
    ids = torch.randint(0, VOCAB, (2, length), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, length, dtype=torch.long)
    mask[1, :3] = 0
    return ids, mask


def _logits(model: Any, name: str, ids: Any, mask: Any, **kwargs: Any) -> Any:
    model.set_attn_implementation(name)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, use_cache=False, **kwargs).logits


def _stepwise_logits(model: Any, ids: Any, mask: Any, kv: Any) -> Any:
    """Logits of a prefill of 5 positions, then 1, a chunk of 3 (past the window), then 1 at a time."""
    bounds = [0, 5, 6, 9, 10, 11, ids.shape[1]]
    out = []
    with torch.no_grad():
        for start, end in itertools.pairwise(bounds):
            step = model(input_ids=ids[:, start:end], attention_mask=mask[:, :end], cache=kv, use_cache=True)
            out.append(step.logits)
    return torch.cat(out, dim=1)


# --- dnorm_softmax is transformers' eager attention ------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_softmax_is_eager(kind: str) -> None:
    """Full sequences in float32, left padding, softcap and windows: 4e-6 measured, tolerance 2e-5."""
    model = _model(kind, torch.float32)
    ids, mask = _batch()
    real = mask.bool()
    eager, ours = _logits(model, "eager", ids, mask), _logits(model, "dnorm_softmax", ids, mask)
    torch.testing.assert_close(ours[real], eager[real], rtol=0, atol=2e-5)


def test_the_oracle_sees_the_softcap_and_the_window() -> None:
    """Without the softcap, or with a window as long as the sequence, Gemma 2's logits move far beyond 1e-5."""
    model = _model("gemma2", torch.float32)
    ids, mask = _batch()
    real = mask.bool()
    reference = _logits(model, "dnorm_softmax", ids, mask)
    for layer in model.model.layers:
        layer.self_attn.attn_logit_softcapping = None
    uncapped = _logits(model, "dnorm_softmax", ids, mask)
    assert (uncapped - reference)[real].abs().max() > 1e-2
    for layer in model.model.layers:
        layer.self_attn.attn_logit_softcapping = 2.0
    model.config.sliding_window = ids.shape[1]
    unwindowed = _logits(model, "dnorm_softmax", ids, mask)
    assert (unwindowed - reference)[real].abs().max() > 1e-2


def test_softmax_weights_are_eager_weights_with_the_softcap() -> None:
    model = _model("gemma2", torch.float32)
    ids, mask = _batch()
    outputs = {}
    for name in ("eager", "dnorm_softmax"):
        model.set_attn_implementation(name)
        with torch.no_grad():
            outputs[name] = model(input_ids=ids, attention_mask=mask, use_cache=False, output_attentions=True)
    eager, ours = outputs["eager"].attentions, outputs["dnorm_softmax"].attentions
    assert len(ours) == 3
    rows = mask.bool()[:, None, :, None]
    for theirs, mine in zip(eager, ours, strict=True):
        torch.testing.assert_close(mine * rows, theirs * rows, rtol=0, atol=1e-6)
    assert torch.all(ours[0][..., 5, :2] == 0)  # a sliding layer: query 5 sees keys 2 to 5 only
    assert torch.all(ours[0][0, :, 5, 2:6] > 0)


# --- cached decoding equals recomputing the whole sequence -----------------------------------------


@pytest.mark.theorem("THM-DECODE-EQUALS-FULL")
@pytest.mark.parametrize("with_config", [False, True], ids=["cache()", "cache(config)"])
@pytest.mark.parametrize("scheme", ["softmax", "doubly", "hybrid"])
@pytest.mark.parametrize("kind", ["gemma2", "gemma3", "mistral"])
def test_cached_decoding_equals_full_recomputation(kind: str, scheme: str, with_config: bool) -> None:
    """Float64 logits step by step equal the full sequence's (1e-15 measured); greedy tokens are identical."""
    model = _model(kind)
    ids, mask = _batch()
    full = _logits(model, f"dnorm_{scheme}", ids, mask)
    kv = cache(model.config if with_config else None)
    stepwise = _stepwise_logits(model, ids, mask, kv)
    torch.testing.assert_close(stepwise, full, rtol=0, atol=1e-10)
    sliding = [layer for layer in kv.layers if layer.is_sliding]
    assert len(sliding) == (0 if not with_config else 3 if kind == "mistral" else 2)
    for layer in sliding:  # the window's last keys only, and their state
        assert layer.keys.shape[-2] == WINDOW - 1
        assert layer.state is None if scheme == "softmax" else layer.state.max.shape == (2, 4, WINDOW - 1)
    options = {"attention_mask": mask[:, :7], "max_new_tokens": 6, "do_sample": False, "pad_token_id": 0}
    with torch.no_grad():
        recomputed = model.generate(ids[:, :7], use_cache=False, **options)
        cached = model.generate(ids[:, :7], cache=cache(model.config if with_config else None), **options)
    assert torch.equal(cached, recomputed)


@pytest.mark.parametrize("kind", ["gemma2", "llama"])
def test_softmax_decoding_is_eager_decoding(kind: str) -> None:
    """With transformers' own cache (sliding layers that drop keys) and with dnorm's: eager's logits.

    In float32: eager gives NaN on float64 padding rows, which reach the real ones.
    """
    model = _model(kind, torch.float32)
    ids, mask = _batch()
    model.set_attn_implementation("eager")
    eager = _stepwise_logits(model, ids, mask, transformers.DynamicCache(config=model.config))
    model.set_attn_implementation("dnorm_softmax")
    real = mask.bool()  # a padding row sees no key: eager averages the values, dnorm gives zero
    for kv in (transformers.DynamicCache(config=model.config), cache(), cache(model.config)):
        ours = _stepwise_logits(model, ids, mask, kv)
        torch.testing.assert_close(ours[real], eager[real], rtol=0, atol=2e-5)


def test_llama_decoding_with_a_cache_from_the_config() -> None:
    model = _model("llama")
    ids, mask = _batch()
    full = _logits(model, "dnorm_doubly", ids, mask)
    torch.testing.assert_close(_stepwise_logits(model, ids, mask, cache(model.config)), full, rtol=0, atol=1e-10)


def test_sinkhorn_has_no_causal_decoder_and_the_cache_no_unknown_layers() -> None:
    model = _model("gemma2")
    ids, mask = _batch()
    with pytest.raises(NotImplementedError, match="sinkhorn"):
        _logits(model, "dnorm_sinkhorn", ids, mask)
    config = transformers.Gemma2Config(**COMMON, **GEMMA)
    config.layer_types = ["full_attention", "linear_attention", "full_attention"]
    with pytest.raises(ValueError, match="'linear_attention'"):
        cache(config)
    kv = cache(model.config)
    with pytest.raises(NotImplementedError, match="past beyond the window"):
        kv.layers[0].activate_past_recording()


# --- training: dropout -----------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["softmax", "doubly", "hybrid"])
def test_training_with_attention_dropout(scheme: str) -> None:
    """Gemma 2 in training mode passes its ``attention_dropout``: torch's seed draws the mask, gradients flow."""
    model = _model("gemma2", torch.float32, attention_dropout=0.3).train()
    model.set_attn_implementation(f"dnorm_{scheme}")
    ids, mask = _batch()

    def loss(seed: int) -> Any:
        torch.manual_seed(seed)
        return model(input_ids=ids, attention_mask=mask, labels=ids, use_cache=False).loss

    first, same, other = loss(1), loss(1), loss(2)
    assert torch.equal(first, same)
    assert not torch.equal(first, other)
    first.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.model.layers[0].self_attn.q_proj.weight.grad.abs().max() > 0
    with torch.no_grad():
        evaluated = model.eval()(input_ids=ids, attention_mask=mask, labels=ids, use_cache=False).loss
    assert not torch.equal(evaluated, first)  # eval passes dropout=0
    if scheme != "softmax":
        with pytest.raises(ValueError, match="dropout"), torch.no_grad():
            model.train()(input_ids=ids, attention_mask=mask, cache=cache(), use_cache=True)
