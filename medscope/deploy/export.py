"""Shipping a trained model: ONNX export with verification, INT8 quantization, honest benchmarks.

:func:`export_run` is what ``quantize.py`` calls. For one run folder it

1. exports the model to ONNX with a dynamic batch axis, with the dynamo-based
   ``torch.onnx.export`` (falling back to the TorchScript exporter, and saying
   so, if that fails), checks it with the ONNX checker and verifies it against
   PyTorch with ONNX Runtime on the test split;
2. quantizes it to INT8 with ONNX Runtime: static (QDQ, per-channel weights,
   calibrated on training images) and dynamic;
3. evaluates all four forms (PyTorch FP32, ONNX FP32, INT8 static, INT8
   dynamic) on the test split, times them, and writes ``export/`` with the ONNX
   files, ``export_report.json``, ``export_report.md``, ``predict_onnx.py`` and
   ``example_input.npy`` (a test image to try it on).

Input contract of every exported graph: ``image``, float32 ``(N, C, *spatial)``
holding *raw pixel values in 0..255*. The training normalization
(``x * 2/255 - 1``, :func:`medscope.data.normalize`) is baked into the graph,
so a consumer only casts its uint8 pixels to float32. The output ``logits``
is ``(N, K)``; scores are its softmax (sigmoid for multi-label tasks).
"""
from __future__ import annotations

import contextlib
import copy
import io
import math
import os
import re
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from medscope import atomic, checkpoints, data, metrics, tasks
from medscope.activations import collect_outputs
from medscope.devices import resolve_device
from medscope.errors import RunFailed, UsageError
from medscope.report_text import markdown_code, markdown_text
from medscope.runs import Run, data_dir_for, now_iso
from medscope.train.loop import memory_format_for

INPUT_NAME, OUTPUT_NAME = "image", "logits"
PIXEL_SCALE, PIXEL_OFFSET = 2.0 / 255.0, -1.0  # medscope.data.normalize
FP32_TOLERANCE = 1e-4  # max |logit difference| allowed between ONNX FP32 and PyTorch
FALLBACK_OPSET = 17

FP32_FILE, STATIC_FILE, DYNAMIC_FILE = "model_fp32.onnx", "model_int8_static.onnx", "model_int8_dynamic.onnx"
REPORT_JSON, REPORT_MD, PREDICT_SCRIPT, EXAMPLE_INPUT = ("export_report.json", "export_report.md",
                                                         "predict_onnx.py", "example_input.npy")
CREATED_BY = "quantize.py"  # the script run.json names as the writer of export/
WORK_PREFIX = ".export."  # the temporary folder inside the run where everything is built before it moves to export/
# (named .export.<pid>.<random>.tmp, so a later run removes one that a killed process left)

TEMPERATURE_FILE = "temperature.json"  # explain.py calibrate's fitted temperature
MODELS = ("pytorch_fp32", "onnx_fp32", "onnx_int8_static", "onnx_int8_dynamic")
MODEL_LABELS = {"pytorch_fp32": "PyTorch FP32 (eager)", "onnx_fp32": "ONNX FP32",
                "onnx_int8_static": "ONNX INT8 static", "onnx_int8_dynamic": "ONNX INT8 dynamic"}
MODEL_FILES = {"onnx_fp32": FP32_FILE, "onnx_int8_static": STATIC_FILE, "onnx_int8_dynamic": DYNAMIC_FILE}

# Operators that compute on integers in an ONNX Runtime CPU graph.
INT8_KERNELS = frozenset({"QGemm", "ConvInteger", "MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat",
                          "QAttention", "DynamicQuantizeLSTM"})
# Operators that only move between number formats.
QUANT_PLUMBING = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "Cast"})

TARGETS = {"auc_drop": 0.01, "size_ratio": 3.5}


# ------------------------------------------------------------------ export

class PixelInput(nn.Module):
    """A classifier that takes raw pixels (float32, 0..255) and normalizes them itself.

    ``forward(x) = model(x * 2/255 - 1)``: the same float32 arithmetic as
    :func:`medscope.data.normalize`, so the exported graph needs no
    preprocessing beyond a cast of the uint8 pixels to float32.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixels * PIXEL_SCALE + PIXEL_OFFSET)


def pixels(images_uint8) -> np.ndarray:
    """uint8 images (tensor or array) -> the C-contiguous float32 array the graphs take."""
    array = images_uint8.numpy() if isinstance(images_uint8, torch.Tensor) else images_uint8
    return np.ascontiguousarray(array, dtype=np.float32)


def _first_line(exc: BaseException, limit: int = 200) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"{type(exc).__name__}: {text}"[:limit]


def export_onnx(model: nn.Module, example: torch.Tensor, path) -> str:
    """Export ``PixelInput(model)`` to ``path`` (one file, dynamic batch axis).

    Parameters
    ----------
    model : a CPU, contiguous-format model in eval mode.
    example : float32 pixels (0..255), shape ``(B, C, *spatial)`` with B >= 2
        (a batch of 1 would let the tracer specialize the batch axis).
    path : the ``.onnx`` file to write.

    Returns
    -------
    str : ``"dynamo"``, or ``"torchscript (fallback: <reason>)"`` when the
    dynamo-based exporter failed and the TorchScript exporter was used.
    """
    wrapper = PixelInput(model).eval()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, (example,), str(path), dynamo=True, external_data=False, verbose=False,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_shapes=({0: torch.export.Dim("batch")},))
        return "dynamo"
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types; the reason is reported
        reason = _first_line(exc)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # the TorchScript exporter warns that it is deprecated
        torch.onnx.export(wrapper, (example,), str(path), dynamo=False, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], opset_version=FALLBACK_OPSET,
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    return f"torchscript (fallback: {reason})"


def check_onnx(path) -> dict:
    """Run the ONNX checker (with full shape inference) and describe the graph's interface."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise RunFailed(f"{path} fails the ONNX checker: {_first_line(exc)}") from None
    model = onnx.load(str(path), load_external_data=False)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)

    def dims(value_info):
        return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]

    return {"checker": "passed", "opset": opset, "ir_version": model.ir_version,
            "input": {"name": model.graph.input[0].name, "shape": dims(model.graph.input[0])},
            "output": {"name": model.graph.output[0].name, "shape": dims(model.graph.output[0])}}


