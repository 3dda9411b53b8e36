"""What a trained model does with a split: activations, embeddings and calibration.

The input is an *outputs* dict as :func:`medscope.activations.collect_outputs`
returns it and ``train.py`` stores in ``inference_outputs.pt``: logits,
probabilities, labels, penultimate embeddings and, for every block of
``model.blocks()``, the per-sample channel means of the block's output.

The first part of this module is pure functions on numpy arrays (calibration,
activation statistics, projections); the second part reads a run folder,
recomputes outputs when asked, and writes ``results/<run>/inference/``.

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

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from medscope.data import TASK_BINARY, TASK_MULTILABEL
from medscope.errors import UsageError
from medscope.runs import RunLayout

DEFAULT_BINS = 15
DEAD_THRESHOLD = 1e-8
TSNE_POINTS = 2000
TSNE_PCA_DIMS = 50
TSNE_THREADS = 1
THRESHOLD = 0.5  # the decision threshold of medscope.metrics (binary and multi-label)

# ===================================================================== calibration


def predicted_confidence(task: str, probabilities, labels) -> tuple[np.ndarray, np.ndarray]:
    """Confidence of each prediction and whether it was right.

    Parameters
    ----------
    task : str
        A MedMNIST task (``medscope.data.TASK_*``).
    probabilities : array (N, K)
        Softmax outputs, or sigmoid outputs per label for multi-label tasks.
    labels : array (N, 1) of class indices, or (N, L) of 0/1 for multi-label.

    Returns
    -------
    confidence, correct : arrays (N,), or (N, L) for multi-label
        * binary: ``p = probabilities[:, -1]`` (positive class), prediction
          ``p > 0.5``, confidence ``max(p, 1 - p)`` (that of the predicted class);
        * multi-class and ordinal: top-1, confidence ``max_k p_k``;
        * multi-label: every label on its own as a binary problem.

    The predictions are those of :func:`medscope.metrics.predictions`, so the
    mean of ``correct`` is the MedMNIST accuracy.

    >>> conf, ok = predicted_confidence("binary-class", [[0.2, 0.8], [0.7, 0.3]], [[1], [1]])
    >>> conf.round(2).tolist(), ok.tolist()
    ([0.8, 0.7], [True, False])
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels)
    if task == TASK_MULTILABEL:
        pred = probs > THRESHOLD
        return np.where(pred, probs, 1.0 - probs), pred == (y > 0.5)
    if task == TASK_BINARY:
        p = probs[:, -1] if probs.ndim == 2 else probs
        pred = p > THRESHOLD
        return np.where(pred, p, 1.0 - p), pred.astype(np.int64) == y.reshape(-1)
    return probs.max(axis=1), probs.argmax(axis=1) == y.reshape(-1)


