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
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from scipy.special import entr
from sklearn.metrics import roc_auc_score

from medscope import atomic
from medscope.app import cli
from medscope.data import TASK_MULTILABEL, batches, gather, normalize
from medscope.errors import UsageError
from medscope.metrics import predictions, scores_from_logits
from medscope.report_text import label_text, number_text, percent_text

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
def mc_predict(model: nn.Module, split, task: str, device, *, passes: int = 20, seed: int = 0,
               batch_size: int = 256, rate: float | None = None, path: str = "auto") -> MCResult:
    """Run T = ``passes`` stochastic passes over a split.

    ``path``: ``auto`` takes the cached path when :func:`head_only` holds,
    ``cached`` insists on it, ``full`` always runs whole stochastic passes.
    """
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
        for index in cli.progress(batches(split, batch_size), desc="MC dropout", unit="batch"):
            images, _ = gather(split, index, device)
            x = normalize(images)
            if path == "cached":
                feats = model.features(x)
                deterministic.append(scores_from_logits(task, model.head(feats)).float().cpu())
                with mc_dropout(model, sampler, rate):
                    passes_out = [scores_from_logits(task, model.head(feats)) for _ in range(passes)]
            else:
                deterministic.append(scores_from_logits(task, model(x)).float().cpu())
                with mc_dropout(model, sampler, rate):
                    passes_out = [scores_from_logits(task, model(x)) for _ in range(passes)]
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
    ``confidence`` ``1 - H(p̄) / log K`` (1: certain, 0: uniform). All in nats.

    >>> s = categorical_stats(np.array([[[0.9, 0.1]], [[0.5, 0.5]]]))
    >>> [round(float(s[k][0]), 4) for k in ("predictive_entropy", "expected_entropy", "mutual_information")]
    [0.6109, 0.5091, 0.1017]
    >>> round(float(s["std_predicted_probability"][0]), 4), round(float(s["confidence"][0]), 4)
    (0.2, 0.1187)
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
        "confidence": 1.0 - h / math.log(k),
    }


MEASURES = ("confidence", "predictive_entropy", "expected_entropy", "mutual_information",
            "std_predicted_probability")


def predictive_stats(samples: np.ndarray, task: str) -> dict[str, np.ndarray]:
    """Per-image statistics (see :func:`categorical_stats`) for any MedMNIST task.

    Single-label tasks: softmax samples (T, N, K); the prediction is the
    project's (:func:`medscope.metrics.predictions` of the mean). Multi-label:
    sigmoid samples (T, N, L); each label is a two-class distribution, the
    per-label numbers are kept as ``per_label_<measure>`` (N, L) and the
    per-image measure is their mean over labels.
    """
    samples = np.asarray(samples, dtype=np.float64)
    if task != TASK_MULTILABEL:
        return categorical_stats(samples, predictions(task, samples.mean(axis=0)))
    t, n, labels = samples.shape
    binary = np.stack([1.0 - samples, samples], axis=-1).reshape(t, n * labels, 2)
    per_label = categorical_stats(binary, (samples.mean(axis=0) > 0.5).reshape(-1).astype(np.int64))
    stats = {"mean_probability": samples.mean(axis=0), "predicted": per_label["predicted"].reshape(n, labels)}
    for name in MEASURES:
        values = per_label[name].reshape(n, labels)
        stats[f"per_label_{name}"] = values
        stats[name] = values.mean(axis=1)
    return stats


# --------------------------------------------------------------------------- dataset statistics

