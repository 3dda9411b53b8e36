"""report.py and medscope.report: the page holds the run's numbers and figures, offline, as valid HTML.

One real short training run (conftest's ``reported_run``: the session's
``run_2d`` copied, given three cheap analyses -- inference, Grad-CAM, MC
dropout -- and reported once per session); the other analyses are left out on purpose, so the page must
offer the command that adds each of them. Tests that change a run work on
their own copy.
"""
from __future__ import annotations

import html
import html.parser
import json
import re

import numpy as np
import pytest

import report
from medscope import atomic
from medscope.app import cli
from medscope.report.build import build_run_report, majority_class, reproduce_command
from medscope.report.images import embed_image
from medscope.report.layout import RunLayout
from medscope.report.model_card import model_card, model_card_markdown
from medscope.report.text import duration_text, number_text
from medscope.report_text import markdown_text
from medscope.runs import Run
from medscope.train.config import with_recipe
from tests.conftest import copy_run, one_line_error

MAX_BYTES = 10_000_000
MAX_BUILD_SECONDS = 5.0
ALLOWED_LINKS = {"https://doi.org/10.1038/s41597-022-01721-8", "https://doi.org/10.1145/3287560.3287596"}


def record(run, *paths) -> None:
    """Record files a test put into an analysis folder, as the command that writes the folder would: the report
    shows only the analysis files run.json records."""
    Run(run).add_artifacts(paths, created_by="test")


def shown(value, digits: int = 3) -> str:
    """A number as the page shows it: the exact value in <data value>, the rounded text inside."""
    return f'<data value="{value!r}">{number_text(value, digits)}</data>'


class Resources(html.parser.HTMLParser):
    """Every URL-bearing attribute and every <style> body of a page."""

    def __init__(self):
        super().__init__()
        self.urls: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        self._in_style = tag == "style"
        for name, value in attrs:
            if name in ("src", "href", "srcset", "poster", "data", "action", "formaction", "background") or \
                    (name == "content" and value and "url=" in value.lower()):
                self.urls.append((tag, name, value or ""))
            if name == "style" and value and "url(" in value:
                self.urls.append((tag, name, value))

    def handle_endtag(self, tag):
        if tag == "style":
            self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.styles.append(data)


# --------------------------------------------------------------------------- the page

def test_page_holds_the_runs_numbers_exactly_as_metrics_json_has_them(reported_run):
    page = reported_run.html
    metrics = json.loads((reported_run.path / "metrics.json").read_text())
    test = metrics["test"]
    for key in ("auc", "acc"):
        assert shown(test[key]) in page
    assert shown(metrics["val"]["auc"]) in page and shown(test["macro_f1"]) in page
    for name, row in test["per_class"].items():
        assert f'<th scope="row">{html.escape(name)}</th><td class="n">{row["support"]}</td>' in page
        for key in ("precision", "recall", "specificity", "f1"):
            assert (shown(row[key]) if row[key] is not None else '<td class="n muted">–</td>') in page
    matrix_rows = re.findall(r'<table class="matrix">.*?</table>', page, re.DOTALL)[0]
    counts = [int(c) for c in re.findall(r"<td(?: class=\"diag\")?>(\d+)</td>", matrix_rows)]
    assert counts == [c for row in test["confusion_matrix"] for c in row]
    info = json.loads((reported_run.path / "run.json").read_text())
    assert f"<td class=\"wrap\">{duration_text(info['metrics']['wall_seconds'])} (started" in page


def test_every_figure_of_the_run_folder_is_embedded_with_a_caption(reported_run):
    page = reported_run.html
    figures = sorted(reported_run.path.rglob("*.png"))
    assert len(figures) >= 10  # training's three, inference's six, Grad-CAM's and uncertainty's
    assert page.count("<img ") == len(figures)
    for path in figures:
        assert f'<span class="muted">({path.name})</span></figcaption>' in page, path
        assert embed_image(path).data_uri in page, path  # the encoding is deterministic


def test_analyses_not_run_show_the_one_command_that_adds_them(reported_run):
    page = html.unescape(reported_run.html)
    tail = f"--run {reported_run.path.name} --results-dir {reported_run.results}"
    for command in ("analyze_complexity.py", "explain.py saliency", "explain.py robustness", "explain.py calibrate",
                    "quantize.py"):
        assert f"python {command} {tail}" in page, command
    for done in ("analyze_inference.py", "explain.py gradcam", "explain.py uncertainty"):
        assert f"python {done} {tail}" not in page, done
    assert page.count("Not run yet:") == 5


