import matplotlib.pyplot as plt
import numpy as np

import dnorm

rng = np.random.default_rng(1)
heads, tokens, dim = 200, 64, 16
shared = rng.standard_normal(dim)
shared *= 3.0 / np.linalg.norm(shared)
q = rng.standard_normal((heads, tokens, dim)) + shared
k = rng.standard_normal((heads, tokens, dim))
scores = 4.0 * q @ np.swapaxes(k, -1, -2) / np.sqrt(dim)

bins = np.logspace(-7, 1, 65)
fig, ax = plt.subplots(figsize=(8, 3.5), layout="constrained")
for scheme in ["softmax", "hybrid", "doubly", "sinkhorn"]:
    mass = dnorm.received_mass(dnorm.normalize(scores, scheme))
    ax.hist(np.clip(mass.ravel(), bins[0], None), bins=bins, histtype="step", label=scheme)
ax.axvline(1 / tokens, color="k", linestyle="--", label="1/K")
ax.axvline(0.5 / tokens, color="k", linestyle=":", label="alpha/K, alpha = 0.5")
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel("received mass of a key")
ax.set_ylabel("keys")
ax.legend(loc="upper left")
