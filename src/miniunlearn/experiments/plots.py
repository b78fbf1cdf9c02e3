"""Plots of experiment results (matplotlib, written atomically as PNG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from miniunlearn.core.storage import atomic_write


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str,
             n_negative: int | None = None) -> Path:
    """Save a log-log ROC plot (one curve per entry, the chance diagonal dotted) as a PNG, atomically."""
    # imported here: matplotlib takes ~0.7 s to load and only plotting needs it
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    low = 0.5 / n_negative if n_negative else 1e-4
    fig = Figure(figsize=(5.2, 4.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, (fpr, tpr) in curves.items():
        ax.loglog(np.clip(fpr, low, 1.0), np.clip(tpr, low, 1.0), label=name, linewidth=1.4)
    ax.loglog([low, 1.0], [low, 1.0], linestyle=":", color="grey", label="chance")
    ax.set_xlim(low, 1.0)
    ax.set_ylim(low, 1.0)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    return path