# ------------------------------------------------------------------ ONNX Runtime

def make_session(path, *, threads: int, providers=("CPUExecutionProvider",), optimized_path=None):
    """An ONNX Runtime session with ``threads`` intra-op threads and sequential execution.

    With ``optimized_path`` the session saves its graph after ONNX Runtime's
    platform-independent optimizations (QDQ fusion included): the graph that
    actually runs.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only
    if optimized_path is not None:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(optimized_path)
    return ort.InferenceSession(str(path), options, providers=list(providers))


def run_session(session, images_uint8: torch.Tensor, batch_size: int) -> np.ndarray:
    """Logits of a whole uint8 image tensor, batch by batch."""
    out = [session.run([OUTPUT_NAME], {INPUT_NAME: pixels(images_uint8[start:start + batch_size])})[0]
           for start in range(0, len(images_uint8), batch_size)]
    return np.concatenate(out).astype(np.float32)


def float64_scores(task: str, logits: np.ndarray) -> np.ndarray:
    """:meth:`medscope.tasks.Task.scores` of ``logits`` computed in float64.

    AUC ranks the scores: in float32, scores of confident predictions round to
    ties, and the AUC would then depend on the logits' last bits.
    """
    return tasks.task(task).scores(torch.from_numpy(np.asarray(logits, dtype=np.float64))).numpy()


def compare_outputs(task: str, reference_logits: np.ndarray, logits: np.ndarray,
                    tolerance: float = FP32_TOLERANCE) -> dict:
    """How far ``logits`` are from ``reference_logits`` (same images).

    ``max_abs_diff_logits`` = max over images and classes of ``|l - l_ref|``;
    ``max_abs_diff_scores`` the same on softmax/sigmoid scores;
    ``argmax_agreement`` = fraction of images with the same top logit.

    >>> r = compare_outputs("binary-class", np.array([[0., 1.], [2., 0.]]), np.array([[0., 1.00002], [2., 0.]]))
    >>> r["passed"], round(r["max_abs_diff_logits"], 5), r["argmax_agreement"]
    (True, 2e-05, 1.0)
    """
    reference, got = np.asarray(reference_logits, np.float32), np.asarray(logits, np.float32)
    diff = float(np.abs(reference - got).max()) if reference.size else 0.0
    score_diff = (float(np.abs(float64_scores(task, reference) - float64_scores(task, got)).max())
                  if reference.size else 0.0)
    return {"n_images": int(len(reference)), "max_abs_diff_logits": diff, "max_abs_diff_scores": score_diff,
            "argmax_agreement": float((reference.argmax(1) == got.argmax(1)).mean()) if reference.size else 1.0,
            "tolerance": tolerance, "passed": bool(diff <= tolerance)}


# ------------------------------------------------------------------ quantization

def _quant_type(name: str):
    from onnxruntime.quantization import QuantType

    return {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}[name]


def calibration_reader(images_uint8: torch.Tensor, batch_size: int):
    """A ``CalibrationDataReader`` that feeds ``images_uint8`` as float32 pixels, batch by batch."""
    from onnxruntime.quantization import CalibrationDataReader

    class PixelReader(CalibrationDataReader):
        def __init__(self):
            self.rewind()

        def rewind(self):
            self._starts = iter(range(0, len(images_uint8), batch_size))

        def get_next(self):
            start = next(self._starts, None)
            return None if start is None else {INPUT_NAME: pixels(images_uint8[start:start + batch_size])}

        def __len__(self):
            return math.ceil(len(images_uint8) / batch_size)

    return PixelReader()


def preprocess_for_quantization(fp32_path, out_path) -> Path:
    """ONNX Runtime's recommended pre-processing: symbolic shape inference and graph optimization."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(fp32_path), str(out_path))
    return Path(out_path)


