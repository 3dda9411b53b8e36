"""Complexity of a model's weights, tensor by tensor (``analyze_complexity.py``).

Every convolution, linear and normalization weight tensor of a model (and, on
request, their biases) is taken in network order -- the order in which the
modules were registered, which is also the order of ``named_parameters()`` --
flattened in PyTorch memory order (``tensor.detach().contiguous().view(-1)``,
row-major over ``(out, in, *kernel)``) and converted to float64. Each tensor
gets one row of :data:`COLUMNS`:

* statistics (:func:`medscope.analysis.complexity.weight_statistics`): ``count``,
  ``mean``, ``std`` (population), ``kurtosis`` (excess), ``l1``, ``l2``,
  ``frac_near_zero`` (``|w| <= 1e-3 * max|w|``);
* LMC complexity (:func:`medscope.analysis.complexity.lmc_complexity`): ``lmc_H``,
  ``lmc_D``, ``lmc_C`` = H * D over ``lmc_bins`` equal-width bins;
* exact Sample Entropy (:func:`medscope.analysis.complexity.sample_entropy`):
  ``sampen`` = -ln(A / B) with embedding dimension ``m`` and tolerance
  ``sampen_r = r_factor * std`` (Chebyshev distance, ties at distance ``r``
  count as matches, self-matches excluded), the pair counts ``sampen_A`` and
  ``sampen_B``.

An undefined value is an empty cell and its ``sampen_reason`` /
``lmc_reason`` says why (for example ``constant vector (std = 0)``, which is
every freshly initialised batch-norm weight); never a silent ``inf`` or
``nan``.

``state`` is ``trained`` (the run's ``best.pt`` or ``last.pt``) or ``initial``
(the weights the run started from; see :func:`initial_model_for`).
"""
from __future__ import annotations

import math
import os
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn

from medscope import atomic
from medscope.analysis.complexity import LMC_DEFAULT_BINS, R_FACTOR, lmc_complexity, sample_entropy, weight_statistics
from medscope.errors import UsageError
from medscope.runs import ResultsLayout, Run

# The files of a complexity/ folder besides the per-tensor table (RunLayout.complexity_results_csv)
# and the figures (named in medscope.analysis.complexity_plots).
SUMMARY_CSV = "weights_entropy_summary.csv"
SUMMARY_JSON = "weights_entropy_summary.json"

TRAINED = "trained"
INITIAL = "initial"
WEIGHT_TYPES = ("conv1d", "conv2d", "conv3d", "linear", "norm")
BIN_RULES = ("fd", "sturges", "sqrt")

COLUMNS = ["layer", "param", "type", "shape", "count", "mean", "std", "kurtosis", "l1", "l2", "frac_near_zero",
           "lmc_H", "lmc_D", "lmc_C", "lmc_bins", "sampen", "sampen_A", "sampen_B", "sampen_r", "sampen_reason",
           "lmc_reason", "state"]
SUMMARY_COLUMNS = ["state", "type", "tensors", "weights", "sampen_defined", "sampen_mean", "sampen_weighted",
                   "sampen_min", "sampen_max", "lmc_defined", "lmc_H_mean", "lmc_D_mean", "lmc_C_mean", "lmc_C_max"]
