"""Example data: real attention scores from a pretrained Transformer."""

from dataclasses import dataclass
from importlib.resources import files

import numpy as np

__all__ = ["ExampleScores", "load_example_scores"]

_FILE = "minilm_scores.npz"


@dataclass(frozen=True)
class ExampleScores:
    """Pre-softmax self-attention scores of a pretrained sentence encoder.

    Attributes
    ----------
    scores : numpy.ndarray
        float32, shape ``(sentence, layer, head, query, key)``.
        ``scores[s, l, h, i, j] = q_i . k_j / sqrt(d)`` for head ``h`` of layer
        ``l`` on sentence ``s``, before the padding mask is added; 0 where
        query ``i`` or key ``j`` is padding.
    key_mask : numpy.ndarray
        bool, shape ``(sentence, token)``: True on real tokens (``[CLS]`` and
        ``[SEP]`` included), False on padding.
    tokens : numpy.ndarray
        str, shape ``(sentence, token)``: the WordPiece tokens, ``""`` on padding.
    sentences : tuple of str
        The input sentences.
    model_name : str
        The model the scores come from.

    Notes
    -----
    Row softmax of ``scores`` with padding keys masked reproduces the model's
    own attention weights on the real query rows. Padding query rows are not
    part of the data: mask them too (see :attr:`mask`) for schemes that
    normalize over queries, such as doubly-normalized attention.
    """

    scores: np.ndarray
    key_mask: np.ndarray
    tokens: np.ndarray
    sentences: tuple[str, ...]
    model_name: str

    @property
    def mask(self) -> np.ndarray:
        """Bool ``(sentence, 1, 1, query, key)``: True where query and key are real.

        Broadcasts against :attr:`scores`; pass it as ``mask=`` to dnorm.
        """
        real = self.key_mask[:, None, None]
        pair: np.ndarray = np.logical_and(real[..., :, None], real[..., None, :])
        return pair


def load_example_scores() -> ExampleScores:
    """Load the attention scores of all-MiniLM-L6-v2 on eight English sentences.

    Returns
    -------
    ExampleScores
        ``scores`` of shape ``(8, 6, 12, 29, 29)`` laid out as
        ``(sentence, layer, head, query, key)``, with ``key_mask`` and
        ``tokens`` of shape ``(8, 29)``.

    Examples
    --------
    >>> from dnorm.data import load_example_scores
    >>> ex = load_example_scores()
    >>> ex.scores.shape, ex.mask.shape
    ((8, 6, 12, 29, 29), (8, 1, 1, 29, 29))
    >>> ex.tokens[0, : int(ex.key_mask[0].sum())].tolist()
    ['[CLS]', 'the', 'cat', 'sat', 'on', 'the', 'mat', '.', '[SEP]']
    """
    with files(__name__).joinpath(_FILE).open("rb") as fh, np.load(fh) as data:
        return ExampleScores(
            scores=data["scores"],
            key_mask=data["key_mask"],
            tokens=data["tokens"],
            sentences=tuple(data["sentences"].tolist()),
            model_name=str(data["model_name"]),
        )
