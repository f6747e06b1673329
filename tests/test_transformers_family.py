"""transformers with the normalization family: gpt-oss's sinks and sliding windows, plain generate() under every
scheme, and every argument transformers' attention interface passes, sorted (read, inert or refused).

The oracle is transformers' eager attention (``"dnorm_softmax"`` with the sinks must give its logits) and the
model itself without a cache (cached decoding must give its tokens).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch", reason="the transformers integration needs torch")
transformers = pytest.importorskip("transformers", reason="needs transformers")

import dnorm  # noqa: E402
from dnorm.integrations import _transformers_arguments as arguments  # noqa: E402
from dnorm.integrations.transformers import attention_forward, cache, register  # noqa: E402

SMALL = {
    "vocab_size": 100, "hidden_size": 32, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 8, "max_position_embeddings": 64, "initializer_range": 0.2,
}  # fmt: skip
OPTIONS = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": 0}


@pytest.fixture(scope="module", autouse=True)
def _registered() -> None:
    register()


def _gpt_oss(dtype: Any = torch.float32) -> Any:
    """A random tiny gpt-oss: sliding (window 4) and full layers, sinks drawn in [-1, 1]."""
    config = transformers.GptOssConfig(
        **SMALL, sliding_window=4, num_local_experts=4, num_experts_per_tok=2,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.GptOssForCausalLM(config).eval().to(dtype)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.sinks.uniform_(-1.0, 1.0, generator=torch.Generator().manual_seed(1))
    return model


def _batch(length: int = 12) -> tuple[Any, Any]:
    ids = torch.randint(0, 100, (2, length), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, length, dtype=torch.long)
    mask[1, :3] = 0
    return ids, mask


def _logits(model: Any, name: str, ids: Any, mask: Any) -> Any:
    model.set_attn_implementation(name)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, use_cache=False).logits


def test_gpt_oss_under_dnorm_softmax_is_eager_attention_with_its_sinks() -> None:
    """float32, left padding, sliding and full layers: within 1e-5 of eager; without the sinks far from it."""
    model = _gpt_oss()
    ids, mask = _batch()
    real = mask.bool()
    eager = _logits(model, "eager", ids, mask)
    ours = _logits(model, "dnorm_softmax", ids, mask)
    assert (ours - eager)[real].abs().max() <= 1e-5
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.sinks.fill_(-30.0)  # no sink at all, to float32 rounding
    assert (_logits(model, "dnorm_softmax", ids, mask) - eager)[real].abs().max() > 1e-2


@pytest.mark.theorem("THM-DECODE-EQUALS-FULL")
def test_gpt_oss_under_dnorm_doubly_trains_and_decodes() -> None:
    """One training step with finite gradients; generate() through the sliding window with dnorm's cache gives
    the tokens of recomputing every position; a plain generate() says how to pass that cache."""
    model = _gpt_oss()
    model.set_attn_implementation("dnorm_doubly")
    ids, mask = _batch()
    model.train()
    loss = model(input_ids=ids, attention_mask=mask, labels=ids, use_cache=False).loss
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads
    assert all(torch.isfinite(g).all() for g in grads)
    torch.optim.SGD(model.parameters(), lr=1e-2).step()
    model.eval()
    with torch.no_grad():
        recomputed = model.generate(ids[:, :7], attention_mask=mask[:, :7], use_cache=False, **OPTIONS)
        cached = model.generate(ids[:, :7], attention_mask=mask[:, :7], cache=cache(model.config), **OPTIONS)
        assert torch.equal(cached, recomputed)
        with pytest.raises(NotImplementedError, match=r"cache=dnorm.integrations.transformers.cache\(\) to generate"):
            model.generate(ids[:, :7], attention_mask=mask[:, :7], **OPTIONS)


def test_plain_generate_under_every_scheme() -> None:
    """No cache= argument: the schemes that keep no state decode with transformers' own cache and give the tokens
    of use_cache=False; doubly and hybrid say how to pass dnorm's; Sinkhorn has no causal form."""
    config = transformers.LlamaConfig(**SMALL)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval().double()
    ids, mask = _batch(7)
    refused = {"doubly": "cache=dnorm.integrations", "hybrid": "cache=dnorm.integrations", "sinkhorn": "no strictly"}
    assert set(dnorm.SCHEMES) == {"softmax", "sigmoid", "stick-breaking", *refused}
    for scheme in dnorm.SCHEMES:
        model.set_attn_implementation(f"dnorm_{scheme}")
        with torch.no_grad():
            if scheme in refused:
                with pytest.raises(NotImplementedError, match=refused[scheme]):
                    model.generate(ids, attention_mask=mask, **OPTIONS)
                continue
            plain = model.generate(ids, attention_mask=mask, **OPTIONS)
            assert torch.equal(plain, model.generate(ids, attention_mask=mask, use_cache=False, **OPTIONS)), scheme


def _passed_by_transformers() -> set[str]:
    """Every keyword a model of the installed transformers passes to its attention interface, by its source."""
    root = Path(transformers.__file__).parent / "models"
    names: set[str] = set()
    for path in root.rglob("modeling_*.py"):
        text = path.read_text()
        for found in re.finditer(r"attention_interface\(", text):
            depth, end = 0, found.end() - 1
            for end in range(found.end() - 1, len(text)):  # to the closing parenthesis
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                if depth == 0:
                    break
            names.update(re.findall(r"(?:^|[,(\s])(\w+)\s*=(?!=)", text[found.end() : end]))
    kinds = (
        transformers.utils.generic.TransformersKwargs,
        transformers.modeling_flash_attention_utils.FlashAttentionKwargs,
    )
    return names | {name for kind in kinds for name in kind.__annotations__}


def test_every_argument_transformers_passes_is_read_inert_or_refused() -> None:
    parameters = {"query", "key", "value", "attention_mask", "scaling", "dropout", "softcap"}
    sorted_ = arguments.READ | arguments.INERT | set(arguments.REFUSED) | parameters
    assert _passed_by_transformers() - sorted_ == set()
    q = torch.zeros(1, 2, 3, 4)
    for name in arguments.REFUSED:
        with pytest.raises(NotImplementedError, match=name):
            attention_forward(torch.nn.Module(), q, q, q, None, scheme="softmax", **{name: torch.zeros(1)})
    with pytest.raises(TypeError, match="'something_new'"):
        attention_forward(torch.nn.Module(), q, q, q, None, scheme="softmax", something_new=1)
    with pytest.raises(ValueError, match="sliding_window=2 with no mask"):
        attention_forward(torch.nn.Module(), q, q, q, None, scheme="softmax", sliding_window=2)
    with pytest.raises(ValueError, match="s_aux"):
        attention_forward(torch.nn.Module(), q, q, q, None, scheme="sigmoid", s_aux=torch.zeros(2))