def bin_edges(n_bins: int) -> np.ndarray:
    """``n_bins + 1`` equal-width edges on [0, 1]."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    return np.linspace(0.0, 1.0, n_bins + 1)


def reliability_bins(confidence, correct, n_bins: int = DEFAULT_BINS) -> dict:
    """Per-bin count, mean confidence and accuracy (equal-width confidence bins).

    Bin ``b`` holds the predictions with confidence in ``(e_b, e_{b+1}]``
    where ``e_b = b / n_bins`` (the first bin also holds 0), the convention
    of Guo et al. (2017) and of ``sklearn.calibration.calibration_curve``.

    Returns
    -------
    dict of arrays (n_bins,)
        ``lower``, ``upper`` (edges), ``count``, ``confidence`` (mean
        confidence in the bin) and ``accuracy`` (fraction correct); the last
        two are NaN for empty bins.

    >>> b = reliability_bins([0.95, 0.95, 0.65, 0.65], [1, 0, 1, 1], n_bins=10)
    >>> b["count"].tolist()
    [0, 0, 0, 0, 0, 0, 2, 0, 0, 2]
    >>> b["accuracy"][[6, 9]].tolist()
    [1.0, 0.5]
    """
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    ok = np.asarray(correct, dtype=np.float64).reshape(-1)
    edges = bin_edges(n_bins)
    index = np.searchsorted(edges[1:-1], conf, side="left")
    count = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, weights=conf, minlength=n_bins) / count
        accuracy = np.bincount(index, weights=ok, minlength=n_bins) / count
    return {"lower": edges[:-1], "upper": edges[1:], "count": count, "confidence": mean_conf, "accuracy": accuracy}


def expected_calibration_error(confidence, correct, n_bins: int = DEFAULT_BINS) -> float:
    """Expected calibration error with equal-width confidence bins.

    ``ECE = sum_b (n_b / N) * |acc_b - conf_b|`` over the non-empty bins of
    :func:`reliability_bins`, where ``acc_b`` is the fraction of correct
    predictions and ``conf_b`` the mean confidence in bin ``b``. Unitless,
    in [0, 1]; 0 is perfect calibration. NaN for an empty input.

    >>> round(expected_calibration_error([0.95, 0.95, 0.65, 0.65], [1, 0, 1, 1], n_bins=10), 4)
    0.4
    """
    bins = reliability_bins(confidence, correct, n_bins)
    total = bins["count"].sum()
    if total == 0:
        return float("nan")
    filled = bins["count"] > 0
    gaps = np.abs(bins["accuracy"][filled] - bins["confidence"][filled])
    return float(np.sum(bins["count"][filled] / total * gaps))


def brier_score(task: str, probabilities, labels) -> float:
    """Brier score: mean squared error of the predicted probabilities.

    * multi-class and ordinal: ``mean_i sum_k (p_ik - y_ik)^2`` with ``y_ik``
      one-hot (Brier 1950), in [0, 2];
    * binary: ``mean_i (p_i - y_i)^2`` on the positive-class probability
      ``p_i = probabilities[i, -1]``, in [0, 1] (half the two-class form above);
    * multi-label: the binary score averaged over samples and labels, in [0, 1].

    These are ``sklearn.metrics.brier_score_loss`` with ``scale_by_half="auto"``.

    >>> round(brier_score("binary-class", [[0.2, 0.8], [0.7, 0.3]], [[1], [1]]), 4)
    0.265
    >>> round(brier_score("multi-class", [[0.5, 0.3, 0.2]], [[0]]), 4)
    0.38
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels)
    if task == TASK_MULTILABEL:
        return float(np.mean((probs - y) ** 2))
    if task == TASK_BINARY:
        p = probs[:, -1] if probs.ndim == 2 else probs
        return float(np.mean((p - y.reshape(-1)) ** 2))
    onehot = np.eye(probs.shape[1])[y.reshape(-1).astype(np.int64)]
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def calibration(task: str, probabilities, labels, label_names: list[str], n_bins: int = DEFAULT_BINS) -> dict:
    """ECE, Brier score, accuracy and reliability bins of one split.

    Multi-label tasks get one reliability curve and ECE per label (each label
    a binary problem); their ``ece`` is the mean of the per-label ECEs and
    their ``accuracy`` the mean per-label accuracy (as MedMNIST's ACC).

    Returns
    -------
    dict
        ``ece``, ``brier``, ``accuracy``, ``n_bins`` and ``curves``: a list of
        ``{"label", "ece", "accuracy", "bins"}`` — one entry named ``"all"``
        for single-label tasks, one per label for multi-label tasks.
    """
    conf, ok = predicted_confidence(task, probabilities, labels)
    if task == TASK_MULTILABEL:
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
    if task == TASK_MULTILABEL:
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


SUMMARY_COLUMNS = ["layer", "position", "channels", "samples", "mean", "std", "min_channel_mean",
                   "max_channel_mean", "dead_channels", "dead_fraction"]
CHANNEL_COLUMNS = ["layer", "channel", "class", "value"]


def summary_columns(num_classes: int) -> list[str]:
    """Columns of ``inference_summary.csv``: the fixed ones, then ``mean_class_<k>`` per class."""
    return SUMMARY_COLUMNS + [f"mean_class_{k}" for k in range(num_classes)]


