"""Pictures and the evaluation report: sample grids and tri-planar views, PCA scatter and line plots (`figures`), and
the self-contained HTML report of `medvol evaluate` (`html`)."""

from medvol.report.figures import (
    line_plot,
    png_bytes,
    principal_components,
    sample_montage,
    save_png,
    scatter_plot,
    triplanar_views,
)
from medvol.report.html import SECTIONS, ReportInputs, read_scalar_curves, render_report, write_report

__all__ = [
    "sample_montage",
    "triplanar_views",
    "save_png",
    "png_bytes",
    "principal_components",
    "scatter_plot",
    "line_plot",
    "SECTIONS",
    "ReportInputs",
    "render_report",
    "write_report",
    "read_scalar_curves",
]