def test_page_is_valid_html5(reported_run):
    import html5lib

    document = html5lib.HTMLParser(strict=True, namespaceHTMLElements=False).parse(reported_run.html)  # raises on any parse error
    assert document.find("body") is not None


def test_page_references_nothing_outside_itself(reported_run):
    parser = Resources()
    parser.feed(reported_run.html)
    assert parser.urls
    for tag, attribute, value in parser.urls:
        if tag == "a" and attribute == "href":
            assert value.startswith("#") or value in ALLOWED_LINKS, value
        else:
            assert attribute == "src" and tag == "img" and value.startswith("data:image/"), (tag, attribute, value[:80])
    style = "".join(parser.styles)
    assert style and "url(" not in style and "@import" not in style and "http" not in style
    assert "default-src 'none'" in reported_run.html  # the browser itself refuses any load


def test_page_size_and_build_time(reported_run):
    size = (reported_run.path / "report.html").stat().st_size
    recorded = float(re.search(r'<data id="build-seconds" value="([^"]+)">', reported_run.html).group(1))
    print(f"\nreport.html: {size / 1e6:.2f} MB; built in {recorded:.2f} s (report.py took {reported_run.seconds:.2f} s)")
    assert size < MAX_BYTES
    # reading the run and embedding its figures; report.py adds its imports, template compilation and the writes
    assert 0 < recorded < MAX_BUILD_SECONDS and recorded <= reported_run.seconds


def test_sections_come_in_the_order_a_reader_asks(reported_run):
    ids = re.findall(r'<section id="([^"]+)"', reported_run.html)
    assert ids == ["verdict", "training", "classes", "calibration", "explanations", "uncertainty", "robustness",
                   "inside", "export", "model-card"]


def test_grad_cam_pages_with_confident_errors_come_first(reported_run, tmp_path):
    """Two pages: the second holds a 95%-confident error, the first only right answers: page 2 is shown first."""
    from PIL import Image

    run = copy_run(reported_run.path, tmp_path)
    folder = run / "gradcam"
    for old in folder.glob("gradcam_page*.png"):
        old.unlink()
    for page, colour in ((1, "white"), (2, "black")):
        Image.new("RGB", (40, 20), colour).save(folder / f"gradcam_page{page:02d}.png")
    n = 16  # eight per page
    labels = np.zeros((n, 1), dtype=np.int64)
    predictions = np.zeros(n, dtype=np.int64)
    probabilities = np.tile([0.9, 0.1], (n, 1))
    predictions[11], probabilities[11] = 1, [0.05, 0.95]  # page 2: a confident error
    np.savez_compressed(folder / "gradcam_maps.npz", ids=np.arange(n), labels=labels, predictions=predictions,
                        probabilities=probabilities)
    built = build_run_report(run)
    (method,) = built.section("explanations").data["methods"]
    assert [f.path.name for f in method["gallery"]] == ["gradcam_page02.png", "gradcam_page01.png"]
    assert method["gallery"][0].caption.startswith("1 of 8 predictions here are wrong (red titles), the most "
                                                   "confident at 95%")
    assert method["gallery"][1].caption.startswith("All 8 predictions here are right")


def test_3d_volume_figures_with_confident_errors_come_first(reported_run, tmp_path):
    """3D runs: one figure per volume, named by image id; the wrong, most confident ones first."""
    from PIL import Image

    run = copy_run(reported_run.path, tmp_path)
    folder = run / "gradcam"
    for old in folder.glob("gradcam_page*.png"):
        old.unlink()
    ids = np.array([3, 8, 21])
    for image_id in ids:
        Image.new("RGB", (30, 10), "grey").save(folder / f"gradcam_volume_{image_id:05d}.png")
    np.savez_compressed(folder / "gradcam_maps.npz", ids=ids, labels=np.array([[0], [1], [0]]),
                        predictions=np.array([1, 0, 0]), probabilities=np.array([[0.3, 0.7], [0.9, 0.1], [0.8, 0.2]]))
    record(run, *folder.glob("gradcam_volume_*.png"))
    (method,) = build_run_report(run).section("explanations").data["methods"]
    assert [f.path.name for f in method["gallery"]] == ["gradcam_volume_00008.png", "gradcam_volume_00003.png",
                                                      "gradcam_volume_00021.png"]
    assert [f.title for f in method["gallery"]] == ["Grad-CAM, volume 8", "Grad-CAM, volume 3", "Grad-CAM, volume 21"]
    assert method["n_wrong"] == 2