def quantize_static_int8(prepared_path, out_path, calibration_images: torch.Tensor, *,
                         activation_type: str = "uint8", reduce_range: bool = True, batch_size: int = 32) -> dict:
    """Post-training static INT8: QDQ format, per-channel int8 weights, MinMax calibration.

    Activations are uint8 by default (the U8S8 pairing ONNX Runtime's x86 CPU
    kernels are built for: every Conv, Add and Gemm fuses into an integer
    kernel); with int8 activations ONNX Runtime leaves part of the convolutions
    as DequantizeLinear -> float Conv. ``reduce_range`` keeps weights to 7 bits,
    which avoids the saturation of U8S8 products on AVX2 CPUs without VNNI.
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    reader = calibration_reader(calibration_images, batch_size)
    quantize_static(str(prepared_path), str(out_path), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                    reduce_range=reduce_range, activation_type=_quant_type(activation_type),
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
    return {"method": "static", "format": "QDQ", "per_channel": True, "weight_type": "int8",
            "activation_type": activation_type, "reduce_range": reduce_range, "calibration": "MinMax",
            "calibration_images": int(len(calibration_images)), "calibration_batch_size": batch_size}


def quantize_dynamic_int8(prepared_path, out_path, *, weight_type: str = "uint8") -> dict:
    """Post-training dynamic INT8: weights quantized offline, activations per call.

    ONNX Runtime turns every Conv into ConvInteger and every MatMul/Gemm into an
    integer MatMul; the rescaling, bias, ReLU and residual additions stay FP32.
    uint8 weights are the default because ONNX Runtime's ConvInteger CPU kernel
    is far slower with int8 weights (measured in bench/quantize_speed.py).
    """
    from onnxruntime.quantization import quantize_dynamic

    quantize_dynamic(str(prepared_path), str(out_path), per_channel=True, weight_type=_quant_type(weight_type))
    return {"method": "dynamic", "per_channel": True, "weight_type": weight_type, "activation_type": "uint8"}


def _int8_tensors(graph) -> set[str]:
    """Names of the tensors that hold quantized values in an ONNX Runtime graph."""
    names = set()
    for node in graph.node:
        if node.op_type == "QuantizeLinear" or node.op_type.startswith("QLinear"):
            names.add(node.output[0])
        elif node.op_type == "DynamicQuantizeLinear":
            names.add(node.output[0])  # outputs 1 and 2 are its float scale and zero point
        elif node.op_type == "QGemm" and len(node.input) > 7 and node.input[7]:
            names.add(node.output[0])  # with y_scale QGemm's output is quantized, else float
    return names


def runtime_op_counts(graph) -> dict:
    """Operator counts of an ONNX Runtime-optimized graph, split by the number format they compute in.

    ``int8``: integer kernels (``QLinear*``, ``QGemm``, ``ConvInteger``, ...) and
    operators whose first input is already quantized (e.g. a MaxPool or Reshape
    after a QLinearConv); ``plumbing``: (de)quantization and casts; ``fp32``: the rest.
    """
    quantized = _int8_tensors(graph)
    counts = {"int8": Counter(), "fp32": Counter(), "plumbing": Counter()}
    for node in graph.node:
        op = node.op_type
        if op in QUANT_PLUMBING:
            kind = "plumbing"
        elif op.startswith("QLinear") or op in INT8_KERNELS or (node.input and node.input[0] in quantized):
            kind = "int8"
        else:
            kind = "fp32"
        counts[kind][op] += 1
    return {k: dict(sorted(v.items())) for k, v in counts.items()}


def qdq_coverage(graph) -> dict:
    """Compute operators of a QDQ graph that take a DequantizeLinear input ("wrapped") and those that do not."""
    producers = {out: node for node in graph.node for out in node.output}
    wrapped, bare = Counter(), Counter()
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        fed = any(getattr(producers.get(i), "op_type", None) == "DequantizeLinear" for i in node.input)
        (wrapped if fed else bare)[node.op_type] += 1
    return {"qdq_wrapped": dict(sorted(wrapped.items())), "not_qdq_wrapped": dict(sorted(bare.items()))}


def graph_ops(path, work_dir, *, threads: int) -> dict:
    """Operator counts in the file and in the graph ONNX Runtime's CPU provider actually runs."""
    import onnx

    optimized = Path(work_dir) / f"optimized_{Path(path).name}"
    make_session(path, threads=threads, optimized_path=optimized)
    file_graph = onnx.load(str(path)).graph
    result = {"file": dict(sorted(Counter(n.op_type for n in file_graph.node).items())),
              "runtime": runtime_op_counts(onnx.load(str(optimized)).graph)}
    if any(n.op_type == "DequantizeLinear" for n in file_graph.node):
        result.update(qdq_coverage(file_graph))
    return result


# ------------------------------------------------------------------ timing

def latency_stats(seconds) -> dict:
    """Median, 95th and 99th percentile and mean of per-call wall times, in milliseconds.

    Percentiles interpolate linearly between order statistics (numpy's default).

    >>> s = latency_stats([0.004, 0.001, 0.003, 0.002])
    >>> s["p50_ms"], s["runs"]
    (2.5, 4)
    """
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean()), "min_ms": float(ms.min()),
            "runs": int(ms.size)}


