"""What a trained model does with a split: activations, embeddings and calibration.

The input is an *outputs* dict as :func:`medscope.activations.collect_outputs`
returns it and ``train.py`` stores in ``inference_outputs.pt``: logits,
probabilities, labels, penultimate embeddings and, for every block of
``model.blocks()``, the per-sample channel means of the block's output.

The module reads top to bottom as ``analyze_inference.py`` runs:

1. pure functions on numpy arrays: calibration (its measures are those of
   :mod:`medscope.metrics`), activation statistics, confident errors and 2D
   projections (ROC and precision–recall curves: :mod:`medscope.analysis.curves`);
2. the outputs of a run: read ``inference_outputs.pt`` and check it, or
   recompute the outputs of a split with ``best.pt``;
3. :func:`analyze`: every number of the analysis from an outputs dict, as
   values (nothing is written);
4. :func:`write_analysis`: the tables, JSON and figures of an ``inference/``
   folder, named in the table below.

Conventions used throughout
---------------------------
*Activation* ``a[i, c]`` of a block is the spatial mean of channel ``c`` of the
block's output for sample ``i`` (over H x W, or D x H x W in 3D). Every block
that :meth:`medscope.models.Classifier.blocks` names ends in a ReLU (or a
max-pool after one), so ``a[i, c] >= 0`` and ``a[i, c] == 0`` exactly when the
channel is zero at every position of that sample's feature map.

*Classes* are the dataset's classes; for multi-label tasks "class" ``k``
means the samples whose label ``k`` is positive (a sample can be in several).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from medscope import tasks
from medscope.errors import UsageError
from medscope.metrics import (CALIBRATION_BINS, brier_score, expected_calibration_error, predicted_confidence,
                              reliability_bins)
from medscope.analysis.curves import OPERATING_POINT_COLUMNS, operating_point_rows, roc_pr_curves
from medscope.runs import RunLayout

# The files of an inference/ folder (inference/<split>/ for the train and val
# splits). The summary table is part of the run-folder contract, so RunLayout
# names it; the figures are named in medscope.analysis.inference_plots.
SUMMARY_CSV = RunLayout(Path()).inference_summary_csv.name
CHANNELS_CSV = "inference_channels.csv"
CALIBRATION_JSON = "inference_calibration.json"
RELIABILITY_CSV = "inference_reliability.csv"
EMBEDDING_CSV = "inference_embedding_2d.csv"
OPERATING_POINTS_CSV = "inference_operating_points.csv"

DEFAULT_BINS = CALIBRATION_BINS
DEAD_THRESHOLD = 1e-8
TSNE_POINTS = 2000
TSNE_PCA_DIMS = 50
TSNE_THREADS = 1
N_ERRORS = 16

# ===================================================================== calibration


def calibration(task: str, probabilities, labels, label_names: list[str], n_bins: int = DEFAULT_BINS) -> dict:
    """ECE, Brier score, accuracy and reliability bins of one split.

    The measures are :func:`medscope.metrics.expected_calibration_error`,
    :func:`~medscope.metrics.brier_score` and
    :func:`~medscope.metrics.reliability_bins` on the confidences of
    :func:`~medscope.metrics.predicted_confidence`. Multi-label tasks get one
    reliability curve and ECE per label (each label a binary problem); their
    ``ece`` is the mean of the per-label ECEs and their ``accuracy`` the mean
    per-label accuracy (as MedMNIST's ACC).

    Returns
    -------
    dict
        ``ece``, ``brier``, ``accuracy``, ``n_bins`` and ``curves``: a list of
        ``{"label", "ece", "accuracy", "bins"}`` — one entry named ``"all"``
        for single-label tasks, one per label for multi-label tasks.

    >>> c = calibration("binary-class", [[0.2, 0.8], [0.7, 0.3]], [[1], [1]], ["a", "b"], n_bins=10)
    >>> round(c["ece"], 4), round(c["brier"], 4), c["accuracy"], [curve["label"] for curve in c["curves"]]
    (0.45, 0.265, 0.5, ['all'])
    """
    conf, ok = predicted_confidence(task, probabilities, labels)
    if tasks.task(task).is_multilabel:
        columns = [(name, conf[:, j], ok[:, j]) for j, name in enumerate(label_names)]
    else:
        columns = [("all", conf, ok)]
    curves = [{"label": name, "ece": expected_calibration_error(c, o, n_bins),
               "accuracy": float(np.mean(o)) if len(o) else float("nan"),
               "bins": reliability_bins(c, o, n_bins)} for name, c, o in columns]
    return {"ece": float(np.mean([c["ece"] for c in curves])), "brier": brier_score(task, probabilities, labels),
            "accuracy": float(np.mean([c["accuracy"] for c in curves])), "n_bins": n_bins, "curves": curves}


# ===================================================================== activations


def class_membership(task: str, labels, num_classes: int) -> np.ndarray:
    """Boolean (N, K): sample ``i`` belongs to class ``k``.

    Single-label tasks: ``labels[i] == k``; multi-label: label ``k`` positive.

    >>> class_membership("binary-class", [[1], [0], [1]], 2).astype(int).tolist()
    [[0, 1], [1, 0], [0, 1]]
    """
    y = np.asarray(labels)
    if tasks.task(task).is_multilabel:
        return y > 0.5
    return y.reshape(-1, 1).astype(np.int64) == np.arange(num_classes)[None, :]


def class_channel_means(activations, membership) -> np.ndarray:
    """Mean activation of every channel over the samples of each class.

    ``m[k, c] = (1 / n_k) * sum_{i in class k} a[i, c]``, with ``n_k`` the
    number of samples of class ``k``; a class with no sample gives NaN.

    Parameters
    ----------
    activations : array (N, C)
        Per-sample channel means of one block.
    membership : bool array (N, K)
        From :func:`class_membership`.

    >>> class_channel_means([[1.0, 0.0], [3.0, 2.0], [5.0, 4.0]], [[1, 0], [1, 0], [0, 1]]).tolist()
    [[2.0, 1.0], [5.0, 4.0]]
    """
    acts = np.asarray(activations, dtype=np.float64)
    member = np.asarray(membership, dtype=np.float64)
    counts = member.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (member.T @ acts) / counts[:, None]


def dead_channels(activations, threshold: float = DEAD_THRESHOLD) -> np.ndarray:
    """Channels that are never active on the split: ``a[i, c] <= threshold`` for every ``i``.

    ``a[i, c]`` is the spatial mean of a ReLU output (see the module notes),
    so with the default threshold (1e-8, room for float rounding only) a dead
    channel is zero at every position of every sample: it passes nothing to
    the next layer for this data. A channel that fires at a single position
    of a single sample is *not* dead. Because only spatial means are stored,
    channels that are almost always off cannot be told apart from rarely-on
    ones here; their small mean shows in ``inference_channels.csv``.

    Returns
    -------
    bool array (C,)

    >>> dead_channels([[0.0, 0.3, 0.0], [0.0, 0.0, 1e-3]]).tolist()
    [True, False, False]
    """
    acts = np.asarray(activations)
    if acts.shape[0] == 0:
        return np.zeros(acts.shape[1], dtype=bool)
    return np.all(acts <= threshold, axis=0)


def class_selectivity(activations, membership) -> np.ndarray:
    """How far each class moves each channel, in units of the channel's spread.

    ``z[k, c] = (m[k, c] - mean_i a[i, c]) / std_i a[i, c]`` with ``m`` from
    :func:`class_channel_means` and the population std over all samples;
    0 where a channel is constant (for example dead). Unitless.

    >>> class_selectivity([[0.0], [2.0]], [[1, 0], [0, 1]]).tolist()
    [[-1.0], [1.0]]
    """
    acts = np.asarray(activations, dtype=np.float64)
    mean, std = acts.mean(axis=0), acts.std(axis=0)
    z = (class_channel_means(acts, membership) - mean) / np.where(std > 0, std, 1.0)
    return np.where(std > 0, z, 0.0)


SUMMARY_COLUMNS = ["layer", "position", "channels", "samples", "mean", "std", "q10", "median", "q90",
                   "min_channel_mean", "max_channel_mean", "dead_channels", "dead_fraction"]
CHANNEL_COLUMNS = ["layer", "channel", "class", "value"]


def summary_columns(num_classes: int) -> list[str]:
    """Columns of ``inference_summary.csv``: the fixed ones, then ``mean_class_<k>`` per class."""
    return SUMMARY_COLUMNS + [f"mean_class_{k}" for k in range(num_classes)]


def layer_summary(layer_names, activations: dict, membership, threshold: float = DEAD_THRESHOLD) -> list[dict]:
    """One row per block, in network order.

    * ``mean``, ``std``: mean and population std of ``a[i, c]`` over all
      samples and channels of the block;
    * ``q10``, ``median``, ``q90``: its 10th, 50th and 90th percentiles
      (numpy's linear interpolation), which stay >= 0 after a ReLU where
      ``mean - std`` does not;
    * ``min_channel_mean`` / ``max_channel_mean``: extremes over channels of
      ``mean_i a[i, c]``;
    * ``dead_channels`` / ``dead_fraction``: count and fraction of channels
      never active (:func:`dead_channels`);
    * ``mean_class_<k>``: ``mean`` over the samples of class ``k`` only
      (NaN when the split has none).
    """
    member = np.asarray(membership, dtype=bool)
    rows = []
    for position, name in enumerate(layer_names):
        acts = np.asarray(activations[name], dtype=np.float64)
        channel_mean = acts.mean(axis=0)
        dead = dead_channels(acts, threshold)
        row = {"layer": name, "position": position, "channels": acts.shape[1], "samples": acts.shape[0],
               "mean": float(acts.mean()), "std": float(acts.std()),
               **dict(zip(("q10", "median", "q90"), map(float, np.quantile(acts, [0.1, 0.5, 0.9])))),
               "min_channel_mean": float(channel_mean.min()), "max_channel_mean": float(channel_mean.max()),
               "dead_channels": int(dead.sum()), "dead_fraction": float(dead.mean())}
        for k, value in enumerate(class_channel_means(acts, member).mean(axis=1)):
            row[f"mean_class_{k}"] = float(value)
        rows.append(row)
    return rows


def channel_rows(layer_names, activations: dict, membership, class_names) -> list[dict]:
    """Long table of per-channel means: (layer, channel, class, value).

    ``class`` is ``"all"`` (mean over every sample) or a class name (mean over
    that class's samples, :func:`class_channel_means`).
    """
    rows = []
    for name in layer_names:
        acts = np.asarray(activations[name], dtype=np.float64)
        table = np.vstack([acts.mean(axis=0, keepdims=True), class_channel_means(acts, membership)])
        groups = ["all"] + list(class_names)
        for c in range(acts.shape[1]):
            for g, group in enumerate(groups):
                rows.append({"layer": name, "channel": c, "class": group, "value": float(table[g, c])})
    return rows


def most_and_least_active(summary: list[dict], k: int = 3) -> tuple[list[dict], list[dict]]:
    """The ``k`` blocks with the highest and the lowest mean activation."""
    ordered = sorted(summary, key=lambda row: row["mean"], reverse=True)
    return ordered[:k], ordered[::-1][:k]


def sample_groups(task: str, labels, num_classes: int) -> np.ndarray:
    """One group per sample for sorting and colouring.

    The class for single-label tasks; for multi-label tasks the first positive
    label, or ``num_classes`` ("none") when no label is positive.
    """
    y = np.asarray(labels)
    if tasks.task(task).is_single_label:
        return y.reshape(-1).astype(np.int64)
    positive = y > 0.5
    return np.where(positive.any(axis=1), positive.argmax(axis=1), num_classes)


def sorted_by_group(groups, activations, membership) -> tuple[np.ndarray, np.ndarray]:
    """Sample order (by group, stable) and channel order (by preferred class, then selectivity).

    A channel's preferred class is ``argmax_k z[k, c]`` of
    :func:`class_selectivity`; within a class the most selective come first.
    """
    sample_order = np.argsort(np.asarray(groups), kind="stable")
    z = class_selectivity(activations, membership)
    preferred = z.argmax(axis=0)
    strength = z.max(axis=0)
    channel_order = np.lexsort((-strength, preferred))
    return sample_order, channel_order


# ===================================================================== errors and embeddings


def confident_errors(task: str, probabilities, labels, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the ``n`` wrong predictions made with the highest confidence.

    A multi-label sample is wrong when any label is; its confidence is the
    highest confidence among its wrong labels. Confidence as in
    :func:`predicted_confidence`.

    Returns
    -------
    rows, confidence : arrays (m,), m <= n, most confident first

    >>> confident_errors("binary-class", [[0.1, 0.9], [0.4, 0.6], [0.8, 0.2]], [[0], [0], [0]], 5)[0].tolist()
    [0, 1]
    """
    conf, ok = predicted_confidence(task, probabilities, labels)
    if conf.ndim == 2:
        wrong_conf = np.where(~ok, conf, -np.inf).max(axis=1)
        wrong = ~ok.all(axis=1)
    else:
        wrong_conf, wrong = conf, ~ok
    rows = np.flatnonzero(wrong)
    rows = rows[np.argsort(-wrong_conf[rows], kind="stable")][:n]
    return rows, wrong_conf[rows]


def tsne_subsample(n: int, max_points: int, seed: int) -> np.ndarray:
    """Sorted row indices of a seeded random subsample of at most ``max_points``."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def embedding_projections(embeddings, *, max_tsne_points: int = TSNE_POINTS, seed: int = 0,
                          pca_dims: int = TSNE_PCA_DIMS, tsne_threads: int | None = TSNE_THREADS) -> dict:
    """2D maps of the penultimate embeddings: PCA on all points, t-SNE on a subsample.

    t-SNE (scikit-learn, Barnes-Hut) costs far more than PCA, so it runs on a
    seeded random subsample of at most ``max_tsne_points`` rows, reduced to
    ``pca_dims`` dimensions by PCA first (the usual practice; it removes noise
    and makes the neighbour search cheap). Perplexity is
    ``min(30, (m - 1) / 3)`` for ``m`` points, as t-SNE requires it below ``m``.

    ``tsne_threads`` caps t-SNE's OpenMP threads (None: no cap). The default
    is 1: scikit-learn's Barnes-Hut loop busy-waits, and on shared cores it
    ran 4-15x slower with 2 threads than with 1 (bench/bench_inference.py).

    Returns
    -------
    dict
        ``pca`` (N, 2), ``pca_explained`` (2,) variance ratios,
        ``tsne`` (m, 2) or None when m < 5, ``tsne_rows`` (m,), ``perplexity``.
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    x = np.asarray(embeddings, dtype=np.float64)
    n, dims = x.shape
    components = min(2, n, dims)
    pca = PCA(n_components=components, random_state=seed)
    coords = np.zeros((n, 2))
    coords[:, :components] = pca.fit_transform(x)
    explained = np.zeros(2)
    explained[:components] = pca.explained_variance_ratio_
    rows = tsne_subsample(n, max_tsne_points, seed)
    result = {"pca": coords, "pca_explained": explained, "tsne": None, "tsne_rows": rows, "perplexity": None}
    if len(rows) < 5:
        return result
    sample = x[rows]
    reduced_dims = min(pca_dims, dims, len(rows))
    if dims > reduced_dims:
        sample = PCA(n_components=reduced_dims, random_state=seed).fit_transform(sample)
    perplexity = float(min(30.0, (len(rows) - 1) / 3.0))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed)
    with threadpool_limits(limits=tsne_threads, user_api="openmp"):
        result["tsne"] = tsne.fit_transform(sample.astype(np.float32))
    result["perplexity"] = perplexity
    return result


# ===================================================================== the outputs of a run

OUTPUT_KEYS = ("logits", "probabilities", "labels", "embeddings", "layer_names", "activations")


def output_dir(layout: RunLayout, split: str) -> Path:
    """``inference/`` for the test split, ``inference/<split>/`` for train and val."""
    return layout.inference_dir if split == "test" else layout.inference_dir / split


def other_splits_files(split: str):
    """Which files of the previous :func:`output_dir` an analysis of ``split`` carries over when it replaces
    the folder: for the test split (``inference/``), the train and val analyses in its subfolders; else none."""
    if split != "test":
        return None
    return lambda relative: len(relative.parts) > 1 and relative.parts[0] in ("train", "val")


def load_outputs(path: Path, info=None) -> dict:
    """Read ``inference_outputs.pt`` (:func:`medscope.analysis.outputs.read_outputs`, against the run's
    dataset ``info`` when given) and check that the analyses' parts fit together."""
    from medscope.analysis.outputs import read_outputs

    outputs = read_outputs(path, task=info.task if info is not None else None,
                           num_classes=info.num_classes if info is not None else None,
                           required=OUTPUT_KEYS, fix="recompute it with --split test")
    check_outputs(outputs, path)
    return outputs


def check_outputs(outputs: dict, source) -> None:
    """Every part has one row per sample, every named block its activations, and there are >= 2 samples."""
    n = outputs["logits"].shape[0]
    parts = {"probabilities": outputs["probabilities"], "labels": outputs["labels"],
             "embeddings": outputs["embeddings"]}
    for name in outputs["layer_names"]:
        if name not in outputs["activations"]:
            raise UsageError(f"{source}: no activations for layer {name!r}; recompute with --split test")
        parts[f"activations[{name}]"] = outputs["activations"][name]
    for name, value in parts.items():
        if not isinstance(value, torch.Tensor) or value.ndim != 2 or value.shape[0] != n:
            raise UsageError(f"{source}: {name} does not have one row per sample ({n}); recompute with --split test")
    if n < 2:
        raise UsageError(f"{source} holds {n} sample(s); the analysis needs at least 2")
    if not outputs["layer_names"]:
        raise UsageError(f"{source} has no layer activations; recompute with --split test")


def require_checkpoint(run, split: str, *, stored_missing: bool = False) -> None:
    """Refuse (one line) a recomputation that has no weights to run."""
    if not run.layout.best_pt.is_file():
        what = f"no {run.layout.inference_outputs.name} and " if stored_missing else ""
        raise UsageError(f"{run.path} has {what}no {run.layout.best_pt.name} to compute the {split} outputs from; "
                         f"finish training it with: python train.py --resume {run.path}")


def recompute_outputs(run, info, split_data, split: str, device, batch_size: int = 256) -> dict:
    """Run a split through the run's best checkpoint: forward hooks, batched, no grad, fp32."""
    from medscope import checkpoints
    from medscope.activations import collect_outputs
    from medscope.train.loop import memory_format_for

    require_checkpoint(run, split)
    model, checkpoint = checkpoints.load_run_model(run, "best", device)
    memory_format = memory_format_for(info.spatial_dims, device)
    if memory_format is not None:
        model = model.to(memory_format=memory_format)
    outputs = collect_outputs(model, split_data, info.task, device, batch_size=batch_size,
                              memory_format=memory_format)
    return dict(outputs, split=split, task=info.task, class_names=info.class_names,
                indices=torch.arange(len(split_data)), tta=False, best_epoch=checkpoint.get("epoch"))


def check_matches_split(outputs: dict, info, split_data, source) -> None:
    """Stored outputs must belong to this dataset file: same task, and the labels of their rows."""
    if outputs.get("task", info.task) != info.task:
        raise UsageError(f"{source} is for a {outputs.get('task')} task, but the run's dataset {info.flag} is "
                         f"{info.task}; recompute with --split test")
    indices = torch.as_tensor(split_indices(outputs), dtype=torch.long)
    if len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= len(split_data)):
        raise UsageError(f"{source} refers to samples beyond the {len(split_data)} of the {info.flag} "
                         f"{outputs.get('split', 'test')} split; recompute with --split test")
    stored = outputs["labels"]
    if stored.shape[1:] != split_data.labels.shape[1:] or not torch.equal(
            stored.to(split_data.labels.dtype), split_data.labels[indices]):
        raise UsageError(f"{source} does not match the labels of {info.file_name} "
                         f"({outputs.get('split', 'test')} split); recompute with --split test")




def split_indices(outputs: dict) -> np.ndarray:
    """Split index of every row (stored outputs say; recomputed ones are the whole split)."""
    indices = outputs.get("indices")
    if isinstance(indices, torch.Tensor):
        return indices.numpy().astype(np.int64)
    return np.arange(outputs["labels"].shape[0])


# ===================================================================== the analysis


@dataclass
class ConfidentErrors:
    """The wrong predictions made with the highest confidence, most confident first."""

    rows: np.ndarray  # rows of the outputs
    sample_ids: np.ndarray  # their indices in the split
    images: np.ndarray  # their uint8 images
    truths: list  # label text
    predictions: list  # prediction text
    confidence: np.ndarray


@dataclass
class Analysis:
    """Every number :func:`analyze` computed from one split's outputs (nothing is written)."""

    split: str
    n: int
    source: str  # "stored" or "recomputed"
    task: str
    recorded_task: str | None  # the task the outputs dict names (None in a file that does not say)
    tta: bool
    is_3d: bool
    class_names: list
    layer_names: list
    summary: list  # rows of inference_summary.csv
    channels: list  # rows of inference_channels.csv
    calibration: dict  # see calibration()
    selectivity: list  # class_selectivity() of every block, (K, C) each
    groups: np.ndarray  # sample_groups()
    group_names: list
    last_block: np.ndarray  # activations of the last block, samples sorted by group, channels by preferred class
    last_block_groups: np.ndarray  # the groups of those rows
    projection: dict  # embedding_projections()
    embedding: list  # rows of inference_embedding_2d.csv
    wrong: np.ndarray  # (N,) bool; multi-label: at least one wrong label
    confident: ConfidentErrors
    curves: list = field(default_factory=list)  # medscope.analysis.curves.roc_pr_curves()
    seconds: dict = field(default_factory=dict)

    @property
    def errors(self) -> int:
        """Samples with a wrong prediction (multi-label: at least one wrong label)."""
        return int(self.wrong.sum())


def analyze(outputs: dict, info, split_images, *, n_bins: int = DEFAULT_BINS, dead_threshold: float = DEAD_THRESHOLD,
            tsne_points: int = TSNE_POINTS, n_errors: int = N_ERRORS, seed: int = 0,
            source: str = "stored") -> Analysis:
    """Every table and figure input of the inference analysis of one split.

    Parameters
    ----------
    outputs : dict
        As :func:`load_outputs` or :func:`recompute_outputs` return it.
    info : medscope.data.DatasetInfo
        The run's dataset (task, class names, 2D or 3D).
    split_images : uint8 tensor (N_split, C, ...)
        The images of the whole split; row ``r`` of the outputs is image
        ``outputs["indices"][r]``. Only the confident errors are read from it,
        so a memory-mapped split stays on disk.
    n_bins, dead_threshold, tsne_points, n_errors, seed
        See :func:`calibration`, :func:`dead_channels`,
        :func:`embedding_projections` and :func:`confident_errors`.
    source : str
        ``"stored"`` or ``"recomputed"``, recorded as given.
    """
    kind = tasks.task(info.task)
    names = list(info.class_names)
    probs = outputs["probabilities"].double().numpy()
    labels = outputs["labels"].numpy()
    indices = split_indices(outputs)
    layer_names = list(outputs["layer_names"])
    acts = {name: outputs["activations"][name].double().numpy() for name in layer_names}
    member = class_membership(kind.name, labels, len(names))
    seconds = {}

    started = time.perf_counter()
    summary = layer_summary(layer_names, acts, member, dead_threshold)
    channels = channel_rows(layer_names, acts, member, names)
    calib = calibration(kind.name, probs, labels, names, n_bins)
    curves = roc_pr_curves(kind.name, probs, labels, names)
    seconds["tables"] = time.perf_counter() - started

    started = time.perf_counter()
    selectivity = [class_selectivity(acts[name], member) for name in layer_names]
    groups = sample_groups(kind.name, labels, len(names))
    last = acts[layer_names[-1]]
    sample_order, channel_order = sorted_by_group(groups, last, member)
    seconds["activations"] = time.perf_counter() - started

    started = time.perf_counter()
    projection = embedding_projections(outputs["embeddings"].numpy(), max_tsne_points=tsne_points, seed=seed)
    seconds["pca_tsne"] = time.perf_counter() - started

    predicted = kind.predictions(probs)
    wrong = ~kind.correct(labels, predicted)
    label_text = [kind.label_text(row, names) for row in labels]
    pred_text = [kind.label_text(row, names) for row in predicted]
    rows, conf = confident_errors(kind.name, probs, labels, n_errors)
    sample_ids = indices[rows]
    confident = ConfidentErrors(rows=rows, sample_ids=sample_ids,
                                images=np.asarray(split_images[torch.as_tensor(sample_ids, dtype=torch.long)]),
                                truths=[label_text[r] for r in rows], predictions=[pred_text[r] for r in rows],
                                confidence=conf)
    return Analysis(
        split=outputs.get("split", "test"), n=len(labels), source=source, task=kind.name,
        recorded_task=outputs.get("task"), tta=bool(outputs.get("tta", False)), is_3d=info.is_3d,
        class_names=names, layer_names=layer_names, summary=summary, channels=channels, calibration=calib,
        selectivity=selectivity, groups=groups,
        group_names=names + (["none"] if kind.is_multilabel else []),
        last_block=last[sample_order][:, channel_order], last_block_groups=groups[sample_order],
        projection=projection, embedding=embedding_rows(indices, projection, label_text, pred_text, wrong),
        wrong=wrong, confident=confident, curves=curves, seconds=seconds)


RELIABILITY_COLUMNS = ["label", "bin", "lower", "upper", "count", "confidence", "accuracy", "gap"]
EMBEDDING_COLUMNS = ["row", "index", "label", "prediction", "correct", "pca_1", "pca_2", "tsne_1", "tsne_2"]


def reliability_rows(calib: dict) -> list[dict]:
    """Rows of ``inference_reliability.csv``: one per (label, bin) of :func:`calibration`'s curves."""
    rows = []
    for curve in calib["curves"]:
        bins = curve["bins"]
        for b in range(len(bins["count"])):
            rows.append({"label": curve["label"], "bin": b, "lower": float(bins["lower"][b]),
                         "upper": float(bins["upper"][b]), "count": int(bins["count"][b]),
                         "confidence": float(bins["confidence"][b]), "accuracy": float(bins["accuracy"][b]),
                         "gap": float(bins["accuracy"][b] - bins["confidence"][b])})
    return rows


def calibration_record(analysis: Analysis) -> dict:
    """The content of ``inference_calibration.json``: the numbers and their definitions."""
    calib = analysis.calibration
    return {"split": analysis.split, "n": analysis.n, "task": analysis.recorded_task, "tta": analysis.tta,
            "accuracy": calib["accuracy"], "ece": calib["ece"], "brier": calib["brier"], "n_bins": calib["n_bins"],
            "per_label": {c["label"]: {"ece": c["ece"], "accuracy": c["accuracy"]} for c in calib["curves"]},
            "definitions": {
                "ece": "sum over equal-width confidence bins (lo, hi] of n_b/N * |accuracy_b - confidence_b|; "
                       "binary: confidence of the predicted class, multi-class: top-1, multi-label: per label "
                       "(reported ece = mean over labels)",
                "brier": "multi-class: mean_i sum_k (p_ik - y_ik)^2 in [0, 2]; binary: mean_i (p_i - y_i)^2 on the "
                         "positive-class probability, in [0, 1]; multi-label: binary score averaged over labels"}}


def embedding_rows(indices, projection, label_text, pred_text, wrong) -> list[dict]:
    """Rows of ``inference_embedding_2d.csv``: PCA of every sample, t-SNE of the subsample (else empty)."""
    tsne = {}
    if projection["tsne"] is not None:
        tsne = {int(r): projection["tsne"][i] for i, r in enumerate(projection["tsne_rows"])}
    rows = []
    for i in range(len(label_text)):
        point = tsne.get(i)
        rows.append({"row": i, "index": int(indices[i]), "label": label_text[i],
                     "prediction": pred_text[i], "correct": int(not wrong[i]),
                     "pca_1": float(projection["pca"][i, 0]), "pca_2": float(projection["pca"][i, 1]),
                     "tsne_1": None if point is None else float(point[0]),
                     "tsne_2": None if point is None else float(point[1])})
    return rows


# ===================================================================== writing the folder


def _blank_nan(rows):
    """NaN cells (a class absent from the split) are written empty."""
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()} for row in rows]


