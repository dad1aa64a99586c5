"""The evaluation report: one self-contained HTML file (inline CSS, pictures as base64 PNG data URIs, no script and
nothing fetched from elsewhere), so it opens offline and can be mailed as it is.

Sections (their ``id``): ``summary`` (each number next to its real-vs-real baseline), ``samples`` (synthetic grids
per class next to real ones; tri-planar views for 3D), ``embedding`` (real vs synthetic PCA per class), ``diversity``,
``privacy`` (flagged near-copies next to their training neighbour), ``recognisability``, ``utility`` (mean ± sd,
values per seed, paired differences with 95% intervals), ``filtering``, ``curves`` (training curves of ``--run``),
``inputs`` and ``methods`` (how each number was computed).
"""

from __future__ import annotations

import base64
import html
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medvol.evaluation.keys import MetricsKeys as Keys
from medvol.io.files import atomic_write_bytes
from medvol.report.figures import (
    REAL_COLOUR,
    SYNTHETIC_COLOUR,
    line_plot,
    png_bytes,
    principal_components,
    sample_montage,
    scatter_plot,
)

__all__ = ["SECTIONS", "ReportInputs", "render_report", "write_report", "read_scalar_curves"]

SECTIONS = ("summary", "samples", "embedding", "diversity", "privacy", "recognisability", "utility", "filtering",
            "curves", "inputs", "methods")
GRID_SAMPLES = 16  # images per class and set in the sample grids
GRID_COLUMNS = 8
GRID_VOLUMES = 6  # volumes per class and set in 3D (one tri-planar row each)
TILE_PIXELS = 64  # displayed size of one image side in the grids
MAX_NEAR_COPIES = 12
MAX_SCATTER_POINTS = 600  # per set: keeps the PNG small and the points readable
CURVE_TAGS_SKIPPED = ("time/", "memory/", "lr/")
MAX_CURVES = 12

CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 24px auto; max-width: 1200px;
       color: #222; line-height: 1.4; padding: 0 16px; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 4px; margin-top: 2em; }
