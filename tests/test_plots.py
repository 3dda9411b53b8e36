"""medscope.plots: the run's own figures, checked through their matplotlib objects."""
from __future__ import annotations

import numpy as np
import pytest

from medscope import atomic, plots


@pytest.fixture()
def drawn(monkeypatch):
    """The figures a call draws, instead of files."""
    figures = []
    monkeypatch.setattr(atomic, "save_figure", lambda path, fig, **kw: figures.append(fig) or path)
    return figures


def _history(val_losses):
    return [{"epoch": e, "train_loss": 0.7 / e, "val_loss": v, "train_auc": 0.6 + 0.05 * e, "val_auc": 0.6,
             "train_acc": 0.7, "val_acc": 0.7, "lr": 1e-3 / e} for e, v in enumerate(val_losses, 1)]


def test_training_curves_have_whole_epoch_ticks_the_kept_epoch_and_a_log_loss_when_it_spans_decades(drawn):
    plots.training_curves("x.png", _history([40.0, 0.5, 0.4, 0.35, 0.3, 0.3]), "run", kept_epoch=4)
    loss, auc, acc, lr = drawn[0].axes
    assert loss.get_yscale() == "log" and auc.get_yscale() == "linear"
    for ax in (loss, auc, acc, lr):
        ticks = [t for t in ax.get_xticks() if 1 <= t <= 6]
        assert ticks and all(float(t).is_integer() for t in ticks)
        assert any(list(line.get_xdata()) == [4, 4] for line in ax.get_lines())  # the kept epoch
        assert ax.get_xlabel() == "epoch" and ax.get_ylabel()
    plots.training_curves("x.png", _history([0.6, 0.5, 0.45]), "run")
    assert drawn[1].axes[0].get_yscale() == "linear"


def test_the_confusion_matrix_shows_counts_beside_the_row_normalised_shares_with_whole_names(drawn):
    names = ["malignant", "normal, benign tissue of the breast"]
    plots.confusion_matrix("x.png", [[30, 12], [8, 106]], names, "t")
    counts, shares = drawn[0].axes[:2]
    assert [t.get_text() for t in counts.texts] == ["30", "12", "8", "106"]
    assert [t.get_text() for t in shares.texts] == ["0.71", "0.29", "0.07", "0.93"]
    labels = [t.get_text().replace("\n", " ") for t in counts.get_yticklabels()]
    assert labels == names  # wrapped, never cut with an ellipsis


def test_the_prediction_grid_keeps_class_names_whole_and_marks_errors_red(drawn):
    images = np.zeros((3, 1, 28, 28), dtype=np.uint8)
    plots.prediction_grid("x.png", images, ["normal, benign", "malignant", "colorectal adenocarcinoma epithelium"],
                          ["malignant"] * 3, [0.9, 0.8, 0.7], [False, True, True], "t")
    texts = [t for t in drawn[0].axes[0].texts]
    assert "normal, benign" in texts[0].get_text() and texts[0].get_color() == "red"
    assert "…" not in "".join(t.get_text() for t in texts)
    assert "colorectal adenocarcinoma epithelium" in texts[2].get_text().replace("\n   ", " ")


# ------------------------------------------------------------------ the figures of the analyses

def test_heatmap_pages_use_a_uniform_colour_map_drawn_pixel_for_pixel_with_a_labelled_colour_bar(drawn):
    from medscope.explain import plots as explain_plots

    images = np.zeros((3, 1, 28, 28), dtype=np.uint8)
    maps = np.random.default_rng(0).random((3, 28, 28)).astype(np.float32)
    maps[2] = 0  # an empty map
    titles = explain_plots.titles(np.array([[0], [1], [1]]), np.array([1, 1, 0]),
                                  np.array([[0.2, 0.8], [0.1, 0.9], [0.6, 0.4]]), np.array([1, 1, 0]),
                                  ["normal, benign tissue", "malignant"], "binary-class")
    explain_plots.heatmap_pages("out", lambda page: f"p{page}.png", images, maps, titles, np.array([1, 0, 1], bool),
                                "Grad-CAM", per_page=4)
    fig = drawn[0]
    heatmaps = [im for ax in fig.axes for im in ax.get_images() if im.get_cmap().name == "inferno"]
    assert len(heatmaps) == 6 and all(im.get_interpolation() == "nearest" for im in heatmaps)  # map + overlay each
    (bar,) = [ax for ax in fig.axes if ax.get_ylabel() == explain_plots.MAP_SCALE_LABEL]
    assert "normal, benign tissue" in titles[0].replace("\n", " ") and "…" not in "".join(titles)
    assert "heatmap (empty)" in [ax.get_title() for ax in fig.axes]


