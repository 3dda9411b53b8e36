"""medscope.analysis.scalars: TensorBoard event files -> tidy and wide tables, bit-exact."""
from __future__ import annotations

import doctest
import json
import math
import time

import numpy as np
import pytest

from medscope.analysis import scalars
from medscope.errors import UsageError
from medscope.runs import Run, RunLayout

# float32 values that a careless export would change: not exactly representable in
# decimal, denormals, the largest float32, signed zero, infinities, NaN, and values
# whose float64 text differs from their float32 text.
AWKWARD = [0.1, 1 / 3, math.pi, 1e-45, 1.17549435e-38, 3.4028234663852886e38, -0.0, 16777217.0,
           1.0000001192092896, 0.30000000000000004, 123456.789, -2.5e-7, math.inf, -math.inf, math.nan]


def wait_for_the_next_second() -> None:
    """Event files sort by name and a name starts with the writer's start second, then a per-process
    counter: a second writer started in the same second sorts before the first once that counter
    passes from 9 to 10. Resumed runs in real life start seconds later; the tests do too."""
    start = int(time.time())
    while int(time.time()) == start:
        time.sleep(0.05)


def bits32(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float32).view(np.uint32)


def write_events(logdir, tag_values: dict, **add_scalar_kwargs) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(logdir))
    for tag, values in tag_values.items():
        for step, value in enumerate(values):
            writer.add_scalar(tag, value, step, **add_scalar_kwargs)
    writer.close()


def test_read_scalars_returns_each_logged_float32_bit_for_bit(tmp_path):
    write_events(tmp_path, {"awkward": AWKWARD, "loss/train": [0.5, 0.25]})
    points = scalars.read_scalars(tmp_path, "r")
    awkward = [p for p in points if p.tag == "awkward"]
    assert [p.step for p in awkward] == list(range(len(AWKWARD)))
    np.testing.assert_array_equal(bits32([p.value for p in awkward]), bits32(AWKWARD))
    assert [p.tag for p in points] == ["awkward"] * len(AWKWARD) + ["loss/train"] * 2
    assert {p.run for p in points} == {"r"}


def test_csv_text_parses_back_to_the_same_float32_bits(tmp_path):
    write_events(tmp_path / "logs", {"awkward": AWKWARD})
    points = scalars.read_scalars(tmp_path / "logs", "r")
    scalars.write_tables(points, tmp_path / "tidy.csv", tmp_path / "wide.csv")
    rows = scalars.read_tidy_csv(tmp_path / "tidy.csv")
    np.testing.assert_array_equal(bits32([r["value"] for r in rows]), bits32(AWKWARD))
    assert [r["wall_time"] for r in rows] == [p.wall_time for p in points]  # float64 wall times, exact
    header = (tmp_path / "tidy.csv").read_text().splitlines()[0]
    assert header == "run,tag,step,wall_time,value"


def test_new_style_tensor_scalars_are_read_too_and_double_precision_keeps_float64(tmp_path):
    write_events(tmp_path / "f32", {"x": [0.1, 1 / 3]}, new_style=True)
    write_events(tmp_path / "f64", {"x": [0.1, 1 / 3]}, new_style=True, double_precision=True)
    as_f32 = [p.value for p in scalars.read_scalars(tmp_path / "f32", "a")]
    as_f64 = [p.value for p in scalars.read_scalars(tmp_path / "f64", "b")]
    np.testing.assert_array_equal(bits32(as_f32), bits32([0.1, 1 / 3]))
    assert as_f64 == [0.1, 1 / 3]  # every float64 bit


def test_a_resumed_run_keeps_the_points_tensorboard_shows(tmp_path):
    """SummaryWriter(purge_step=s) on resume: TensorBoard drops the orphaned steps >= s."""
    from torch.utils.tensorboard import SummaryWriter

    first = SummaryWriter(log_dir=str(tmp_path))
    for step in range(1, 6):
        first.add_scalar("loss", float(step), step)
    first.close()
    wait_for_the_next_second()
    resumed = SummaryWriter(log_dir=str(tmp_path), purge_step=4)
    for step in (4, 5):
        resumed.add_scalar("loss", 10.0 * step, step)
    resumed.close()
    points = scalars.read_scalars(tmp_path, "r")
    assert [(p.step, p.value) for p in points] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0), (5, 50.0)]


