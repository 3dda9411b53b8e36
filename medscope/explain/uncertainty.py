"""MC-dropout uncertainty (Gal & Ghahramani, 2016): how sure the model is, per image and per dataset.

Dropout stays active at test time while normalization layers use their running
statistics (evaluation mode); T stochastic passes give T probability vectors
per image, from which the predictive entropy, its split into expected entropy
(noise in the data) and mutual information (disagreement between the sampled
models), and the spread of the predicted class's probability follow.

Masks come from one seeded ``torch.Generator``, drawn in call order (batch,
then pass, then dropout layer), so a run is reproducible. When every dropout
layer sits in the classifier head (as in every medscope model), the backbone
runs once per batch and only the head is sampled T times: the masks are drawn
in the same order as a full stochastic pass would draw them, so both paths
give the same numbers, bit for bit, for a fraction of the cost.

:func:`analyze_uncertainty` does it all for a split and returns values; the
functions after it turn them into the rows, cases, summary and report of the
``uncertainty/`` folder, whose files are named in :data:`FILES`.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
from scipy.special import entr

from medscope.data import batches, gather, normalize
from medscope.errors import UsageError
from medscope.report_text import markdown_text, number_text, percent_text
from medscope.tasks import Task
from medscope.tasks import task as as_task

FILES = {
    "per_image": "uncertainty_per_image.csv",
    "cases": "uncertain_cases.json",
    "summary": "uncertainty_summary.json",
    "accuracy_coverage": "accuracy_coverage.png",
    "distributions": "uncertainty_distributions.png",
    "report": "uncertainty_report.md",
}


ELEMENTWISE = (nn.Dropout,)
CHANNELWISE = (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
UNSUPPORTED = (nn.AlphaDropout, nn.FeatureAlphaDropout)


# --------------------------------------------------------------------------- sampling

class MaskSampler:
    """Inverted-dropout keep-masks from one seeded generator, in call order.

    ``mask = 1[u >= p] / (1 - p)`` with ``u ~ U[0, 1)``: each unit is kept with
    probability ``1 - p`` and scaled so that ``E[mask] = 1``.

    >>> a, b = MaskSampler(0), MaskSampler(0)
    >>> torch.equal(a.mask((2, 3), 0.5), b.mask((2, 3), 0.5))
    True
    """

    def __init__(self, seed: int, device="cpu"):
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device).manual_seed(int(seed))

    def mask(self, shape, p: float, dtype=torch.float32) -> torch.Tensor:
        u = torch.rand(tuple(shape), generator=self.generator, device=self.device)
        return (u >= p).to(dtype) / (1.0 - p)


class SampledDropout(nn.Module):
    """Dropout whose masks come from a :class:`MaskSampler` (active only in training mode)."""

    def __init__(self, p: float, channelwise: bool, sampler: MaskSampler):
        super().__init__()
        self.p, self.channelwise, self.sampler = float(p), channelwise, sampler

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        shape = (*x.shape[:2], *([1] * (x.ndim - 2))) if self.channelwise and x.ndim > 2 else x.shape
        return x * self.sampler.mask(shape, self.p, dtype=x.dtype)

    def extra_repr(self) -> str:
        return f"p={self.p}, channelwise={self.channelwise}"


def dropout_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every dropout layer MC dropout can sample."""
    found = []
    for name, module in model.named_modules():
        if isinstance(module, UNSUPPORTED):
            raise UsageError(f"{name} is {type(module).__name__}, which MC dropout here does not sample; "
                             "only Dropout and Dropout1d/2d/3d are supported")
        if isinstance(module, ELEMENTWISE + CHANNELWISE):
            found.append((name, module))
    return found


def dropout_rates(model: nn.Module) -> dict[str, float]:
    return {name: float(module.p) for name, module in dropout_modules(model)}


def head_only(model: nn.Module) -> bool:
    """True when the model splits into ``features`` + ``head`` and all dropout is in the head."""
    names = list(dropout_rates(model))
    return (hasattr(model, "features") and isinstance(getattr(model, "head", None), nn.Module)
            and all(name.startswith("head.") for name in names))


