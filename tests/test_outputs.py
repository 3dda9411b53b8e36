"""medscope.analysis.outputs: inference_outputs.pt is checked part by part before any reader uses it."""
from __future__ import annotations

import pytest
import torch

import analyze_inference
import compare
import explain
from medscope.analysis.outputs import read_outputs
from medscope.app import cli
from medscope.errors import UsageError
from medscope.runs import RunLayout
from medscope.tasks import BINARY, MULTICLASS, MULTILABEL
from tests.conftest import copy_run, one_line_error


def _outputs(task=BINARY, n=6, k=2) -> dict:
    logits = torch.randn(n, k, generator=torch.Generator().manual_seed(0))
    if task == MULTILABEL:
        probabilities, labels = torch.sigmoid(logits), (torch.arange(n * k).reshape(n, k) % 2).float()
    else:
        probabilities, labels = torch.softmax(logits, dim=1), (torch.arange(n) % k).reshape(n, 1)
    return {"logits": logits, "probabilities": probabilities, "labels": labels, "task": task, "split": "test"}


def _saved(tmp_path, outputs) -> str:
    path = tmp_path / "inference_outputs.pt"
    torch.save(outputs, path)
    return path


@pytest.mark.parametrize("task,k", [(BINARY, 2), (MULTICLASS, 4), (MULTILABEL, 3)])
def test_a_sound_file_of_every_task_type_reads_back(tmp_path, task, k):
    outputs = read_outputs(_saved(tmp_path, _outputs(task, k=k)), task=task, num_classes=k)
    assert torch.equal(outputs["logits"], _outputs(task, k=k)["logits"])


def _broken(**change) -> dict:
    return {**_outputs(), **change}


@pytest.mark.parametrize("outputs,needle", [
    (_broken(logits=[[0.1, 0.2]] * 6), "logits is a list, not a tensor"),
    (_broken(probabilities=torch.full((6, 3), 1 / 3)), "probabilities has shape (6, 3) but the logits (6, 2)"),
    (_broken(logits=torch.zeros(6, 3), probabilities=torch.full((6, 3), 1 / 3)),
     "logits has 3 columns; the run's dataset has 2 outputs"),
    (_broken(probabilities=torch.randn(6, 2) * 5), "probabilities outside [0, 1]"),
    (_broken(probabilities=torch.full((6, 2), 0.3)), "probability rows do not sum to 1"),
    (_broken(logits=torch.full((6, 2), float("nan"))), "logits holds NaN or infinite values"),
    (_broken(logits=torch.zeros(6, 2, dtype=torch.int64)), "logits must be a floating-point matrix"),
    (_broken(logits=torch.zeros(0, 2), probabilities=torch.zeros(0, 2), labels=torch.zeros(0, 1)),
     "one row per image"),
    (_broken(labels=torch.tensor([[0], [1], [2], [0], [1], [0]])), "labels must be one class index in [0, 2)"),
    (_broken(labels=torch.full((6, 1), 0.5)), "labels must be whole numbers"),
    (_broken(labels=torch.zeros(5, 1, dtype=torch.int64)), "do not give one row per image (6)"),
    (_broken(labels=["benign"] * 6), "labels is a list, not a tensor"),
    (_broken(task="multi-class"), "is for a multi-class task, but the run's dataset is binary-class"),
    ({k: v for k, v in _outputs().items() if k != "labels"}, "lacks labels"),
    ([1, 2, 3], "is not a medscope inference file (it holds a list)"),
])
def test_a_damaged_file_is_refused_naming_the_part(tmp_path, outputs, needle):
    with pytest.raises(UsageError) as caught:
        read_outputs(_saved(tmp_path, outputs), task=BINARY, num_classes=2, fix="recompute it")
    assert needle in str(caught.value) and str(caught.value).endswith("; recompute it")


def test_multilabel_labels_must_be_zero_or_one_per_label(tmp_path):
    outputs = _outputs(MULTILABEL, k=3)
    outputs["labels"] = outputs["labels"] * 2
    with pytest.raises(UsageError, match="multi-label labels must be 0/1 with 3 columns"):
        read_outputs(_saved(tmp_path, outputs), task=MULTILABEL, num_classes=3)


def test_bytes_that_are_no_torch_file_are_unreadable_not_a_crash(tmp_path):
    path = tmp_path / "inference_outputs.pt"
    path.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(UsageError, match="is not readable"):
        read_outputs(path)
    with pytest.raises(FileNotFoundError):
        read_outputs(tmp_path / "absent.pt")


# ---------------------------------------------------------------- every reader, on a real run

@pytest.fixture()
def damaged_run(run_2d, tmp_path):
    """A copy of the 2D run whose stored test outputs give a 3-column probability matrix (a binary task)."""
    run = copy_run(run_2d, tmp_path)
    path = RunLayout(run).inference_outputs
    outputs = torch.load(path, weights_only=True)
    n = outputs["probabilities"].shape[0]
    outputs["probabilities"] = torch.full((n, 3), 1 / 3)
    outputs["logits"] = torch.zeros(n, 3)
    torch.save(outputs, path)
    return run


@pytest.mark.parametrize("main,argv", [
    (analyze_inference.main, []),
    (explain.main, ["calibrate"]),
    (compare.main, []),
])
def test_every_reader_refuses_a_wrong_width_matrix_for_a_binary_task_in_one_line(damaged_run, main, argv, capsys):
    results = str(damaged_run.parent)
    run_args = [damaged_run.name] if main is compare.main else ["--run", damaged_run.name]
    code = cli.run(main, [*argv, *run_args, "--results-dir", results, "--device", "cpu"])
    assert code == cli.EXIT_BAD_INPUT
    one_line_error(capsys, "3 columns")