def test_folder_without_scalars_gives_no_points(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(tmp_path))
    writer.add_histogram("weights", np.arange(10.0), 1)
    writer.add_text("note", "no scalars here", 1)
    writer.close()
    assert scalars.read_scalars(tmp_path, "r") == []


def test_wide_table_one_row_per_step_and_empty_cells(tmp_path):
    P = scalars.ScalarPoint
    points = [P("a", "loss", 1, 1.0, 0.5), P("a", "loss", 2, 2.0, 0.4), P("a", "test_auc", 2, 3.0, 0.9),
              P("a", "loss", 2, 4.0, 0.3),  # logged twice at step 2: the later one wins
              P("b", "loss", 1, 5.0, 0.7)]
    rows, columns = scalars.wide_table(points)
    assert columns == ["run", "step", "loss", "test_auc"]
    assert rows == [{"run": "a", "step": 1, "loss": 0.5}, {"run": "a", "step": 2, "loss": 0.3, "test_auc": 0.9},
                    {"run": "b", "step": 1, "loss": 0.7}]
    scalars.write_tables(points, tmp_path / "t.csv", tmp_path / "w.csv")
    assert (tmp_path / "w.csv").read_text().splitlines() == [
        "run,step,loss,test_auc", "a,1,0.5,", "a,2,0.3,0.9", "b,1,0.7,"]


def _bare_run(tmp_path, name="0001_x", **info) -> Run:
    path = tmp_path / "results" / name
    path.mkdir(parents=True)
    RunLayout(path).run_json.write_text(json.dumps({"name": name, "artifacts": [], **info}))
    return Run(path)


def test_sub_folders_become_sub_runs_like_tensorboard(tmp_path):
    run = _bare_run(tmp_path)
    write_events(run.layout.tensorboard_dir(tmp_path / "runs"), {"loss": [1.0]})
    write_events(run.layout.tensorboard_dir(tmp_path / "runs") / "extra", {"metric": [2.0]})
    points = scalars.read_run(run, tmp_path / "runs")
    assert [(p.run, p.tag, p.value) for p in points] == [("0001_x", "loss", 1.0), ("0001_x/extra", "metric", 2.0)]


def test_logdir_falls_back_to_the_folder_recorded_in_run_json(tmp_path):
    elsewhere = tmp_path / "trained-here" / "0001_x"
    write_events(elsewhere, {"loss": [1.0]})
    run = _bare_run(tmp_path, tensorboard_dir=str(elsewhere))
    assert scalars.tensorboard_logdir(run, tmp_path / "runs") == elsewhere


def test_run_without_event_files_is_a_usage_error_naming_where_it_looked(tmp_path):
    run = _bare_run(tmp_path)
    with pytest.raises(UsageError, match=r"0001_x has no TensorBoard event files \(looked in .*runs/0001_x\)"):
        scalars.read_run(run, tmp_path / "runs")


def test_read_all_skips_runs_without_events_and_says_so(tmp_path):
    with_events = _bare_run(tmp_path, "0001_a")
    _bare_run(tmp_path, "0002_b")
    write_events(with_events.layout.tensorboard_dir(tmp_path / "runs"), {"loss": [1.0, 0.5]})
    collected = scalars.read_all(tmp_path / "results", tmp_path / "runs")
    assert collected.runs == ("0001_a",) and [p.value for p in collected.points] == [1.0, 0.5]
    assert scalars.tag_count(collected.points) == 1
    assert len(collected.skipped) == 1 and "0002_b" in collected.skipped[0]
    assert list((tmp_path / "results").glob("*.csv")) == []  # reading writes nothing


def test_read_all_without_any_scalars_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no runs in"):
        scalars.read_all(tmp_path / "results", tmp_path / "runs")
    _bare_run(tmp_path, "0001_a")
    with pytest.raises(UsageError, match="none of the 1 runs"):
        scalars.read_all(tmp_path / "results", tmp_path / "runs")


def test_module_doctests():
    assert doctest.testmod(scalars).failed == 0
