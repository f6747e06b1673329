import matplotlib.pyplot as plt
import numpy as np

import dnorm
from dnorm.data import load_example_scores
from dnorm.diagnostics import report

example = load_example_scores()
found = report(example.scores, mask=example.mask, sink=0.0)  # a sink of score 0 on the normalized schemes
assert tuple(found.schemes) == dnorm.SCHEMES
fig, ax = plt.subplots(figsize=(7, 3.2), layout="constrained")
layers = np.arange(1, example.scores.shape[1] + 1)
for scheme, result in found.schemes.items():
    least = np.min(np.asarray(result.least_mass), axis=(0, 2))  # over sentences and heads, per layer
    ax.plot(layers, least, marker="o", label=scheme)
longest = int(example.key_mask.sum(axis=-1).max())
ax.axhline(1 / (longest + 1), color="k", linestyle="--", label=f"1/(K + 1), K = {longest}")
ax.set_yscale("log")
ax.set_xlabel("layer of all-MiniLM-L6-v2")
ax.set_ylabel("least received mass of a real token")
ax.legend(loc="lower right", fontsize="small", ncol=2)
