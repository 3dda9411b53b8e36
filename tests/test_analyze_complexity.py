"""analyze_complexity.py end to end on real runs: breastmnist ResNet-18 (2D),
a tiny adrenalmnist3d plain CNN (3D, trained here) and -- marked slow -- the
adrenalmnist3d 3D ResNet-18 (33 M weights).

Every row is checked against a direct computation: the model rebuilt from the
checkpoint (or with checkpoints.initial_model from the run's seed), its
named_parameters() filtered to conv / linear / norm weights, each flattened and
passed to medscope.analysis.complexity."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import analyze_complexity
from medscope.analysis import complexity_plots
from medscope.analysis.complexity import lmc_complexity, sample_entropy, weight_statistics
from medscope.analysis.weights import COLUMNS, COMPARISON_COLUMNS, SUMMARY_COLUMNS, SUMMARY_CSV, SUMMARY_JSON
from medscope.app import cli
from medscope.checkpoints import initial_model, load_run_model
from medscope.runs import ResultsLayout, Run, RunLayout
from tests.conftest import train_run
from tests.test_weights import expected_names

FIGURES = (complexity_plots.LMC_PER_LAYER, complexity_plots.SAMPEN_PER_LAYER, complexity_plots.LMC_BY_TYPE)
FILES = (RunLayout(Path()).complexity_results_csv.name, SUMMARY_CSV, SUMMARY_JSON) + FIGURES
NUMERIC = [c for c in COLUMNS if c not in ("layer", "param", "type", "shape", "sampen_reason", "lmc_reason", "state")]
SAMPEN_CHECK_MAX = 300_000  # SampEn is re-computed directly for tensors up to this size (keeps the test lean)


def checkpoint_copy(run: Path, dest_root: Path) -> Path:
    """A private copy of the files analyze_complexity.py reads (run.json, best.pt, last.pt)."""
    dest = dest_root / "results" / run.name
    dest.mkdir(parents=True)
    source, copy = RunLayout(run), RunLayout(dest)
    for name in ("run_json", "best_pt", "last_pt"):
        if getattr(source, name).is_file():
            shutil.copy2(getattr(source, name), getattr(copy, name))
    return dest


def results_csv(run: Path) -> tuple[list[str], list[dict]]:
    return read_csv(RunLayout(run).complexity_results_csv)


def summary_json(run: Path) -> dict:
    return json.loads((RunLayout(run).complexity_dir / SUMMARY_JSON).read_text())


def analyze(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.run(analyze_complexity.main, [str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return reader.fieldnames, list(reader)


def number(cell: str):
    return None if cell == "" else float(cell)


def check_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert path.stat().st_size > 10_000, f"{path} looks empty"


@pytest.fixture(scope="module")
def cnn_3d(tmp_path_factory, medmnist_dir) -> Path:
    """adrenalmnist3d, plain 3D CNN, 1 epoch on 32 volumes: a real 3D run that analyses in seconds."""
    return train_run(tmp_path_factory.mktemp("complexity-cnn3d"), medmnist_dir, "--dataset", "adrenalmnist3d",
                     "--model", "cnn", "--epochs", "1", "--subset", "32", "--seed", "3")


@pytest.fixture(scope="module")
def cnn_2d(tmp_path_factory, medmnist_dir) -> Path:
    """breastmnist, plain 2D CNN, 1 epoch on 32 images (ResNet-18's 33 M weights: the slow 3D test below)."""
    return train_run(tmp_path_factory.mktemp("complexity-cnn2d"), medmnist_dir, "--dataset", "breastmnist",
                     "--model", "cnn", "--epochs", "1", "--subset", "32", "--seed", "3")


@pytest.fixture(scope="module")
def two_runs(cnn_2d, cnn_3d, tmp_path_factory) -> dict:
    """One invocation on two runs with the default settings and --include-bias."""
    root = tmp_path_factory.mktemp("complexity-two")
    runs = [checkpoint_copy(cnn_2d, root), checkpoint_copy(cnn_3d, root)]
    code, out, err = analyze("--run", *runs, "--results-dir", root / "results", "--include-bias")
    assert code == 0, err
    return {"runs": runs, "results": root / "results", "stdout": out}


@pytest.fixture(scope="module")
def with_init(cnn_3d, tmp_path_factory) -> dict:
    """--compare-init together with every metric option, on last.pt."""
    root = tmp_path_factory.mktemp("complexity-init")
    run = checkpoint_copy(cnn_3d, root)
    code, out, err = analyze("--run", run, "--results-dir", root / "results", "--compare-init", "--which", "last",
                             "--m", "1", "--r-factor", "0.3", "--bins", "sturges")
    assert code == 0, err
    return {"run": run, "stdout": out}


def direct(tensor: torch.Tensor, *, m=2, r_factor=0.2, bins=64, sampen=True) -> dict:
    x = tensor.detach().cpu().numpy().astype(np.float64).ravel()
    st = weight_statistics(x)
    lmc = lmc_complexity(x, bins)
    out = {"count": st.count, "mean": st.mean, "std": st.std, "kurtosis": st.kurtosis, "l1": st.l1_norm,
           "l2": st.l2_norm, "frac_near_zero": st.frac_near_zero, "lmc_H": lmc.H, "lmc_D": lmc.D, "lmc_C": lmc.C,
           "lmc_bins": lmc.n_bins if lmc.reason is None else float("nan")}  # undefined: an empty cell
    if sampen:
        se = sample_entropy(x, m, r=r_factor * np.std(x)) if np.std(x) > 0 else sample_entropy(x, m)
        out.update(sampen=se.value, sampen_A=se.a_count, sampen_B=se.b_count, sampen_r=se.r,
                   sampen_reason=se.reason or "")
    return out


def check_rows(rows: list[dict], model: torch.nn.Module, state: str, include_bias: bool, **settings) -> None:
    """The rows of one state: exactly the model's conv/linear/norm tensors in network order, each equal to a
    direct computation (undefined values: empty cell and a reason)."""
    rows = [r for r in rows if r["state"] == state]
    params = dict(model.named_parameters())
    names = expected_names(model, include_bias)
    assert [f"{r['layer']}.{r['param']}" for r in rows] == names
    for row in rows:
        tensor = params[f"{row['layer']}.{row['param']}"]
        assert row["shape"] == "x".join(map(str, tensor.shape))
        want = direct(tensor, sampen=tensor.numel() <= SAMPEN_CHECK_MAX, **settings)
        for key, value in want.items():
            if key == "sampen_reason":
                assert row[key] == value, row["layer"]
            elif isinstance(value, float) and not math.isfinite(value) or value == -1:
                assert row[key] == "", (row["layer"], key)  # undefined: empty, with a reason
            else:
                assert number(row[key]) == pytest.approx(value, rel=1e-12, abs=1e-15), (row["layer"], key)
        if want.get("sampen_reason"):
            assert row["sampen"] == "" and row["sampen_reason"]


def test_one_row_per_tensor_equal_to_a_direct_computation(two_runs):
    for run in two_runs["runs"]:
        header, rows = results_csv(run)
        assert header == COLUMNS
        assert {r["state"] for r in rows} == {"trained"}
        model, _ = load_run_model(Run(run), "best")
        check_rows(rows, model, "trained", include_bias=True)
    rows_2d = results_csv(two_runs["runs"][0])[1]
    rows_3d = results_csv(two_runs["runs"][1])[1]
    assert len(rows_2d) == len(rows_3d) == 20  # the CNN: 13 weights + 7 biases
    assert {r["type"] for r in rows_2d} == {"conv2d", "norm", "linear"}
    assert {r["type"] for r in rows_3d} == {"conv3d", "norm", "linear"}
    assert rows_2d[0]["layer"] == rows_3d[0]["layer"] and rows_2d[-1]["layer"] == "head.1"


def test_defined_values_finite_undefined_values_explained(two_runs):
    for run in two_runs["runs"]:
        _, rows = results_csv(run)
        for row in rows:
            for key in NUMERIC:
                value = number(row[key]) if row[key] != "" else None
                assert value is None or math.isfinite(value), (row["layer"], key, row[key])
            assert row["lmc_reason"] == "" and row["lmc_C"] != ""  # finite weights: LMC always defined
            assert (row["sampen"] == "") == (row["sampen_reason"] != ""), row
            if row["sampen"]:
                assert 0 < float(row["sampen"]) < 10 and int(row["sampen_A"]) <= int(row["sampen_B"])
        # the 2-class head's bias is too short for templates of length m + 1
        (bias,) = [r for r in rows if r["layer"] == "head.1" and r["param"] == "bias"]
        assert bias["sampen_reason"] == "too short: N=2 < m+2=4" and bias["sampen"] == ""
        assert float(bias["sampen_r"]) == 0.2 * float(bias["std"])  # the tolerance is known, SampEn is not


def test_compare_init_rows_equal_the_rebuilt_initial_model(with_init):
    run = with_init["run"]
    _, rows = results_csv(run)
    settings = dict(m=1, r_factor=0.3, bins="sturges")
    trained, checkpoint = load_run_model(Run(run), "last")
    check_rows(rows, trained, "trained", include_bias=False, **settings)
    seed = json.loads(RunLayout(run).run_json.read_text())["config"]["seed"]
    assert seed == 3
    check_rows(rows, initial_model(checkpoint["spec"], seed), "initial", include_bias=False, **settings)
    # side by side: each tensor's trained row, then its initial row
    assert [r["state"] for r in rows] == ["trained", "initial"] * (len(rows) // 2)
    assert [r["layer"] for r in rows[::2]] == [r["layer"] for r in rows[1::2]]
    # freshly initialised batch-norm weights are all 1
    norms = [r for r in rows if r["state"] == "initial" and r["type"] == "norm"]
    assert norms and all(r["sampen_reason"] == r["lmc_reason"] == "constant vector (std = 0)" and r["lmc_H"] == ""
                         for r in norms)
    summary = summary_json(run)
    assert summary["checkpoint"] == "last.pt" and summary["initial_weights"] == "seed 3"
    assert summary["settings"]["m"] == 1 and summary["settings"]["r_factor"] == 0.3
    assert summary["settings"]["bins"] == "sturges" and summary["settings"]["include_bias"] is False
    assert "initial weights: seed 3" in with_init["stdout"]


def test_plots_summary_artifacts_and_report(two_runs):
    for run in two_runs["runs"]:
        folder = RunLayout(run).complexity_dir
        for name in FIGURES:
            check_png(folder / name)
        header, summary = read_csv(folder / SUMMARY_CSV)
        assert header == SUMMARY_COLUMNS
        total = [s for s in summary if s["type"] == "all"]
        assert len(total) == 1 and int(total[0]["tensors"]) == len(read_csv(folder / FILES[0])[1])
        info = summary_json(run)
        assert info["settings"]["m"] == 2 and info["settings"]["r_factor"] == 0.2 and info["settings"]["bins"] == 64
        assert info["settings"]["include_bias"] is True and info["initial_weights"] is None
        artifacts = {a["path"]: a["created_by"] for a in json.loads(RunLayout(run).run_json.read_text())["artifacts"]}
        for name in FILES:
            assert artifacts[str((folder / name).relative_to(run))] == "analyze_complexity.py"
            assert str(folder / name) in two_runs["stdout"]
        assert f"{run.name}: best.pt" in two_runs["stdout"]
    assert re.search(r"state\s+type\s+tensors\s+weights\s+SampEn mean", two_runs["stdout"])


def test_several_runs_write_a_comparison(two_runs):
    csv_pattern, png_pattern = ResultsLayout(two_runs["results"]).complexity_comparison("*")
    (png,) = two_runs["results"].glob(png_pattern.name)
    (table,) = two_runs["results"].glob(csv_pattern.name)
    assert re.fullmatch(png_pattern.stem.replace("*", r"\d{8}-\d{6}"), png.stem) and table.stem == png.stem
    check_png(png)
    assert str(png) in two_runs["stdout"] and str(table) in two_runs["stdout"]
    header, rows = read_csv(table)
    assert header == COMPARISON_COLUMNS
    for run in two_runs["runs"]:
        mine = [r for r in rows if r["run"] == run.name]
        _, own = results_csv(run)
        assert [{k: r[k] for k in COLUMNS} for r in mine] == own
        assert [int(r["index"]) for r in mine] == list(range(len(own)))
        assert float(mine[0]["depth"]) == 0.0 and float(mine[-1]["depth"]) == 1.0
    assert {(r["dataset"], r["model"], r["spatial_dims"]) for r in rows} == {
        ("breastmnist", "cnn", "2"), ("adrenalmnist3d", "cnn", "3")}


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_bad_input_is_one_line_and_exit_2(tmp_path, cnn_3d):
    results = tmp_path / "results"
    results.mkdir()
    code, _, err = analyze("--results-dir", results)
    assert code == 2 and "no runs in" in one_error_line(err)
    code, _, err = analyze("--results-dir", results, "--run", "0099_nothing")
    assert code == 2 and "no run named '0099_nothing'" in one_error_line(err)
    broken = checkpoint_copy(cnn_3d, tmp_path)
    RunLayout(broken).best_pt.write_bytes(b"not a checkpoint")
    code, _, err = analyze("--results-dir", results, "--run", broken)
    assert code == 2 and "not a readable medscope checkpoint" in one_error_line(err)
    for args in (["--bins", "0"], ["--bins", "fancy"], ["--r-factor", "0"], ["--m", "0"], ["--which", "worst"]):
        code, _, err = analyze("--results-dir", results, "--run", broken, *args)
        assert code == 2, args
        one_error_line(err)
    assert not RunLayout(broken).complexity_dir.exists()


def test_pretrained_run_without_its_weights_stops_before_any_work(tmp_path, cnn_3d, run_2d, monkeypatch):
    """The initial weights of a --pretrained run are torchvision's: offline and not cached they cannot be
    rebuilt, so --compare-init stops with one line, before writing anything for any run."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    good = checkpoint_copy(cnn_3d, tmp_path)
    pretrained = checkpoint_copy(run_2d, tmp_path)
    info = json.loads(RunLayout(pretrained).run_json.read_text())
    info["config"].update(pretrained=True, weights=None)
    RunLayout(pretrained).run_json.write_text(json.dumps(info))
    code, out, err = analyze("--results-dir", tmp_path / "results", "--run", good, pretrained, "--compare-init")
    assert code == 2 and "cannot be rebuilt offline" in one_error_line(err)
    assert out == "" and not any(RunLayout(r).complexity_dir.exists() for r in (good, pretrained))
    assert not list((tmp_path / "results").glob(ResultsLayout(tmp_path / "results").complexity_comparison("*")[0].name))


@pytest.mark.slow
def test_resnet18_end_to_end(run_2d, tmp_path):
    """The 11 M weights of ResNet-18, every layer exactly (the 3D code path: the plain CNN runs above;
    the 33 M of the 3D ResNet-18 take a minute more and add no path)."""
    run = checkpoint_copy(run_2d, tmp_path)
    code, out, err = analyze("--run", run, "--results-dir", tmp_path / "results")
    assert code == 0, err
    header, rows = results_csv(run)
    assert header == COLUMNS
    model, _ = load_run_model(Run(run), "best")
    check_rows(rows, model, "trained", include_bias=False)
    assert len(rows) == 41 and {r["type"] for r in rows} == {"conv2d", "norm", "linear"}
    assert rows[0]["layer"] == "backbone.conv1" and int(rows[-3]["count"]) == 512 * 512 * 9
    assert all(r["lmc_C"] != "" for r in rows)  # trained: no tensor is constant
    # a 64-weight batch-norm vector can hold no matching 3-template (SampEn +inf): empty, with the reason
    assert all(r["sampen"] != "" or r["sampen_reason"] == "no (m+1)-matches (A = 0)" for r in rows)
    assert sum(r["sampen"] != "" for r in rows) >= 38
    for name in FIGURES:
        check_png(RunLayout(run).complexity_dir / name)
