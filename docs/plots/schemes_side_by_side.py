import matplotlib.pyplot as plt
import numpy as np

import dnorm

rng = np.random.default_rng(0)
scores = 2.0 * rng.standard_normal((8, 8))
scores[:, 5] -= 6.0

schemes = ["softmax", "doubly", "hybrid", "sinkhorn"]
fig, axes = plt.subplots(1, 4, figsize=(11, 3.4), sharey=True, layout="constrained")
for ax, scheme in zip(axes, schemes, strict=True):
    weights = dnorm.normalize(scores, scheme)
    mass = dnorm.received_mass(weights)
    ax.imshow(weights, vmin=0, vmax=1, cmap="viridis")
    ax.set_title(f"{scheme}\nmass of key 5: {mass[5]:.3f}")
    ax.set_xlabel("key")
axes[0].set_ylabel("query")