def time_calls(calls: dict[str, Callable[[], object]], *, runs: int, warmup: int, rounds: int = 5) -> dict:
    """Per-call wall times (s) of each zero-argument callable.

    Every callable first makes ``warmup`` untimed calls. The ``runs`` timed
    calls are split into ``rounds`` blocks and the callables take turns block
    by block (in a rotating order): a change in machine load during the
    measurement hits all of them alike, while consecutive calls of one
    callable keep its caches warm, as in a real deployment.
    """
    for call in calls.values():
        for _ in range(warmup):
            call()
    rounds = max(1, min(rounds, runs))
    sizes = [runs // rounds + (1 if r < runs % rounds else 0) for r in range(rounds)]
    names = list(calls)
    times = {name: [] for name in names}
    for r, size in enumerate(sizes):
        for name in names[r % len(names):] + names[:r % len(names)]:
            call = calls[name]
            for _ in range(size):
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
    return times


@contextlib.contextmanager
def torch_threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def benchmark(predictors: dict[str, Callable[[np.ndarray], object]], single: np.ndarray, batch: np.ndarray, *,
              runs: int, warmup: int, throughput_runs: int) -> dict:
    """Batch-1 latency and batch-N throughput of each predictor (same inputs for all)."""
    one = time_calls({k: (lambda f=f: f(single)) for k, f in predictors.items()}, runs=runs, warmup=warmup)
    many = time_calls({k: (lambda f=f: f(batch)) for k, f in predictors.items()}, runs=throughput_runs,
                      warmup=min(2, warmup) or 1)
    result = {}
    for name in predictors:
        stats = latency_stats(many[name])
        result[name] = {"batch1": latency_stats(one[name]),
                        f"batch{len(batch)}": stats | {"images_per_s": len(batch) / (stats["p50_ms"] / 1e3)}}
    return result


def pytorch_predictor(model: nn.Module, device: torch.device, memory_format=None) -> Callable[[np.ndarray], object]:
    """PyTorch eager on a copy of ``model`` (in ``memory_format``): pixels in, logits on the host out."""
    wrapper = PixelInput(copy.deepcopy(model)).to(device).eval()
    if memory_format is not None:
        wrapper = wrapper.to(memory_format=memory_format)

    def predict(x: np.ndarray):
        with torch.inference_mode():
            return wrapper(torch.from_numpy(x).to(device)).cpu()  # .cpu() waits for a GPU
    return predict


def onnx_predictor(session) -> Callable[[np.ndarray], object]:
    return lambda x: session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]


def cuda_providers(device: torch.device):
    return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]


def cuda_device(spec: str) -> tuple[torch.device | None, str]:
    """The GPU to benchmark on (or None) and why: ``--device cpu`` / ``auto`` / ``cuda[:N]``."""
    import onnxruntime as ort

    device = resolve_device(spec)  # refuses cuda where there is none
    if device.type != "cuda":
        return None, "CPU only (no GPU, or --device cpu)"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        if (spec or "auto").lower() != "auto":
            raise UsageError(f"--device {spec}: this onnxruntime has no CUDA execution provider "
                             "(install onnxruntime-gpu); use --device cpu")
        return None, "a GPU is present but this onnxruntime has no CUDA execution provider (onnxruntime-gpu)"
    return device, f"CUDA execution provider on {torch.cuda.get_device_name(device)}"


# ------------------------------------------------------------------ the whole export

@dataclass
class ExportOptions:
    checkpoint: str = "best"
    calib: int = 256
    runs: int = 300
    warmup: int = 20
    throughput_runs: int = 10
    batch_size: int = 64
    threads: int = 0  # 0: every CPU this process may use
    activation_type: str = "uint8"
    dynamic_weight_type: str = "uint8"
    reduce_range: bool = True
    test_subset: int | None = None
    seed: int = 0
    device: str = "auto"


def subset_indices(n: int, k: int | None, seed: int) -> torch.Tensor:
    """Sorted indices of a seeded random ``k``-subset of ``range(n)`` (all of them if ``k`` is None or >= n)."""
    if k is None or k >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k].sort().values


def evaluate_scores(task: str, labels: np.ndarray, model_scores: np.ndarray, reference_scores: np.ndarray) -> dict:
    """AUC and ACC (medscope.metrics, as medmnist.Evaluator), agreement with the reference predictions."""
    kind = tasks.task(task)
    pred, ref = kind.predictions(model_scores), kind.predictions(reference_scores)
    return {"auc": metrics.auc_score(task, labels, model_scores), "acc": metrics.acc_score(task, labels, model_scores),
            "agreement": float((pred == ref).mean()),
            "max_abs_diff_scores": float(np.abs(model_scores - reference_scores).max())}


def _environment(threads: int) -> dict:
    import onnx
    import onnxruntime as ort
    import onnxscript

    from medscope.train.experiment import environment

    env = environment(torch.device("cpu"), None)
    env.update(onnx=onnx.__version__, onnxruntime=ort.__version__, onnxscript=onnxscript.__version__,
               ort_providers=ort.get_available_providers(), logical_cpus=os.cpu_count(),
               usable_cpus=default_threads(), threads=threads)
    return env


@dataclass
class _Job:
    """What every stage of :func:`export_run` works on."""

    run: Run
    info: data.DatasetInfo
    model: nn.Module  # CPU, contiguous, eval mode
    test: data.Split
    calib: data.Split
    work: Path
    threads: int
    options: ExportOptions

    @property
    def eval_batch(self) -> int:
        return 8 if self.info.is_3d else 64

    def file(self, name: str) -> Path:
        return self.work / MODEL_FILES[name]


def _export_and_verify(job: _Job, log) -> tuple[dict, dict, dict]:
    """Export FP32, check it, and compare it with PyTorch on the test images: (onnx info, verification, logits)."""
    example = torch.from_numpy(pixels(job.test.images[torch.arange(2) % len(job.test)]))
    exporter = export_onnx(job.model, example, job.file("onnx_fp32"))
    graph = check_onnx(job.file("onnx_fp32")) | {"exporter": exporter}
    log(f"exported {FP32_FILE} with the {exporter.split(' ')[0]} exporter (opset {graph['opset']}), "
        "ONNX checker passed")
    reference = collect_outputs(job.model, job.test, job.info.task, torch.device("cpu"), batch_size=job.eval_batch,
                                activations=False)
    session = make_session(job.file("onnx_fp32"), threads=job.threads)
    logits = {"pytorch_fp32": reference["logits"].numpy(),
              "onnx_fp32": run_session(session, job.test.images, job.eval_batch)}
    verification = compare_outputs(job.info.task, logits["pytorch_fp32"], logits["onnx_fp32"])
    if not verification["passed"]:
        raise RunFailed(f"ONNX FP32 differs from PyTorch by {verification['max_abs_diff_logits']:.3g} "
                        f"(> {FP32_TOLERANCE:g}) on the test split; nothing was written")
    log(f"verified on {len(job.test)} test images: max |logit diff| {verification['max_abs_diff_logits']:.2e}, "
        f"argmax agreement {verification['argmax_agreement']:.1%}")
    return graph, verification, logits


