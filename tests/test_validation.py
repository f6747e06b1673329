"""Bad input gets a TypeError or ValueError whose message names the argument."""

from __future__ import annotations

import math

import numpy as np
import pytest

import dnorm

RNG = np.random.default_rng(0)
S = RNG.normal(size=(2, 4, 5))
Q, K, V = RNG.normal(size=(2, 4, 3)), RNG.normal(size=(2, 5, 3)), RNG.normal(size=(2, 5, 2))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"scheme": "doubley"}, ValueError, "scheme must be one of"),
        ({"scheme": 3}, TypeError, "scheme must be a string"),
        ({"alpha": 1.5}, ValueError, r"alpha must be in \[0, 1\], got 1.5"),
        ({"alpha": -0.1}, ValueError, r"alpha must be in \[0, 1\]"),
        ({"alpha": math.nan}, ValueError, r"alpha must be in \[0, 1\], got nan"),
        ({"alpha": True}, TypeError, "alpha must be a number"),
        ({"alpha": "half"}, TypeError, "alpha must be an array"),
        ({"alpha": np.array([0.2, 1.2])}, ValueError, "alpha must be in"),
        ({"alpha": np.array([0.2, np.nan])}, ValueError, "alpha must be in"),
        ({"alpha": np.array([1, 0])}, TypeError, "alpha must be a number or a real floating array"),
        ({"alpha": np.full(3, 0.5)}, ValueError, "alpha of shape"),
        ({"n_iter": 0}, ValueError, "n_iter must be an integer >= 1, got 0"),
        ({"n_iter": 2.0}, TypeError, "n_iter must be an integer"),
        ({"n_iter": True}, TypeError, "n_iter must be an integer"),
        ({"causal": 1}, TypeError, "causal must be True, False"),
        ({"log": "yes"}, TypeError, "log must be True or False"),
        ({"mask": np.ones((3, 5), dtype=bool)}, ValueError, "mask of shape"),
        ({"mask": np.ones((4, 5), dtype=np.int64)}, TypeError, "mask must be boolean"),
        ({"mask": [[True]]}, TypeError, "mask must be an array"),
    ],
)
def test_normalize_rejects(kwargs, error, match):
    with pytest.raises(error, match=match):
        dnorm.normalize(S, **kwargs)


def test_sinkhorn_causal_is_not_implemented():
    with pytest.raises(NotImplementedError, match="sinkhorn"):
        dnorm.normalize(S, "sinkhorn", causal=True)


def test_scores_need_two_dimensions():
    with pytest.raises(ValueError, match="scores must have at least 2 dimensions"):
        dnorm.normalize(np.ones(3))


def test_scores_must_be_an_array():
    with pytest.raises(TypeError, match="scores must be an array, got list"):
        dnorm.normalize([[1.0]])


def test_arrays_of_two_libraries_are_named():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"key is a torch.Tensor but query is a numpy.ndarray"):
        dnorm.attention(Q, torch.asarray(K), V)
    with pytest.raises(TypeError, match=r"mask is a torch.Tensor but scores is a numpy.ndarray"):
        dnorm.normalize(S, mask=torch.ones(5, dtype=torch.bool))


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((Q, K[..., :2], V), {}, ValueError, "query and key must have the same feature size D, got 3 and 2"),
        ((Q, K, V[:, :4]), {}, ValueError, "key and value must have the same length K, got 5 and 4"),
        ((Q, RNG.normal(size=(3, 5, 3)), V), {}, ValueError, "leading dimensions of query"),
        ((Q, K.astype(np.float32), V), {}, TypeError, "share one dtype"),
        ((Q, K, V), {"scale": "big"}, TypeError, "scale must be a real number"),
        ((Q, K, V), {"scale": math.inf}, ValueError, "scale must be finite"),
        ((Q, K, V), {"block_size": 0}, ValueError, "block_size must be an integer >= 1, got 0"),
        ((Q, K, V), {"block_size": 2.5}, TypeError, "block_size must be an integer"),
        ((Q, K, V), {"mask": np.ones((4, 4), dtype=bool)}, ValueError, "mask of shape"),
        ((Q[0, 0], K, V), {}, ValueError, "query must have at least 2 dimensions"),
    ],
)
def test_attention_rejects(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        dnorm.attention(*args, **kwargs)


def test_options_are_keyword_only_and_arrays_positional_only():
    with pytest.raises(TypeError):
        dnorm.normalize(S, "doubly", None)  # type: ignore[misc]
    with pytest.raises(TypeError):
        dnorm.normalize(scores=S)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        dnorm.attention(Q, K, V, "doubly", None)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"dropout_p": 1.0}, ValueError, r"dropout_p must be a number in \[0, 1\)"),
        ({"dropout_p": 0.1}, TypeError, "dropout_key=numpy.random.default_rng"),
        ({"enable_gqa": 1}, TypeError, "enable_gqa must be True or False"),
        ({"is_causal": "no"}, TypeError, "causal must be True or False"),
    ],
)
def test_sdpa_rejects(kwargs, error, match):
    with pytest.raises(error, match=match):
        dnorm.scaled_dot_product_attention(Q, K, V, **kwargs)


def test_sdpa_with_dropout_checks_its_arrays_like_attention():
    torch = pytest.importorskip("torch")
    q, k = torch.ones(2, 4, 3), torch.ones(2, 5, 2)
    with pytest.raises(ValueError, match="query and key must have the same feature size D, got 3 and 2"):
        dnorm.scaled_dot_product_attention(q, k, k, dropout_p=0.1)


def test_sdpa_gqa_needs_divisible_heads():
    q = RNG.normal(size=(1, 3, 4, 2))
    k = RNG.normal(size=(1, 2, 4, 2))
    with pytest.raises(ValueError, match="enable_gqa needs query heads"):
        dnorm.scaled_dot_product_attention(q, k, k, enable_gqa=True)


def test_received_mass_rejects_bad_mask():
    with pytest.raises(ValueError, match="mask of shape"):
        dnorm.received_mass(S, mask=np.ones((3, 3), dtype=bool))