@contextlib.contextmanager
def mc_dropout(model: nn.Module, sampler: MaskSampler, rate: float | None = None):
    """Evaluation mode everywhere except dropout, whose masks come from ``sampler``.

    Each dropout layer is swapped for a :class:`SampledDropout` (rate ``rate``
    if given, else its own) in training mode; normalization layers stay in
    evaluation mode. The original layers and training flags come back on exit.
    """
    was_training = model.training
    swapped = []
    model.eval()
    try:
        for name, module in dropout_modules(model):
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            replacement = SampledDropout(module.p if rate is None else rate, isinstance(module, CHANNELWISE), sampler)
            replacement.train()
            setattr(parent, attr, replacement)
            swapped.append((parent, attr, module))
        yield model
    finally:
        for parent, attr, module in reversed(swapped):
            setattr(parent, attr, module)
        model.train(was_training)


@dataclass
class MCResult:
    """T stochastic probability vectors per image, and the deterministic (dropout off) ones."""

    samples: np.ndarray  # (T, N, K)
    deterministic: np.ndarray  # (N, K)
    labels: np.ndarray  # (N, 1) or (N, L)
    path: str  # "cached" (backbone once, head T times) or "full" (T whole passes)
    rates: dict = field(default_factory=dict)  # dropout rate used per layer
    seconds: float = 0.0


@torch.no_grad()
def mc_predict(model: nn.Module, split, task: str | Task, device, *, passes: int = 20, seed: int = 0,
               batch_size: int = 256, rate: float | None = None, path: str = "auto", progress=None) -> MCResult:
    """Run T = ``passes`` stochastic passes over a split.

    ``path``: ``auto`` takes the cached path when :func:`head_only` holds,
    ``cached`` insists on it, ``full`` always runs whole stochastic passes.
    ``progress``: a wrapper such as :func:`medscope.progress.progress` that
    draws a bar over the batches.
    """
    task = as_task(task)
    device = torch.device(device)
    if path == "auto":
        path = "cached" if head_only(model) else "full"
    if path == "cached" and not head_only(model):
        raise UsageError("this model has dropout outside its head; the cached path does not apply")
    sampler = MaskSampler(seed, device)
    samples, deterministic = [], []
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        index_batches = batches(split, batch_size)
        for index in (progress(index_batches, desc="MC dropout", unit="batch") if progress else index_batches):
            images, _ = gather(split, index, device)
            x = normalize(images)
            if path == "cached":
                feats = model.features(x)
                deterministic.append(task.scores(model.head(feats)).float().cpu())
                with mc_dropout(model, sampler, rate):
                    passes_out = [task.scores(model.head(feats)) for _ in range(passes)]
            else:
                deterministic.append(task.scores(model(x)).float().cpu())
                with mc_dropout(model, sampler, rate):
                    passes_out = [task.scores(model(x)) for _ in range(passes)]
            samples.append(torch.stack(passes_out).float().cpu())
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - start
    used = {name: (p if rate is None else float(rate)) for name, p in dropout_rates(model).items()}
    return MCResult(torch.cat(samples, dim=1).numpy(), torch.cat(deterministic).numpy(), split.labels.numpy(),
                    path, used, seconds)


# --------------------------------------------------------------------------- per-image statistics

def entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy in nats, ``H(p) = -sum_k p_k log p_k`` (with 0 log 0 = 0).

    >>> round(float(entropy(np.array([0.5, 0.5]))), 6) == round(math.log(2), 6)
    True
    """
    return entr(np.asarray(p, dtype=np.float64)).sum(axis=axis)


def categorical_stats(samples: np.ndarray, predicted: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """MC statistics of T categorical distributions per item.

    Parameters
    ----------
    samples : (T, M, K) probabilities (each row sums to 1)
    predicted : (M,) class per item; default the arg-max of the mean

    Returns
    -------
    dict of arrays: ``mean_probability`` (M, K) ``p̄ = mean_t p_t``;
    ``predicted`` (M,); ``predictive_entropy`` ``H(p̄)``; ``expected_entropy``
    ``mean_t H(p_t)``; ``mutual_information`` ``H(p̄) - mean_t H(p_t)``
    (>= 0); ``std_predicted_probability`` the population standard deviation
    (ddof = 0) over the T passes of the predicted class's probability;
    ``confidence`` ``p̄(predicted class)``, the mean probability of the predicted
    class (the word's one meaning in medscope, as in analyze_inference and
    calibration); ``normalised_entropy`` ``H(p̄) / log K`` (0: certain, 1:
    uniform). Entropies in nats.

    >>> s = categorical_stats(np.array([[[0.9, 0.1]], [[0.5, 0.5]]]))
    >>> [round(float(s[k][0]), 4) for k in ("predictive_entropy", "expected_entropy", "mutual_information")]
    [0.6109, 0.5091, 0.1017]
    >>> round(float(s["std_predicted_probability"][0]), 4), round(float(s["confidence"][0]), 4)
    (0.2, 0.7)
    >>> round(float(s["normalised_entropy"][0]), 4)
    0.8813
    """
    samples = np.asarray(samples, dtype=np.float64)
    mean = samples.mean(axis=0)
    if predicted is None:
        predicted = mean.argmax(axis=1)
    predicted = np.asarray(predicted, dtype=np.int64)
    h = entropy(mean)
    eh = entropy(samples).mean(axis=0)
    k = samples.shape[-1]
    return {
        "mean_probability": mean,
        "predicted": predicted,
        "predictive_entropy": h,
        "expected_entropy": eh,
        "mutual_information": np.maximum(h - eh, 0.0),  # >= 0 by Jensen; clip rounding
        "std_predicted_probability": samples[:, np.arange(len(predicted)), predicted].std(axis=0),
        "confidence": mean[np.arange(len(predicted)), predicted],
        "normalised_entropy": h / math.log(k),
    }


MEASURES = ("confidence", "normalised_entropy", "predictive_entropy", "expected_entropy", "mutual_information",
            "std_predicted_probability")
# scores for telling errors from right answers: larger means less sure
ERROR_SCORES = ("one_minus_confidence", "normalised_entropy", "predictive_entropy", "expected_entropy",
                "mutual_information", "std_predicted_probability")


def predictive_stats(samples: np.ndarray, task: str | Task) -> dict[str, np.ndarray]:
    """Per-image statistics (see :func:`categorical_stats`) for any MedMNIST task.

    Single-label tasks: softmax samples (T, N, K); the prediction is the
    task's (:meth:`medscope.tasks.Task.predictions` of the mean). Multi-label:
    sigmoid samples (T, N, L); each label is a two-class distribution, the
    per-label numbers are kept as ``per_label_<measure>`` (N, L) and the
    per-image measure is their mean over labels.
    """
    task = as_task(task)
    samples = np.asarray(samples, dtype=np.float64)
    mean = samples.mean(axis=0)
    if task.is_single_label:
        return categorical_stats(samples, task.predictions(mean))
    t, n, labels = samples.shape
    binary = np.stack([1.0 - samples, samples], axis=-1).reshape(t, n * labels, 2)
    per_label = categorical_stats(binary, task.predictions(mean).reshape(-1))
    stats = {"mean_probability": mean, "predicted": per_label["predicted"].reshape(n, labels)}
    for name in MEASURES:
        values = per_label[name].reshape(n, labels)
        stats[f"per_label_{name}"] = values
        stats[name] = values.mean(axis=1)
    return stats


# --------------------------------------------------------------------------- dataset statistics

def accuracy_coverage(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy of the ``k`` most confident predictions against the coverage ``k / N``, k = 1..N.

    >>> cov, acc = accuracy_coverage(np.array([0.9, 0.2, 0.6]), np.array([True, False, True]))
    >>> cov.round(3).tolist(), acc.round(3).tolist()
    ([0.333, 0.667, 1.0], [1.0, 1.0, 0.667])
    """
    order = np.argsort(-np.asarray(confidence), kind="stable")
    hits = np.cumsum(np.asarray(correct, dtype=np.float64)[order])
    k = np.arange(1, len(order) + 1)
    return k / len(order), hits / k