table { border-collapse: collapse; margin: 8px 0 16px 0; font-size: 0.92em; display: block; overflow-x: auto; max-width: 100%; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.figures { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
figure { margin: 0; } figcaption { font-size: 0.85em; color: #555; max-width: 520px; }
img.picture { image-rendering: pixelated; border: 1px solid #ddd; }
.flag { color: #b00020; font-weight: bold; } .ok { color: #1b7a1b; font-weight: bold; }
.warn { color: #8a5a00; font-weight: bold; } .verdict { font-size: 1.1em; border-left: 4px solid; padding: 4px 10px; }
.note { color: #555; font-size: 0.9em; } nav a { margin-right: 12px; }
.real { color: rgb(31, 119, 180); font-weight: bold; } .synthetic { color: rgb(255, 127, 14); font-weight: bold; }
dt { font-weight: bold; margin-top: 6px; } dd { margin-left: 18px; }
"""


@dataclass
class ReportInputs:
    """The images and features the report draws (the metrics come separately, as written to metrics.json).

    Attributes:
        classes: class names (empty when unlabelled).
        train: real training split (a `medvol.evaluation.data.ImageSet`: images, labels, paths).
        heldout: real held-out split.
        synthetic: synthetic samples.
        train_features: ``[N, F]`` features of `train`.
        heldout_features: features of `heldout`.
        synthetic_features: features of `synthetic`.
        run_dir: training run whose TensorBoard curves to draw (None: none).
        keep_mask: synthetic samples the realness filter kept (None: no filtering).
        seed: seed of the subsampling for the pictures.
    """

    classes: Sequence[str]
    train: Any
    heldout: Any
    synthetic: Any
    train_features: np.ndarray
    heldout_features: np.ndarray
    synthetic_features: np.ndarray
    run_dir: Path | None = None
    keep_mask: np.ndarray | None = None
    seed: int = 0


# ---------------------------------------------------------------------------------------------------------- helpers
def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _img(picture: np.ndarray, alt: str, factor: int = 1) -> str:
    if factor > 1:
        picture = np.repeat(np.repeat(picture, factor, axis=0), factor, axis=1)
    data = base64.b64encode(png_bytes(picture)).decode("ascii")
    return f'<img class="picture" alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _figure(picture: np.ndarray, caption: str, factor: int = 1) -> str:
    return f"<figure>{_img(picture, caption, factor)}<figcaption>{_e(caption)}</figcaption></figure>"


def _tile_factor(images: torch.Tensor, target: int = TILE_PIXELS) -> int:
    """Integer enlargement that shows an image side of the given images at about `target` pixels."""
    return max(1, round(target / max(1, max(images.shape[2:]))))


def _number(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(float(value)):
            return str(float(value))
        return f"{float(value):.{digits}g}"
    return _e(value)


def _interval(entry: Any) -> str:
    """A bootstrap dict ``{value, ci95}`` as ``value [lo, hi]``; a plain number as it is."""
    if isinstance(entry, Mapping):
        text = _number(entry.get("value", entry.get("mean")))
        ci = entry.get("ci95")
        if isinstance(ci, Sequence) and len(ci) == 2:
            text += f" [{_number(ci[0])}, {_number(ci[1])}]"
        return text
    return _number(entry)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int = 1, numeric_to: int | None = None) -> str:
    """An HTML table; cells are HTML already (escape text with `_e` before); columns `numeric_from` up to
    `numeric_to` (exclusive, None: the last) are right-aligned numbers."""
    head = "".join(f"<th>{h}</th>" for h in header)

    def cell(i: int, c: str) -> str:
        numeric = i >= numeric_from and (numeric_to is None or i < numeric_to)
        return f'<td class="num">{c}</td>' if numeric else f"<td>{c}</td>"

    body = "".join("<tr>" + "".join(cell(i, c) for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _section(section_id: str, title: str, body: str) -> str:
    return f'<section id="{section_id}"><h2>{_e(title)}</h2>\n{body}\n</section>\n'


def _by_class(image_set: Any, classes: Sequence[str]) -> list[tuple[str, np.ndarray]]:
    """``(name, indices)`` per class, or one ``("all", every index)`` group when unlabelled."""
    labels = np.asarray(image_set.labels)
    if classes and len(labels) and np.all(labels >= 0):
        return [(name, np.flatnonzero(labels == index)) for index, name in enumerate(classes)]
    return [("all samples", np.arange(len(labels)))]


def _first(indices: np.ndarray, count: int) -> np.ndarray:
    return np.asarray(indices)[:count]


# --------------------------------------------------------------------------------------------------------- sections
def _unrealistic(metrics: Mapping) -> bool:
    return (metrics.get(Keys.VERDICT) or {}).get("realistic") is False


def _verdict(metrics: Mapping) -> str:
    """The verdict (``metrics["verdict"]``, `medvol.evaluation.verdict`) as the report's first paragraph."""
    verdict = metrics.get(Keys.VERDICT)
    if not verdict:
        return ""
    style = {"not_realistic": "flag", "concerns": "warn", "close_to_real": "ok"}.get(verdict.get("level"), "")
    return f'<p id="verdict" class="verdict {style}">{_e(verdict.get("headline", ""))}</p>\n'


def _summary(metrics: Mapping) -> str:
    rows = []

    def add(name: str, synthetic: str, baseline: str, better: str) -> None:
        rows.append([_e(name), synthetic, baseline, _e(better)])

    add("FID", _interval(metrics.get(Keys.FID)), _interval(metrics.get(Keys.FID_REAL_BASELINE)),
        "lower; 0 = the same feature statistics; read as a multiple of the baseline (new real images score it)")
    add("KID", _interval(metrics.get(Keys.KID)), _interval(metrics.get(Keys.KID_REAL_BASELINE)),
        "lower; 0 = the same distribution (unbiased: slightly below 0 happens); read against the baseline as FID")
    add("MMD", _number(metrics.get(Keys.MMD)), _number(metrics.get(Keys.MMD_REAL_BASELINE)),
        "lower; 0 = the same distribution")
    for key, note in (("precision", "0 to 1, higher: the share of samples that lie among real images"),
                      ("recall", "0 to 1, higher: the share of the real variety the samples cover"),
                      ("density", "about 1 for samples spread like real ones; near 0: outside the real images"),
                      ("coverage", "0 to 1, higher: the share of real images with a sample close by")):
        add(key, _number(metrics.get(key)), _number(metrics.get(f"{key}_real_baseline")), note)
    add("MS-SSIM among samples", _number(metrics.get(Keys.MS_SSIM_SYNTHETIC)), _number(metrics.get(Keys.MS_SSIM_REAL)),
        "0 to 1 (1 = identical pairs); should be near the real value: much higher, less diverse; much lower, "
        "noise-like")
    collapse = metrics.get(Keys.MODE_COLLAPSE)
    collapse_text = '<span class="flag">yes</span>' if collapse else '<span class="ok">no</span>'
    if not collapse and _unrealistic(metrics):  # noise is diverse: no all-clear for unrealistic samples
        collapse_text = '<span class="note">not judged</span>'
    reasons = _reasons(metrics)
    reading = reasons[0] + (f"; and {len(reasons) - 1} more (see Diversity)" if len(reasons) > 1 else "") if reasons else ""
    add("mode collapse", collapse_text, "–", reading)
    privacy = metrics.get(Keys.PRIVACY) or {}
    expected = privacy.get("expected_fraction", 0.05)
    add("possible copies (flagged fraction)", _number(privacy.get("flagged_fraction")), _number(expected),
        f"the share of samples closer to a training image than 95% of held-out real images are; about {expected:.0%} "
        "by construction (held-out real images pass that often); far more: memorisation")
    recognised = metrics.get(Keys.RECOGNISABILITY) or {}
    classes = len(recognised.get("per_class") or {})
    chance = f"; chance {1 / classes:.2f} for {classes} classes" if classes >= 2 else ""
    add("recognisability (overall)", _number(recognised.get("overall")),
        _number((recognised.get("real_test") or {}).get("overall")),
        f"0 to 1, higher; baseline: the same classifier on real test images{chance}")
    utility = metrics.get(Keys.UTILITY)
    if utility:
        arms = utility.get("arms") or {}
        metric = "accuracy" if "accuracy" in (arms.get("real") or {}) else next(iter(arms.get("real") or {}), None)
        if metric:
            for arm in arms:
                if arm == "real":
                    continue
                entry = arms[arm].get(metric) or {}
                real_entry = arms["real"].get(metric) or {}
                add(f"utility: {metric}, {arm}", _mean_sd(entry), _mean_sd(real_entry), "higher; baseline: the `real` arm")
    header = ["number", "synthetic", "real baseline", "reading"]
    knn_n = (metrics.get(Keys.PRECISION_RECALL_N) or {}).get("n")
    same_n = (f" Precision, recall, density and coverage: the synthetic set and the held-out baseline both with "
              f"n = {_number(knn_n)} samples (coverage and recall grow with n)." if knn_n is not None else "")
    note = ('<p class="note">Each synthetic number sits next to the same number computed for real held-out images '
            "(the scale it should be read on). Brackets of FID and KID: 95% bootstrap intervals of the value at this "
            "sample size (the percentiles over resampled sets, shifted by the bootstrap bias so that they are centred "
            "on the value; FID clipped at 0); they describe the spread between sets of this size, not the distance "
            f"between the distributions (see Methods).{same_n}</p>")
    warning = ""
    if metrics.get(Keys.FID_NOTE):
        warning = f'<p><span class="flag">{_e(metrics[Keys.FID_NOTE])}</span> <a href="#privacy">Privacy</a></p>'
    return _section("summary", "Summary", warning + _table(header, rows, numeric_to=3) + note)


def _reasons(metrics: Mapping) -> list[str]:
    """The rules that raised `mode_collapse`, one per entry (the diversity report joins them with '; ')."""
    text = str((metrics.get(Keys.DIVERSITY) or {}).get("mode_collapse_reason") or "")
    return [part.strip() for part in text.split("; ") if part.strip()]


def _mean_sd(entry: Mapping) -> str:
    if not entry:
        return "–"
    return f"{_number(entry.get('mean'))} ± {_number(entry.get('sd'))}"


def _samples(inputs: ReportInputs) -> str:
    parts = []
    volumes = inputs.synthetic.images.ndim == 5
    count = GRID_VOLUMES if volumes else GRID_SAMPLES
    factor = _tile_factor(inputs.synthetic.images)
    synthetic_groups = dict(_by_class(inputs.synthetic, inputs.classes))
    for name, real_indices in _by_class(inputs.train, inputs.classes):
        synthetic_indices = synthetic_groups.get(name, synthetic_groups.get("all samples", np.zeros(0, dtype=int)))
        figures = []
        for label, image_set, indices, colour in (("synthetic", inputs.synthetic, synthetic_indices, "synthetic"),
                                                  ("real (training split)", inputs.train, real_indices, "real")):
            chosen = _first(indices, count)
            if len(chosen) == 0:
                figures.append(f'<figure><figcaption>no {label} samples of this class</figcaption></figure>')
                continue
            picture = sample_montage(image_set.images[torch.as_tensor(chosen)], columns=min(GRID_COLUMNS, len(chosen)))
            caption = f"{label}: {len(chosen)} of {len(indices)}"
            figures.append(_figure(picture, caption, factor))
        parts.append(f"<h3>{_e(name)}</h3><div class=\"figures\">{''.join(figures)}</div>")
    intro = ('<p class="note">The first samples of each set, intensities [-1, 1] shown black to white'
             + ("; each row is one volume: central axial, coronal and sagittal slices." if volumes else ".") + "</p>")
    return _section("samples", "Samples: synthetic next to real", intro + "".join(parts))


def _subsample(count: int, limit: int, seed: int) -> np.ndarray:
    if count <= limit:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size=limit, replace=False))


def _embedding(inputs: ReportInputs) -> str:
    real_f = np.asarray(inputs.train_features, dtype=np.float64)
    synthetic_f = np.asarray(inputs.synthetic_features, dtype=np.float64)
    projected, explained = principal_components(np.concatenate([real_f, synthetic_f]))
    real_p, synthetic_p = projected[: len(real_f)], projected[len(real_f):]
    limits = tuple((float(lo), float(hi)) for lo, hi in zip(*_padded_limits(projected)))
    figures = []
    real_groups = _by_class(inputs.train, inputs.classes)
    synthetic_groups = dict(_by_class(inputs.synthetic, inputs.classes))
    panels = [("all classes", np.arange(len(real_f)), np.arange(len(synthetic_f)))]
    if len(real_groups) > 1 or real_groups[0][0] != "all samples":
        panels += [(name, idx, synthetic_groups.get(name, np.zeros(0, dtype=int))) for name, idx in real_groups]
    for name, real_idx, synthetic_idx in panels:
        real_idx = real_idx[_subsample(len(real_idx), MAX_SCATTER_POINTS, inputs.seed)]
        synthetic_idx = synthetic_idx[_subsample(len(synthetic_idx), MAX_SCATTER_POINTS, inputs.seed)]
        picture = scatter_plot([(real_p[real_idx], REAL_COLOUR), (synthetic_p[synthetic_idx], SYNTHETIC_COLOUR)],
                               limits=limits, title=str(name))
        figures.append(_figure(picture, f"{name}: {len(real_idx)} real, {len(synthetic_idx)} synthetic"))
    note = (f'<p class="note">Principal component analysis (numpy SVD) of the real training and synthetic features '
            f"together; PC1 and PC2 explain {explained[0]:.1%} and {explained[1]:.1%} of the variance. "
            '<span class="real">Blue: real</span>, <span class="synthetic">orange: synthetic</span>; every panel '
            "shares the same axes. Synthetic points outside the real cloud are unrealistic; real regions without "
            "synthetic points are modes the generator misses. t-SNE is not drawn: medvol has no scikit-learn and "
            "a t-SNE map depends on its perplexity and seed, while this PCA view is linear and deterministic.</p>")
    return _section("embedding", "Real vs synthetic in feature space (PCA)", note + f'<div class="figures">{"".join(figures)}</div>')


def _padded_limits(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    low, high = points.min(axis=0), points.max(axis=0)
    pad = np.where(high > low, 0.05 * (high - low), 1.0)
    return low - pad, high + pad


def _diversity(metrics: Mapping) -> str:
    diversity = metrics.get(Keys.DIVERSITY) or {}
    per_class = diversity.get("per_class") or {}
    rows = []
    for name, entry in per_class.items():
        rows.append([_e(name)] + [_number(entry.get(k)) for k in
                                  ("ms_ssim_synthetic", "ms_ssim_real", "distance_synthetic", "distance_real")])
    table = _table(["class", "MS-SSIM synthetic", "MS-SSIM real", "mean |difference| synthetic", "mean |difference| real"], rows) if rows else ""
    collapse = metrics.get(Keys.MODE_COLLAPSE)
    verdict = '<p><span class="flag">Mode collapse.</span></p>' if collapse else '<p><span class="ok">No mode collapse.</span></p>'
    if not collapse and _unrealistic(metrics):
        verdict = ('<p><span class="note">Mode collapse not judged: the samples are not realistic (see the verdict), '
                   "and unrealistic samples such as noise can be as diverse as real images.</span></p>")
    reasons = _reasons(metrics)
    if reasons:
        verdict += "<ul>" + "".join(f"<li>{_e(r)}</li>" for r in reasons) + "</ul>"
    overall = (f"<p>MS-SSIM among synthetic samples {_number(metrics.get('ms_ssim_synthetic'))}, among real training "
               f"images {_number(metrics.get('ms_ssim_real'))} (1 = identical pairs).</p>")
    return _section("diversity", "Diversity and mode collapse", verdict + overall + table)


def _privacy(metrics: Mapping, inputs: ReportInputs) -> str:
    privacy = metrics.get(Keys.PRIVACY) or {}
    threshold = privacy.get("threshold") or {}
    nearest = [n for n in privacy.get("nearest") or [] if n.get("flagged")]
    nearest.sort(key=lambda n: float(n.get("feature_distance", math.inf)))
    text = (f"<p>{len(privacy.get('flagged') or [])} of {len(inputs.synthetic)} synthetic samples "
            f"({_number(privacy.get('flagged_fraction'))}) are closer to a training image than 95% of held-out real "
            f"images are (feature distance threshold {_number(threshold.get('feature'))}, SSIM threshold "
            f"{_number(threshold.get('ssim'))}).</p>")
    index_of = {path: i for i, path in enumerate(inputs.synthetic.paths)}
    figures = []
    for entry in nearest[:MAX_NEAR_COPIES]:
        s = index_of.get(entry.get("path"))
        t = entry.get("train_index")
        if s is None or t is None:
            continue
        pair = torch.stack([inputs.synthetic.images[s], inputs.train.images[int(t)]])
        picture = sample_montage(pair, columns=2)
        caption = (f"{Path(str(entry['path'])).name} (left or top) and training image {Path(inputs.train.paths[int(t)]).name}: "
                   f"feature distance {_number(entry.get('feature_distance'))}, SSIM {_number(entry.get('ssim'))}")
        figures.append(_figure(picture, caption, _tile_factor(inputs.synthetic.images, 96)))
    if figures:
        shown = f"<p>The {len(figures)} closest flagged samples, each next to its nearest training image:</p>"
        text += shown + f'<div class="figures">{"".join(figures)}</div>'
    elif not nearest:
        text += "<p>No synthetic sample was flagged.</p>"
    return _section("privacy", "Privacy: possible copies of training images", text)


def _recognisability(metrics: Mapping) -> str:
    recognised = metrics.get(Keys.RECOGNISABILITY) or {}
    if recognised.get("skipped"):
        return _section("recognisability", "Recognisability", f"<p>{_e(recognised['skipped'])}</p>")
    real = (recognised.get("real_test") or {}).get("per_class") or {}
    rows = [[_e(name), _number(value), _number(real.get(name))] for name, value in (recognised.get("per_class") or {}).items()]
    rows.append(["<b>overall</b>", _number(recognised.get("overall")), _number((recognised.get("real_test") or {}).get("overall"))])
    classes = len(recognised.get("per_class") or {})
    chance = (f" Chance (a classifier guessing): {1 / classes:.2f} for {classes} classes." if classes >= 2 else "")
    text = ("<p>A classifier trained on the real training split labels every synthetic sample; the table gives the "
            "fraction labelled as the class it was generated for, and the same classifier's recall on real test "
            f"images of the class for scale.{chance}</p>")
    return _section("recognisability", "Recognisability", text + _table(["class", "synthetic recognised", "real test recall"], rows))


def _utility_tables(utility: Mapping, classes: Sequence[str] = ()) -> str:
    arms = utility.get("arms") or {}
    if not arms:
        return "<p>No arms.</p>"
    metric_names = [m for m in next(iter(arms.values())) if isinstance(next(iter(arms.values()))[m], Mapping)]
    rows = [[_e(arm)] + [_mean_sd(arms[arm].get(m) or {}) for m in metric_names] for arm in arms]
    parts = [f"<p>Seeds: {_e(utility.get('seeds'))}. Every arm tested on the same held-out real test split.</p>"]
    counts = utility.get("counts") or {}
    if counts:
        parts.append("<p>Training images per arm: " + "; ".join(
            f"{_e(arm)} {int(c.get('real', 0))} real + {int(c.get('synthetic', 0))} synthetic"
            for arm, c in counts.items()) + ".</p>")
    steps = utility.get("steps") or {}
    if steps:
        parts.append("<p>Optimiser steps per arm: " + "; ".join(
            f"{_e(arm)} {_number(n)}" for arm, n in steps.items()) + (
            f" (the same {_number(next(iter(steps.values())))} optimiser steps in every arm)"
            if len(set(steps.values())) == 1 else "") + ".</p>")
    balanced = utility.get("balanced")
    if balanced:
        parts.append("<p>Balanced arm: synthetic samples added per class up to "
                     f"{_number(balanced.get('target'))}: " + ", ".join(
                         f"{_e(name)} {_number(n)}" for name, n in (balanced.get("per_class") or {}).items()) + ".</p>")
    pretraining = utility.get("pretraining")
    if pretraining:
        parts.append(f"<p>Pre-training arm: {_number(pretraining.get('pretrain_steps'))} steps pre-training on "
                     f"synthetic samples, then {_number(pretraining.get('finetune_steps'))} steps fine-tuning on "
                     "real+augmentation.</p>")
    selection = utility.get("selection")
    if selection:
        available = selection.get("available_per_class") or {}
        parts.append(f"<p>Sample selection: synthetic samples whose own class gets probability &gt;= "
                     f"{_number(selection.get('threshold'))} from a classifier trained on the real training split; "
                     "kept per class: " + ", ".join(
                         f"{_e(name)} {_number(kept)} of {_number(available.get(name))}"
                         for name, kept in (selection.get("kept_per_class") or {}).items()) + ".</p>")
    if utility.get("recipe"):
        parts.append(f"<p>{_e(utility['recipe'])}.</p>")
    notes = utility.get("notes") or []
    if notes:  # e.g. fewer synthetic samples than the ratio asks for, classifiers reused from the cache
        parts.append("<p>Notes:</p><ul>" + "".join(f"<li>{_e(note)}</li>" for note in notes) + "</ul>")
    parts += ["<h3>Mean ± sd over seeds</h3>", _table(["arm", *map(_e, metric_names)], rows)]
    rows = [[_e(arm)] + [", ".join(_number(v) for v in (arms[arm].get(m) or {}).get("values") or []) for m in metric_names]
            for arm in arms]
    parts += ["<h3>Values per seed (in seed order)</h3>", _table(["arm", *map(_e, metric_names)], rows)]
    for reference, key in (("real", "paired_difference"), ("real+augmentation", "paired_difference_augmentation")):
        paired = utility.get(key) or {}
        if paired:
            paired_metrics = [m for m in metric_names if any(m in (paired[a] or {}) for a in paired)]
            rows = [[_e(arm)] + [_interval(paired[arm].get(m)) if paired[arm].get(m) else "–" for m in paired_metrics]
                    for arm in paired]
            parts += [f"<h3>Paired difference against <code>{reference}</code> (mean [95% CI])</h3>",
                      _table(["arm", *map(_e, paired_metrics)], rows)]
    confusion = utility.get("confusion") or {}
    if confusion:
        blocks = []
        for arm, matrix in confusion.items():
            matrix = np.asarray(matrix)
            if matrix.ndim == 3:
                matrix = matrix.sum(axis=0)
            if matrix.ndim != 2:
                continue
            names = [str(c) for c in classes] if len(classes) == matrix.shape[1] else [str(i) for i in range(matrix.shape[1])]
            body = _table(["true \\ predicted", *map(_e, names)],
                          [[_e(names[i])] + [str(int(v)) for v in row] for i, row in enumerate(matrix)])
            blocks.append(f"<figure><figcaption>{_e(arm)} (summed over seeds)</figcaption>{body}</figure>")
        if blocks:
            parts += ["<h3>Confusion matrices</h3>", f'<div class="figures">{"".join(blocks)}</div>']
    return "".join(parts)


def _utility(metrics: Mapping) -> str:
    utility = metrics.get(Keys.UTILITY)
    if not utility:
        return _section("utility", "Utility", "<p>Not requested (run with <code>--utility</code>).</p>")
    classes = (metrics.get(Keys.INPUTS) or {}).get("classes") or ()
    return _section("utility", "Utility: does synthetic data help a classifier?", _utility_tables(utility, classes))


def _filtering(metrics: Mapping) -> str:
    filtering = metrics.get(Keys.FILTERING)
    if not filtering:
        return _section("filtering", "Filtering", "<p>Not requested (run with <code>--filter</code>).</p>")
    dropped = filtering.get("dropped") or []
    text = (f"<p>The realness filter kept {_number(filtering.get('kept'))} synthetic samples and dropped "
            f"{len(dropped)} ({_number(filtering.get('dropped_fraction'))}).</p>")
    if dropped:
        text += "<details><summary>dropped files</summary><ul>" + "".join(f"<li>{_e(p)}</li>" for p in dropped) + "</ul></details>"
    classes = (metrics.get(Keys.INPUTS) or {}).get("classes") or ()
    text += "<h3>Utility after filtering</h3>" + _utility_tables(filtering.get("utility_after") or {}, classes)
    return _section("filtering", "Filtering: utility before and after", text)


def read_scalar_curves(run_dir: str | os.PathLike) -> dict[str, tuple[list[int], list[float]]]:
    """Every scalar curve in ``RUN/tensorboard`` (all its event files, e.g. of resumed runs) as ``tag: (steps,
    values)``, read with TensorBoard's `EventAccumulator`; steps sorted, a repeated step keeps its last value."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = Path(run_dir) / "tensorboard"
    logging.getLogger("tensorboard").setLevel(logging.WARNING)  # it logs every event file it finishes at INFO
    curves: dict[str, dict[int, float]] = {}
    folders = [folder] + sorted(p for p in folder.rglob("*") if p.is_dir()) if folder.is_dir() else []
    for directory in folders:
        if not any(directory.glob("events.out.tfevents.*")):
            continue
        accumulator = EventAccumulator(str(directory), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags().get("scalars", []):
            points = curves.setdefault(tag, {})
            for event in accumulator.Scalars(tag):
                points[int(event.step)] = float(event.value)
    return {tag: (sorted(points), [points[s] for s in sorted(points)]) for tag, points in sorted(curves.items())}


def _curves(inputs: ReportInputs) -> str:
    if inputs.run_dir is None:
        return _section("curves", "Training curves", "<p>No run given (<code>--run RUN</code> draws its TensorBoard curves).</p>")
    curves = read_scalar_curves(inputs.run_dir)
    shown = {tag: curve for tag, curve in curves.items() if not tag.startswith(CURVE_TAGS_SKIPPED)}
    shown = dict(sorted(shown.items(), key=lambda item: (not any(k in item[0].lower() for k in ("fid", "diversity")), item[0])))
    figures = [_figure(line_plot(steps, values, title=tag), f"{tag} over iterations ({len(steps)} points)")
               for tag, (steps, values) in list(shown.items())[:MAX_CURVES]]
    left_out = [tag for tag in curves if tag not in list(shown)[:MAX_CURVES]]
    note = f"<p>From {_e(inputs.run_dir)}/tensorboard.</p>"
    if left_out:
        note += f'<p class="note">Not drawn: {_e(", ".join(left_out))}.</p>'
    if not figures:
        note += "<p>The run's event files hold no training scalars.</p>"
    return _section("curves", "Training curves", note + f'<div class="figures">{"".join(figures)}</div>')


def _inputs(metrics: Mapping) -> str:
    inputs = metrics.get(Keys.INPUTS) or {}
    counts = inputs.get("counts") or {}
    classes = inputs.get("classes") or []
    rows = [[_e(split), _number(entry.get("total"))] + [_number((entry.get("per_class") or {}).get(c)) for c in classes]
            for split, entry in counts.items()]
    table = _table(["set", "samples", *map(_e, classes)], rows)
    facts = [("real datalist", inputs.get("real")), ("synthetic folder", f"{inputs.get('synthetic')} ({inputs.get('synthetic_source')})"),
             ("reference / held-out split", f"{inputs.get('reference_split')} / {inputs.get('heldout_split')}"),
             ("validation split", "not used: " + str(inputs.get("validation_not_used_because", ""))),
             ("mode, image shape", f"{inputs.get('mode')}, {inputs.get('image_shape')}"),
             ("feature extractor", f"{(metrics.get('feature_extractor') or {}).get('kind')}: "
                                   f"{(metrics.get('feature_extractor') or {}).get('description')}"),
             ("run", inputs.get("run")), ("seed", inputs.get("seed")), ("device", inputs.get("device"))]
    facts_table = _table(["", ""], [[_e(k), _e(v)] for k, v in facts], numeric_from=2)
    timing = metrics.get(Keys.TIMING) or {}
    timing_table = _table(["stage", "seconds"], [[_e(k), _number(v)] for k, v in timing.items()])
    skipped = inputs.get("synthetic_skipped_files") or []
    skipped_text = (f"<details><summary>{len(skipped)} files of the synthetic folder not used</summary><ul>"
                    + "".join(f"<li>{_e(s.get('path'))}: {_e(s.get('reason'))}</li>" for s in skipped) + "</ul></details>") if skipped else ""
    return _section("inputs", "Inputs", facts_table + table + skipped_text + "<h3>Time per stage</h3>" + timing_table)


def _methods(metrics: Mapping) -> str:
    methods = metrics.get(Keys.METHODS) or {}
    items = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in methods.items())
    return _section("methods", "How each number was computed", f"<dl>{items}</dl>")


# ------------------------------------------------------------------------------------------------------------- page
def render_report(metrics: Mapping, inputs: ReportInputs, title: str = "medvol evaluation") -> str:
    """The report as one HTML document (see the module docstring for its sections)."""
    nav = "".join(f'<a href="#{s}">{s}</a>' for s in SECTIONS)
    body = "".join([
        _summary(metrics), _samples(inputs), _embedding(inputs), _diversity(metrics), _privacy(metrics, inputs),
        _recognisability(metrics), _utility(metrics), _filtering(metrics), _curves(inputs), _inputs(metrics),
        _methods(metrics),
    ])
    source = (metrics.get(Keys.INPUTS) or {}).get("synthetic", "")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<h1>{_e(title)}</h1>\n{_verdict(metrics)}<p class=\"note\">Synthetic: {_e(source)}</p>\n<nav>{nav}</nav>\n"
        f"{body}</body>\n</html>\n"
    )


def write_report(path: str | os.PathLike, metrics: Mapping, inputs: ReportInputs, title: str = "medvol evaluation") -> Path:
    """Write `render_report` to `path` (atomically) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, render_report(metrics, inputs, title).encode("utf-8"))
    return path