def _quantize(job: _Job, timings: dict, log) -> dict:
    start = time.perf_counter()
    prepared = preprocess_for_quantization(job.file("onnx_fp32"), job.work / "prepared.onnx")
    timings["preprocess_s"] = time.perf_counter() - start
    start = time.perf_counter()
    static = quantize_static_int8(prepared, job.file("onnx_int8_static"), job.calib.images,
                                  activation_type=job.options.activation_type, reduce_range=job.options.reduce_range,
                                  batch_size=8 if job.info.is_3d else 32)
    timings["quantize_static_s"] = time.perf_counter() - start
    start = time.perf_counter()
    dynamic = quantize_dynamic_int8(prepared, job.file("onnx_int8_dynamic"),
                                    weight_type=job.options.dynamic_weight_type)
    timings["quantize_dynamic_s"] = time.perf_counter() - start
    log(f"quantized: static INT8 calibrated on {len(job.calib)} training images, dynamic INT8")
    start = time.perf_counter()
    ops = {name: graph_ops(job.file(name), job.work, threads=job.threads) for name in MODEL_FILES}
    timings["graph_ops_s"] = time.perf_counter() - start
    return {"preprocess": "onnxruntime.quantization.shape_inference.quant_pre_process", "static": static,
            "dynamic": dynamic, "calibration_split": "train", "calibration_seed": job.options.seed, "ops": ops}


def _evaluate(job: _Job, logits: dict) -> dict:
    """AUC, ACC, agreement with PyTorch FP32 and file size of every form, on the same test images."""
    for name in ("onnx_int8_static", "onnx_int8_dynamic"):
        logits[name] = run_session(make_session(job.file(name), threads=job.threads), job.test.images,
                                   job.eval_batch)
    labels = job.test.labels.numpy()
    reference = float64_scores(job.info.task, logits["pytorch_fp32"])
    fp32_size = job.file("onnx_fp32").stat().st_size
    models = {}
    for name in MODELS:
        record = evaluate_scores(job.info.task, labels, float64_scores(job.info.task, logits[name]), reference)
        if name in MODEL_FILES:
            size = job.file(name).stat().st_size
            record.update(file=MODEL_FILES[name], size_bytes=size, size_mb=size / 1e6, size_ratio=fp32_size / size)
        else:
            record["file"] = job.run.layout.checkpoint(job.options.checkpoint).name
        record["auc_delta"] = record["auc"] - (models["pytorch_fp32"]["auc"] if models else record["auc"])
        models[name] = record
    return models


def _benchmark(job: _Job, gpu: torch.device | None, gpu_note: str) -> dict:
    """Batch-1 latency and throughput of the four forms on the CPU (and the GPU when there is one)."""
    options, spatial_dims = job.options, job.info.spatial_dims
    single = pixels(job.test.images[:1])
    batch = pixels(job.test.images[torch.arange(options.batch_size) % len(job.test)])
    result = {"threads": job.threads, "inter_op_threads": 1, "warmup": options.warmup, "runs": options.runs,
              "throughput_runs": options.throughput_runs, "batch_size": options.batch_size,
              "input": "real test images as float32 pixels; host memory in and out",
              "order": "interleaved in 5 rounds of consecutive calls per model",
              "load_average_before": list(os.getloadavg()), "gpu": gpu_note, "providers": {}}
    for device in [torch.device("cpu")] + ([gpu] if gpu is not None else []):
        providers = cuda_providers(device) if device.type == "cuda" else ["CPUExecutionProvider"]
        sessions = {name: make_session(job.file(name), threads=job.threads, providers=providers)
                    for name in MODEL_FILES}
        memory_format = memory_format_for(spatial_dims, device)  # PyTorch as trained: channels_last for 2D
        predictors = {"pytorch_fp32": pytorch_predictor(job.model, device, memory_format)}
        predictors.update({name: onnx_predictor(session) for name, session in sessions.items()})
        result[device.type] = benchmark(predictors, single, batch, runs=options.runs, warmup=options.warmup,
                                        throughput_runs=options.throughput_runs)
        result["providers"][device.type] = {name: s.get_providers() for name, s in sessions.items()} | {
            "pytorch_fp32": [f"PyTorch eager ({'channels_last' if memory_format else 'contiguous'})"]}
    result["load_average_after"] = list(os.getloadavg())
    return result


@dataclass
class Exported:
    """What :func:`export_run` wrote: the report (``export_report.json``) and every file of ``export/``."""

    report: dict
    files: list[Path]