def choose_threshold(confidence: np.ndarray, correct: np.ndarray) -> dict:
    """The confidence below which to flag an image, chosen where Youden's J of "flagged = wrong" is largest.

    For a threshold ``t`` an image is flagged when ``confidence < t``; with
    ``TPR(t)`` the share of wrong predictions flagged and ``FPR(t)`` the share
    of right ones flagged, ``J(t) = TPR(t) - FPR(t)``. The candidates are the
    midpoints between consecutive distinct confidences (and the ends); ties in
    ``J`` go to the lower threshold (fewer flags). Meant for a split other
    than the one it is then applied to (explain.py: the validation split).
    Without both right and wrong predictions there is nothing to learn: the
    threshold then flags nothing (``rule`` says so).

    >>> r = choose_threshold(np.array([0.55, 0.6, 0.9, 0.95, 0.99]), np.array([False, False, True, True, True]))
    >>> r["threshold"], r["error_recall"], r["flagged_fraction"]
    (0.75, 1.0, 0.4)
    """
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    ok = np.asarray(correct, dtype=bool).reshape(-1)
    n_wrong, n_right = int((~ok).sum()), int(ok.sum())
    if n_wrong == 0 or n_right == 0:
        low = float(conf.min()) if conf.size else 0.0
        return {"threshold": low, "rule": "nothing to learn from (all predictions right or all wrong): flags none",
                "youden_j": float("nan"), "error_recall": float("nan"), "false_flag_rate": float("nan"),
                "flagged_fraction": 0.0, "n": int(conf.size), "n_wrong": n_wrong}
    values = np.unique(conf)
    candidates = np.concatenate([[values[0]], (values[:-1] + values[1:]) / 2, [np.nextafter(values[-1], np.inf)]])
    flagged = conf[None, :] < candidates[:, None]
    tpr = flagged[:, ~ok].mean(axis=1)
    fpr = flagged[:, ok].mean(axis=1)
    j = tpr - fpr
    best = int(np.flatnonzero(j == j.max())[0])
    return {"threshold": float(candidates[best]), "rule": "largest Youden's J of flagging the wrong predictions",
            "youden_j": float(j[best]), "error_recall": float(tpr[best]), "false_flag_rate": float(fpr[best]),
            "flagged_fraction": float(flagged[best].mean()), "n": int(conf.size), "n_wrong": n_wrong}


def _mean(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()) if values.size else float("nan")


def dataset_summary(stats: dict, labels: np.ndarray, task: str | Task, class_names: list[str], threshold: float,
                    deterministic: np.ndarray | None = None, *, n_resamples: int = 2000, seed: int = 0) -> dict:
    """Accuracy of all vs confident predictions, the accuracy-coverage curve, error AUROCs, per-class numbers.

    Error AUROCs: :func:`medscope.metrics.error_auroc_interval` of each score in
    :data:`ERROR_SCORES` (``1 - confidence`` and the uncertainty measures), with a
    95% bootstrap interval stratified by right/wrong (``n_resamples``, ``seed``).
    An image is flagged as uncertain when its confidence is below ``threshold``.
    """
    from medscope.metrics import error_auroc_interval

    task = as_task(task)
    correct = task.correct(labels, stats["predicted"])
    confident = stats["confidence"] >= threshold
    errors = ~correct
    coverage, accuracy = accuracy_coverage(stats["confidence"], correct)
    scores = {"one_minus_confidence": 1.0 - stats["confidence"]}
    scores.update({name: stats[name] for name in ERROR_SCORES if name in stats})
    intervals = {name: error_auroc_interval(values, errors, n_resamples=n_resamples, seed=seed)
                 for name, values in scores.items()}
    summary = {
        "n": int(len(correct)),
        "threshold": float(threshold),
        "accuracy_all": _mean(correct),
        "n_confident": int(confident.sum()),
        "coverage": _mean(confident),
        "accuracy_confident": _mean(correct[confident]),
        "n_uncertain": int((~confident).sum()),
        "flagged_fraction": _mean(~confident),
        "accuracy_uncertain": _mean(correct[~confident]),
        "n_errors": int(errors.sum()),
        "error_auroc": {name: entry["estimate"] for name, entry in intervals.items()},
        "error_auroc_interval": {name: {"low": entry["low"], "high": entry["high"], "level": entry["level"],
                                        "method": entry["method"], "n_resamples": entry["n_resamples"]}
                                 for name, entry in intervals.items()},
        "mean": {name: _mean(stats[name]) for name in MEASURES},
        "accuracy_coverage": {"coverage": coverage.tolist(), "accuracy": accuracy.tolist(),
                              "area": float(np.mean(accuracy))},
    }
    if deterministic is not None:
        det_pred = task.predictions(deterministic)
        summary["accuracy_deterministic"] = _mean(task.correct(labels, det_pred))
        summary["agreement_with_deterministic"] = _mean(task.correct(det_pred, stats["predicted"]))
    summary["per_class"] = _per_class(stats, labels, task, class_names, threshold, correct, confident)
    return summary


