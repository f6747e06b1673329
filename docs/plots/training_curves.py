import matplotlib.pyplot as plt
from train_toy import train_all  # examples/, on the path through docs/conf.py

curves = train_all(("softmax", "doubly"), steps=150, log_every=10)
fig, ax = plt.subplots(figsize=(7, 3.2), layout="constrained")
for curve in curves.values():
    ax.plot(curve.steps, curve.losses, label=f"{curve.scheme} (held-out accuracy {curve.accuracy:.2f})")
ax.set_yscale("log")
ax.set_xlabel("optimizer step")
ax.set_ylabel("training loss")
ax.legend()