def export_run(run: Run, data_dir, options: ExportOptions, log: Callable[[str], None] = lambda line: None) -> Exported:
    """Export, verify, quantize, evaluate and benchmark one run; write ``<run>/export/``.

    Bad input (no run, no weights, no data) raises UsageError before anything
    is written; everything is built in a temporary folder inside the run, and
    ``export/`` is replaced as a whole only when all of it succeeded
    (:meth:`medscope.runs.Run.staged_folder`, which also makes run.json record
    exactly its files). ``log`` receives one line per finished stage.
    """
    info_json = run.info()
    model, checkpoint = checkpoints.load_run_model(run, options.checkpoint, "cpu")
    model = model.to(memory_format=torch.contiguous_format).eval()
    cfg, spec = checkpoint.get("config", {}), checkpoint["spec"]
    info = data.dataset_info(cfg.get("dataset") or info_json["dataset"]["flag"], int(spec["size"]))
    threads = options.threads or default_threads()
    gpu, gpu_note = cuda_device(options.device)
    if info_json.get("status") not in (None, "completed"):
        log(f"note: {run.name} has status {info_json.get('status')!r}; exporting its {options.checkpoint} weights")

    folder = data_dir_for(info.file_name, data_dir, cfg.get("data_dir"))
    test = data.load_split(info, folder, "test", check_md5=not cfg.get("skip_md5"))
    n_split = len(test)
    test_index = subset_indices(n_split, options.test_subset, options.seed)
    test = data.Split(test.images[test_index], test.labels[test_index])
    calib = data.subset(data.load_split(info, folder, "train", check_md5=False), options.calib, options.seed)

    timings = {}
    with tempfile.TemporaryDirectory(dir=run.path, prefix=f"{WORK_PREFIX}{os.getpid()}.",
                                     suffix=atomic.TMP_SUFFIX) as tmp, torch_threads(threads):
        job = _Job(run, info, model, test, calib, Path(tmp), threads, options)
        start = time.perf_counter()
        graph, verification, logits = _export_and_verify(job, log)
        timings["export_and_verify_s"] = time.perf_counter() - start
        quantization = _quantize(job, timings, log)
        start = time.perf_counter()
        models = _evaluate(job, logits)
        timings["evaluate_s"] = time.perf_counter() - start
        start = time.perf_counter()
        latency = _benchmark(job, gpu, gpu_note)
        timings["benchmark_s"] = time.perf_counter() - start

        report = {
            "run": run.name, "created": now_iso(), "checkpoint": options.checkpoint,
            "options": asdict(options) | {"threads": threads},
            "dataset": {"flag": info.flag, "size": info.size, "task": info.task, "class_names": info.class_names,
                        "n_channels": info.n_channels, "spatial_dims": info.spatial_dims},
            "model": spec, "training_test_auc": (info_json.get("metrics") or {}).get("test_auc"),
            "exporter": graph.pop("exporter"), "torch": torch.__version__,
            "onnx": graph | {
                "input": graph["input"] | {"dtype": "float32", "range": [0, 255],
                                           "layout": "NCDHW" if info.is_3d else "NCHW"},
                "normalization": "baked in: the graph computes x * 2/255 - 1 (medscope.data.normalize); "
                                 "feed raw pixels 0..255 as float32",
                "scores": "sigmoid" if tasks.task(info.task).is_multilabel else "softmax"},
            "verification": verification,
            "quantization": quantization,
            "test": {"split": "test", "n_images": len(test), "n_split": n_split, "full_split": len(test) == n_split,
                     "eval_batch_size": job.eval_batch,
                     "indices": None if len(test) == n_split else test_index.tolist()},
            "models": models,
            "latency": latency,
            "timings": timings, "environment": _environment(threads),
        }
        report["targets"] = check_targets(report)
        with run.staged_folder(run.layout.export_dir, created_by=CREATED_BY) as staged:
            _publish(job.work, staged.path, report, info, test, run.layout.calibration_dir / TEMPERATURE_FILE)
    return Exported(report, staged.files)


# ------------------------------------------------------------------ targets and report

def check_targets(report: dict) -> dict:
    """The export targets for a 28 px ResNet-18 (:data:`TARGETS`), checked on this run (and explained where missed)."""
    spec, models = report["model"], report["models"]
    cpu = report["latency"]["cpu"]
    fp32, static = models["onnx_fp32"], models["onnx_int8_static"]
    auc_change = static["auc"] - fp32["auc"]
    p50_fp32, p50_static = cpu["onnx_fp32"]["batch1"]["p50_ms"], cpu["onnx_int8_static"]["batch1"]["p50_ms"]
    result = {
        "applies_to": "28 px 2D ResNet-18",
        "applicable": spec["name"] == "resnet18" and spec["spatial_dims"] == 2 and spec["size"] == 28,
        "auc": {"target": f"|AUC(INT8 static) - AUC(FP32)| <= {TARGETS['auc_drop']}", "value": auc_change,
                "met": bool(abs(auc_change) <= TARGETS["auc_drop"]) if math.isfinite(auc_change) else None},
        "size": {"target": f"FP32 file / INT8 static file >= {TARGETS['size_ratio']}", "value": static["size_ratio"],
                 "met": bool(static["size_ratio"] >= TARGETS["size_ratio"])},
        "latency": {"target": "INT8 static batch-1 p50 < ONNX FP32 batch-1 p50 (CPU)", "value_ms": p50_static,
                    "fp32_ms": p50_fp32, "met": bool(p50_static < p50_fp32)},
    }
    fp32_ops = report["quantization"]["ops"]["onnx_int8_static"]["runtime"]["fp32"]
    left = ", ".join(f"{op} x{n}" for op, n in fp32_ops.items()) or "none"
    notes = []
    if result["auc"]["met"] is False:
        notes.append(f"AUC moved by {auc_change:+.4f} (prediction agreement with FP32 {static['agreement']:.1%}); "
                     f"calibration used {report['quantization']['static']['calibration_images']} training images "
                     "(--calib sets how many)")
    if result["auc"]["met"] is None:
        notes.append("AUC is undefined on this test set (a single class present)")
    if not result["size"]["met"]:
        notes.append(f"the INT8 file is only {static['size_ratio']:.2f}x smaller: operators left in FP32 ({left}) "
                     "keep their weights in float")
    if not result["latency"]["met"]:
        load = report["latency"]["load_average_before"][0]
        notes.append(f"INT8 static p50 {p50_static:.2f} ms is not below FP32 {p50_fp32:.2f} ms; operators that "
                     f"still run in FP32: {left}; quantize/dequantize steps add per-call work that a small input "
                     f"does not amortize; load average during the benchmark {load:.1f} on "
                     f"{report['environment']['logical_cpus']} CPUs")
    result["notes"] = notes
    return result