def test_calibration_folder_is_shown_when_present(reported_run, tmp_path):
    from PIL import Image

    run = copy_run(reported_run.path, tmp_path)
    folder = run / "calibration"
    folder.mkdir()
    atomic.write_json(folder / "calibration_summary.json",
                      {"method": "temperature scaling", "temperature": 1.7342, "ece_before": 0.21, "ece_after": 0.04,
                       "per_class": [1, 2], "fit": {"split": "val", "n": 78}})
    atomic.write_text(folder / "calibration_report.md", "# Calibration\n\nECE fell from 0.21 to 0.04 <b>.\n")
    Image.new("RGB", (40, 30), "white").save(folder / "reliability_after.png")
    record(run, *folder.iterdir())
    assert report.main(["--run", str(run), "--results-dir", str(tmp_path / "results")]) == 0
    page = (run / "report.html").read_text()
    section = page[page.index('<section id="calibration"'):page.index('<section id="explanations"')]
    assert "python explain.py calibrate" not in section and "Not run yet" not in section
    for key, value in (("temperature", "1.7342"), ("ece before", "0.2100"), ("fit.split", "val"), ("fit.n", "78")):
        assert re.search(rf"<th scope=\"row\">{re.escape(key)}</th><td[^>]*>(<data [^>]+>)?{value}", section), key
    assert "ECE fell from 0.21 to 0.04 &lt;b&gt;." in section  # the Markdown is shown as text, escaped
    assert "(reliability_after.png)</span></figcaption>" in section and "(reliability_diagram.png)" in section
    card = json.loads((run / "model_card.json").read_text())
    assert card["calibration"]["recalibration"]["temperature"] == 1.7342 and card["calibration"]["not_run"] == []


def test_robustness_summary_is_told_worst_first(reported_run, tmp_path):
    from medscope.explain.robustness import SUMMARY_COLUMNS

    run = copy_run(reported_run.path, tmp_path)
    base = dict.fromkeys(SUMMARY_COLUMNS, None) | {"severities": "1;2;3;4;5", "clean_ce": 0.2, "mean_flip_rate": 0.1,
                                                   "mean_image_rmse": 5.0}
    rows = [base | {"perturbation": "gamma", "mce": 1.05, "mean_balanced_acc": 0.78, "worst_balanced_acc": 0.75,
                    "worst_severity": 5, "first_severity_below": None, "mean_acc": 0.8},
            base | {"perturbation": "gaussian_noise", "mce": 2.4, "mean_balanced_acc": 0.55, "worst_balanced_acc": 0.5,
                    "worst_severity": 5, "first_severity_below": 2, "first_severity_beyond_interval": 3,
                    "collapsed_severities": "4 5", "mean_flip_rate": 0.42, "mean_acc": 0.83},
            base | {"perturbation": "jpeg", "mce": 1.3, "mean_balanced_acc": 0.7, "worst_balanced_acc": 0.62,
                    "worst_severity": 4, "first_severity_below": 4, "flip_auroc_rmse": float("nan"), "mean_acc": 0.7},
            base | {"perturbation": "overall", "mce": 1.58, "mean_balanced_acc": 0.68, "worst_balanced_acc": 0.5,
                    "worst_severity": 5, "collapsed_severities": "gaussian_noise:4 gaussian_noise:5", "mean_acc": 0.78}]
    atomic.write_csv(run / "robustness" / "robustness_summary.csv", rows, SUMMARY_COLUMNS)
    atomic.write_json(run / "robustness" / "robustness_summary.json",
                      {"n_images": 156, "severities": [1, 2, 3, 4, 5], "tolerance": 0.05,
                       "clean": {"auc": 0.9, "acc": 0.8, "balanced_acc": 0.75, "balanced_acc_low": 0.68,
                                 "balanced_acc_high": 0.82, "majority_rate": 0.73, "ece": 0.05},
                       "clean_matches_run_metrics": True,
                       "perturbations": {"gaussian_noise": {"description": "additive Gaussian noise"}}})
    record(run, *(run / "robustness").iterdir())
    built = build_run_report(run)
    data = built.section("robustness").data
    assert [r["perturbation"] for r in data["rows"]] == ["gaussian_noise", "jpeg", "gamma"]
    assert data["overall"]["mce"] == 1.58
    card = model_card(built)
    assert card["robustness"]["limits"][0] == (
        "gaussian noise: mean corruption error 2.40x the clean one, mean balanced accuracy 0.550, lowest 0.500 at "
        "severity 5; balanced accuracy drops beyond tolerance from severity 2; collapsed to one class at severity 4, 5; "
        "42% of predictions flip on average")
    assert card["robustness"]["limits"][2].endswith("balanced accuracy stays within tolerance at every severity "
                                                    "tried; 10% of predictions flip on average")
    assert report.main(["--run", str(run), "--results-dir", str(tmp_path / "results")]) == 0
    page = (run / "report.html").read_text()
    assert "<strong>gaussian noise</strong> (additive Gaussian noise): mean corruption error" in page
    assert "balanced accuracy falls more than 0.05 below clean from severity 2 (beyond its 95% interval from " \
           "severity 3); <strong>collapsed to one class</strong> at severity 4 5" in page
    text = re.sub(r"<[^>]+>", "", page)
    assert "balanced accuracy 0.750 [0.680, 0.820]" in text and "(a majority-class guess: 0.730)" in text
    assert "Collapsed to one class (perturbation:severity): gaussian_noise:4 gaussian_noise:5" in text
    assert '<td class="n muted">n/a</td>' in page and ">nan<" not in page  # an undefined AUROC


