"""Figures of evaluation results: test-time scaling (quality vs number of input views).

matplotlib is imported inside :func:`plot_scaling`, which draws on a ``Figure`` with the
non-interactive ``Agg`` canvas (no pyplot, no global backend change): importing this module costs
nothing, headless machines work, and a notebook's backend is left alone.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, List, Mapping, Sequence, Union

__all__ = ["SCALING_METRICS", "plot_scaling"]

#: ``(key, axis label, direction)`` of the metrics :func:`plot_scaling` draws, in panel order.
SCALING_METRICS = (
    ("psnr", "PSNR (dB)", "higher is better"),
    ("ssim", "SSIM", "higher is better"),
    ("lpips", "LPIPS", "lower is better"),
)


def _summary_rows(summary: Union[Mapping[str, Any], Sequence[Mapping[str, Any]]]) -> List[Mapping[str, Any]]:
    """The summary rows of an :func:`~fsm_hf.training.evaluate` result, a ``summary.json`` dict, or the rows."""
    if isinstance(summary, Mapping):
        if "summary" not in summary:
            raise ValueError("Expected an evaluate() result or summary.json content with a 'summary' list.")
        summary = summary["summary"]
    rows = list(summary)
    for row in rows:
        missing = {"setting", "num_input_views"} - set(row)
        if missing:
            raise ValueError(f"Summary row {dict(row)} lacks {sorted(missing)}.")
    return rows


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def plot_scaling(
    summary: Union[Mapping[str, Any], Sequence[Mapping[str, Any]]],
    path: Union[str, os.PathLike],
    *,
    title: str = "Test-time scaling: quality vs number of input views",
    dpi: int = 120,
) -> Path:
    """Plot PSNR / SSIM (/ LPIPS when reported) against the number of input views.

    One panel per metric; one line per setting (``"sparse"``, ``"continuous"``, ...); the x axis is
    log2 with a tick at every evaluated view count. Rows without a value (e.g. a setting every scene
    was too short for, or LPIPS not installed) are left out; the LPIPS panel only appears when at
    least one row has an LPIPS value.

    Args:
        summary: an :func:`~fsm_hf.training.evaluate` result, the content of ``summary.json``, or its
            ``"summary"`` rows (dicts with ``setting``, ``num_input_views`` and the metric keys).
        path: the image to write (the format follows the suffix, e.g. ``.png``, ``.pdf``).
        title: the figure title (the number of target views is appended when known).
        dpi: resolution of raster formats.

    Returns:
        The written path.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import FixedLocator, NullLocator
    except ImportError as err:
        raise ImportError("plot_scaling needs matplotlib: pip install 'matplotlib>=3.7'.") from err

    rows = _summary_rows(summary)
    metrics = [m for m in SCALING_METRICS if any(_finite(r.get(m[0])) for r in rows)]
    if not metrics:
        raise ValueError("Nothing to plot: no summary row has a PSNR, SSIM or LPIPS value.")
    settings = list(dict.fromkeys(str(r["setting"]) for r in rows))
    counts = sorted({int(r["num_input_views"]) for r in rows})
    targets = sorted({int(r["num_target_views"]) for r in rows if "num_target_views" in r})

    fig = Figure(figsize=(4.2 * len(metrics), 3.8))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(metrics), squeeze=False)
    markers = "osD^v<>"
    for ax, (key, label, direction) in zip(axes[0], metrics):
        for i, setting in enumerate(settings):
            points = sorted(
                (int(r["num_input_views"]), float(r[key])) for r in rows if r["setting"] == setting and _finite(r.get(key))
            )
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker=markers[i % len(markers)], label=setting)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(counts))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([str(c) for c in counts])
        if len(counts) == 1:
            ax.set_xlim(counts[0] / 1.5, counts[0] * 1.5)
        ax.set_xlabel("input views (log2 scale)")
        ax.set_ylabel(label)
        ax.set_title(f"{label.split(' ')[0]} ({direction})")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(title="setting")
    if len(targets) == 1:
        title = f"{title} ({targets[0]} target views per scene)"
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
