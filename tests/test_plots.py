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
