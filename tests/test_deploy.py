"""medscope.export.export: the pieces of the export pipeline, on small real inputs.

The whole pipeline on real trained runs is covered by tests/test_quantize.py.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from sklearn.metrics import roc_auc_score

from medscope import data, tasks
from medscope.deploy import export
from medscope.errors import RunFailed, UsageError
from medscope.models import build_model


@pytest.fixture(scope="module")
def breast_test(medmnist_dir):
    return data.load_split(data.dataset_info("breastmnist"), medmnist_dir, "test")


@pytest.fixture(scope="module")
def small_cnn():
    torch.manual_seed(0)
    return build_model("cnn", in_channels=1, num_classes=2, spatial_dims=2, size=28).eval()


def test_pixel_input_is_exactly_the_training_normalization(small_cnn, breast_test):
    images = breast_test.images[:16]
    with torch.no_grad():
        expected = small_cnn(data.normalize(images))
        got = export.PixelInput(small_cnn)(images.float())
    assert torch.equal(got, expected)


def test_pixels_are_contiguous_float32_of_the_same_values():
    rgb_view = torch.arange(2 * 4 * 4 * 3, dtype=torch.uint8).reshape(2, 4, 4, 3).permute(0, 3, 1, 2)
    out = export.pixels(rgb_view)
    assert out.dtype == np.float32 and out.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(out, rgb_view.numpy().astype(np.float32))


def test_torchscript_fallback_is_reported_and_exact(small_cnn, breast_test, tmp_path, monkeypatch):
    real_export = torch.onnx.export

    def dynamo_broken(*args, dynamo=True, **kwargs):
        if dynamo:
            raise RuntimeError("simulated dynamo failure\nsecond line")
        return real_export(*args, dynamo=False, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", dynamo_broken)
    path = tmp_path / "m.onnx"
    exporter = export.export_onnx(small_cnn, breast_test.images[:2].float(), path)
    assert exporter == "torchscript (fallback: RuntimeError: simulated dynamo failure)"
    graph = export.check_onnx(path)
    assert graph["checker"] == "passed" and graph["input"]["shape"][0] == "batch"
    session = export.make_session(path, threads=1)
    images = breast_test.images[:5]  # a batch size the export never saw
    onnx_logits = export.run_session(session, images, batch_size=5)
    with torch.no_grad():
        torch_logits = small_cnn(data.normalize(images)).numpy()
    assert onnx_logits.shape == (5, 2)
    assert np.abs(onnx_logits - torch_logits).max() <= export.FP32_TOLERANCE


def test_checker_failure_is_a_run_failure(tmp_path):
    node = helper.make_node("Relu", ["missing"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), tmp_path / "bad.onnx")
    with pytest.raises(RunFailed, match="fails the ONNX checker"):
        export.check_onnx(tmp_path / "bad.onnx")


def test_compare_outputs_measures_the_worst_case():
    reference = np.array([[0.0, 1.0], [3.0, 0.0], [0.0, 0.5]], dtype=np.float32)
    close = reference + np.float32(5e-5)
    assert export.compare_outputs("binary-class", reference, close)["passed"]
    flipped = reference.copy()
    flipped[2] = [0.6, 0.5]  # third image changes its top class
    result = export.compare_outputs("binary-class", reference, flipped)
    assert result["passed"] is False
    assert result["max_abs_diff_logits"] == pytest.approx(0.6)
    assert result["argmax_agreement"] == pytest.approx(2 / 3)
    assert result["n_images"] == 3


def test_calibration_reader_feeds_every_image_once_as_float_pixels(breast_test):
    images = breast_test.images[:10]
    reader = export.calibration_reader(images, batch_size=4)
    assert len(reader) == 3
    fed = []
    while (batch := reader.get_next()) is not None:
        fed.append(batch[export.INPUT_NAME])
    assert [b.shape[0] for b in fed] == [4, 4, 2] and all(b.dtype == np.float32 for b in fed)
    np.testing.assert_array_equal(np.concatenate(fed), images.numpy().astype(np.float32))
    reader.rewind()
    assert reader.get_next()[export.INPUT_NAME].shape[0] == 4


def _graph(nodes):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, None)
    y = helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)
    return helper.make_graph(nodes, "g", [x], [y])


def test_runtime_op_counts_split_integer_float_and_plumbing():
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
        helper.make_node("QLinearConv", ["xq", "s", "z", "w", "s", "z", "s", "z"], ["cq"]),
        helper.make_node("MaxPool", ["cq"], ["pq"]),  # pools quantized values
        helper.make_node("DequantizeLinear", ["pq", "s", "z"], ["p"]),
        helper.make_node("ReduceMean", ["p"], ["m"]),
        helper.make_node("DynamicQuantizeLinear", ["m"], ["mq", "ms", "mz"]),
        helper.make_node("MatMulInteger", ["mq", "w2", "mz"], ["i32"]),
        helper.make_node("Cast", ["i32"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["ms", "ws"], ["scale"]),  # the float scale output, not quantized data
        helper.make_node("Mul", ["f", "scale"], ["out"]),
    ]
    counts = export.runtime_op_counts(_graph(nodes))
    assert counts["int8"] == {"MatMulInteger": 1, "MaxPool": 1, "QLinearConv": 1}
    assert counts["fp32"] == {"Mul": 2, "ReduceMean": 1}
    assert counts["plumbing"] == {"Cast": 1, "DequantizeLinear": 1, "DynamicQuantizeLinear": 1, "QuantizeLinear": 1}


def test_qdq_coverage_names_the_operators_left_in_float():
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
        helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["wd"]),
        helper.make_node("Conv", ["xd", "wd"], ["c"]),
        helper.make_node("ReduceMean", ["c"], ["m"]),
        helper.make_node("Reshape", ["m", "shape"], ["r"]),
    ]
    assert export.qdq_coverage(_graph(nodes)) == {"qdq_wrapped": {"Conv": 1},
                                                  "not_qdq_wrapped": {"ReduceMean": 1, "Reshape": 1}}


def test_latency_stats_are_order_statistics_in_milliseconds():
    rng = np.random.default_rng(0)
    seconds = rng.gamma(2.0, 0.01, size=201)
    stats = export.latency_stats(seconds)
    ordered = np.sort(seconds) * 1e3
    # with 201 samples the 50th, 95th and 99th percentiles fall exactly on ranks 100, 190 and 198
    assert stats["p50_ms"] == pytest.approx(ordered[100])
    assert stats["p95_ms"] == pytest.approx(ordered[190])
    assert stats["p99_ms"] == pytest.approx(ordered[198])
    assert stats["mean_ms"] == pytest.approx(seconds.mean() * 1e3)
    assert stats["min_ms"] == pytest.approx(ordered[0]) and stats["runs"] == 201


def test_time_calls_warms_up_then_alternates_blocks():
    log = []
    calls = {name: (lambda name=name: log.append(name)) for name in "ab"}
    times = export.time_calls(calls, runs=5, warmup=2, rounds=3)
    assert log[:4] == ["a", "a", "b", "b"]  # warm-up
    # blocks of 2, 2, 1 calls; the order of the models rotates every round
    assert "".join(log[4:]) == "aabb" + "bbaa" + "ab"
    assert {k: len(v) for k, v in times.items()} == {"a": 5, "b": 5}
    assert all(t >= 0 for v in times.values() for t in v)


def test_benchmark_reports_batch1_latency_and_throughput():
    predictors = {"identity": lambda x: x, "sum": lambda x: x.sum()}
    single, batch = np.zeros((1, 1, 4, 4), np.float32), np.zeros((8, 1, 4, 4), np.float32)
    result = export.benchmark(predictors, single, batch, runs=6, warmup=1, throughput_runs=3)
    for name in predictors:
        assert result[name]["batch1"]["runs"] == 6 and result[name]["batch8"]["runs"] == 3
        expected = 8 / (result[name]["batch8"]["p50_ms"] / 1e3)
        assert result[name]["batch8"]["images_per_s"] == pytest.approx(expected)


def test_subset_indices_are_seeded_sorted_and_unique():
    a, b = export.subset_indices(100, 10, seed=3), export.subset_indices(100, 10, seed=3)
    assert torch.equal(a, b) and len(set(a.tolist())) == 10 and a.tolist() == sorted(a.tolist())
    assert not torch.equal(a, export.subset_indices(100, 10, seed=4))
    assert torch.equal(export.subset_indices(7, None, 0), torch.arange(7))
    assert torch.equal(export.subset_indices(7, 50, 0), torch.arange(7))


def test_evaluate_scores_agrees_with_sklearn():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, size=(60, 1))
    p1 = np.clip(labels[:, 0] * 0.3 + rng.random(60) * 0.7, 0, 1)
    model_scores = np.stack([1 - p1, p1], axis=1)
    reference = model_scores.copy()
    reference[:6, 1] = 1 - reference[:6, 1]
    reference[:, 0] = 1 - reference[:, 1]
    result = export.evaluate_scores("binary-class", labels, model_scores, reference)
    assert result["auc"] == pytest.approx(roc_auc_score(labels[:, 0], p1))
    assert result["acc"] == pytest.approx(((p1 > 0.5) == labels[:, 0]).mean())
    expected_agreement = ((model_scores[:, 1] > 0.5) == (reference[:, 1] > 0.5)).mean()
    assert result["agreement"] == pytest.approx(expected_agreement)


def _load_script(info: data.DatasetInfo) -> dict:
    namespace = {"__name__": "predict_onnx", "__file__": "predict_onnx.py"}
    exec(compile(export.render_predict_script(info), "predict_onnx.py", "exec"), namespace)
    return namespace


def test_predict_script_carries_the_dataset_constants():
    info = data.dataset_info("pathmnist", 28)
    script = export.render_predict_script(info, model_file="model_int8_static.onnx")
    ns = _load_script(info)
    assert "MODEL_FILE = 'model_int8_static.onnx'" in script
    assert ns["CLASS_NAMES"] == info.class_names and ns["TASK"] == info.task
    assert (ns["IN_CHANNELS"], ns["SPATIAL_DIMS"], ns["SIZE"]) == (3, 2, 28)


def test_predict_script_accepts_the_usual_layouts():
    ns = _load_script(data.dataset_info("pathmnist", 28))
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, size=(28, 28, 3), dtype=np.uint8)
    chw = np.moveaxis(hwc, -1, 0)
    for layout in (hwc, chw, hwc[None], chw[None]):
        batch = ns["as_batch"](layout)
        assert batch.shape == (1, 3, 28, 28) and batch.dtype == np.float32
        np.testing.assert_array_equal(batch[0], chw)
    with pytest.raises(ns["InputError"], match="not a 3-channel 28 x 28 image"):
        ns["as_batch"](np.zeros((28, 28), np.uint8))
    with pytest.raises(ns["InputError"], match="expected raw pixels in 0..255"):
        ns["as_batch"](np.full((3, 28, 28), 300.0))


def test_predict_script_scores_like_medscope_metrics():
    logits = np.array([[2.0, -1.0, 0.5], [0.0, 0.0, 3.0]])
    for flag in ("pathmnist", "chestmnist"):
        info = data.dataset_info(flag, 28)
        ns = _load_script(info)
        expected = export.float64_scores(info.task, logits.astype(np.float32))
        np.testing.assert_allclose(ns["scores"](logits), expected, rtol=1e-6)
    multilabel = _load_script(data.dataset_info("chestmnist", 28))
    assert multilabel["describe"](np.array([0.9] + [0.1] * 13)) == "atelectasis (0.900)"


def test_cpu_device_benchmarks_no_gpu():
    assert export.cuda_device("cpu")[0] is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_asking_for_cuda_without_one_is_bad_input():
    with pytest.raises(UsageError, match="CUDA is not available"):
        export.cuda_device("cuda")


@pytest.mark.parametrize("task", tasks.NAMES)
def test_scores_are_the_tasks_in_float64(task):
    logits = np.array([[30.0, -12.0, 0.5], [0.0, 1e-8, 3.0]], dtype=np.float32)
    got = export.float64_scores(task, logits)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, tasks.task(task).scores(torch.from_numpy(logits).double()).numpy())
    np.testing.assert_allclose(got, tasks.task(task).scores(logits), rtol=1e-6)
    # two logits 1e-8 apart: their float32 scores tie, their float64 scores keep the order AUC ranks by
    in_float32 = tasks.task(task).scores(logits)
    assert in_float32[1, 0] == in_float32[1, 1] and got[1, 0] < got[1, 1]


def test_predict_onnx_applies_the_calibrated_temperature(tmp_path):
    """The generated script divides the logits by explain.py calibrate's T before the softmax."""
    import importlib.util
    import json

    from medscope import data
    from medscope.deploy import export

    script = tmp_path / "predict_onnx.py"
    script.write_text(export.render_predict_script(data.dataset_info("breastmnist")))
    spec = importlib.util.spec_from_file_location("predict_onnx_test", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    logits = np.array([[2.0, -1.0], [0.5, 0.25]])
    calibrated = module.scores(logits, np.float64(2.0))
    expected = np.exp(logits / 2) / np.exp(logits / 2).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(calibrated, expected, rtol=1e-12)
    assert (calibrated.argmax(1) == module.scores(logits).argmax(1)).all()  # T never changes the answer
    (tmp_path / "temperature.json").write_text(json.dumps({"task": "binary-class", "temperature": 1.7}))
    assert module.load_temperature(tmp_path / "temperature.json") == 1.7
    (tmp_path / "temperature.json").write_text(json.dumps({"task": "multi-class", "temperature": 1.7}))
    with pytest.raises(module.InputError, match="not binary-class"):
        module.load_temperature(tmp_path / "temperature.json")
    assert module.load_temperature(tmp_path / "missing.json") is None