def _per_class(stats, labels, task: Task, class_names, threshold, correct, confident) -> list[dict]:
    rows = []
    if task.is_multilabel:  # one row per label, each a binary problem
        labels = np.asarray(labels).astype(np.int64)
        for j, name in enumerate(class_names):
            conf = stats["per_label_confidence"][:, j]
            right = labels[:, j] == stats["predicted"][:, j]
            rows.append({"class": j, "name": name, "n": int(len(right)), "n_positive": int(labels[:, j].sum()),
                         "accuracy": _mean(right), "mean_confidence": _mean(conf),
                         "mean_predictive_entropy": _mean(stats["per_label_predictive_entropy"][:, j]),
                         "mean_mutual_information": _mean(stats["per_label_mutual_information"][:, j]),
                         "n_flagged": int((conf < threshold).sum()), "fraction_uncertain": _mean(conf < threshold)})
        return rows
    truth = np.asarray(labels).reshape(-1)
    for k, name in enumerate(class_names):
        rows_k = truth == k
        rows.append({"class": k, "name": name, "n": int(rows_k.sum()), "accuracy": _mean(correct[rows_k]),
                     "mean_confidence": _mean(stats["confidence"][rows_k]),
                     "mean_predictive_entropy": _mean(stats["predictive_entropy"][rows_k]),
                     "mean_mutual_information": _mean(stats["mutual_information"][rows_k]),
                     "n_flagged": int((~confident[rows_k]).sum()), "fraction_uncertain": _mean(~confident[rows_k]),
                     "accuracy_confident": _mean(correct[rows_k & confident])})
    return rows


# --------------------------------------------------------------------------- a whole split

@dataclass
class UncertaintyResult:
    """What MC dropout found on one split: the samples, the per-image statistics and the dataset summary."""

    task: Task
    class_names: list[str]
    passes: int
    seed: int
    threshold: float
    mc: MCResult
    stats: dict  # per-image measures, see predictive_stats
    summary: dict  # see dataset_summary
    dropout: dict  # see dropout_label

    @property
    def correct(self) -> np.ndarray:
        """(N,) bool: the averaged prediction is right."""
        return self.task.correct(self.mc.labels, self.stats["predicted"])


def analyze_uncertainty(model: nn.Module, split, task: str | Task, device, *, class_names: list[str],
                        passes: int = 20, seed: int = 0, threshold: float = 0.5, batch_size: int = 256,
                        rate: float | None = None, path: str = "auto", n_resamples: int = 2000,
                        progress=None) -> UncertaintyResult:
    """MC dropout over a split (:func:`mc_predict`), its per-image statistics and the dataset summary.

    Parameters
    ----------
    passes : T, the stochastic passes per image
    seed : seed of the dropout masks
    threshold : images whose confidence (mean probability of the predicted class) is below it are
        flagged as uncertain (:func:`choose_threshold` picks one on another split)
    n_resamples : bootstrap resamples of the error AUROCs' intervals
    rate : dropout rate at test time instead of the trained one (None: as trained)
    path : ``auto``, ``cached`` or ``full`` (see :func:`mc_predict`)
    """
    task = as_task(task)
    dropout = dropout_label(dropout_rates(model), rate)
    mc = mc_predict(model, split, task, device, passes=passes, seed=seed, batch_size=batch_size, rate=rate,
                    path=path, progress=progress)
    stats = predictive_stats(mc.samples, task)
    summary = dataset_summary(stats, mc.labels, task, class_names, threshold, mc.deterministic,
                              n_resamples=n_resamples, seed=seed)
    return UncertaintyResult(task, list(class_names), passes, seed, threshold, mc, stats, summary, dropout)