COMPARISON_COLUMNS = ["run", "dataset", "model", "spatial_dims", "index", "depth"] + COLUMNS

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm) + (
    (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())


# ---------------------------------------------------------------- enumeration

def layer_type(module: nn.Module) -> str | None:
    """``conv2d`` / ``conv3d`` (any convolution: ``conv{k}d``), ``linear``, ``norm``
    (batch, instance, group, layer norm) or None for every other module."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return f"conv{len(module.kernel_size)}d"
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, _NORMS):
        return "norm"
    return None


@dataclass(frozen=True)
class WeightTensor:
    """One parameter tensor of a conv / linear / norm module."""

    layer: str  # module name, e.g. "backbone.layer1.0.conv1"
    param: str  # "weight" or "bias"
    type: str  # see layer_type()
    tensor: torch.Tensor = field(repr=False)

    @property
    def name(self) -> str:
        """The ``named_parameters()`` name, e.g. ``backbone.layer1.0.conv1.weight``."""
        return f"{self.layer}.{self.param}" if self.layer else self.param

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.tensor.shape)

    @property
    def count(self) -> int:
        return self.tensor.numel()

    def values(self) -> np.ndarray:
        """The weights flattened in PyTorch memory order, as float64."""
        return flatten(self.tensor)


def flatten(tensor: torch.Tensor) -> np.ndarray:
    """``tensor.detach().contiguous().view(-1)`` as a float64 numpy vector.

    ``contiguous()`` fixes the order to row-major over the logical shape, so a
    channels-last copy of the same weights gives the same vector.

    Examples
    --------
    >>> import torch
    >>> w = torch.arange(8.0).reshape(2, 1, 2, 2)          # (out, in, kh, kw)
    >>> flatten(w).tolist()
    [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    >>> flatten(w.to(memory_format=torch.channels_last)).dtype
    dtype('float64')
    """
    return tensor.detach().cpu().contiguous().view(-1).to(torch.float64).numpy()


def weight_tensors(model: nn.Module, include_bias: bool = False) -> list[WeightTensor]:
    """Every conv / linear / norm weight tensor of ``model`` (and bias, with
    ``include_bias``), in module registration order; a module's weight comes
    before its bias, a shared tensor is listed once (as ``named_parameters``
    does). Norms without affine parameters have none and are skipped.

    Examples
    --------
    >>> import torch.nn as nn
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4, 2))
    >>> [(t.name, t.type, t.count) for t in weight_tensors(net)]
    [('0.weight', 'conv2d', 36), ('1.weight', 'norm', 4), ('4.weight', 'linear', 8)]
    >>> len(weight_tensors(net, include_bias=True))
    6
    """
    out, seen = [], set()
    for name, module in model.named_modules():
        kind = layer_type(module)
        if kind is None:
            continue
        for param in ("weight", "bias") if include_bias else ("weight",):
            tensor = module._parameters.get(param)
            if tensor is None or id(tensor) in seen:
                continue
            seen.add(id(tensor))
            out.append(WeightTensor(name, param, kind, tensor))
    return out


# ---------------------------------------------------------------- one tensor

@dataclass(frozen=True)
class Settings:
    """Metric parameters of one analysis (recorded in the run-level summary)."""

    m: int = 2
    r_factor: float = R_FACTOR
    bins: int | str = LMC_DEFAULT_BINS
    include_bias: bool = False
    near_zero: float = 1e-3  # relative to max|w|


def layer_sample_entropy(x: np.ndarray, m: int = 2, r_factor: float = R_FACTOR):
    """:func:`~medscope.analysis.complexity.sample_entropy` with ``r = r_factor * std(x, ddof=0)``.

    Without a usable ``r`` (NaN / inf weights, empty or constant vector) the
    vector goes to ``sample_entropy`` with its default ``r``, so its ``reason``
    says why; a vector too short for templates keeps its ``r`` in the result.

    Examples
    --------
    >>> import numpy as np
    >>> res = layer_sample_entropy(np.array([1.0, 2, 3, 1, 2, 4, 1, 2, 3]), m=2, r_factor=0.4)
    >>> round(res.r, 4), res.a_count, res.b_count, round(res.value, 4)   # r = 0.4 * std = 0.4 * 0.9938
    (0.3975, 1, 3, 1.0986)
    >>> layer_sample_entropy(np.ones(9)).reason
    'constant vector (std = 0)'
    """
    if x.size == 0 or not np.isfinite(x).all():
        return sample_entropy(x, m)
    std = float(np.std(x, ddof=0))
    if std == 0.0 or not math.isfinite(std * r_factor):
        return sample_entropy(x, m)
    return sample_entropy(x, m, r=r_factor * std)


def _finite(value):
    """Finite float, or None (an empty CSV cell; the reason column says why)."""
    value = float(value)
    return value if math.isfinite(value) else None


def tensor_row(wt: WeightTensor, state: str, settings: Settings = Settings()) -> dict:
    """The :data:`COLUMNS` row of one tensor."""
    x = wt.values()
    with np.errstate(invalid="ignore", over="ignore"):  # inf weights: the reason columns say so
        stats = weight_statistics(x, settings.near_zero)
    lmc = lmc_complexity(x, settings.bins)
    se = layer_sample_entropy(x, settings.m, settings.r_factor)
    return {
        "layer": wt.layer, "param": wt.param, "type": wt.type, "shape": "x".join(map(str, wt.shape)) or "scalar",
        "count": stats.count, "mean": _finite(stats.mean), "std": _finite(stats.std),
        "kurtosis": _finite(stats.kurtosis), "l1": _finite(stats.l1_norm), "l2": _finite(stats.l2_norm),
        "frac_near_zero": _finite(stats.frac_near_zero),
        "lmc_H": _finite(lmc.H), "lmc_D": _finite(lmc.D), "lmc_C": _finite(lmc.C),
        "lmc_bins": lmc.n_bins if lmc.reason is None else None,
        "sampen": _finite(se.value) if se.ok else None,
        "sampen_A": se.a_count if se.a_count >= 0 else None,
        "sampen_B": se.b_count if se.b_count >= 0 else None,
        "sampen_r": _finite(se.r), "sampen_reason": se.reason or "", "lmc_reason": lmc.reason or "",
        "state": state,
    }


def default_workers() -> int:
    """Tensors analysed at once: the usable cores, at most 4 (the kernels
    release the GIL; each worker needs ~110 bytes per weight of its tensor)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