def test_export_report_becomes_a_table(reported_run, tmp_path):
    run = copy_run(reported_run.path, tmp_path)
    models, latency = {}, {"threads": 2, "runs": 50, "batch_size": 64, "gpu": "CPU only", "cpu": {}}
    for k, key in enumerate(("pytorch_fp32", "onnx_fp32", "onnx_int8_static", "onnx_int8_dynamic")):
        models[key] = {"auc": 0.91 - k / 1000, "acc": 0.85, "agreement": 1.0 - k / 100, "file": f"{key}.onnx",
                       "size_mb": None if k == 0 else 44.8 / (1 + 3 * (k > 1)), "auc_delta": -k / 1000,
                       "size_ratio": None if k == 0 else 1 + 3 * (k > 1)}
        latency["cpu"][key] = {"batch1": {"p50_ms": 10.0 + k, "p95_ms": 12.0 + k, "p99_ms": 15.0 + k},
                               "batch64": {"images_per_s": 500.0 - k}}
    atomic.write_json(run / "export" / "export_report.json",
                      {"checkpoint": "best", "models": models, "latency": latency, "onnx": {"opset": 18},
                       "verification": {"n_images": 156, "max_abs_diff_logits": 1.4e-06, "tolerance": 1e-4,
                                        "passed": True, "argmax_agreement": 1.0},
                       "test": {"n_images": 156, "n_split": 156}, "environment": {"cpu": "a test CPU"},
                       "targets": {"notes": ["INT8 dynamic is slower than FP32 here"]}})
    record(run, run / "export" / "export_report.json")
    assert report.main(["--run", str(run), "--results-dir", str(tmp_path / "results")]) == 0
    page = (run / "report.html").read_text()
    section = page[page.index('<section id="export"'):page.index('<section id="model-card"')]
    assert "quantize.py" not in section and "<strong>passed</strong>" in section and "opset 18" in section
    row = re.search(r"<tr><th scope=\"row\">ONNX INT8 static<br>.*?</tr>", section).group(0)
    cells = re.findall(r"<data value=\"([^\"]+)\"", row)
    assert [float(c) for c in cells] == pytest.approx([11.2, 4.0, 0.908, 0.85, -0.002, 0.98, 12.0, 14.0, 17.0, 498.0])
    assert "Note: INT8 dynamic is slower than FP32 here" in section


# --------------------------------------------------------------------------- verdict inputs