def dropout_label(rates: dict[str, float], override: float | None) -> dict:
    """What dropout the samples used, and where the rate came from (stated in every output).

    >>> dropout_label({"head.0": 0.2}, None)["text"]
    'dropout p=0.2 as trained'
    """
    trained = max(rates.values(), default=0.0)
    if override is None:
        return {"rate": trained, "source": "trained", "text": f"dropout p={trained:g} as trained"}
    if trained == 0:
        return {"rate": override, "source": "test-time",
                "text": f"dropout p={override:g} enabled at test time (--dropout-rate); "
                        "the model was trained without dropout"}
    return {"rate": override, "source": "test-time override",
            "text": f"dropout p={override:g} set at test time (--dropout-rate); "
                    f"the model was trained with p={trained:g}"}




MEASURE_DEFINITIONS = {
    "confidence": "mean over passes of the probability of the predicted class (multi-label: of each label's "
                  "predicted side)",
    "normalised_entropy": "H(mean p) / log K: 0 certain, 1 uniform",
    "predictive_entropy": "H(mean p) in nats",
    "expected_entropy": "mean over passes of H(p_t), nats",
    "mutual_information": "predictive - expected entropy, nats",
    "std_predicted_probability": "std over passes (ddof 0) of the predicted class's probability"}


def summary_record(result: UncertaintyResult, *, run: str, split: str, checkpoint: str,
                   threshold_choice: dict | None = None) -> dict:
    """The summary file (``FILES["summary"]``): what was sampled and how, how the threshold was chosen
    (:func:`choose_threshold`'s dict and the split it was chosen on; None: given by the user), then
    :func:`dataset_summary`."""
    header = {"run": run, "split": split, "checkpoint": checkpoint, "task": result.task.name,
              "class_names": result.class_names, "passes": result.passes, "seed": result.seed,
              "path": result.mc.path, "dropout": result.dropout, "dropout_layers": result.mc.rates,
              "seconds": round(result.mc.seconds, 3), "measures": dict(MEASURE_DEFINITIONS),
              "threshold_choice": threshold_choice or {"rule": "given (--threshold)"}}
    return {**header, **result.summary}


def per_image_table(result: UncertaintyResult) -> tuple[list[dict], list[str]]:
    """The per-image table (``FILES["per_image"]``): (rows, columns), one row per image of the split.

    Labels and predictions as :meth:`medscope.tasks.Task.label_text` writes
    them, with and without class names; single-label tasks add the
    probability of the predicted class.
    """
    task, names, stats = result.task, result.class_names, result.stats
    correct = result.correct
    det = task.predictions(result.mc.deterministic)
    mean = stats["mean_probability"]
    rows = []
    for i in range(len(result.mc.labels)):
        pred = stats["predicted"][i]
        row = {"id": int(i), "label": task.label_text(result.mc.labels[i]),
               "label_name": task.label_text(result.mc.labels[i], names),
               "predicted": task.label_text(pred), "predicted_name": task.label_text(pred, names),
               "correct": bool(correct[i]), "deterministic_predicted": task.label_text(det[i]),
               "uncertain": bool(stats["confidence"][i] < result.threshold)}
        if task.is_single_label:
            row["probability"] = float(mean[i, int(pred)])
        row.update({name: float(stats[name][i]) for name in MEASURES})
        row.update({f"prob_{k}": float(mean[i, k]) for k in range(mean.shape[1])})
        rows.append(row)
    columns = ["id", "label", "label_name", "predicted", "predicted_name", "correct", "deterministic_predicted"]
    columns += (["probability"] if task.is_single_label else []) + list(MEASURES) + ["uncertain"]
    columns += [f"prob_{k}" for k in range(mean.shape[1])]
    return rows, columns


