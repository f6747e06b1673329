import matplotlib.pyplot as plt
import numpy as np

import dnorm

rng = np.random.default_rng(2)
base = rng.standard_normal((32, 48))
rounds = np.arange(1, 31)

fig, ax = plt.subplots(figsize=(8, 3.5), layout="constrained")
for sharpness in [1.0, 3.0, 6.0]:
    spread = []
    for n in rounds:
        mass = dnorm.received_mass(dnorm.normalize(sharpness * base, "sinkhorn", n_iter=int(n)))
        spread.append(np.ptp(np.log(mass)))
    ax.semilogy(rounds, spread, marker="o", markersize=3, label=f"scores x {sharpness:g}")
ax.set_xlabel("n_iter")
ax.set_ylabel("spread of log column sums")
ax.legend()