def test_a_volume_figure_has_the_colour_bar_too(drawn):
    from medscope.explain import plots as explain_plots

    heat = np.zeros((8, 8, 8), dtype=np.float32)
    heat[3, 4, 5] = 1.0
    explain_plots.volume_figure("v.png", np.zeros((1, 8, 8, 8), dtype=np.uint8), heat, "t")
    assert any(ax.get_ylabel() == explain_plots.MAP_SCALE_LABEL for ax in drawn[0].axes)
    assert "peak at (d, h, w) = (3, 4, 5)" in drawn[0]._suptitle.get_text()


def test_uncertainty_distributions_name_their_axes_and_keep_the_legend_off_the_bars(drawn):
    from medscope.explain import plots as explain_plots

    rng = np.random.default_rng(0)
    measures = {name: rng.random(50) for name in ("confidence", "predictive_entropy", "expected_entropy",
                                                   "mutual_information")}
    explain_plots.uncertainty_distributions("u.png", measures, rng.random(50) < 0.8, "t")
    fig = drawn[0]
    confidence, entropy = fig.axes[:2]
    assert confidence.get_xlabel().startswith("confidence") and entropy.get_xlabel().endswith("nats")
    assert confidence.get_ylabel() == "density (per group)"
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    assert [ax.axison for ax in fig.axes[:6]] == [True] * 4 + [False] * 2  # unused panels: blank, no empty frame


def test_activation_whiskers_are_percentiles_that_never_reach_below_zero(drawn):
    from medscope.analysis import inference_plots

    rows = [{"layer": f"backbone.layer{i}", "mean": 0.2, "std": 0.5, "q10": 0.0, "median": 0.1, "q90": 0.6,
             "dead_fraction": 0.0} for i in range(3)]
    inference_plots.layer_activation_bars("layer_mean_activation.png", rows, "t")
    (ax,) = drawn[0].axes
    (whiskers,) = [c for c in ax.collections if c.get_segments()]
    lows = [min(seg[:, 1]) for seg in whiskers.get_segments()]
    assert lows == [0.0, 0.0, 0.0]  # mean - std would be -0.3


def test_roc_and_precision_recall_curves_mark_the_operating_point(drawn):
    from medscope.analysis import inference_plots
    from medscope.analysis.curves import roc_pr_curves

    rng = np.random.default_rng(0)
    p1 = rng.random(100)
    labels = (rng.random(100) < p1).astype(int)[:, None]
    curves = roc_pr_curves("binary-class", np.c_[1 - p1, p1], labels, ["benign", "malignant"])
    inference_plots.roc_pr_curves("roc_pr_curves.png", curves, "t")
    roc, pr = drawn[0].axes
    assert roc.get_xlabel().startswith("false positive rate") and pr.get_xlabel().startswith("recall")
    points = [line for line in roc.get_lines() if line.get_marker() == "o"]
    assert [(line.get_xdata()[0], line.get_ydata()[0]) for line in points] == [(curves[0]["fpr"], curves[0]["tpr"])]
    assert "malignant: AUC" in drawn[0].legends[0].get_texts()[0].get_text()


def test_the_confident_errors_grid_has_only_the_rows_it_fills(drawn):
    from medscope.analysis import inference_plots

    images = np.zeros((9, 1, 28, 28), dtype=np.uint8)
    inference_plots.error_grid("confident_errors.png", images, ["a"] * 9, ["b"] * 9, np.full(9, 0.9), "t")
    fig = drawn[0]
    assert len(fig.axes) == 16  # two rows of eight: nine images, no empty third row
    assert tuple(fig.get_size_inches()) == inference_plots._inches("confident_errors.png", 9)
    assert inference_plots.figure_pixels("confident_errors.png", 9)[1] == 450