def analyze_tensors(jobs: Sequence[tuple[WeightTensor, str]], settings: Settings = Settings(), *,
                    workers: int = 1, on_done: Callable[[WeightTensor, str], None] | None = None) -> list[dict]:
    """Rows of ``(tensor, state)`` jobs, in the order given.

    With ``workers > 1`` tensors run in threads, largest first (the Sample
    Entropy kernels release the GIL); the counts are exact, so the rows are
    the same for any ``workers``.
    """
    rows: list[dict | None] = [None] * len(jobs)
    if workers <= 1 or len(jobs) <= 1:
        for i, (wt, state) in enumerate(jobs):
            rows[i] = tensor_row(wt, state, settings)
            if on_done:
                on_done(wt, state)
        return rows
    order = sorted(range(len(jobs)), key=lambda i: -jobs[i][0].count)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(tensor_row, jobs[i][0], jobs[i][1], settings): i for i in order}
        try:
            for future in as_completed(futures):
                i = futures[future]
                rows[i] = future.result()
                if on_done:
                    on_done(*jobs[i])
        except BaseException:  # Ctrl-C or a failure: do not start the queued tensors
            for future in futures:
                future.cancel()
            raise
    return rows


# ---------------------------------------------------------------- summaries

def _mean(values) -> float | None:
    return float(np.mean(values)) if len(values) else None


def summarize(rows: Iterable[dict]) -> list[dict]:
    """One :data:`SUMMARY_COLUMNS` row per (state, type) and per state over all types.

    ``sampen_mean`` is the plain mean over the tensors where SampEn is defined,
    ``sampen_weighted`` the mean weighted by tensor size (the SampEn of an
    "average weight"); the LMC means are plain means over tensors.
    """
    rows = list(rows)
    out = []
    for state in dict.fromkeys(r["state"] for r in rows):
        of_state = [r for r in rows if r["state"] == state]
        types = [t for t in WEIGHT_TYPES if any(r["type"] == t for r in of_state)]
        for kind in types + ["all"]:
            group = [r for r in of_state if kind == "all" or r["type"] == kind]
            se = [r for r in group if r["sampen"] is not None]
            lmc = [r for r in group if r["lmc_C"] is not None]
            counts = np.array([r["count"] for r in se], dtype=np.float64)
            values = np.array([r["sampen"] for r in se], dtype=np.float64)
            out.append({
                "state": state, "type": kind, "tensors": len(group), "weights": sum(r["count"] for r in group),
                "sampen_defined": len(se), "sampen_mean": _mean(values),
                "sampen_weighted": float((values * counts).sum() / counts.sum()) if se else None,
                "sampen_min": float(values.min()) if se else None, "sampen_max": float(values.max()) if se else None,
                "lmc_defined": len(lmc), "lmc_H_mean": _mean([r["lmc_H"] for r in lmc]),
                "lmc_D_mean": _mean([r["lmc_D"] for r in lmc]), "lmc_C_mean": _mean([r["lmc_C"] for r in lmc]),
                "lmc_C_max": max((r["lmc_C"] for r in lmc), default=None),
            })
    return out


# ---------------------------------------------------------------- initial weights

def torchvision_weights_url(spatial_dims: int) -> str:
    import torchvision

    if spatial_dims == 2:
        return torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    return torchvision.models.video.R3D_18_Weights.KINETICS400_V1.url


