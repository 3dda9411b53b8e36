"""medscope.checkpoints: a checkpoint from someone else is checked before anything is built from it."""
from __future__ import annotations

import pytest
import torch

from medscope import checkpoints
from medscope.errors import UsageError
from medscope.models import build_model, model_spec


def _checkpoint(**spec_changes):
    spec = model_spec("cnn", 1, 2, 2, 28, 0.2)
    model = build_model(**spec)
    return {"model": model.state_dict(), "spec": spec | spec_changes, "config": {}, "epoch": 1}


def test_a_checkpoint_round_trips(tmp_path):
    checkpoints.save(tmp_path / "best.pt", _checkpoint())
    loaded = checkpoints.load(tmp_path / "best.pt")
    model = checkpoints.model_from_checkpoint(loaded)
    assert sum(p.numel() for p in model.parameters()) > 0 and not model.training


@pytest.mark.parametrize("changes, message", [
    ({"name": "vit_huge"}, "name='vit_huge'"),
    ({"num_classes": 10**10}, "num_classes=10000000000"),
    ({"num_classes": "2"}, "num_classes='2'"),
    ({"size": 4096}, "size=4096"),
    ({"dropout": 1.5}, "dropout=1.5"),
    ({"extra": 1}, "not one medscope writes"),
])
def test_a_hostile_spec_is_refused_before_any_model_is_built(tmp_path, changes, message):
    checkpoints.save(tmp_path / "best.pt", _checkpoint(**changes))
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        checkpoints.load(tmp_path / "best.pt")


def test_weights_that_do_not_fit_the_spec_are_one_clear_error(tmp_path):
    checkpoint = _checkpoint()
    checkpoint["spec"]["num_classes"] = 5  # the head's weights are for 2
    checkpoints.save(tmp_path / "best.pt", checkpoint)
    with pytest.raises(UsageError, match="do not fit its model spec"):
        checkpoints.model_from_checkpoint(checkpoints.load(tmp_path / "best.pt"))


def test_a_model_state_that_is_not_tensors_is_refused(tmp_path):
    checkpoint = _checkpoint()
    checkpoint["model"] = {"weight": [1, 2, 3]}
    checkpoints.save(tmp_path / "best.pt", checkpoint)
    with pytest.raises(UsageError, match="not a dict of tensors"):
        checkpoints.load(tmp_path / "best.pt")


class Payload:
    """Any class: weights_only loading refuses to rebuild it (it could run code)."""


def test_a_pickled_object_is_refused(tmp_path):
    torch.save({"model": {}, "spec": {}, "code": Payload()}, tmp_path / "best.pt")
    with pytest.raises(UsageError, match="not a readable medscope checkpoint"):
        checkpoints.load(tmp_path / "best.pt")