def _fmt(value, spec: str, missing: str = "n/a") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return missing
    return format(value, spec)


def _ops(counts: dict) -> str:
    return ", ".join(f"{op} x{n}" for op, n in counts.items()) or "none"


def models_table(report: dict) -> list[str]:
    """Markdown rows: every form's file, size, test AUC/ACC, agreement and CPU latency."""
    lat = report["latency"]
    bsz = lat["batch_size"]
    lines = [f"| model | file | size (MB) | x smaller | test AUC | test ACC | AUC change | agreement | p50 (ms) | "
             f"p95 (ms) | p99 (ms) | batch {bsz} (img/s) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name in MODELS:
        m, t = report["models"][name], lat["cpu"][name]
        lines.append(
            f"| {MODEL_LABELS[name]} | {m['file']} | {_fmt(m.get('size_mb'), '.2f', '-')} | "
            f"{_fmt(m.get('size_ratio'), '.2f', '-')} | {_fmt(m['auc'], '.4f')} | {_fmt(m['acc'], '.4f')} | "
            f"{_fmt(m['auc_delta'], '+.4f')} | {m['agreement']:.1%} | {t['batch1']['p50_ms']:.2f} | "
            f"{t['batch1']['p95_ms']:.2f} | {t['batch1']['p99_ms']:.2f} | {t[f'batch{bsz}']['images_per_s']:.1f} |")
    return lines


def gpu_table(report: dict) -> list[str]:
    """Markdown rows of the GPU latency of every form; none when no GPU was benchmarked."""
    lat = report["latency"]
    if "cuda" not in lat:
        return []
    bsz = lat["batch_size"]
    lines = [f"| model | p50 (ms) | p95 (ms) | p99 (ms) | batch {bsz} (img/s) |", "| --- | ---: | ---: | ---: | ---: |"]
    for name in MODELS:
        t = lat["cuda"][name]
        lines.append(f"| {MODEL_LABELS[name]} | {t['batch1']['p50_ms']:.2f} | {t['batch1']['p95_ms']:.2f} | "
                     f"{t['batch1']['p99_ms']:.2f} | {t[f'batch{bsz}']['images_per_s']:.1f} |")
    return lines


def targets_table(report: dict) -> list[str]:
    """Markdown rows of :func:`check_targets`: each target, its value and whether it was met."""
    tg = report["targets"]
    yes = {True: "met", False: "missed", None: "n/a"}
    return [
        "| target | value | result |",
        "| --- | --- | --- |",
        f"| INT8 static test AUC within {TARGETS['auc_drop']} of FP32 | {_fmt(tg['auc']['value'], '+.4f')} | "
        f"{yes[tg['auc']['met']]} |",
        f"| INT8 static file >= {TARGETS['size_ratio']}x smaller | {tg['size']['value']:.2f}x | "
        f"{yes[tg['size']['met']]} |",
        f"| INT8 static batch-1 p50 below ONNX FP32 | {tg['latency']['value_ms']:.2f} vs "
        f"{tg['latency']['fp32_ms']:.2f} ms | {yes[tg['latency']['met']]} |",
    ]


def report_markdown(report: dict) -> str:
    """``export_report.md``: the report as prose plus tables a reader can paste."""
    ds, spec, onnx_info = report["dataset"], report["model"], report["onnx"]
    ver, lat, test = report["verification"], report["latency"], report["test"]
    bsz = lat["batch_size"]
    in_shape = " x ".join(map(str, onnx_info["input"]["shape"]))
    lines = [
        f"# Export report: {markdown_text(report['run'])}",
        "",
        f"{markdown_text(ds['flag'])} ({markdown_text(ds['task'])}, {ds['size']} px {ds['spatial_dims']}D), "
        f"{markdown_text(spec['name'])}, {markdown_code(report['checkpoint'])} weights. Exporter: "
        f"{report['exporter']} (torch {report['torch']}, "
        f"opset {onnx_info['opset']}).",
        "",
        f"Input `{onnx_info['input']['name']}`: float32 {in_shape} ({onnx_info['input']['layout']}), raw pixels "
        f"0..255. Normalization is baked into the graph (x * 2/255 - 1). Output `{onnx_info['output']['name']}`: "
        f"logits, scores = {onnx_info['scores']}.",
        "",
        f"Verification, ONNX FP32 vs PyTorch on {ver['n_images']} test images (ONNX Runtime CPU): max |logit "
        f"difference| {ver['max_abs_diff_logits']:.2e} (tolerance {ver['tolerance']:.0e}, "
        f"{'passed' if ver['passed'] else 'FAILED'}), max |score difference| {ver['max_abs_diff_scores']:.2e}, "
        f"argmax agreement {ver['argmax_agreement']:.1%}. ONNX checker: {onnx_info['checker']}.",
        "",
        f"## Test split ({test['n_images']} of {test['n_split']} images) and CPU latency",
        "",
        *models_table(report),
    ]
    env = report["environment"]
    busy = lat["load_average_before"][0] > env["logical_cpus"]
    lines += [
        "",
        f"AUC/ACC as medmnist.Evaluator; agreement = share of test predictions equal to PyTorch FP32's. "
        f"Latency: {markdown_text(env['cpu'])}, {lat['threads']} intra-op thread(s), batch 1 over {lat['runs']} "
        f"runs after "
        f"{lat['warmup']} warm-up calls, throughput at batch {bsz} over {lat['throughput_runs']} runs; models "
        f"{lat['order']}. Load average {lat['load_average_before'][0]:.1f} before / "
        f"{lat['load_average_after'][0]:.1f} after on {env['logical_cpus']} logical CPUs"
        f"{' (more runnable threads than CPUs: absolute times are inflated)' if busy else ''}.",
        "",
    ]
    if "cuda" in lat:
        lines += [f"## GPU latency ({markdown_text(lat['gpu'])})", "", *gpu_table(report), ""]
    else:
        lines += [f"GPU: {markdown_text(lat['gpu'])}.", ""]
    q = report["quantization"]
    st, dy = q["static"], q["dynamic"]
    lines += [
        "## Quantization (ONNX Runtime)",
        "",
        f"- INT8 static: {st['format']}, per-channel int8 weights{' (7-bit range)' if st['reduce_range'] else ''}, "
        f"{st['activation_type']} activations, {st['calibration']} calibration on {st['calibration_images']} "
        f"training images. Runs on INT8: {_ops(q['ops']['onnx_int8_static']['runtime']['int8'])}. "
        f"Stays FP32: {_ops(q['ops']['onnx_int8_static']['runtime']['fp32'])} (in the file, not QDQ-wrapped: "
        f"{_ops(q['ops']['onnx_int8_static'].get('not_qdq_wrapped', {}))}; ONNX Runtime fuses a QDQ-wrapped "
        "operator into an integer kernel only where it has one).",
        f"- INT8 dynamic: per-channel {dy['weight_type']} weights, activations quantized per call. Runs on INT8: "
        f"{_ops(q['ops']['onnx_int8_dynamic']['runtime']['int8'])}. Stays FP32: "
        f"{_ops(q['ops']['onnx_int8_dynamic']['runtime']['fp32'])}.",
        "",
    ]
    tg = report["targets"]
    lines += [
        f"## Targets ({tg['applies_to']}{'' if tg['applicable'] else '; this run is not one, shown for reference'})",
        "",
        *targets_table(report),
        "",
    ]
    lines += [f"- {markdown_text(note)}" for note in tg["notes"]] + ([""] if tg["notes"] else [])
    lines += ["## Use it", "", "```bash", f"python {PREDICT_SCRIPT} {EXAMPLE_INPUT}",
              f"python {PREDICT_SCRIPT} image.png --model {STATIC_FILE}", "```", ""]
    return "\n".join(lines)


_CONSTANTS = re.compile(r"(# --- model constants \(filled in by quantize\.py\) ---\n).*?"
                        r"(# --- end of model constants ---)", re.S)


def render_predict_script(info: data.DatasetInfo, model_file: str = FP32_FILE) -> str:
    """``predict_onnx.py`` for this dataset: the template with its constants block filled in."""
    template = Path(__file__).with_name("predict_onnx_template.py").read_text(encoding="utf-8")
    constants = "\n".join([
        f"MODEL_FILE = {model_file!r}", f"DATASET = {info.flag!r}", f"TASK = {info.task!r}",
        f"CLASS_NAMES = {info.class_names!r}", f"IN_CHANNELS = {info.n_channels}",
        f"SPATIAL_DIMS = {info.spatial_dims}", f"SIZE = {info.size}", f"INPUT_NAME = {INPUT_NAME!r}"])
    script, n = _CONSTANTS.subn(lambda m: m.group(1) + constants + "\n" + m.group(2), template, count=1)
    if n != 1:
        raise RuntimeError("predict_onnx_template.py lost its constants block")
    return script


def _save_npy(path, array: np.ndarray) -> None:
    with atomic.atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)