def _pretrained_state(run: Run, cfg: dict, spatial_dims: int) -> tuple[dict, str]:
    """The state dict a ``--pretrained`` run started from, found offline."""
    from medscope.checkpoints import load_state_dict

    if cfg.get("weights"):
        path = Path(cfg["weights"]).expanduser()
        if not path.is_file():
            raise UsageError(f"--compare-init: {run.name} started from the pretrained weights {cfg['weights']}, "
                             "which is not a file here; without it the initial weights cannot be rebuilt "
                             "(drop --compare-init)")
        try:
            return load_state_dict(path), str(path)
        except UsageError as exc:
            raise UsageError(f"--compare-init: {run.name}: {exc}") from None
    url = torchvision_weights_url(spatial_dims)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    if not cached.is_file():
        raise UsageError(f"--compare-init: {run.name} started from torchvision's pretrained weights ({url}), "
                         f"which are not in the local cache ({cached}) and cannot be rebuilt offline "
                         "(drop --compare-init, or put the file there)")
    try:
        return load_state_dict(cached), str(cached)
    except UsageError as exc:
        raise UsageError(f"--compare-init: {run.name}: {exc}") from None


def initial_model_for(run: Run, spec: dict, cfg: dict) -> tuple[nn.Module, str]:
    """The run's weights as training started, and where they came from.

    A run trained from scratch is rebuilt with
    :func:`medscope.checkpoints.initial_model` under the seed in its
    ``config``. A ``--pretrained`` run started from pretrained weights: a local
    ``--weights`` file is loaded again; torchvision's download is used only when
    it is in torch's local cache (``$TORCH_HOME/hub/checkpoints``). Otherwise the
    initial weights cannot be rebuilt offline: UsageError (exit 2).
    """
    from medscope.checkpoints import initial_model

    if "seed" not in cfg:
        raise UsageError(f"--compare-init: {run.json_path} records no config.seed; "
                         "the initial weights cannot be rebuilt")
    seed = int(cfg["seed"])
    if cfg.get("pretrained"):
        state, source = _pretrained_state(run, cfg, int(spec["spatial_dims"]))
        return initial_model(spec, seed, pretrained_state=state).eval(), f"pretrained ({source}), seed {seed}"
    return initial_model(spec, seed).eval(), f"seed {seed}"


# ---------------------------------------------------------------- one run

@dataclass
class RunPlan:
    """A run whose inputs are all loaded and checked: nothing can fail on bad input later."""

    run: Run
    info: dict
    which: str
    epoch: int | None
    tensors: list[WeightTensor]
    initial: list[WeightTensor] | None = None
    init_source: str | None = None

    @property
    def jobs(self) -> list[tuple[WeightTensor, str]]:
        """(tensor, state) in output order: per tensor, trained then initial."""
        if self.initial is None:
            return [(t, TRAINED) for t in self.tensors]
        return [job for pair in zip(self.tensors, self.initial) for job in ((pair[0], TRAINED), (pair[1], INITIAL))]


def prepare_run(run: Run, *, which: str = "best", include_bias: bool = False, compare_init: bool = False) -> RunPlan:
    """Load a run's checkpoint (and, with ``compare_init``, its initial weights)."""
    from medscope.checkpoints import load_run_model

    info = run.info()
    model, checkpoint = load_run_model(run, which, "cpu")
    tensors = weight_tensors(model, include_bias)
    if not tensors:
        raise UsageError(f"{run.name}: the model has no conv, linear or normalization weights")
    plan = RunPlan(run, info, which, checkpoint.get("epoch"), tensors)
    if compare_init:
        cfg = info.get("config") or checkpoint.get("config") or {}
        initial, plan.init_source = initial_model_for(run, checkpoint["spec"], cfg)
        plan.initial = weight_tensors(initial, include_bias)
        if [(t.name, t.shape) for t in plan.initial] != [(t.name, t.shape) for t in tensors]:
            raise UsageError(f"--compare-init: {run.name}: the rebuilt initial model does not match the checkpoint")
    return plan


@dataclass
class RunResult:
    """Every row and summary of one prepared run (nothing is written; see :func:`write_run`)."""

    plan: RunPlan
    settings: Settings
    rows: list[dict]
    summary: list[dict]
    seconds: float  # wall time of the metrics

    @property
    def run(self) -> Run:
        return self.plan.run


def analyze_run(plan: RunPlan, settings: Settings = Settings(), *, workers: int = 1,
                on_done: Callable[[WeightTensor, str], None] | None = None) -> RunResult:
    """Every :data:`COLUMNS` row of a prepared run (:func:`analyze_tensors`) and their summary."""
    started = time.perf_counter()
    rows = analyze_tensors(plan.jobs, settings, workers=workers, on_done=on_done)
    seconds = time.perf_counter() - started
    return RunResult(plan, settings, rows, summarize(rows), seconds)