def uncertain_cases(result: UncertaintyResult, record: dict) -> dict:
    """The flagged images (``FILES["cases"]``), least confident first; ``record`` is :func:`summary_record`'s."""
    task, names, stats = result.task, result.class_names, result.stats
    flagged = np.flatnonzero(stats["confidence"] < result.threshold)
    flagged = flagged[np.argsort(stats["confidence"][flagged], kind="stable")]
    correct = result.correct
    cases = []
    for i in flagged:
        case = {"id": int(i), "label": task.label_text(result.mc.labels[i]),
                "label_name": task.label_text(result.mc.labels[i], names),
                "predicted": task.label_text(stats["predicted"][i]),
                "predicted_name": task.label_text(stats["predicted"][i], names),
                "correct": bool(correct[i])}
        case.update({name: float(stats[name][i]) for name in MEASURES})
        case["mean_probability"] = [float(v) for v in stats["mean_probability"][i]]
        cases.append(case)
    return {"run": record["run"], "split": record["split"], "threshold": result.threshold,
            "passes": record["passes"], "dropout": record["dropout"], "n_images": record["n"],
            "n_flagged": len(cases), "n_flagged_wrong": int(sum(not c["correct"] for c in cases)),
            "ordered_by": "confidence, least confident first", "cases": cases}


def _defined(value) -> bool:
    return value is not None and not math.isnan(value)


def _auroc_text(s: dict, name: str) -> str:
    value = s["error_auroc"].get(name)
    ci = (s.get("error_auroc_interval") or {}).get(name) or {}
    low, high = ci.get("low"), ci.get("high")
    bounds = f" [{number_text(low)}, {number_text(high)}]" if _defined(low) and _defined(high) else ""
    return f"{number_text(value)}{bounds}"


def _threshold_sentence(s: dict) -> str:
    choice = s.get("threshold_choice") or {}
    if "split" not in choice:
        return f"The threshold {s['threshold']:.3g} was given with --threshold."
    if not _defined(choice.get("youden_j")):
        return (f"The threshold could not be learnt on the {choice['split']} split ({choice['rule']}); "
                "give one with --threshold.")
    same = " — the split it is judged on here, so the flagging looks better than it will on new images" \
        if choice["split"] == s["split"] else ""
    return (f"The threshold {s['threshold']:.3f} was chosen on the {choice['split']} split ({choice['n']} images, "
            f"{choice['n_wrong']} wrong){same}, where it maximises Youden's J of flagging the wrong predictions: "
            f"there it flagged {percent_text(choice['error_recall'])} of the wrong and "
            f"{percent_text(choice['false_flag_rate'])} of the right predictions "
            f"({percent_text(choice['flagged_fraction'])} of all).")


