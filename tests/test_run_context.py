"""medscope.app.run_context: a run opened for analysis by name, path or as the newest, every bad input refused."""
from __future__ import annotations

import json

import pytest
import torch

from medscope.app.run_context import open_run
from medscope.errors import UsageError
from medscope.runs import RunLayout, list_runs
from medscope.tasks import BINARY
from tests.conftest import copy_run


def test_open_run_by_path_loads_the_model_dataset_and_split(run_2d):
    ctx = open_run(run_2d.parent, str(run_2d), split="val", device="cpu")
    info = json.loads(RunLayout(run_2d).run_json.read_text())
    assert ctx.run.name == run_2d.name and ctx.split_name == "val" and ctx.device == torch.device("cpu")
    assert len(ctx.split) == info["dataset"]["n_samples"]["val"] and ctx.input_shape == (1, 28, 28)
    assert ctx.task.name == BINARY and ctx.info.flag == ctx.config["dataset"] == "breastmnist"
    assert not ctx.model.training


def test_the_newest_run_without_a_split(run_2d, run_3d):
    results = run_2d.parent
    newest = open_run(results, None, checkpoint="last", split=None, device="cpu")
    assert newest.run.name == list_runs(results)[0].name and newest.split is None


def test_a_missing_data_file_falls_back_to_the_folder_the_run_recorded(run_2d, tmp_path):
    ctx = open_run(run_2d.parent, run_2d.name, data_dir=tmp_path, device="cpu")  # tmp_path holds no data
    assert len(ctx.split) == json.loads(RunLayout(run_2d).run_json.read_text())["dataset"]["n_samples"]["test"]


def test_an_unknown_run_or_a_missing_checkpoint_is_a_usage_error(run_2d, tmp_path):
    with pytest.raises(UsageError, match="no run named 'nothing'"):
        open_run(run_2d.parent, "nothing", device="cpu")
    run = copy_run(run_2d, tmp_path)
    RunLayout(run).best_pt.unlink()
    with pytest.raises(UsageError, match=RunLayout(run).best_pt.name):
        open_run(run.parent, run.name, device="cpu")
    assert open_run(run.parent, run.name, checkpoint="last", split=None, device="cpu").checkpoint


def test_a_checkpoint_that_names_no_dataset_is_refused(run_2d, tmp_path):
    layout = RunLayout(copy_run(run_2d, tmp_path))
    checkpoint = torch.load(layout.best_pt, weights_only=True)
    checkpoint["config"] = {}
    torch.save(checkpoint, layout.best_pt)
    info = json.loads(layout.run_json.read_text())
    info.pop("config", None)
    layout.run_json.write_text(json.dumps(info))
    with pytest.raises(UsageError, match="does not name its dataset"):
        open_run(layout.root.parent, layout.root.name, device="cpu")