def summary_record(result: RunResult) -> dict:
    """The content of ``weights_entropy_summary.json``: the summary with the settings that made it."""
    plan, settings = result.plan, result.settings
    return {
        "run": plan.run.name, "checkpoint": f"{plan.which}.pt", "epoch": plan.epoch,
        "settings": {"m": settings.m, "r_factor": settings.r_factor, "r": "r_factor * std(weights, ddof=0)",
                     "bins": settings.bins, "include_bias": settings.include_bias,
                     "near_zero": f"|w| <= {settings.near_zero} * max|w|",
                     "flatten": "tensor.detach().contiguous().view(-1), float64"},
        "initial_weights": plan.init_source, "tensors": len(plan.tensors),
        "weights": sum(t.count for t in plan.tensors), "seconds": round(result.seconds, 3),
        "created": datetime.now().astimezone().isoformat(timespec="seconds"), "summary": result.summary,
    }


def write_run(result: RunResult, out: Path) -> list[Path]:
    """Write the files of the run's ``complexity/`` folder into ``out`` (its staging folder): the per-tensor
    CSV, the run-level summary (CSV + JSON with the settings) and the three figures.
    Returns the paths in the order they were written."""
    from medscope.analysis import complexity_plots

    plan, settings, rows = result.plan, result.settings, result.rows
    out = Path(out)
    title = f"{plan.run.name} ({plan.which}.pt" + (f", epoch {plan.epoch})" if plan.epoch is not None else ")")
    return [
        atomic.write_csv(out / plan.run.layout.complexity_results_csv.name, rows, COLUMNS),
        atomic.write_csv(out / SUMMARY_CSV, result.summary, SUMMARY_COLUMNS),
        atomic.write_json(out / SUMMARY_JSON, summary_record(result)),
        complexity_plots.lmc_per_layer(out / complexity_plots.LMC_PER_LAYER, rows, title),
        complexity_plots.sampen_per_layer(out / complexity_plots.SAMPEN_PER_LAYER, rows, title,
                                          m=settings.m, r_factor=settings.r_factor),
        complexity_plots.lmc_by_type(out / complexity_plots.LMC_BY_TYPE, rows, title),
    ]


# ---------------------------------------------------------------- several runs

def comparison_rows(results: Sequence[RunResult]) -> list[dict]:
    """Every row of every run with the run's identity and its relative depth
    (``index / (tensors - 1)``: 0 at the first tensor, 1 at the last), so
    models of different depth share one axis."""
    out = []
    for result in results:
        cfg = result.plan.info.get("config") or {}
        dims = (result.plan.info.get("dataset") or {}).get("spatial_dims")
        n = len(result.plan.tensors)
        index = {t.name: i for i, t in enumerate(result.plan.tensors)}
        for row in result.rows:
            i = index[f"{row['layer']}.{row['param']}" if row["layer"] else row["param"]]
            out.append({"run": result.run.name, "dataset": cfg.get("dataset"), "model": cfg.get("model"),
                        "spatial_dims": dims, "index": i, "depth": i / (n - 1) if n > 1 else 0.0, **row})
    return out


def comparison_paths(results_dir, when: datetime | None = None) -> tuple[Path, Path]:
    """``<results_dir>/complexity_comparison_<YYYYMMDD-HHMMSS>{.png,.csv}``, never an existing name
    (a second comparison within the same second gets ``-2``, ``-3``, ...)."""
    layout = ResultsLayout(results_dir)
    stamp = (when or datetime.now()).strftime("%Y%m%d-%H%M%S")
    k = 1
    while True:
        csv, png = layout.complexity_comparison(stamp if k == 1 else f"{stamp}-{k}")
        if not png.exists() and not csv.exists():
            return png, csv
        k += 1


def write_comparison(results_dir, results: Sequence[RunResult]) -> tuple[Path, Path]:
    """The multi-run figure and its CSV (every tensor row of every run)."""
    from medscope.analysis import complexity_plots

    png, csv = comparison_paths(results_dir)
    rows = comparison_rows(results)
    atomic.write_csv(csv, rows, COMPARISON_COLUMNS)  # first: a comparison in the same second now skips this name
    complexity_plots.comparison(png, rows, [r.summary for r in results], [r.run.name for r in results])
    return png, csv
