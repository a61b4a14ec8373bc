"""Draw docs/assets/sparsecbm.svg, the README's picture: ``python docs/assets/diagram.py``.

A text goes through a backbone whose lower blocks are shared and whose top blocks run once per concept under
that concept's own mask; each concept head predicts a value; the label head reads only the concepts.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle  # noqa: E402

OUT = Path(__file__).resolve().parent / "sparsecbm.svg"
CONCEPTS = [("food", "Negative"), ("ambiance", "unknown"), ("service", "Positive"), ("noise", "unknown")]
COLOURS = ["#4c72b0", "#dd8452", "#55a868", "#8172b3"]


def box(ax, x, y, w, h, text, fc="#f4f4f4", ec="#555555", size=9, weight="normal"):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08", fc=fc, ec=ec, lw=1))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size, weight=weight, wrap=True)


def arrow(ax, a, b, colour="#555555"):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=10, lw=1, color=colour))


def mask_grid(ax, x, y, colour, seed):
    """A 4x6 grid of kept (coloured) and pruned (white) units: one concept's subnetwork of a block."""
    kept = [(i * 7 + j * 3 + seed * 5) % 10 < 4 for i in range(4) for j in range(6)]
    for n, on in enumerate(kept):
        i, j = divmod(n, 6)
        ax.add_patch(Rectangle((x + j * 0.09, y + i * 0.09), 0.08, 0.08, fc=colour if on else "white",
                               ec=colour, lw=0.4))


def main(out: Path = OUT) -> Path:
    plt.rcParams["svg.fonttype"] = "none"  # text stays text: a small file
    plt.rcParams["svg.hashsalt"] = "sparsecbm"  # the same file on every run
    fig, ax = plt.subplots(figsize=(10, 3.4))
    ax.set_xlim(0, 10.15)
    ax.set_ylim(0, 3.4)
    ax.axis("off")

    box(ax, 0.05, 1.25, 1.7, 0.9, "\u201cThe pasta was cold\nbut the waiter\nwas lovely.\u201d", fc="white", size=8.5)
    box(ax, 2.05, 1.05, 1.25, 1.3, "shared\nlower blocks\n(run once)", size=8.5)
    arrow(ax, (1.78, 1.7), (2.03, 1.7))
    ax.text(4.15, 3.2, "top blocks, one sparse\nsubnetwork per concept", ha="center", va="top", fontsize=8.5)
    for k, ((name, value), colour) in enumerate(zip(CONCEPTS, COLOURS)):
        y = 2.35 - k * 0.62
        mask_grid(ax, 3.6, y, colour, k)
        arrow(ax, (3.32, 1.7), (3.58, y + 0.18), colour)
        box(ax, 5.3, y - 0.02, 1.75, 0.42, f"{name}: {value}", fc="white", ec=colour, size=8.5)
        arrow(ax, (4.17, y + 0.18), (5.28, y + 0.18), colour)
        arrow(ax, (7.08, y + 0.18), (7.53, 1.7))
    ax.text(6.17, 2.95, "concepts", ha="center", fontsize=8.5, weight="bold")
    box(ax, 7.55, 1.35, 1.3, 0.7, "label head\n(concepts only)", size=8.5)
    arrow(ax, (8.87, 1.7), (9.08, 1.7))
    box(ax, 9.1, 1.35, 0.95, 0.7, "label:\n3 stars", fc="white", size=9, weight="bold")
    ax.text(8.55, 0.45, "intervene: set service=Negative\n\u2192 the label is recomputed", ha="center",
            fontsize=8, style="italic", color="#444444")
    fig.savefig(out, bbox_inches="tight", metadata={"Date": None} if out.suffix == ".svg" else None, dpi=110)
    plt.close(fig)
    return out


if __name__ == "__main__":
    print(main())