def report_markdown(summary: dict) -> str:
    """The report (``FILES["report"]``): the summary in plain words (``summary`` as :func:`summary_record` gives it)."""
    s = summary
    how = ("the image features were computed once and only the classifier head was sampled"
           if s["path"] == "cached" else "every pass ran the whole network")
    lines = [f"# How sure is the model? — {markdown_text(s['run'])}", "",
             f"{s['n']} {markdown_text(s['split'])} images, each seen {s['passes']} times with dropout switched on "
             f"({markdown_text(s['dropout']['text'])}); normalization layers used their training statistics. "
             f"Seed {s['seed']}; {how}. **Confidence** is the mean probability of the predicted class.", ""]
    if s["dropout"]["source"] != "trained":
        lines += [f"**Note:** {markdown_text(s['dropout']['text'])}. These numbers describe that test-time "
                  "setting, not the model as it was trained.", ""]
    plain = ""
    if "accuracy_deterministic" in s:
        plain = (f" (one ordinary pass without dropout: {percent_text(s['accuracy_deterministic'])}; the two agree on "
                 f"{percent_text(s['agreement_with_deterministic'])} of images)")
    flagged = s.get("flagged_fraction", 1 - s["coverage"])
    lines += ["## In short", "",
              f"- Over all images the averaged prediction was right {percent_text(s['accuracy_all'])} of the time{plain}.",
              f"- {s['n_uncertain']} images ({percent_text(flagged)}) are flagged as uncertain: confidence below "
              f"{s['threshold']:.3g}. On them the model was right {percent_text(s['accuracy_uncertain'])} of the time; "
              f"on the {s['n_confident']} others, {percent_text(s['accuracy_confident'])}.",
              f"- {_threshold_sentence(s)}",
              "- Flagged per class: " + "; ".join(
                  f"{markdown_text(row['name'])} {row.get('n_flagged', '?')} of {row['n']} "
                  f"({percent_text(row['fraction_uncertain'])})"
                  for row in s["per_class"]) + ".",
              f"- {s['n_errors']} predictions were wrong."]
    aurocs = {k: v for k, v in s["error_auroc"].items() if _defined(v)}
    if aurocs:
        best = max(aurocs, key=aurocs.get)
        low = ((s.get("error_auroc_interval") or {}).get(best) or {}).get("low")
        verdict = ("no better than chance at 95% confidence" if not _defined(low) or low <= 0.5
                   else "better than chance at 95% confidence")
        lines.append(f"- The measure that best singles out mistakes is {best.replace('_', ' ')}: a randomly chosen "
                     f"wrong prediction scores higher on it than a randomly chosen right one "
                     f"{percent_text(aurocs[best])} of the time (AUROC {_auroc_text(s, best)}, {verdict}; "
                     "50% is chance).")
    else:
        lines.append("- The error-detection AUROC is undefined here: the predictions were all right or all wrong.")
    cov = s["accuracy_coverage"]
    lines += ["", "## Accuracy when only the most confident predictions are kept", "",
              "| kept | accuracy |", "| ---: | ---: |"]
    coverage, accuracy = np.array(cov["coverage"]), np.array(cov["accuracy"])
    for fraction in (0.25, 0.5, 0.75, 0.9, 1.0):
        k = max(1, int(math.ceil(fraction * len(coverage)))) - 1
        lines.append(f"| {percent_text(coverage[k])} | {number_text(accuracy[k])} |")
    lines += ["", f"Mean accuracy over all coverages (area under the curve): {number_text(cov['area'])}. "
              f"See `{FILES['accuracy_coverage']}`.", "",
              "## How well each measure detects errors (AUROC, 95% interval)", "",
              "| measure | AUROC [95% interval] |", "| --- | ---: |"]
    lines += [f"| {name.replace('_', ' ')} | {_auroc_text(s, name)} |" for name in s["error_auroc"]]
    lines += ["", "Normalised entropy is a rescaled predictive entropy, so it ranks images the same way. Intervals: "
              "percentile bootstrap, resampling within the wrong and the right predictions.", "",
              "## Per class", "",
              "| class | images | accuracy | mean confidence | mean entropy | mean mutual information | flagged |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in s["per_class"]:
        lines.append(f"| {markdown_text(row['name'])} | {row['n']} | {number_text(row['accuracy'])} | "
                     f"{number_text(row['mean_confidence'])} | "
                     f"{number_text(row['mean_predictive_entropy'])} | {number_text(row['mean_mutual_information'])} | "
                     f"{row.get('n_flagged', '')} ({percent_text(row['fraction_uncertain'])}) |")
    lines += ["", "## What the numbers mean", "",
              "- **confidence**: the mean over the passes of the predicted class's probability (multi-label: of each "
              "label's predicted side), the same word as in analyze_inference and calibration.",
              "- **normalised entropy**: predictive entropy / log K, from 0 (sure) to 1 (no idea).",
              "- **predictive entropy**: how spread the averaged probabilities are (0: certain; log K: uniform).",
              "- **expected entropy**: the average spread of each single pass — uncertainty the model sees in the "
              "image itself.",
              "- **mutual information**: predictive minus expected entropy — how much the passes disagree with each "
              "other, i.e. the model's own doubt.",
              "- **std of the predicted probability**: how much the winning class's probability moves between passes.",
              "",
              f"Files: `{FILES['per_image']}` (every image), `{FILES['cases']}` (flagged images, least "
              f"confident first), `{FILES['summary']}`, `{FILES['distributions']}`.", ""]
    return "\n".join(lines)
