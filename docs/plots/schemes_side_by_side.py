import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

import dnorm

rng = np.random.default_rng(0)
scores = 2.0 * rng.standard_normal((8, 8))
KEY = 5
scores[:, KEY] -= 6.0  # the key the text discusses: it scores low with every query

schemes = ["softmax", "doubly", "hybrid", "sinkhorn"]
fig, axes = plt.subplots(1, 4, figsize=(11, 3.6), sharey=True, layout="constrained")
for ax, scheme in zip(axes, schemes, strict=True):
    weights = dnorm.normalize(scores, scheme)
    mass = dnorm.received_mass(weights)
    image = ax.imshow(weights, vmin=0, vmax=1, cmap="viridis")
    ax.add_patch(Rectangle((KEY - 0.5, -0.5), 1, 8, fill=False, edgecolor="red", linewidth=2))
    ax.set_title(f"{scheme}\nmass of key {KEY}: {mass[KEY]:.3f}")
    ax.set_xticks(range(8))
    ax.get_xticklabels()[KEY].set_color("red")
    ax.set_xlabel("key")
axes[0].set_ylabel("query")
fig.colorbar(image, ax=axes, label="weight A[i, j]", shrink=0.9)