def layer_summary(layer_names, activations: dict, membership, threshold: float = DEAD_THRESHOLD) -> list[dict]:
    """One row per block, in network order.

    * ``mean``, ``std``: mean and population std of ``a[i, c]`` over all
      samples and channels of the block;
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
    if task != TASK_MULTILABEL:
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


# ===================================================================== run folders

OUTPUT_KEYS = ("logits", "probabilities", "labels", "embeddings", "layer_names", "activations")


def output_dir(run_path: Path, split: str) -> Path:
    """``inference/`` for the test split, ``inference/<split>/`` for train and val."""
    base = RunLayout(run_path).inference_dir
    return base if split == "test" else base / split


def load_outputs(path: Path) -> dict:
    """Read ``inference_outputs.pt`` safely and check that its parts fit together."""
    try:
        outputs = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is bad input here
        raise UsageError(f"{path} is not readable ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                         "recompute it with --split test") from None
    if not isinstance(outputs, dict):
        raise UsageError(f"{path} is not a medscope inference file; recompute it with --split test")
    missing = [k for k in OUTPUT_KEYS if k not in outputs]
    if missing:
        raise UsageError(f"{path} lacks {', '.join(missing)}; recompute it with --split test")
    check_outputs(outputs, path)
    return outputs


def check_outputs(outputs: dict, source) -> None:
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
    indices = torch.as_tensor(_indices(outputs), dtype=torch.long)
    if len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= len(split_data)):
        raise UsageError(f"{source} refers to samples beyond the {len(split_data)} of the {info.flag} "
                         f"{outputs.get('split', 'test')} split; recompute with --split test")
    stored = outputs["labels"]
    if stored.shape[1:] != split_data.labels.shape[1:] or not torch.equal(
            stored.to(split_data.labels.dtype), split_data.labels[indices]):
        raise UsageError(f"{source} does not match the labels of {info.file_name} "
                         f"({outputs.get('split', 'test')} split); recompute with --split test")


@dataclass
class Analysis:
    """What :func:`analyze` computed and wrote."""

    split: str
    n: int
    source: str  # "stored" or "recomputed"
    calibration: dict
    summary: list
    files: list = field(default_factory=list)
    errors: int = 0  # samples with a wrong prediction (multi-label: at least one wrong label)
    seconds: dict = field(default_factory=dict)
    task: str = ""


def analyze(outputs: dict, info, split_images, out_dir: Path, *, title: str, n_bins: int = DEFAULT_BINS,
            dead_threshold: float = DEAD_THRESHOLD, tsne_points: int = TSNE_POINTS, n_errors: int = 16,
            seed: int = 0, source: str = "stored") -> Analysis:
    """Compute everything and write the tables, JSON and figures into ``out_dir``.

    ``split_images`` are the uint8 images of the whole split; row ``r`` of the
    outputs is image ``outputs["indices"][r]`` (only the confident errors are
    read from it, so a memory-mapped split stays on disk).
    """
    from medscope import atomic
    from medscope.analysis import inference_plots as iplots

    task, names = info.task, info.class_names
    split = outputs.get("split", "test")
    probs = outputs["probabilities"].double().numpy()
    labels = outputs["labels"].numpy()
    layer_names = list(outputs["layer_names"])
    acts = {name: outputs["activations"][name].double().numpy() for name in layer_names}
    member = class_membership(task, labels, len(names))
    out_dir = Path(out_dir)
    files, seconds = [], {}
    started = time.perf_counter()

    summary = layer_summary(layer_names, acts, member, dead_threshold)
    files.append(atomic.write_csv(out_dir / "inference_summary.csv", _blank_nan(summary), summary_columns(len(names))))
    files.append(atomic.write_csv(out_dir / "inference_channels.csv",
                                  _blank_nan(channel_rows(layer_names, acts, member, names)), CHANNEL_COLUMNS))

    calib = calibration(task, probs, labels, names, n_bins)
    files.append(atomic.write_json(out_dir / "inference_calibration.json", _calibration_record(calib, outputs, split)))
    files.append(atomic.write_csv(out_dir / "inference_reliability.csv", _blank_nan(_reliability_rows(calib)),
                                  RELIABILITY_COLUMNS))
    seconds["tables"] = time.perf_counter() - started

    started = time.perf_counter()
    groups = sample_groups(task, labels, len(names))
    group_names = list(names) + (["none"] if task == TASK_MULTILABEL else [])
    files.append(iplots.layer_activation_bars(out_dir / "layer_mean_activation.png", summary,
                                              f"mean activation per block ({split}, n={len(labels)}) — {title}"))
    files.append(iplots.class_channel_heatmaps(
        out_dir / "neuron_heatmap_classes.png", layer_names, [class_selectivity(acts[l], member) for l in layer_names],
        names, f"per-class channel means, standardized per channel ({split}) — {title}"))
    last = layer_names[-1]
    sample_order, channel_order = sorted_by_group(groups, acts[last], member)
    files.append(iplots.sample_channel_heatmap(
        out_dir / "neuron_heatmap_samples.png", acts[last][sample_order][:, channel_order],
        groups[sample_order], group_names, f"{last}: samples x channels ({split}) — {title}"))
    seconds["activation_plots"] = time.perf_counter() - started

    started = time.perf_counter()
    _, correct = predicted_confidence(task, probs, labels)
    wrong = ~correct.all(axis=1) if correct.ndim == 2 else ~correct
    projection = embedding_projections(outputs["embeddings"].numpy(), max_tsne_points=tsne_points, seed=seed)
    seconds["pca_tsne"] = time.perf_counter() - started
    started = time.perf_counter()
    label_text = [_label_text(task, row, names) for row in labels]
    pred_text = [_label_text(task, _prediction(task, row), names) for row in probs]
    files.append(atomic.write_csv(out_dir / "inference_embedding_2d.csv",
                                  _embedding_rows(_indices(outputs), projection, label_text, pred_text, wrong),
                                  EMBEDDING_COLUMNS))
    colour = "; colour: first positive label" if task == TASK_MULTILABEL else ""
    files.append(iplots.embedding_map(out_dir / "embedding_2d.png", projection, groups, group_names, wrong,
                                      f"penultimate embeddings ({split}{colour}) — {title}"))
    files.append(iplots.reliability_diagram(out_dir / "reliability_diagram.png", calib,
                                            f"reliability ({split}, n={len(labels)}) — {title}"))

    rows, conf = confident_errors(task, probs, labels, n_errors)
    split_rows = _indices(outputs)[rows]
    images = np.asarray(split_images[torch.as_tensor(split_rows, dtype=torch.long)])
    note = "; 3D: middle slice" if info.is_3d else ""
    files.append(iplots.error_grid(
        out_dir / "confident_errors.png", images, [label_text[r] for r in rows], [pred_text[r] for r in rows],
        conf, f"most confident errors ({split}: {int(wrong.sum())} of {len(labels)} wrong{note}) — {title}",
        sample_ids=split_rows.tolist()))
    seconds["embedding_and_calibration_plots"] = time.perf_counter() - started
    return Analysis(split=split, n=len(labels), source=source, calibration=calib, summary=summary,
                    files=files, errors=int(wrong.sum()), seconds=seconds, task=task)


RELIABILITY_COLUMNS = ["label", "bin", "lower", "upper", "count", "confidence", "accuracy", "gap"]
EMBEDDING_COLUMNS = ["row", "index", "label", "prediction", "correct", "pca_1", "pca_2", "tsne_1", "tsne_2"]


def _blank_nan(rows):
    """NaN cells (a class absent from the split) are written empty."""
    return [{k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()} for row in rows]


def _reliability_rows(calib: dict) -> list[dict]:
    rows = []
    for curve in calib["curves"]:
        bins = curve["bins"]
        for b in range(len(bins["count"])):
            rows.append({"label": curve["label"], "bin": b, "lower": float(bins["lower"][b]),
                         "upper": float(bins["upper"][b]), "count": int(bins["count"][b]),
                         "confidence": float(bins["confidence"][b]), "accuracy": float(bins["accuracy"][b]),
                         "gap": float(bins["accuracy"][b] - bins["confidence"][b])})
    return rows


def _calibration_record(calib: dict, outputs: dict, split: str) -> dict:
    return {"split": split, "n": int(outputs["labels"].shape[0]), "task": outputs.get("task"),
            "tta": bool(outputs.get("tta", False)), "accuracy": calib["accuracy"], "ece": calib["ece"],
            "brier": calib["brier"], "n_bins": calib["n_bins"],
            "per_label": {c["label"]: {"ece": c["ece"], "accuracy": c["accuracy"]} for c in calib["curves"]},
            "definitions": {
                "ece": "sum over equal-width confidence bins (lo, hi] of n_b/N * |accuracy_b - confidence_b|; "
                       "binary: confidence of the predicted class, multi-class: top-1, multi-label: per label "
                       "(reported ece = mean over labels)",
                "brier": "multi-class: mean_i sum_k (p_ik - y_ik)^2 in [0, 2]; binary: mean_i (p_i - y_i)^2 on the "
                         "positive-class probability, in [0, 1]; multi-label: binary score averaged over labels"}}


def _prediction(task: str, prob_row: np.ndarray):
    if task == TASK_MULTILABEL:
        return (prob_row > THRESHOLD).astype(np.int64)
    if task == TASK_BINARY:
        return np.array([int(prob_row[-1] > THRESHOLD)])
    return np.array([int(prob_row.argmax())])


def _indices(outputs: dict) -> np.ndarray:
    """Split index of every row (stored outputs say; recomputed ones are the whole split)."""
    indices = outputs.get("indices")
    if isinstance(indices, torch.Tensor):
        return indices.numpy().astype(np.int64)
    return np.arange(outputs["labels"].shape[0])


def _label_text(task: str, label_row, names) -> str:
    row = np.asarray(label_row).reshape(-1)
    if task == TASK_MULTILABEL:
        return "+".join(names[j] for j in np.flatnonzero(row > 0.5)) or "none"
    return names[int(row[0])]


def _embedding_rows(indices, projection, label_text, pred_text, wrong) -> list[dict]:
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