def correct_predictions(task: str, labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """(N,) bool: single-label prediction equals the label; multi-label: every label right."""
    labels = np.asarray(labels)
    if task == TASK_MULTILABEL:
        return (labels.astype(np.int64) == predicted).all(axis=1)
    return labels.reshape(-1).astype(np.int64) == np.asarray(predicted).reshape(-1)


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


def error_auroc(uncertainty: np.ndarray, errors: np.ndarray) -> float:
    """AUROC of an uncertainty score (higher = less sure) for telling wrong predictions from right ones.

    0.5: no better than chance; 1: every error is more uncertain than every
    correct prediction. NaN when there are no errors or no correct predictions.
    """
    errors = np.asarray(errors, dtype=bool)
    if errors.all() or not errors.any():
        return float("nan")
    return float(roc_auc_score(errors, uncertainty))


def _mean(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()) if values.size else float("nan")


def dataset_summary(stats: dict, labels: np.ndarray, task: str, class_names: list[str], threshold: float,
                    deterministic: np.ndarray | None = None) -> dict:
    """Accuracy of all vs confident predictions, the accuracy-coverage curve, error AUROCs, per-class numbers."""
    correct = correct_predictions(task, labels, stats["predicted"])
    confident = stats["confidence"] >= threshold
    errors = ~correct
    coverage, accuracy = accuracy_coverage(stats["confidence"], correct)
    scores = {name: stats[name] for name in ("predictive_entropy", "expected_entropy", "mutual_information",
                                             "std_predicted_probability")}
    if task != TASK_MULTILABEL:
        mean = stats["mean_probability"]
        scores["one_minus_max_probability"] = 1.0 - mean[np.arange(len(mean)), stats["predicted"]]
    summary = {
        "n": int(len(correct)),
        "threshold": float(threshold),
        "accuracy_all": _mean(correct),
        "n_confident": int(confident.sum()),
        "coverage": _mean(confident),
        "accuracy_confident": _mean(correct[confident]),
        "n_uncertain": int((~confident).sum()),
        "accuracy_uncertain": _mean(correct[~confident]),
        "n_errors": int(errors.sum()),
        "error_auroc": {name: error_auroc(values, errors) for name, values in scores.items()},
        "mean": {name: _mean(stats[name]) for name in MEASURES},
        "accuracy_coverage": {"coverage": coverage.tolist(), "accuracy": accuracy.tolist(),
                              "area": float(np.mean(accuracy))},
    }
    if deterministic is not None:
        det_pred = predictions(task, deterministic)
        summary["accuracy_deterministic"] = _mean(correct_predictions(task, labels, det_pred))
        summary["agreement_with_deterministic"] = _mean(
            (det_pred == stats["predicted"]).all(axis=1) if task == TASK_MULTILABEL else det_pred == stats["predicted"])
    summary["per_class"] = _per_class(stats, labels, task, class_names, threshold, correct, confident)
    return summary


def _per_class(stats, labels, task, class_names, threshold, correct, confident) -> list[dict]:
    rows = []
    if task == TASK_MULTILABEL:
        labels = np.asarray(labels).astype(np.int64)
        for j, name in enumerate(class_names):
            conf = stats["per_label_confidence"][:, j]
            right = labels[:, j] == stats["predicted"][:, j]
            rows.append({"class": j, "name": name, "n": int(len(right)), "n_positive": int(labels[:, j].sum()),
                         "accuracy": _mean(right), "mean_confidence": _mean(conf),
                         "mean_predictive_entropy": _mean(stats["per_label_predictive_entropy"][:, j]),
                         "mean_mutual_information": _mean(stats["per_label_mutual_information"][:, j]),
                         "fraction_uncertain": _mean(conf < threshold)})
        return rows
    truth = np.asarray(labels).reshape(-1)
    for k, name in enumerate(class_names):
        rows_k = truth == k
        rows.append({"class": k, "name": name, "n": int(rows_k.sum()), "accuracy": _mean(correct[rows_k]),
                     "mean_confidence": _mean(stats["confidence"][rows_k]),
                     "mean_predictive_entropy": _mean(stats["predictive_entropy"][rows_k]),
                     "mean_mutual_information": _mean(stats["mutual_information"][rows_k]),
                     "fraction_uncertain": _mean(~confident[rows_k]),
                     "accuracy_confident": _mean(correct[rows_k & confident])})
    return rows


# --------------------------------------------------------------------------- the CLI

def add_arguments(parser) -> None:
    from medscope.explain.cam import add_run_arguments

    add_run_arguments(parser, batch_size=256)
    parser.add_argument("--passes", type=cli.positive_int, default=20, help="stochastic passes T (default: 20)")
    parser.add_argument("--threshold", type=cli.probability, default=0.85,
                        help="flag images whose confidence 1 - H/log K is below this (default: 0.85)")
    parser.add_argument("--dropout-rate", type=cli.probability, default=None, metavar="P",
                        help="use dropout rate P at test time (needed when the model was trained without "
                             "dropout; results are labelled as such)")
    parser.add_argument("--full-passes", action="store_true",
                        help="run T whole stochastic passes even when dropout sits only in the head (slow; "
                             "gives the same numbers)")


def dropout_label(rates: dict[str, float], override: float | None) -> dict:
    """What dropout the samples used, and where the rate came from (stated in every output)."""
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


def run(args) -> int:
    from medscope.explain import plots as explain_plots
    from medscope.explain.cam import open_run

    if args.dropout_rate is not None and args.dropout_rate == 0:
        raise UsageError("--dropout-rate 0 turns MC dropout off; give a rate in (0, 1), e.g. 0.2")
    ctx = open_run(args)
    rates = dropout_rates(ctx.model)
    if not rates:
        raise UsageError(f"{ctx.run.name}: the model has no dropout layer, so MC dropout cannot sample it")
    if args.dropout_rate is None and max(rates.values()) == 0:
        raise UsageError(f"{ctx.run.name} was trained without dropout (p=0): all {args.passes} passes would give "
                         "the same answer; pass --dropout-rate P (e.g. 0.2) to enable dropout at test time, "
                         "or train with --dropout")
    dropout = dropout_label(rates, args.dropout_rate)
    task, names = ctx.info.task, ctx.info.class_names
    result = mc_predict(ctx.model, ctx.split, task, ctx.device, passes=args.passes, seed=args.seed,
                        batch_size=args.batch_size, rate=args.dropout_rate,
                        path="full" if args.full_passes else "auto")
    stats = predictive_stats(result.samples, task)
    summary = dataset_summary(stats, result.labels, task, names, args.threshold, result.deterministic)
    header = {"run": ctx.run.name, "split": ctx.split_name, "checkpoint": args.checkpoint, "task": task,
              "class_names": names, "passes": args.passes, "seed": args.seed, "path": result.path,
              "dropout": dropout, "dropout_layers": result.rates, "seconds": round(result.seconds, 3),
              "measures": {
                  "confidence": "1 - H(mean p) / log K",
                  "predictive_entropy": "H(mean p) in nats",
                  "expected_entropy": "mean over passes of H(p_t), nats",
                  "mutual_information": "predictive - expected entropy, nats",
                  "std_predicted_probability": "std over passes (ddof 0) of the predicted class's probability"}}
    summary = {**header, **summary}

    folder = ctx.run.layout.uncertainty_dir
    ids = np.arange(len(result.labels))
    written = [atomic.write_csv(folder / "uncertainty_per_image.csv", *_per_image_rows(ids, stats, result, summary,
                                                                                      task, names, args.threshold))]
    written.append(atomic.write_json(folder / "uncertain_cases.json",
                                     _uncertain_cases(ids, stats, result, summary, task, names, args.threshold)))
    written.append(atomic.write_json(folder / "uncertainty_summary.json", summary))
    tag = f"{ctx.run.name} ({ctx.split_name}), T={args.passes}, {dropout['text']}"
    cov = summary["accuracy_coverage"]
    written.append(explain_plots.accuracy_coverage(
        folder / "accuracy_coverage.png", np.array(cov["coverage"]), np.array(cov["accuracy"]),
        threshold_coverage=summary["coverage"], threshold_accuracy=summary["accuracy_confident"],
        overall_accuracy=summary["accuracy_all"], title=f"accuracy vs coverage\n{tag}"))
    correct = correct_predictions(task, result.labels, stats["predicted"])
    written.append(explain_plots.uncertainty_distributions(
        folder / "uncertainty_distributions.png", {name: stats[name] for name in MEASURES}, correct,
        f"MC-dropout uncertainty, correct vs wrong predictions\n{tag}"))
    written.append(atomic.write_text(folder / "uncertainty_report.md", report_markdown(summary)))
    ctx.run.add_artifacts([Path(p).resolve() for p in written], created_by="explain.py")

    print(f"MC dropout ({result.path} path, T={args.passes}, {dropout['text']}) on {summary['n']} "
          f"{ctx.split_name} images in {result.seconds:.1f}s")
    print(f"accuracy {number_text(summary['accuracy_all'])} on all; {number_text(summary['accuracy_confident'])} on the "
          f"{summary['n_confident']} confident (>= {args.threshold:g}); {summary['n_uncertain']} flagged")
    print(f"wrote {len(written)} files to {folder}")
    return 0


def _names_text(row, names, multilabel: bool) -> str:
    row = np.asarray(row).reshape(-1)
    if multilabel:
        return ";".join(names[j] for j in np.flatnonzero(row)) or "none"
    return names[int(row[0])]


def _per_image_rows(ids, stats, result, summary, task, names, threshold):
    multilabel = task == TASK_MULTILABEL
    correct = correct_predictions(task, result.labels, stats["predicted"])
    det = predictions(task, result.deterministic)
    mean = stats["mean_probability"]
    rows = []
    for i in ids:
        pred = stats["predicted"][i]
        row = {"id": int(i), "label": label_text(result.labels[i]),
               "label_name": _names_text(result.labels[i], names, multilabel),
               "predicted": label_text(pred), "predicted_name": _names_text(pred, names, multilabel),
               "correct": bool(correct[i]), "deterministic_predicted": label_text(det[i]),
               "uncertain": bool(stats["confidence"][i] < threshold)}
        if not multilabel:
            row["probability"] = float(mean[i, int(pred)])
        row.update({name: float(stats[name][i]) for name in MEASURES})
        row.update({f"prob_{k}": float(mean[i, k]) for k in range(mean.shape[1])})
        rows.append(row)
    columns = ["id", "label", "label_name", "predicted", "predicted_name", "correct", "deterministic_predicted"]
    columns += ([] if multilabel else ["probability"]) + list(MEASURES) + ["uncertain"]
    columns += [f"prob_{k}" for k in range(mean.shape[1])]
    return rows, columns


def _uncertain_cases(ids, stats, result, summary, task, names, threshold) -> dict:
    multilabel = task == TASK_MULTILABEL
    flagged = np.flatnonzero(stats["confidence"] < threshold)
    flagged = flagged[np.argsort(stats["confidence"][flagged], kind="stable")]
    correct = correct_predictions(task, result.labels, stats["predicted"])
    cases = []
    for i in flagged:
        case = {"id": int(ids[i]), "label": label_text(result.labels[i]),
                "label_name": _names_text(result.labels[i], names, multilabel),
                "predicted": label_text(stats["predicted"][i]),
                "predicted_name": _names_text(stats["predicted"][i], names, multilabel),
                "correct": bool(correct[i])}
        case.update({name: float(stats[name][i]) for name in MEASURES})
        case["mean_probability"] = [float(v) for v in stats["mean_probability"][i]]
        cases.append(case)
    return {"run": summary["run"], "split": summary["split"], "threshold": threshold, "passes": summary["passes"],
            "dropout": summary["dropout"], "n_images": summary["n"], "n_flagged": len(cases),
            "n_flagged_wrong": int(sum(not c["correct"] for c in cases)),
            "ordered_by": "confidence, least confident first", "cases": cases}


def report_markdown(summary: dict) -> str:
    """``uncertainty_report.md``: the summary in plain words."""
    s = summary
    how = ("the image features were computed once and only the classifier head was sampled"
           if s["path"] == "cached" else "every pass ran the whole network")
    lines = [f"# How sure is the model? — {s['run']}", "",
             f"{s['n']} {s['split']} images, each seen {s['passes']} times with dropout switched on "
             f"({s['dropout']['text']}); normalization layers used their training statistics. "
             f"Seed {s['seed']}; {how}.", ""]
    if s["dropout"]["source"] != "trained":
        lines += [f"**Note:** {s['dropout']['text']}. These numbers describe that test-time setting, "
                  "not the model as it was trained.", ""]
    plain = ""
    if "accuracy_deterministic" in s:
        plain = (f" (one ordinary pass without dropout: {percent_text(s['accuracy_deterministic'])}; the two agree on "
                 f"{percent_text(s['agreement_with_deterministic'])} of images)")
    lines += ["## In short", "",
              f"- Over all images the averaged prediction was right {percent_text(s['accuracy_all'])} of the time{plain}.",
              f"- The model was confident (confidence at least {s['threshold']:g}) about {s['n_confident']} images "
              f"({percent_text(s['coverage'])}). On those it was right {percent_text(s['accuracy_confident'])} of the time; on the "
              f"{s['n_uncertain']} flagged as uncertain, {percent_text(s['accuracy_uncertain'])}.",
              f"- {s['n_errors']} predictions were wrong."]
    aurocs = {k: v for k, v in s["error_auroc"].items() if v is not None and v == v}
    if aurocs:
        best = max(aurocs, key=aurocs.get)
        lines.append(f"- The measure that best singles out mistakes is {best.replace('_', ' ')}: a randomly chosen "
                     f"wrong prediction scores higher on it than a randomly chosen right one "
                     f"{percent_text(aurocs[best])} of the time (AUROC {aurocs[best]:.3f}; 50% is chance).")
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
              "See `accuracy_coverage.png`.", "",
              "## How well each measure detects errors (AUROC)", "", "| measure | AUROC |", "| --- | ---: |"]
    lines += [f"| {name.replace('_', ' ')} | {number_text(v)} |" for name, v in s["error_auroc"].items()]
    lines += ["", "Confidence is a rescaled predictive entropy, so it ranks images the same way.", "",
              "## Per class", "",
              "| class | images | accuracy | mean confidence | mean entropy | mean mutual information | flagged |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in s["per_class"]:
        lines.append(f"| {row['name']} | {row['n']} | {number_text(row['accuracy'])} | {number_text(row['mean_confidence'])} | "
                     f"{number_text(row['mean_predictive_entropy'])} | {number_text(row['mean_mutual_information'])} | "
                     f"{percent_text(row['fraction_uncertain'])} |")
    lines += ["", "## What the numbers mean", "",
              "- **predictive entropy**: how spread the averaged probabilities are (0: certain; log K: uniform).",
              "- **expected entropy**: the average spread of each single pass — uncertainty the model sees in the "
              "image itself.",
              "- **mutual information**: predictive minus expected entropy — how much the passes disagree with each "
              "other, i.e. the model's own doubt.",
              "- **std of the predicted probability**: how much the winning class's probability moves between passes.",
              "- **confidence**: 1 − predictive entropy / log K, from 0 (no idea) to 1 (sure).", "",
              "Files: `uncertainty_per_image.csv` (every image), `uncertain_cases.json` (flagged images, least "
              "confident first), `uncertainty_summary.json`, `uncertainty_distributions.png`.", ""]
    return "\n".join(lines)