def test_intervals_show_beside_the_metrics_when_metrics_json_has_them(reported_run, tmp_path):
    run = copy_run(reported_run.path, tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    test = metrics["test"]
    test["intervals"] = {key: {"estimate": test[key], "low": test[key] - 0.05, "high": min(1.0, test[key] + 0.04),
                               "method": "stratified bootstrap, 2000 resamples"} for key in ("auc", "acc")}
    test["intervals"]["balanced_acc"] = {"estimate": 0.5, "low": 0.45, "high": 0.55, "method": "bootstrap"}
    test["balanced_acc"] = 0.5
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert report.main(["--run", str(run), "--results-dir", str(tmp_path / "results")]) == 0
    page = (run / "report.html").read_text()
    auc = test["intervals"]["auc"]
    assert (f'95% interval [{shown(auc["low"])}, {shown(auc["high"])}] (stratified bootstrap, 2000 resamples)'
            in page)
    assert "Test balanced accuracy" in page and "no interval (re-run train.py to get one)" not in page
    card = json.loads((run / "model_card.json").read_text())
    assert card["metrics"]["test"][0]["text"] == (f"{number_text(test['auc'])}, 95% interval "
                                                  f"[{number_text(auc['low'])}, {number_text(auc['high'])}] "
                                                  "(stratified bootstrap, 2000 resamples)")
    small = next(c for c in card["caveats"] if c.startswith("Small test split"))
    assert f"AUC {number_text(auc['high'] - auc['low'])}" in small


def test_without_intervals_the_page_says_how_to_get_them(reported_run, tmp_path):
    import report

    run = copy_run(reported_run.path, tmp_path)  # as a run trained before intervals existed
    metrics = json.loads((run / "metrics.json").read_text())
    del metrics["test"]["intervals"]
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert report.main(["--run", str(run), "--results-dir", str(tmp_path / "results")]) == 0
    page = (run / "report.html").read_text()
    assert page.count("no interval (re-run train.py to get one)") == 3  # AUC, ACC, balanced accuracy


def test_the_verdict_sits_beside_the_published_baseline(reported_run):
    from medscope.baselines import reference_baseline

    baseline = reference_baseline("breastmnist", 28, "resnet18")
    built = build_run_report(reported_run.path)
    verdict = built.section("verdict").data
    auc = json.loads((reported_run.path / "metrics.json").read_text())["test"]["auc"]
    assert verdict["auc_minus_baseline"] == auc - baseline.auc
    page = reported_run.html
    assert f"Published ResNet-18 (28): {shown(baseline.auc)}" in page
    assert f"Published ResNet-18 (28): {shown(baseline.acc)}" in page
    assert "MedMNIST v2" in page


def test_a_dataset_without_a_published_number_shows_no_baseline(reported_run, monkeypatch):
    monkeypatch.setattr("medscope.report.build.reference_baseline", lambda flag, size, model: None)
    assert build_run_report(reported_run.path).section("verdict").data["baseline"] is None


def test_majority_class_is_the_accuracy_of_always_answering_it(reported_run):
    metrics = json.loads((reported_run.path / "metrics.json").read_text())
    supports = {k: v["support"] for k, v in metrics["test"]["per_class"].items()}
    major = majority_class(metrics["test"]["per_class"], metrics["task"])
    assert major["name"] == max(supports, key=supports.get)
    assert major["share"] == max(supports.values()) / metrics["test"]["n"]
    assert f"would score ACC {shown(major['share'])}" in reported_run.html


# --------------------------------------------------------------------------- the model card

def test_model_card_files_say_what_the_page_says(reported_run):
    card = json.loads((reported_run.path / "model_card.json").read_text())
    rebuilt = model_card(build_run_report(reported_run.path, results_dir=reported_run.results),
                         results_dir=reported_run.results)
    assert card == json.loads(json.dumps(rebuilt))
    markdown = (reported_run.path / "model_card.md").read_text()
    assert markdown == model_card_markdown(card)
    assert list(card)[3:] == ["model_details", "intended_use", "factors", "metrics", "training_data",
                              "evaluation_data", "calibration", "robustness", "ethical_considerations", "caveats",
                              "reproduce"]
    page = html.unescape(reported_run.html)
    for line in card["caveats"] + card["intended_use"]["out_of_scope"]:
        assert markdown_text(line) in markdown and line in page  # Markdown-escaped in the card (brackets)
    assert card["reproduce"]["command"] in markdown and card["reproduce"]["command"] in page
    assert card["training_data"]["license"] == "CC BY 4.0" and "Scientific Data" in card["training_data"]["citation"]
    assert "not a medical device" in markdown


def test_model_card_caveats_small_test_split_and_imbalance(reported_run):
    card = json.loads((reported_run.path / "model_card.json").read_text())
    metrics = json.loads((reported_run.path / "metrics.json").read_text())
    n, auc = metrics["test"]["n"], metrics["test"]["intervals"]["auc"]
    small = next(c for c in card["caveats"] if c.startswith("Small test split"))
    assert f"{n} images" in small and f"AUC {number_text(auc['high'] - auc['low'])}" in small
    supports = [v["support"] for v in metrics["test"]["per_class"].values()]
    imbalanced = max(supports) / sum(supports) > 0.7
    assert any(c.startswith("Class imbalance") for c in card["caveats"]) == imbalanced
    assert any("subset of 256" in c for c in card["caveats"])


def test_reproduce_command_gives_back_the_runs_configuration(reported_run):
    import train

    info = json.loads((reported_run.path / "run.json").read_text())
    command = reproduce_command(info["config"], info["environment"])
    argv = command.split()[2:]
    assert command.startswith("python train.py ")
    args = train.get_args_parser().parse_args(argv)
    n_train = info["dataset"]["n_samples"]["train"]  # decides tuned or general recipe, as it did in training
    (requested,) = train.build_configs(args)
    cfg = with_recipe(requested, n_train).to_dict()
    assert args.device == info["environment"]["device"]  # the device it ran on, not "auto"
    machine = {"data_dir", "results_dir", "runs_dir", "command", "run_name", "device"}  # where, not what
    assert {k: v for k, v in cfg.items() if k not in machine} == \
        {k: v for k, v in info["config"].items() if k not in machine}


def test_reproduce_command_under_torchrun_names_the_process_count():
    command = reproduce_command({"dataset": "pathmnist", "size": 224, "world_size": 4, "amp": False, "tta": True},
                                {"device": "cuda:0"})
    assert command == ("torchrun --standalone --nproc_per_node=4 train.py --dataset pathmnist --size 224 --tta "
                       "--no-amp --device cuda")


# --------------------------------------------------------------------------- unusual runs and bad input

def test_unfinished_run_gets_a_warning_banner_and_still_a_page(reported_run, tmp_path):
    run = copy_run(reported_run.path, tmp_path)
    Run(run).update(status="interrupted", epochs_completed=1)
    (run / "metrics.json").unlink()
    assert report.main(["--run", str(run), "--results-dir", str(tmp_path / "results")]) == 0
    page = html.unescape((run / "report.html").read_text())
    banner = re.search(r'<div class="banner warning" role="alert"><p><strong>Warning:</strong> ([^<]+)</p>', page)
    assert banner and "status is 'interrupted' after 1 of 2 epochs" in banner.group(1)
    assert f"python train.py --resume {run.name}" in banner.group(1)
    assert "metrics.json is missing" in page and "No test metrics" in page
    card = json.loads((run / "model_card.json").read_text())
    assert card["caveats"][0] == "The run's status is 'interrupted': the model may be unfinished."


def test_multilabel_run_with_only_run_json_and_metrics_json(tmp_path):
    """Per-label tables, no figures, every analysis pending: the page still builds and parses."""
    import html5lib

    from medscope.metrics import evaluate

    rng = np.random.default_rng(0)
    labels = (rng.random((60, 3)) < 0.4).astype(np.int64)
    scores = np.clip(labels * 0.6 + rng.random((60, 3)) * 0.5, 0, 1)
    names = ["atelectasis", "cardiomegaly", "effusion"]
    metrics = {"test": evaluate("multi-label, binary-class", labels, scores, names),
               "val": evaluate("multi-label, binary-class", labels, scores, names), "best_epoch": 1,
               "selected_by": "highest validation AUC", "epochs_run": 1, "task": "multi-label, binary-class",
               "class_names": names}
    run = tmp_path / "0001_chestmnist28_cnn"
    run.mkdir()
    atomic.write_json(run / "metrics.json", metrics)  # as train.py writes it: NaN as null
    (run / "run.json").write_text(json.dumps({"name": run.name, "status": "completed",
                                              "config": {"dataset": "chestmnist", "size": 28, "model": "cnn"},
                                              "dataset": {"flag": "chestmnist", "size": 28, "spatial_dims": 2,
                                                          "task": "multi-label, binary-class", "class_names": names,
                                                          "n_samples": {"train": 100, "val": 60, "test": 60}}}))
    assert report.main(["--run", str(run), "--results-dir", str(tmp_path)]) == 0
    page = (run / "report.html").read_text()
    html5lib.HTMLParser(strict=True).parse(page)
    matrices = metrics["test"]["confusion_matrix"]
    for name in names:
        (tn, fp), (fn, tp) = matrices[name]
        assert f'<tr><th scope="row">{name}</th><td>{tn}</td><td>{fp}</td><td>{fn}</td><td>{tp}</td></tr>' in page
        assert shown(metrics["test"]["per_class"][name]["auc"]) in page
    assert page.count("Not run yet:") == 10 and "<img" not in page
    card = json.loads((run / "model_card.json").read_text())
    assert not any(c.startswith("Class imbalance") for c in card["caveats"])  # per-label prevalences differ


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    assert cli.run(report.main, ["--results-dir", str(tmp_path)]) == 2
    one_line_error(capsys, "no runs in")
    assert cli.run(report.main, ["--run", "0042", "--results-dir", str(tmp_path)]) == 2
    one_line_error(capsys, "no run named '0042'")
    broken = tmp_path / "0001_broken"
    broken.mkdir()
    (broken / "run.json").write_text("{not json")
    assert cli.run(report.main, ["--run", str(broken), "--results-dir", str(tmp_path)]) == 2
    one_line_error(capsys, "is not valid JSON")
    assert not (broken / "report.html").exists()
    assert cli.run(report.main, ["--max-width", "0"]) == 2
    one_line_error(capsys, "--max-width: expected a positive integer")


def test_report_py_records_its_files_and_prints_where_they_went(reported_run, tmp_path, capsys):
    run = copy_run(reported_run.path, tmp_path)
    for name in ("report.html", "model_card.md", "model_card.json"):
        (run / name).unlink()
    assert report.main(["--run", str(run), "--results-dir", str(tmp_path / "results")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert re.match(rf"{run.name}: report with \d+ figures, [\d.]+ [kM]B, built in [\d.]+s$", out[0])
    assert out[1:] == [f"  {run / name}" for name in ("report.html", "model_card.md", "model_card.json")]
    artifacts = {a["path"]: a["created_by"] for a in Run(run).info()["artifacts"]}
    assert all(artifacts[name] == "report.py" for name in ("report.html", "model_card.md", "model_card.json"))
    assert not [p for p in run.iterdir() if p.name.startswith(".") and p.name != ".run.json.lock"]  # no temporary


def test_builder_only_reads(reported_run, tmp_path):
    run = copy_run(reported_run.path, tmp_path)
    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in run.rglob("*")}
    build_run_report(run)
    assert {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in run.rglob("*")} == before


def test_layout_names_every_file_of_the_run_folder_it_reads(reported_run):
    layout = RunLayout(reported_run.path)
    for name in ("run_json", "metrics_json", "history_csv", "summary_csv", "training_curves_png",
                 "confusion_matrix_png", "sample_predictions_png"):
        assert getattr(layout, name).is_file(), name
    for name in ("inference_dir", "gradcam_dir", "uncertainty_dir"):
        assert getattr(layout, name).is_dir(), name
    assert layout.report_html.name == "report.html"


# --------------------------------------------------------------------------- figures

def test_embed_image_keeps_few_colours_exact_and_caps_the_width(tmp_path):
    import base64
    import io

    from PIL import Image

    pixels = (np.random.default_rng(0).integers(0, 5, (30, 2000, 3)) * 50).astype(np.uint8)
    Image.fromarray(pixels[:, :200]).save(tmp_path / "plot.png")
    small = embed_image(tmp_path / "plot.png")
    assert small.mime == "image/png" and (small.width, small.height) == (200, 30)
    decoded = Image.open(io.BytesIO(base64.b64decode(small.data_uri.split(",", 1)[1]))).convert("RGB")
    assert np.array_equal(np.asarray(decoded), pixels[:, :200])  # <= 256 colours: lossless
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    wide = embed_image(tmp_path / "wide.png", max_width=500)
    assert (wide.width, wide.height) == (500, 8)


def test_embed_image_sends_photographic_content_as_jpeg_and_keeps_transparency(tmp_path):
    from PIL import Image

    noise = np.random.default_rng(1).integers(0, 256, (300, 300, 3)).astype(np.uint8)
    Image.fromarray(noise).save(tmp_path / "photo.png")
    assert embed_image(tmp_path / "photo.png").mime == "image/jpeg"
    rgba = np.dstack([noise, np.full((300, 300), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "glass.png")
    assert embed_image(tmp_path / "glass.png").mime == "image/png"


def test_doctests():
    import doctest

    from medscope.report import build, layout, text
    from medscope.report import model_card as card_module

    for module in (build, layout, card_module, text):
        assert doctest.testmod(module).failed == 0, module.__name__
