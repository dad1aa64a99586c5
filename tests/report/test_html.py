"""The evaluation report: valid HTML (strict tag balance), every section present, nothing loaded from outside,
pictures that decode; and the figure helpers it draws with (PCA, scatter and line plots, TensorBoard curves)."""

from __future__ import annotations

import base64
import io
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from PIL import Image

from medvol.evaluation.data import ImageSet
from medvol.report.figures import line_plot, principal_components, scatter_plot
from medvol.report.html import SECTIONS, ReportInputs, read_scalar_curves, render_report, write_report

UTILITY_ARMS = ("real", "real+augmentation", "synthetic", "real+synthetic", "real+augmentation+synthetic")
VOID_ELEMENTS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class StrictReportParser(HTMLParser):
    """Checks tag balance (every non-void element closed in order) and collects ids, URLs and picture data."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.ids: set[str] = set()
        self.urls: list[tuple[str, str, str]] = []
        self.tags: set[str] = set()
        self.doctype = False

    def handle_decl(self, decl: str) -> None:
        self.doctype = self.doctype or decl.lower() == "doctype html"

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        for name, value in attrs:
            if name == "id":
                self.ids.add(value)
            if name in ("src", "href", "srcset", "action", "data", "poster"):
                self.urls.append((tag, name, value or ""))
            if name == "style" and value and "url(" in value:
                self.errors.append(f"inline style loads a resource: {value[:60]}")
        if tag not in VOID_ELEMENTS:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        if tag not in VOID_ELEMENTS:
            self.errors.append(f"self-closed non-void element <{tag}/>")
        self.handle_starttag(tag, attrs)
        if tag not in VOID_ELEMENTS:
            self.stack.pop()

    def handle_endtag(self, tag):
        if tag in VOID_ELEMENTS:
            self.errors.append(f"end tag of void element </{tag}>")
        elif not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else 'nothing'}>")
        else:
            self.stack.pop()


def parse_report(text: str) -> StrictReportParser:
    parser = StrictReportParser()
    parser.feed(text)
    parser.close()
    return parser


def check_self_contained_valid_html(text: str) -> StrictReportParser:
    """The checks every report must pass; returns the parser for further checks."""
    parser = parse_report(text)
    assert parser.doctype, "no <!DOCTYPE html>"
    assert not parser.errors, parser.errors[:5]
    assert not parser.stack, f"unclosed elements: {parser.stack}"
    missing = [s for s in SECTIONS if s not in parser.ids]
    assert not missing, f"sections missing: {missing}"
    assert not parser.tags & {"script", "link", "iframe", "object", "embed"}, parser.tags
    for tag, attribute, url in parser.urls:
        if attribute == "href":
            assert url.startswith("#") and url[1:] in parser.ids, f"<{tag} href={url!r}> leaves the page"
        else:
            assert url.startswith("data:image/png;base64,"), f"<{tag} {attribute}={url[:40]!r}> is not embedded"
            picture = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
            picture.load()
            assert picture.format == "PNG" and min(picture.size) > 0
    return parser


def fake_metrics(classes, n_synthetic, flagged_paths, with_utility: bool) -> dict:
    """A metrics dict of the shape `medvol.evaluation.pipeline.evaluate` writes (values made up; the report only
    shows them)."""
    boot = {"value": 12.5, "ci95": [10.0, 15.0], "n_real": 20, "n_synthetic": 20}
    metrics = {
        "fid": boot, "kid": boot, "fid_real_baseline": boot, "kid_real_baseline": boot, "mmd": 0.1,
        "mmd_real_baseline": 0.05, "precision": 0.8, "recall": 0.6, "density": 0.9, "coverage": 0.7,
        "precision_real_baseline": 0.85, "recall_real_baseline": 0.8, "density_real_baseline": 1.0,
        "coverage_real_baseline": 0.9, "ms_ssim_synthetic": 0.4, "ms_ssim_real": 0.3, "mode_collapse": True,
        "diversity": {"mode_collapse_reason": "class 'b': synthetic MS-SSIM 0.99 vs real 0.3 <&>",
                      "per_class": {c: {"ms_ssim_synthetic": 0.4, "ms_ssim_real": 0.3, "distance_synthetic": 0.2,
                                        "distance_real": 0.3} for c in classes}},
        "privacy": {"flagged_fraction": len(flagged_paths) / n_synthetic, "flagged": flagged_paths,
                    "threshold": {"feature": 1.0, "ssim": 0.9},
                    "nearest": [{"path": p, "train_index": i, "feature_distance": 0.1 * i, "ssim": 0.95, "flagged": True}
                                for i, p in enumerate(flagged_paths)]},
        "recognisability": {"per_class": {c: 0.5 for c in classes}, "overall": 0.5,
                            "real_test": {"per_class": {c: 0.9 for c in classes}, "overall": 0.9}},
        "inputs": {"real": "/data/datalist.json", "synthetic": "/synthetic <dir>", "classes": classes,
                   "counts": {"training": {"total": 20, "per_class": {c: 10 for c in classes}}}},
        "feature_extractor": {"kind": "classifier", "description": "a test <extractor>"},
        "methods": {"fid": "Frechet distance <between> Gaussians & more."},
        "timing": {"load": 1.0, "features": 2.0},
    }
    if with_utility:
        # every arm its own numbers, so that a number shown in another arm's row or column is caught
        arms = {arm: {"accuracy": {"mean": 0.7 + i / 100, "sd": 0.05 + i / 1000,
                                   "values": [0.65 + i / 100, 0.7 + i / 100, 0.75 + i / 100]},
                      "auc": {"mean": 0.8 + i / 100, "sd": 0.01 + i / 1000, "values": [0.79, 0.8, 0.81]}}
                for i, arm in enumerate(UTILITY_ARMS)}
        metrics["utility"] = {"seeds": [0, 1, 2], "arms": arms,
                              "paired_difference": {a: {"accuracy": {"mean": i / 100, "ci95": [i / 100 - 0.03, i / 100 + 0.03]}}
                                                    for i, a in enumerate(arms) if a != "real"},
                              "confusion": {a: [[[3, 1], [1, 3]]] * 3 for a in arms},
                              "counts": {a: {"real": 0 if a == "synthetic" else 24, "synthetic": 8 if "synthetic" in a else 0}
                                         for a in arms},
                              "recipe": "ResNetClassifier <recipe>",
                              "notes": ["synthetic_ratio 1.0 asks for 24 synthetic samples but only 8 are available"]}
        metrics["filtering"] = {"kept": 9, "dropped_fraction": 0.1, "dropped": ["/synthetic/x.nii.gz"],
                                "utility_before": metrics["utility"], "utility_after": metrics["utility"]}
    return metrics


def image_set(count: int, size, labels, seed: int, prefix: str) -> ImageSet:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand((count, 1, *size), generator=generator) * 2 - 1
    return ImageSet(images, np.asarray(labels, dtype=np.int64), [f"/{prefix}/image_{i:03d}.nii.gz" for i in range(count)])


def write_curves(run_dir) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run_dir / "tensorboard"))
    for step in range(1, 11):
        writer.add_scalar("generator/loss", 1.0 / step, step)
        writer.add_scalar("evaluation/fid", 100.0 - step, step)
        writer.add_scalar("time/seconds_per_step", 0.5, step)
    writer.close()


@pytest.mark.parametrize("size, labelled, with_utility", [((16, 16), True, True), ((12, 12, 12), False, False)])
def test_report_is_valid_self_contained_html_with_every_section(tmp_path, size, labelled, with_utility):
    classes = ["a", "b"] if labelled else []
    labels = (lambda n: [i % 2 for i in range(n)]) if labelled else (lambda n: [-1] * n)
    train, heldout, synthetic = (image_set(n, size, labels(n), seed, name) for n, seed, name in
                                 ((20, 0, "train"), (10, 1, "test"), (10, 2, "synthetic")))
    features = [np.random.default_rng(s).normal(size=(len(x), 8)) for s, x in enumerate((train, heldout, synthetic))]
    run_dir = None
    if with_utility:
        run_dir = tmp_path / "run"
        write_curves(run_dir)
    metrics = fake_metrics(classes, len(synthetic), synthetic.paths[:3], with_utility)
    inputs = ReportInputs(classes, train, heldout, synthetic, *features, run_dir=run_dir)
    path = write_report(tmp_path / "report.html", metrics, inputs)

    text = path.read_text(encoding="utf-8")
    parser = check_self_contained_valid_html(text)
    pictures = [u for _, a, u in parser.urls if a == "src"]
    # sample grids (synthetic + real per class), PCA panels (all + per class), 3 near-copy pairs, curves
    expected = (2 * 2 + 3 + 3 + 2) if labelled else (2 + 1 + 3)
    assert len(pictures) == expected
    assert "<between>" not in text and "&lt;between&gt;" in text, "text is not escaped"
    if with_utility:
        for i, arm in enumerate(UTILITY_ARMS):  # each arm's numbers in its own row, accuracy before auc
            accuracy, auc = f"{0.7 + i / 100:.4g} ± {0.05 + i / 1000:.4g}", f"{0.8 + i / 100:.4g} ± {0.01 + i / 1000:.4g}"
            assert f'<tr><td>{arm}</td><td class="num">{accuracy}</td><td class="num">{auc}</td></tr>' in text, arm
            seeds = ", ".join(f"{v + i / 100:.4g}" for v in (0.65, 0.7, 0.75))
            assert f'<tr><td>{arm}</td><td class="num">{seeds}</td>' in text, arm
            if arm != "real":  # summary: the arm's number, then the real arm's as its baseline
                assert (f'<tr><td>utility: accuracy, {arm}</td><td class="num">{accuracy}</td>'
                        f'<td class="num">0.7 ± 0.05</td>') in text, arm
                paired = f"{i / 100:.4g} [{i / 100 - 0.03:.4g}, {i / 100 + 0.03:.4g}]"
                assert f'<tr><td>{arm}</td><td class="num">{paired}</td></tr>' in text, arm
        assert "real+synthetic 24 real + 8 synthetic" in text and "&lt;recipe&gt;" in text
        assert "only 8 are available" in text
        assert "evaluation/fid" in text and "time/seconds_per_step" in text  # drawn / listed as not drawn
    else:
        assert "Not requested" in text and "No run given" in text


def test_near_copy_pictures_pair_the_synthetic_image_with_its_training_neighbour(tmp_path):
    train = image_set(8, (16, 16), [0] * 8, 0, "train")
    synthetic = ImageSet(train.images[[5]].clone(), np.zeros(1, dtype=np.int64), ["/synthetic/copy.nii.gz"])
    metrics = fake_metrics(["a"], 1, [], False)
    metrics["privacy"]["nearest"] = [{"path": "/synthetic/copy.nii.gz", "train_index": 5, "feature_distance": 0.0,
                                      "ssim": 1.0, "flagged": True}]
    metrics["privacy"]["flagged"] = ["/synthetic/copy.nii.gz"]
    features = np.zeros((8, 4)), np.zeros((8, 4)), np.zeros((1, 4))
    text = render_report(metrics, ReportInputs(["a"], train, train, synthetic, *features))
    parser = check_self_contained_valid_html(text)
    assert "image_005.nii.gz" in text and "copy.nii.gz" in text
    pair = [u for _, a, u in parser.urls if a == "src"][-1]  # privacy comes after the samples and the PCA
    picture = np.asarray(Image.open(io.BytesIO(base64.b64decode(pair.split(",", 1)[1]))))
    side = picture.shape[0]  # two square tiles side by side with a gap between them
    left, right = picture[:, :side], picture[:, -side:]
    np.testing.assert_array_equal(left, right)  # the copy is shown next to the image it copies
    assert left.std() > 0


def test_principal_components_known_answers():
    rng = np.random.default_rng(0)
    t = rng.normal(size=200)
    on_a_line = np.stack([t, 2 * t, -t], axis=1) + 5.0
    projected, explained = principal_components(on_a_line)
    np.testing.assert_allclose(explained, [1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(np.abs(projected[:, 0]), np.abs(t - t.mean()) * np.sqrt(6), rtol=1e-9)
    _, explained = principal_components(np.stack([3 * rng.normal(size=5000), rng.normal(size=5000)], axis=1))
    assert explained[0] == pytest.approx(0.9, abs=0.01)


def test_plots_draw_their_points_in_their_colours():
    picture = scatter_plot([(np.array([[0.0, 0.0]]), (255, 0, 0)), (np.array([[1.0, 1.0]]), (0, 0, 255))],
                           limits=((0.0, 1.0), (0.0, 1.0)), size=100)
    red = np.argwhere(np.all(picture == (255, 0, 0), axis=-1))
    blue = np.argwhere(np.all(picture == (0, 0, 255), axis=-1))
    assert len(red) and len(blue)
    # (0, 0) is drawn bottom left, (1, 1) top right
    assert red[:, 0].mean() > blue[:, 0].mean() and red[:, 1].mean() < blue[:, 1].mean()
    curve = line_plot([0, 1, 2], [3.0, 1.0, 2.0], title="loss", colour=(0, 128, 0))
    assert curve.ndim == 3 and np.any(np.all(curve == (0, 128, 0), axis=-1))


def test_scalar_curves_are_read_back_from_the_run(tmp_path):
    write_curves(tmp_path)
    curves = read_scalar_curves(tmp_path)
    assert set(curves) == {"generator/loss", "evaluation/fid", "time/seconds_per_step"}
    steps, values = curves["evaluation/fid"]
    assert steps == list(range(1, 11))
    np.testing.assert_allclose(values, [100.0 - s for s in steps])
    assert read_scalar_curves(tmp_path / "elsewhere") == {}


def test_utility_section_shows_steps_selection_balancing_pretraining_and_the_augmentation_comparison():
    from medvol.report.html import _utility_tables

    arms = {arm: {"accuracy": {"mean": 0.7, "sd": 0.05, "values": [0.65, 0.7, 0.75]}}
            for arm in ("real", "real+augmentation", "real+augmentation+balanced", "synthetic->real+augmentation")}
    utility = {"seeds": [0, 1, 2], "arms": arms, "steps": {arm: 504 for arm in arms},
               "balanced": {"per_class": {"a": 0, "b": 7}, "target": 12},
               "pretraining": {"pretrain_steps": 252, "finetune_steps": 252},
               "selection": {"threshold": 0.9, "kept": 13, "kept_per_class": {"a": 9, "b": 4},
                             "available_per_class": {"a": 10, "b": 10}},
               "paired_difference_augmentation": {"real+augmentation+balanced": {
                   "accuracy": {"mean": 0.0123, "ci95": [0.0045, 0.0201]}}}}
    html = _utility_tables(utility, ["a", "b"])
    assert "504 optimiser steps" in html
    assert "b 4 of 10" in html and "a 9 of 10" in html and "&gt;= 0.9" in html
    assert "b 7" in html and "up to 12" in html
    assert "252 steps pre-training" in html
    assert "Paired difference against <code>real+augmentation</code>" in html and "0.0045" in html


def test_summary_sends_an_fid_below_the_baseline_to_privacy_and_gives_the_knn_n(tmp_path):
    train, heldout, synthetic = (image_set(n, (16, 16), [0] * n, seed, name) for n, seed, name in
                                 ((20, 0, "train"), (10, 1, "test"), (10, 2, "synthetic")))
    features = [np.random.default_rng(s).normal(size=(len(x), 8)) for s, x in enumerate((train, heldout, synthetic))]
    metrics = fake_metrics(["a"], len(synthetic), [], False)
    metrics["precision_recall_n"] = {"n": 10, "n_reference": 20, "repeats": {"synthetic": 1, "real_baseline": 1}}
    plain = render_report(metrics, ReportInputs(["a"], train, heldout, synthetic, *features))
    assert "n = 10 samples" in plain and "read the privacy section" not in plain
    metrics["fid_note"] = "FID 2 is below the real baseline 12.5: read the privacy section <now>."
    text = render_report(metrics, ReportInputs(["a"], train, heldout, synthetic, *features))
    check_self_contained_valid_html(text)
    summary = text[text.index('<section id="summary">'):text.index('<section id="samples">')]
    assert "read the privacy section &lt;now&gt;." in summary and '<a href="#privacy">' in summary