def write_analysis(analysis: Analysis, out_dir: Path, *, title: str) -> list[Path]:
    """Write the tables, the JSON and the figures of ``analysis`` into ``out_dir`` (atomically).

    ``title`` ends every figure title (the run's name). Returns the paths in
    the order they were written.
    """
    from medscope import atomic
    from medscope.analysis import inference_plots as iplots

    out_dir = Path(out_dir)
    split, n, calib = analysis.split, analysis.n, analysis.calibration
    multilabel = tasks.task(analysis.task).is_multilabel
    files = [
        atomic.write_csv(out_dir / SUMMARY_CSV, _blank_nan(analysis.summary),
                         summary_columns(len(analysis.class_names))),
        atomic.write_csv(out_dir / CHANNELS_CSV, _blank_nan(analysis.channels), CHANNEL_COLUMNS),
        atomic.write_json(out_dir / CALIBRATION_JSON, calibration_record(analysis)),
        atomic.write_csv(out_dir / RELIABILITY_CSV, _blank_nan(reliability_rows(calib)), RELIABILITY_COLUMNS),
        iplots.layer_activation_bars(out_dir / iplots.LAYER_MEAN_ACTIVATION_PNG, analysis.summary,
                                     f"mean activation per block ({split}, n={n}) — {title}"),
        iplots.class_channel_heatmaps(
            out_dir / iplots.NEURON_HEATMAP_CLASSES_PNG, analysis.layer_names, analysis.selectivity,
            analysis.class_names, f"per-class channel means, standardized per channel ({split}) — {title}"),
        iplots.sample_channel_heatmap(
            out_dir / iplots.NEURON_HEATMAP_SAMPLES_PNG, analysis.last_block, analysis.last_block_groups,
            analysis.group_names, f"{analysis.layer_names[-1]}: samples x channels ({split}) — {title}"),
        atomic.write_csv(out_dir / EMBEDDING_CSV, analysis.embedding, EMBEDDING_COLUMNS),
    ]
    colour = "; colour: first positive label" if multilabel else ""
    files.append(iplots.embedding_map(out_dir / iplots.EMBEDDING_2D_PNG, analysis.projection, analysis.groups,
                                      analysis.group_names, analysis.wrong,
                                      f"penultimate embeddings ({split}{colour}) — {title}"))
    files.append(atomic.write_csv(out_dir / OPERATING_POINTS_CSV, _blank_nan(operating_point_rows(analysis.curves)),
                                  OPERATING_POINT_COLUMNS))
    against = (f"the positive class, {analysis.curves[0]['label']}," if len(analysis.curves) == 1
               else "each class against the rest")
    files.append(iplots.roc_pr_curves(out_dir / iplots.ROC_PR_PNG, analysis.curves,
                                      f"ROC and precision–recall of {against} ({split}, n={n}) — {title}"))
    files.append(iplots.reliability_diagram(out_dir / iplots.RELIABILITY_DIAGRAM_PNG, calib,
                                            f"reliability ({split}, n={n}) — {title}"))
    errors = analysis.confident
    note = "; 3D: middle slice" if analysis.is_3d else ""
    files.append(iplots.error_grid(
        out_dir / iplots.CONFIDENT_ERRORS_PNG, errors.images, errors.truths, errors.predictions, errors.confidence,
        f"most confident errors ({split}: {analysis.errors} of {n} wrong{note}) — {title}",
        sample_ids=errors.sample_ids.tolist()))
    return files