def _publish(work: Path, export_dir: Path, report: dict, info: data.DatasetInfo, test: data.Split,
             calibration: Path | None = None) -> list[Path]:
    """Move the ONNX files into ``export_dir`` (the staging folder of ``export/``) and write the rest; the JSON
    report last. Returns every file written."""
    for name in MODEL_FILES.values():
        os.replace(work / name, export_dir / name)
    example = test.images[0].contiguous().numpy()
    _save_npy(export_dir / EXAMPLE_INPUT, example)
    label = test.labels[0].tolist()
    report["example_input"] = {"file": EXAMPLE_INPUT, "test_index": (report["test"]["indices"] or [0])[0],
                               "label": label, "shape": list(example.shape), "dtype": "uint8"}
    atomic.write_text(export_dir / PREDICT_SCRIPT, render_predict_script(info))
    written = []
    if calibration is not None and calibration.is_file():  # calibrated probabilities travel with the model
        atomic.write_bytes(export_dir / TEMPERATURE_FILE, calibration.read_bytes())
        written.append(export_dir / TEMPERATURE_FILE)
    atomic.write_text(export_dir / REPORT_MD, report_markdown(report))
    atomic.write_json(export_dir / REPORT_JSON, report)
    return [export_dir / name for name in (*MODEL_FILES.values(), EXAMPLE_INPUT, PREDICT_SCRIPT, REPORT_MD,
                                            REPORT_JSON)] + written
