import matplotlib.pyplot as plt
import numpy as np

import dnorm
from dnorm.data import load_example_scores

example = load_example_scores()
fig, ax = plt.subplots(figsize=(7, 3.2), layout="constrained")
bins = np.logspace(-6, 1, 57)
for scheme in ["softmax", "hybrid", "doubly"]:
    weights = dnorm.normalize(example.scores, scheme, mask=example.mask)
    mass = dnorm.received_mass(weights)
    seen = np.broadcast_to(example.key_mask[:, None, None, :], mass.shape)
    ax.hist(np.clip(mass[seen], bins[0], None), bins=bins, histtype="step", label=scheme)
longest = int(example.key_mask.sum(axis=-1).max())
ax.axvline(1 / longest, color="k", linestyle="--", label=f"1/K, K = {longest} (the longest sentence)")
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel("received mass of a real token (all layers, heads, sentences)")
ax.set_ylabel("keys")
ax.legend(loc="upper left")
