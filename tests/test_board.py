"""medscope.board: figures as TensorBoard images, the metrics as a Markdown table, and a folder that cannot
be written costs a warning, never the analysis."""
from __future__ import annotations

import numpy as np
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from medscope import board


def write_png(path, width: int, height: int):
    pixels = np.zeros((height, width, 4), dtype=np.uint8)
    pixels[..., 0] = np.arange(width, dtype=np.uint8)[None, :]  # a red ramp, to see it come back unchanged
    pixels[..., 3] = 255
    Image.fromarray(pixels, "RGBA").save(path)
    return path


def test_figures_and_text_land_in_the_folder_as_images_and_markdown(tmp_path):
    figures = [write_png(tmp_path / "roc_pr_curves.png", 60, 40), write_png(tmp_path / "reliability_diagram.png",
                                                                             30, 20)]
    warning = board.log_to_run_folder(tmp_path / "tb", figures=figures, text={"metrics/test": "| a |\n|---|"},
                                      step=6, suffix=".analyze_inference")
    assert warning is None
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0, "tensors": 0})
    acc.Reload()
    assert set(acc.Tags()["images"]) == {"figures/roc_pr_curves", "figures/reliability_diagram"}
    (image,) = acc.Images("figures/roc_pr_curves")
    assert (image.step, image.width, image.height) == (6, 60, 40)
    import io

    decoded = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)))
    assert decoded.shape == (40, 60, 3) and decoded[0, :, 0].tolist() == list(range(60))
    (text,) = acc.Tensors("metrics/test/text_summary")
    assert text.tensor_proto.string_val[0].decode() == "| a |\n|---|"


def test_a_folder_that_cannot_be_written_is_a_one_line_warning(tmp_path):
    blocker = tmp_path / "runs"
    blocker.write_text("a file where the TensorBoard folder should be")
    figure = write_png(tmp_path / "x.png", 10, 10)
    warning = board.log_to_run_folder(blocker / "0001_run", figures=[figure], step=1)
    assert warning.startswith("warning: the figures were not added to TensorBoard") and "\n" not in warning


def test_the_metrics_table_has_intervals_and_the_published_baseline():
    test = {"auc": 0.8123, "acc": 0.75, "balanced_acc": 0.7, "macro_f1": float("nan"),
            "intervals": {"auc": {"low": 0.7, "high": 0.9}, "balanced_acc": {"low": 0.6, "high": 0.8}}}
    table = board.metrics_table(test, {"method": "ResNet-18 (28)", "auc": 0.901, "acc": 0.863}).splitlines()
    assert table[0] == "| metric | test | 95% interval | ResNet-18 (28), published |"
    assert table[2:] == ["| AUC | 0.812 | [0.700, 0.900] | 0.901 |", "| ACC | 0.750 | – | 0.863 |",
                         "| balanced accuracy | 0.700 | [0.600, 0.800] | – |", "| macro F1 | n/a | – | – |"]
    assert board.metrics_table({"auc": 0.5}, None).splitlines()[0].endswith("| published baseline |")
