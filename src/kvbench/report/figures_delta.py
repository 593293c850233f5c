"""Delta heatmaps with a significance-aware, symmetric colour scale.

Colour strength carries the evidence: a firm significant delta is drawn in full colour, an
indicative one (significant within one run, or downgraded by the A/A check) in half-strength
colour and marked "indicative", a non-significant one in light grey and marked "n.s.". The scale is
symmetric around 0 and set by the significant deltas only (at least +-MIN_LIMIT_PCT), so a
non-significant +-5.8 % can never look saturated.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.cm as cm  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import colors as mcolors  # noqa: E402

from kvbench.analysis.stats import Delta  # noqa: E402

MIN_LIMIT_PCT = 20.0
NS_COLOUR = (0.93, 0.93, 0.93, 1.0)


def evidence_mark(delta: Delta) -> str:
    if not delta.significant:
        return "n.s."
    return "indicative" if delta.indicative else ""


def colour_limit_pct(deltas: list[Delta]) -> float:
    significant = [abs(d.delta_pct) for d in deltas if d.significant]
    return max([MIN_LIMIT_PCT, *significant])


def cell_colour(delta: Delta, cmap, limit_pct: float) -> tuple[float, float, float, float]:
    if not delta.significant:
        return NS_COLOUR
    norm = mcolors.Normalize(vmin=-limit_pct, vmax=limit_pct)
    r, g, b, _ = cmap(norm(delta.delta_pct))
    if delta.indicative:  # half strength: blend with white
        r, g, b = (1 + r) / 2, (1 + g) / 2, (1 + b) / 2
    return (r, g, b, 1.0)


def draw_delta_grid(
    ax, fig, cells: dict[tuple[int, int], Delta], shape: tuple[int, int], cmap_name: str
) -> None:
    """Paint `cells` ((row, col) -> Delta) on `ax`, annotate each, and add the symmetric colour bar."""
    cmap = plt.get_cmap(cmap_name)
    limit = colour_limit_pct(list(cells.values()))
    image = np.ones((*shape, 4))
    for (i, j), delta in cells.items():
        image[i, j] = cell_colour(delta, cmap, limit)
    ax.imshow(image, aspect="auto")
    for (i, j), delta in cells.items():
        mark = evidence_mark(delta)
        r, g, b, _ = image[i, j]
        dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
        ax.text(
            j,
            i,
            f"{delta.delta_pct:+.1f}%" + (f"\n({mark})" if mark else ""),
            ha="center",
            va="center",
            fontsize=8,
            color="white" if dark else "black",
        )
    mappable = cm.ScalarMappable(norm=mcolors.Normalize(vmin=-limit, vmax=limit), cmap=cmap)
    fig.colorbar(mappable, ax=ax, label="delta % (full: firm, pale: indicative, grey: n.s.)")
