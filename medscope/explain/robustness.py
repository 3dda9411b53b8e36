"""Robustness: how a model degrades under realistic perturbations, and whether its saliency warns of it.

Every perturbation of :mod:`medscope.explain.perturbations` at each severity is
applied to a whole split (batched tensor ops, seeded), and the perturbed
images go through exactly the evaluation that training used for the run's
``metrics.json`` (:func:`medscope.activations.collect_outputs`: same batches,
precision, memory layout and test-time augmentation), so the clean row equals
the run's own test metrics. Per perturbation and severity:

* AUC and ACC as ``medmnist.Evaluator`` computes them, balanced accuracy
  (:func:`medscope.metrics.balanced_accuracy`),
  the ECE of ``analyze_inference.py`` and the fraction of predictions that
  flip relative to the clean image;
* on a seeded subset of images, how far the saliency map (Grad-CAM, or the
  vanilla gradient) moves: RMSE, Pearson correlation and the overlap (IoU) of
  the 10% most salient pixels, each map explaining the class the model
  predicted on the clean image;
* whether that shift predicts failure: the AUROC of each shift measure for
  telling the images whose prediction flipped from those whose did not.

The summary gives, per perturbation, the mean corruption error relative to
clean: ``mCE = mean over severities of (1 - balanced acc) / (1 - clean
balanced acc)``. Hendrycks & Dietterich (2019) normalise by AlexNet's error on
the same corruption; MedMNIST has no such reference model, so the run's own
clean error is the yardstick (1 = no worse than clean, 2 = twice the errors).

:func:`run_sweep` measures, :func:`summarize` condenses and
:func:`sweep_record` and :func:`report_markdown` describe; all take and
return values. The files of the ``robustness/`` folder are named in
:data:`FILES`.
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from medscope.data import Split, batches, gather, normalize
from medscope.explain import perturbations as pt
from medscope.explain.cam import GradCAM, auto_layer, select_targets
from medscope.explain.maps import choose_ids
from medscope.explain.saliency import vanilla_gradient
from medscope.metrics import (
    COLLAPSE_SHARE,
    acc_score,
    auc_score,
    balanced_accuracy,
    error_auroc,
    error_auroc_interval,
    majority_accuracy,
    top_class_share,
)
from medscope.report_text import markdown_text, number_text, percent_text
from medscope.runs import RunLayout
from medscope.tasks import Task
from medscope.tasks import task as as_task

FILES = {
    "results": "robustness_results.csv",
    "summary_csv": "robustness_summary.csv",
    "per_image": "robustness_per_image.csv",
    "summary": "robustness_summary.json",
    "measures": "robustness_measures.png",
    "heatmap": "robustness_balanced_acc_heatmap.png",
    "examples": "robustness_examples_{id:05d}.png",  # one per example image
    "report": "robustness_report.md",
}
EXAMPLES_PATTERN = re.compile(r"^robustness_examples_\d+\.png$")  # FILES["examples"], any id
RUN_METRICS_FILE = RunLayout(".").metrics_json.name  # the run's own metrics, which the clean row must equal

TOP_FRACTION = 0.10  # the "most salient" pixels compared by the IoU
PERTURB_CHUNK = 256  # images perturbed at once; fixed so that the batch size never changes the random draws
SALIENCY_BATCH = 64  # images per Grad-CAM / gradient pass
SHIFT_MEASURES = {  # name -> column of its mean in the results
    "rmse": "saliency_rmse",
    "pearson": "saliency_pearson",
    "iou": "saliency_iou",
}
INTERVAL_METRICS = ("auc", "acc", "balanced_acc")  # each row's metrics with a 95% bootstrap interval
SALIENCY_METHODS = ("gradcam", "gradient")
SALIENCY_LABELS = {"gradcam": "Grad-CAM", "gradient": "vanilla gradient"}


# --------------------------------------------------------------------------- measures

def flipped(task: str | Task, clean_predictions: np.ndarray, new_predictions: np.ndarray) -> np.ndarray:
    """(N,) bool: the prediction differs from the clean one (multi-label: any label differs).

    >>> flipped("multi-label, binary-class", np.array([[1, 0], [0, 0]]), np.array([[1, 0], [0, 1]])).tolist()
    [False, True]
    """
    return ~as_task(task).correct(clean_predictions, new_predictions)


def top_mask(maps: torch.Tensor, fraction: float = TOP_FRACTION) -> torch.Tensor:
    """(N, P) bool: the pixels of each flattened map at least as salient as its ``k``-th largest,
    ``k = ceil(fraction * P)``, and above zero.

    Ties at the threshold are all in (no pixel order decides), and zero is never "salient": a
    Grad-CAM map clipped at zero may have fewer than ``k`` positive pixels, or none.

    >>> top_mask(torch.tensor([[0.1, 0.9, 0.5, 0.9], [0.0, 0.0, 0.3, 0.0]]), 0.5).tolist()
    [[False, True, False, True], [False, False, True, False]]
    """
    flat = maps.reshape(maps.shape[0], -1)
    k = max(1, int(math.ceil(fraction * flat.shape[1])))
    kth_largest = flat.topk(k, dim=1).values[:, -1:]
    return (flat >= kth_largest) & (flat > 0)


def saliency_shift(reference: torch.Tensor, maps: torch.Tensor, top_fraction: float = TOP_FRACTION) -> dict:
    """How far each map moved from its reference: RMSE, Pearson correlation and top-pixel IoU, per image.

    Parameters
    ----------
    reference, maps : Tensor (N, *spatial), saliency maps scaled to [0, 1]
        (clean and perturbed image; the same class explained in both).
    top_fraction : the share of pixels (voxels) counted as "most salient".

    Returns
    -------
    dict of float64 arrays (N,):
        ``rmse = sqrt(mean_p (a_p - b_p)^2)`` in map units ([0, 1]; 0 = identical);
        ``pearson = cov(a, b) / (sd(a) sd(b))`` over pixels, in [-1, 1] (1 = same
        pattern); a constant map has no pattern: 1 when both maps are constant,
        0 when only one is;
        ``iou = |T(a) & T(b)| / |T(a) | T(b)|`` of the top-``top_fraction``
        pixel sets (:func:`top_mask`), in [0, 1] (1 = same hot spot; 1 when
        neither map has a salient pixel).

    >>> a = torch.tensor([[[0.0, 0.5], [1.0, 0.0]]])
    >>> s = saliency_shift(a, a.flip(2), top_fraction=0.25)
    >>> [round(float(s[k][0]), 4) for k in ("rmse", "pearson", "iou")]
    [0.7906, -0.8182, 0.0]
    """
    a = reference.reshape(reference.shape[0], -1).double()
    b = maps.reshape(maps.shape[0], -1).double()
    rmse = (a - b).pow(2).mean(dim=1).sqrt()
    da, db = a - a.mean(dim=1, keepdim=True), b - b.mean(dim=1, keepdim=True)
    va, vb = da.pow(2).sum(dim=1), db.pow(2).sum(dim=1)
    constant_a, constant_b = va <= 1e-24, vb <= 1e-24
    pearson = (da * db).sum(dim=1) / (va * vb).sqrt().clamp_min(1e-300)
    pearson = torch.where(constant_a & constant_b, torch.ones_like(pearson),
                          torch.where(constant_a | constant_b, torch.zeros_like(pearson), pearson.clamp(-1, 1)))
    ta, tb = top_mask(a, top_fraction), top_mask(b, top_fraction)
    union = (ta | tb).sum(dim=1).double()
    iou = torch.where(union > 0, (ta & tb).sum(dim=1).double() / union.clamp_min(1), torch.ones_like(union))
    return {"rmse": rmse.numpy(), "pearson": pearson.numpy(), "iou": iou.numpy()}


def shift_scores(shift: dict) -> dict:
    """Each shift measure turned so that larger means "moved more": RMSE, 1 - Pearson, 1 - IoU."""
    return {"rmse": np.asarray(shift["rmse"]), "pearson": 1.0 - np.asarray(shift["pearson"]),
            "iou": 1.0 - np.asarray(shift["iou"])}


def flip_auroc(score: np.ndarray, is_flipped: np.ndarray) -> tuple[float, str]:
    """AUROC of a shift score for telling flipped predictions from stable ones, and why it is NaN if it is.

    0.5 is chance; 1: every flipped image's map moved more than every stable
    one's. Undefined (NaN) when the images are all flipped or all stable.

    >>> flip_auroc(np.array([0.1, 0.9, 0.3]), np.array([False, True, False]))
    (1.0, '')
    >>> flip_auroc(np.array([0.1, 0.9]), np.array([False, False]))[1]
    'no prediction flipped among the 2 explained images'
    """
    is_flipped = np.asarray(is_flipped, dtype=bool)
    if not len(is_flipped):
        return float("nan"), "no images explained (--n-saliency 0)"
    if not is_flipped.any():
        return float("nan"), f"no prediction flipped among the {len(is_flipped)} explained images"
    if is_flipped.all():
        return float("nan"), f"every prediction flipped among the {len(is_flipped)} explained images"
    return error_auroc(score, is_flipped), ""


def chance_balanced_accuracy(task: str | Task, clean_row: dict | None = None) -> float:
    """Balanced accuracy of a guess that ignores the image: 1/K for a single-label task, 0.5 per label otherwise.

    >>> chance_balanced_accuracy("multi-class", {"n_classes": 4}), chance_balanced_accuracy("binary-class")
    (0.25, 0.5)
    """
    task = as_task(task)
    if task.is_multilabel or task.is_binary:
        return 0.5
    k = (clean_row or {}).get("n_classes")
    return 1.0 / k if k else float("nan")


def mean_corruption_error(balanced_accuracies, clean_balanced_accuracy: float) -> float:
    """Mean corruption error relative to clean: ``mean_s (1 - BA_s) / (1 - BA_clean)``.

    ``BA`` is :func:`medscope.metrics.balanced_accuracy`; the mean runs over the severities
    evaluated. 1: as many errors as on clean images; 2: twice as many. NaN
    when the clean error is 0 (nothing to compare with). Hendrycks &
    Dietterich normalise by AlexNet's error instead; here the run's own clean
    error is the reference.

    >>> round(mean_corruption_error([0.8, 0.6], 0.9), 6)  # errors 0.2 and 0.4 against 0.1
    3.0
    """
    clean_error = 1.0 - float(clean_balanced_accuracy)
    values = [1.0 - float(v) for v in balanced_accuracies]
    if clean_error <= 0 or not values:
        return float("nan")
    return float(np.mean(values) / clean_error)


# --------------------------------------------------------------------------- the sweep

@dataclass
class Evaluation:
    """What one forward pass over a (perturbed) split gave."""

    probabilities: np.ndarray
    logits: np.ndarray
    explained_images: torch.Tensor  # uint8 images of the explained ids, as perturbed (CPU)
    image_rmse: float  # RMSE from the clean images, in grey levels (0-255)


@dataclass
class Sweep:
    """Everything a sweep measured, and what it was run with."""

    task: Task
    seed: int
    perturbations: list  # the pt.Perturbation applied, in order
    severities: list[int]
    method: str  # one of SALIENCY_METHODS
    layer: str | None  # Grad-CAM's layer
    n_images: int
    image_side: int  # smallest spatial side, in pixels
    spatial_dims: int
    saliency_ids: np.ndarray  # images whose saliency shift is measured
    example_ids: np.ndarray  # images shown at every severity
    rows: list = field(default_factory=list)  # one per condition, clean first
    per_image: list = field(default_factory=list)  # saliency shift per explained image and condition
    examples: dict = field(default_factory=dict)  # (name, severity) -> (display images, display maps, texts, flips)
    seconds: dict = field(default_factory=dict)  # per perturbation (and "clean")
    total_seconds: float = 0.0


def evaluate_perturbed(model, split: Split, perturbation: pt.Perturbation | None, severity: int, seed: int,
                       task: str | Task, device, settings: dict, explain_ids: np.ndarray,
                       batch_size: int) -> Evaluation:
    """Perturb ``split`` chunk by chunk and run it through training's own evaluation.

    Chunks of :data:`PERTURB_CHUNK` images are perturbed in order with one
    generator per (seed, perturbation, severity), so the images do not depend
    on ``batch_size``. ``perturbation=None`` is the clean split. ``settings``:
    keyword arguments of :func:`medscope.activations.collect_outputs` (precision,
    memory layout, test-time augmentation).
    """
    from medscope.activations import collect_outputs

    task = as_task(task)
    generator = pt.make_generator(seed, perturbation.name, severity) if perturbation else None
    probs, logits, explained, squared = [], [], [], 0.0
    wanted = torch.as_tensor(explain_ids, dtype=torch.long)
    for index in batches(split, PERTURB_CHUNK):
        images, _ = gather(split, index, torch.device("cpu"))
        if perturbation is not None:
            perturbed = perturbation(images.to(device), severity, generator=generator).cpu()
            squared += float((perturbed.double() - images.double()).pow(2).sum())
        else:
            perturbed = images
        out = collect_outputs(model, Split(perturbed, split.labels[index]), task.name, device,
                              batch_size=min(batch_size, PERTURB_CHUNK), activations=False, **settings)
        probs.append(out["probabilities"].numpy())
        logits.append(out["logits"].numpy())
        inside = wanted[(wanted >= index[0]) & (wanted <= index[-1])]
        explained.append(perturbed[inside - index[0]])
    total = split.images[:1].numel() * len(split)
    return Evaluation(np.concatenate(probs), np.concatenate(logits), torch.cat(explained),
                      math.sqrt(squared / total) if total else 0.0)



def saliency_maps(model, images: torch.Tensor, targets: torch.Tensor, method: str, layer: str | None,
                  device) -> torch.Tensor:
    """(N, *spatial) maps in [0, 1] of uint8 ``images`` for ``targets``: Grad-CAM at ``layer`` or vanilla gradient."""
    if not len(images):
        return torch.zeros((0, *images.shape[2:]))

    def chunks():
        for start in range(0, len(images), SALIENCY_BATCH):
            yield normalize(images[start:start + SALIENCY_BATCH].to(device)), targets[start:start + SALIENCY_BATCH]

    if method == "gradcam":
        with GradCAM(model, layer) as cam:  # the hooks, once for every batch
            return torch.cat([cam(x, t).maps.float().cpu() for x, t in chunks()])
    return torch.cat([vanilla_gradient(model, x, t).maps.float().cpu() for x, t in chunks()])


def middle_slices(array: np.ndarray, spatial_dims: int) -> np.ndarray:
    """What the example grid shows: a 2D image (C, H, W) or map (H, W) as it is; a 3D volume (C, D, H, W)
    or map (D, H, W) as its three middle slices, axial | coronal | sagittal, side by side.

    >>> middle_slices(np.zeros((1, 4, 5, 6)), 3).shape  # (5 x 6) | (4 x 6) | (4 x 5), padded to 5 rows
    (1, 5, 17)
    """
    a = np.asarray(array)
    if spatial_dims == 2:
        return a
    d, h, w = a.shape[-3:]
    axial, coronal, sagittal = a[..., d // 2, :, :], a[..., :, h // 2, :], a[..., :, :, w // 2]
    height = max(h, d)
    pad = lambda s: np.pad(s, [(0, 0)] * (s.ndim - 2) + [(0, height - s.shape[-2]), (0, 0)])  # noqa: E731
    return np.concatenate([pad(axial), pad(coronal), pad(sagittal)], axis=-1)


def condition_row(name: str, severity: int, parameter, task: str | Task, labels: np.ndarray, ev: Evaluation,
                  clean_pred: np.ndarray, class_names: list[str], *, n_resamples: int = 0, seed: int = 0) -> dict:
    """One row of the results: the metrics of one perturbation at one severity, and the share of flips.

    AUC, ACC and balanced accuracy come with 95% intervals (stratified percentile
    bootstrap of the images, :func:`medscope.stats.bootstrap.metric_intervals`,
    ``n_resamples`` resamples seeded by ``seed``; NaN with 0). ``top_class_share``
    is the share of the most common prediction (multi-label: the mean over labels
    of the larger of the shares predicted positive and negative); ``collapsed``
    says that it is at least :data:`COLLAPSE_SHARE` while the truth is more mixed:
    the model answers one class whatever the image, which ACC can mistake for skill.
    """
    from medscope.analysis.inference import calibration
    from medscope.stats.bootstrap import metric_intervals

    task = as_task(task)
    pred = task.predictions(ev.probabilities)
    row = {"perturbation": name, "severity": int(severity), "parameter": parameter,
           "auc": auc_score(task.name, labels, ev.probabilities),
           "acc": acc_score(task.name, labels, ev.probabilities),
           "balanced_acc": balanced_accuracy(task, labels, ev.probabilities),
           "ece": calibration(task.name, ev.probabilities, labels, class_names)["ece"],
           "flip_rate": float(flipped(task, clean_pred, pred).mean()) if len(pred) else float("nan"),
           "image_rmse": ev.image_rmse, "n": int(len(labels)), "n_classes": int(ev.probabilities.shape[1])}
    intervals = (metric_intervals(task.name, labels, ev.probabilities, n_resamples=n_resamples, seed=seed)
                 if n_resamples and len(labels) else {})
    for key in INTERVAL_METRICS:
        entry = intervals.get(key, {})
        row[f"{key}_low"], row[f"{key}_high"] = entry.get("low", float("nan")), entry.get("high", float("nan"))
    row["majority_rate"] = majority_accuracy(task.name, labels) if len(labels) else float("nan")
    row["top_class_share"] = top_class_share(task, pred)
    row["collapsed"] = bool(row["top_class_share"] >= COLLAPSE_SHARE > row["majority_rate"])
    return row


def run_sweep(model, split: Split, task: str | Task, class_names: list[str], device, perturbations: list,
              severities: list[int], *, settings: dict | None = None, seed: int = 0, method: str = "gradcam",
              layer: str | None = None, n_saliency: int = 100, n_examples: int = 3, batch_size: int = 256,
              n_resamples: int = 2000, progress=None) -> Sweep:
    """Clean split, then every perturbation at every severity: metrics, flips, saliency shifts, example maps.

    Parameters
    ----------
    model : the classifier (evaluation mode); ``split`` : its uint8 images and labels
    perturbations : :class:`medscope.explain.perturbations.Perturbation` objects; ``severities`` : 1-5
    settings : how training evaluated the run (:func:`medscope.train.loop.evaluation_settings`), so
        that the clean row equals the run's own metrics; None: plain float32
    seed : seeds the perturbations' random draws and the choice of saliency and example images
    method : ``gradcam`` (at ``layer``; None: :func:`medscope.explain.cam.auto_layer`) or ``gradient``
    n_saliency, n_examples : images whose saliency shift is measured / which are shown at every severity
    n_resamples : bootstrap resamples of each condition's AUC, ACC and balanced accuracy intervals (0: none)
    progress : a wrapper such as :func:`medscope.progress.progress` that draws a bar over the conditions
    """
    task = as_task(task)
    device = torch.device(device)
    settings = dict(settings or {})
    if settings.get("memory_format") is not None:
        model = model.to(memory_format=settings["memory_format"])
    input_shape = tuple(split.images.shape[1:])
    if method == "gradcam" and layer is None:
        layer = auto_layer(model, input_shape, device)
    names = class_names
    labels = split.labels.numpy()
    n = len(split)
    saliency_ids = choose_ids(n, n_saliency, seed) if n_saliency else np.zeros(0, dtype=np.int64)
    example_ids = choose_ids(n, n_examples, seed) if n_examples else np.zeros(0, dtype=np.int64)
    explain_ids = np.union1d(saliency_ids, example_ids).astype(np.int64)
    sal_pos = np.searchsorted(explain_ids, saliency_ids)
    ex_pos = np.searchsorted(explain_ids, example_ids)
    side, dims = min(input_shape[1:]), len(input_shape) - 1
    sweep = Sweep(task=task, seed=seed, perturbations=list(perturbations), severities=list(severities),
                  method=method, layer=layer, n_images=n, image_side=side, spatial_dims=dims,
                  saliency_ids=saliency_ids, example_ids=example_ids)
    start = time.perf_counter()

    clean = evaluate_perturbed(model, split, None, 0, seed, task, device, settings, explain_ids, batch_size)
    clean_pred = task.predictions(clean.probabilities)
    if task.is_multilabel:  # the highest-scoring label (one map per image)
        targets = select_targets("pred", task, torch.from_numpy(clean.logits)[explain_ids],
                                 split.labels[torch.as_tensor(explain_ids, dtype=torch.long)])
    else:  # the clean prediction (threshold 0.5 for binary) is the class explained
        targets = torch.as_tensor(np.asarray(clean_pred).reshape(-1)[explain_ids], dtype=torch.long)
    clean_maps = saliency_maps(model, clean.explained_images, targets, method, layer, device)
    sweep.seconds["clean"] = time.perf_counter() - start

    def record(name, severity, parameter, ev: Evaluation, maps: torch.Tensor):
        row = condition_row(name, severity, parameter, task, labels, ev, clean_pred, names,
                            n_resamples=n_resamples, seed=seed)
        pred = task.predictions(ev.probabilities)
        is_flipped = flipped(task, clean_pred, pred)
        sal_flipped = is_flipped[saliency_ids]
        row["n_saliency"] = int(len(saliency_ids))
        row["n_flipped_saliency"] = int(sal_flipped.sum())
        if len(saliency_ids):
            shift = saliency_shift(clean_maps[sal_pos], maps[sal_pos])
            scores = shift_scores(shift)
            notes = []
            for key, column in SHIFT_MEASURES.items():
                row[column] = float(np.mean(shift[key]))
                row[f"flip_auroc_{key}"], note = flip_auroc(scores[key], sal_flipped)
                if note and note not in notes:
                    notes.append(note)
            row["flip_auroc_note"] = "; ".join(notes)
            for k, image_id in enumerate(saliency_ids):
                sweep.per_image.append({
                    "perturbation": name, "severity": int(severity), "id": int(image_id),
                    "label": task.label_text(labels[image_id]),
                    "clean_prediction": task.label_text(clean_pred[image_id]),
                    "prediction": task.label_text(pred[image_id]), "flipped": bool(is_flipped[image_id]),
                    "target": int(targets[sal_pos[k]]), "rmse": float(shift["rmse"][k]),
                    "pearson": float(shift["pearson"][k]), "iou": float(shift["iou"][k])})
        else:
            row.update({column: float("nan") for column in SHIFT_MEASURES.values()})
            row.update({f"flip_auroc_{key}": float("nan") for key in SHIFT_MEASURES})
            row["flip_auroc_note"] = flip_auroc(np.zeros(0), np.zeros(0, dtype=bool))[1]
        if len(example_ids):
            probs = ev.probabilities[example_ids]
            sweep.examples[(name, int(severity))] = (
                [middle_slices(img, dims) for img in ev.explained_images[ex_pos].numpy()],
                [middle_slices(m, dims) for m in maps[ex_pos].numpy()],
                [prediction_caption(task, p, names) for p in probs],
                [bool(f) for f in is_flipped[example_ids]])
        sweep.rows.append(row)

    record("clean", 0, None, clean, clean_maps)
    conditions = [(perturbation, severity) for perturbation in perturbations for severity in severities]
    for perturbation, severity in (progress(conditions, desc="robustness", unit="condition") if progress
                                   else conditions):
        t0 = time.perf_counter()
        ev = evaluate_perturbed(model, split, perturbation, severity, seed, task, device, settings,
                                explain_ids, batch_size)
        maps = saliency_maps(model, ev.explained_images, targets, method, layer, device)
        record(perturbation.name, severity, perturbation.parameter(severity, side), ev, maps)
        sweep.seconds[perturbation.name] = sweep.seconds.get(perturbation.name, 0.0) + time.perf_counter() - t0
    sweep.total_seconds = time.perf_counter() - start
    return sweep


def prediction_caption(task: str | Task, probs: np.ndarray, names: list[str]) -> str:
    """An example figure's caption of one prediction: the class and its probability, or the positive labels.

    >>> prediction_caption("binary-class", np.array([0.3, 0.7]), ["benign", "malignant"])
    'malignant 0.70'
    >>> prediction_caption("multi-label, binary-class", np.array([0.9, 0.2, 0.6]), ["a", "b", "c"])
    'pred: 0,2'
    """
    task = as_task(task)
    if task.is_multilabel:  # label indices: the names of 14 labels would not fit under a thumbnail
        on = [str(j) for j in np.flatnonzero(task.predictions(probs[None])[0])]
        return "pred: " + (",".join(on) or "none")
    k = int(np.asarray(task.predictions(probs[None]))[0])
    name = names[k] if len(names[k]) <= 12 else names[k][:11] + "…"
    return f"{name} {probs[k]:.2f}"


def example_title(task: str | Task, label, class_names: list[str]) -> str:
    """How an example figure names the image's true label: the class name, or the 0/1 label vector."""
    task = as_task(task)
    return task.label_text(label, class_names if task.is_single_label else None)


# --------------------------------------------------------------------------- summary

def summarize(rows: list[dict], per_image: list[dict], tolerance: float, *, n_resamples: int = 2000,
              seed: int = 0) -> list[dict]:
    """One row per perturbation (over its severities) and an ``overall`` row.

    Verdicts rest on balanced accuracy, which a model answering the majority
    class everywhere cannot raise above chance (ACC can: it rises to the
    majority rate). ``first_severity_below``: the first severity whose balanced
    accuracy is more than ``tolerance`` below the clean one;
    ``first_severity_beyond_interval``: the first whose 95% interval lies wholly
    below the clean value; ``collapsed_severities``: where the model collapsed
    to one class (:func:`condition_row`). Flip AUROCs are given per perturbation
    (its severities pooled) with stratified bootstrap intervals
    (:func:`medscope.metrics.error_auroc_interval`), then pooled over all.
    """
    clean = rows[0]
    out = []
    by_name: dict[str, list[dict]] = {}
    for row in rows[1:]:
        by_name.setdefault(row["perturbation"], []).append(row)
    for name, group in by_name.items():
        worst = min(group, key=lambda r: r["balanced_acc"])
        below = [r["severity"] for r in group if r["balanced_acc"] < clean["balanced_acc"] - tolerance]
        beyond = [r["severity"] for r in group if _defined(r.get("balanced_acc_high"))
                  and r["balanced_acc_high"] < clean["balanced_acc"]]
        images = [p for p in per_image if p["perturbation"] == name]
        entry = {"perturbation": name, "severities": " ".join(str(r["severity"]) for r in group),
                 "mean_ce": float(np.mean([1 - r["balanced_acc"] for r in group])), "clean_ce": 1 - clean["balanced_acc"],
                 "mce": mean_corruption_error([r["balanced_acc"] for r in group], clean["balanced_acc"]),
                 "mean_balanced_acc": float(np.mean([r["balanced_acc"] for r in group])),
                 "worst_balanced_acc": worst["balanced_acc"], "worst_severity": worst["severity"],
                 "first_severity_below": below[0] if below else None,
                 "first_severity_beyond_interval": beyond[0] if beyond else None,
                 "collapsed_severities": " ".join(str(r["severity"]) for r in group if r.get("collapsed")),
                 "mean_acc": float(np.mean([r["acc"] for r in group])),
                 "mean_auc": float(np.nanmean([r["auc"] for r in group]))
                 if any(_defined(r["auc"]) for r in group) else float("nan"),
                 "mean_flip_rate": float(np.mean([r["flip_rate"] for r in group])),
                 "mean_image_rmse": float(np.mean([r["image_rmse"] for r in group]))}
        entry.update(_pooled_shift(images, group, n_resamples, seed))
        out.append(entry)
    if out:
        overall = {"perturbation": "overall", "severities": out[0]["severities"],
                   "clean_ce": 1 - clean["balanced_acc"]}
        for key in ("mean_ce", "mce", "mean_balanced_acc", "mean_acc", "mean_auc", "mean_flip_rate",
                    "mean_image_rmse"):
            values = [o[key] for o in out if _defined(o[key])]
            overall[key] = float(np.mean(values)) if values else float("nan")
        worst = min(out, key=lambda o: o["worst_balanced_acc"])
        overall.update(worst_balanced_acc=worst["worst_balanced_acc"], worst_severity=worst["worst_severity"])
        overall["collapsed_severities"] = " ".join(f"{o['perturbation']}:{s}" for o in out
                                                   for s in o["collapsed_severities"].split())
        overall.update(_pooled_shift([p for p in per_image if p["severity"] > 0], rows[1:], n_resamples, seed))
        for key in SHIFT_MEASURES:  # how far apart the per-perturbation values are
            values = [o[f"flip_auroc_{key}"] for o in out if _defined(o[f"flip_auroc_{key}"])]
            overall[f"flip_auroc_{key}_min"] = min(values) if values else float("nan")
            overall[f"flip_auroc_{key}_max"] = max(values) if values else float("nan")
        out.append(overall)
    return out


def _pooled_shift(images: list[dict], group: list[dict], n_resamples: int = 2000, seed: int = 0) -> dict:
    """Mean shift over the conditions, and the AUROC (with its interval) over every explained image of
    every condition pooled."""
    result = {column: _nanmean([r.get(column) for r in group]) for column in SHIFT_MEASURES.values()}
    flips = np.array([p["flipped"] for p in images], dtype=bool)
    scores = shift_scores({k: np.array([p[k] for p in images], dtype=np.float64) for k in SHIFT_MEASURES})
    notes = []
    for key in SHIFT_MEASURES:
        result[f"flip_auroc_{key}"], note = flip_auroc(scores[key], flips)
        interval = error_auroc_interval(scores[key], flips, n_resamples=n_resamples, seed=seed) \
            if _defined(result[f"flip_auroc_{key}"]) else {}
        result[f"flip_auroc_{key}_low"] = interval.get("low", float("nan"))
        result[f"flip_auroc_{key}_high"] = interval.get("high", float("nan"))
        if note and note not in notes:
            notes.append(note)
    result["n_flipped_saliency"] = int(flips.sum())
    result["n_saliency_pairs"] = int(len(flips))
    result["flip_auroc_note"] = "; ".join(notes)
    return result


def _defined(value) -> bool:
    return value is not None and not math.isnan(value)


def _nanmean(values) -> float:
    values = [float(v) for v in values if _defined(v)]
    return float(np.mean(values)) if values else float("nan")


RESULT_COLUMNS = ["perturbation", "severity", "parameter", "n", "auc", "auc_low", "auc_high", "acc", "acc_low",
                  "acc_high", "balanced_acc", "balanced_acc_low", "balanced_acc_high", "majority_rate",
                  "top_class_share", "collapsed", "ece", "flip_rate", "corruption_error", "relative_ce", "image_rmse", "n_saliency", "n_flipped_saliency",
                  "saliency_rmse", "saliency_pearson", "saliency_iou", "flip_auroc_rmse", "flip_auroc_pearson",
                  "flip_auroc_iou", "flip_auroc_note"]
SUMMARY_COLUMNS = ["perturbation", "severities", "mce", "mean_ce", "clean_ce", "mean_balanced_acc",
                   "worst_balanced_acc", "worst_severity", "first_severity_below", "first_severity_beyond_interval",
                   "collapsed_severities", "mean_acc", "mean_auc", "mean_flip_rate", "mean_image_rmse",
                   "saliency_rmse", "saliency_pearson", "saliency_iou", "n_saliency_pairs", "n_flipped_saliency",
                   "flip_auroc_rmse", "flip_auroc_rmse_low", "flip_auroc_rmse_high", "flip_auroc_pearson",
                   "flip_auroc_pearson_low", "flip_auroc_pearson_high", "flip_auroc_iou", "flip_auroc_iou_low",
                   "flip_auroc_iou_high", "flip_auroc_note"]
PER_IMAGE_COLUMNS = ["perturbation", "severity", "id", "label", "clean_prediction", "prediction", "flipped", "target",
                     "rmse", "pearson", "iou"]


def add_relative_errors(rows: list[dict]) -> None:
    """``corruption_error = 1 - balanced acc`` and ``relative_ce`` = that over the clean one, per row."""
    clean_error = 1.0 - rows[0]["balanced_acc"]
    for row in rows:
        row["corruption_error"] = 1.0 - row["balanced_acc"]
        row["relative_ce"] = row["corruption_error"] / clean_error if clean_error > 0 else float("nan")


# --------------------------------------------------------------------------- the summary file

def same_number(a, b) -> bool:
    """Equal, or both NaN; never when one is missing (None).

    >>> same_number(float("nan"), float("nan")), same_number(None, 0.5), same_number(0.5, 0.5)
    (True, False, True)
    """
    if a is None or b is None:
        return False
    return (math.isnan(a) and math.isnan(b)) or a == b


def sweep_record(sweep: Sweep, summary_rows: list[dict], *, run: str, split: str, checkpoint: str,
                 tolerance: float, run_metrics: dict | None, seconds: float | None = None) -> dict:
    """The summary file (``FILES["summary"]``): how the sweep was run, the clean metrics, definitions, the summary.

    ``run_metrics``: the run's own AUC and ACC of this split (None when there
    is nothing to compare with); ``clean_matches_run_metrics`` says whether
    the clean row reproduces them exactly. ``seconds``: the time to state
    (default: the sweep's own).
    """
    clean = sweep.rows[0]
    side, severities = sweep.image_side, sweep.severities
    return {
        "run": run, "split": split, "checkpoint": checkpoint, "task": sweep.task.name,
        "n_images": sweep.n_images, "seed": sweep.seed, "severities": severities,
        "perturbations": {p.name: {"description": p.description, "unit": p.unit,
                                   "parameters": [p.parameter(s, side) for s in severities],
                                   "scales_with_size": p.scales_with_size} for p in sweep.perturbations},
        "image_side": side, "spatial_dims": sweep.spatial_dims,
        "saliency": {"method": SALIENCY_LABELS[sweep.method], "layer": sweep.layer,
                     "n_images": len(sweep.saliency_ids), "top_fraction": TOP_FRACTION,
                     "target": "the class predicted on the clean image"},
        "tolerance": tolerance, "seconds": round(sweep.total_seconds if seconds is None else seconds, 2),
        "clean": {k: clean[k] for k in ("auc", "auc_low", "auc_high", "acc", "acc_low", "acc_high", "balanced_acc",
                                        "balanced_acc_low", "balanced_acc_high", "majority_rate", "ece")},
        "chance_balanced_acc": chance_balanced_accuracy(sweep.task, sweep.rows[0]),
        "collapse_share": COLLAPSE_SHARE,
        "interval_definition": "95% percentile bootstrap over the images, stratified by true class "
                               "(AUC, ACC, balanced accuracy) or by flipped/stable (flip AUROC)",
        "run_metrics": run_metrics,
        "clean_matches_run_metrics": None if run_metrics is None else bool(
            same_number(run_metrics.get("auc"), clean["auc"]) and same_number(run_metrics.get("acc"), clean["acc"])),
        "mce_definition": "mean over severities of (1 - balanced accuracy) / (1 - clean balanced accuracy); "
                          "normalised by the run's clean error, not AlexNet's (Hendrycks & Dietterich 2019)",
        "balanced_accuracy_definition": "mean recall over the true classes; multi-label: mean over labels of each "
                                        "label's balanced accuracy",
        "flip_definition": "prediction differs from the clean one (multi-label: any label differs)",
        "summary": summary_rows,
    }


# --------------------------------------------------------------------------- the report

def _auroc_words(value, low=float("nan")) -> str:
    """How much a flip AUROC says, given its interval: a warning sign only where the interval excludes 0.5."""
    if not _defined(value):
        return "undefined"
    if not _defined(low) or low <= 0.5:
        return "no better than chance at 95% confidence"
    if value >= 0.8:
        return "a strong warning sign"
    if value >= 0.65:
        return "a useful warning sign"
    return "a weak warning sign"


def _with_interval(row: dict, key: str, digits: int = 3) -> str:
    low, high = row.get(f"{key}_low"), row.get(f"{key}_high")
    text = number_text(row.get(key), digits)
    return text + (f" [{number_text(low, digits)}, {number_text(high, digits)}]" if _defined(low) and _defined(high)
                   else "")


def report_markdown(info: dict, rows: list[dict]) -> str:
    """The report (``FILES["report"]``): the sweep in plain words; ``info`` is :func:`sweep_record`'s.

    Every verdict is on balanced accuracy (a majority-class guess scores chance
    there, while its ACC is the majority rate); numbers carry their 95% intervals.
    """
    clean = rows[0]
    summary = [s for s in info["summary"] if s["perturbation"] != "overall"]
    overall = next((s for s in info["summary"] if s["perturbation"] == "overall"), None)
    sal = info["saliency"]
    chance = info.get("chance_balanced_acc", float("nan"))
    lines = [f"# How robust is the model? — {markdown_text(info['run'])}", "",
             f"{info['n_images']} {markdown_text(info['split'])} images ({markdown_text(info['task'])}), each "
             "perturbed in "
             f"{len(summary)} ways at severities {', '.join(map(str, info['severities']))} (seed {info['seed']}). "
             f"The perturbed images went through the same evaluation as the run's own test metrics. "
             f"Verdicts use balanced accuracy (chance: {number_text(chance)}); brackets are 95% intervals.", ""]
    match = info["clean_matches_run_metrics"]
    check = "" if match is None else (f" — the same as in the run's `{RUN_METRICS_FILE}`." if match else
                                      f" — **not** the same as the run's `{RUN_METRICS_FILE}` (another device or "
                                      "software version gives slightly different numbers).")
    lines += ["## In short", "",
              f"- On clean images: balanced accuracy {_with_interval(clean, 'balanced_acc')}, AUC "
              f"{_with_interval(clean, 'auc')}, ACC {_with_interval(clean, 'acc')} (always answering the majority "
              f"class would score ACC {number_text(clean.get('majority_rate'))}), ECE {number_text(clean['ece'])}{check}"]
    if summary:
        hurt = max(summary, key=lambda s: (s["mce"] if _defined(s["mce"]) else -1, -s["mean_balanced_acc"]))
        worst = min(summary, key=lambda s: s["worst_balanced_acc"])
        lines.append(f"- The perturbation that hurts most is **{hurt['perturbation'].replace('_', ' ')}**: mean "
                     f"corruption error {number_text(hurt['mce'], 2)}× the clean one, mean balanced accuracy "
                     f"{number_text(hurt['mean_balanced_acc'])}. The lowest balanced accuracy of all, "
                     f"{number_text(worst['worst_balanced_acc'])}, comes with "
                     f"{worst['perturbation'].replace('_', ' ')} at severity {worst['worst_severity']}.")
        least = min(summary, key=lambda s: (s["mce"] if _defined(s["mce"]) else math.inf, -s["mean_balanced_acc"]))
        lines.append(f"- The least harmful is {least['perturbation'].replace('_', ' ')} (mCE "
                     f"{number_text(least['mce'], 2)}, mean balanced accuracy {number_text(least['mean_balanced_acc'])}).")
        collapsed = [s for s in summary if s["collapsed_severities"]]
        if collapsed:
            lines.append("- **Collapsed to one class** (at least "
                         f"{percent_text(info.get('collapse_share', COLLAPSE_SHARE))} of the images get the same "
                         "answer, whatever they show): " + "; ".join(
                             f"{s['perturbation'].replace('_', ' ')} at severity "
                             f"{', '.join(s['collapsed_severities'].split())}" for s in collapsed)
                         + ". There ACC drifts toward the majority rate "
                         f"({number_text(clean.get('majority_rate'))}) and can even rise; it is not robustness.")
        if overall:
            lines.append(f"- Averaged over every perturbation and severity: balanced accuracy "
                         f"{number_text(overall['mean_balanced_acc'])}, mCE {number_text(overall['mce'], 2)} (1 means "
                         f"as many errors as on clean images), and {percent_text(overall['mean_flip_rate'])} of "
                         "predictions change.")
        unchanged = [s["perturbation"].replace("_", " ") for s in summary if s["mean_image_rmse"] < 0.5]
        if unchanged:
            lines.append(f"- These left the images (almost) unchanged, so they test nothing here: "
                         f"{', '.join(unchanged)} (e.g. gamma and contrast do little to black-and-white masks).")
        if overall and sal["n_images"]:
            lines += _flip_auroc_lines(summary, overall)
    lines += ["", f"## When balanced accuracy falls more than {info['tolerance']:g} below clean "
                  f"({_with_interval(clean, 'balanced_acc')})", ""]
    for s in summary:
        name = s["perturbation"].replace("_", " ")
        beyond = s.get("first_severity_beyond_interval")
        sure = (f"; beyond its 95% interval from severity {beyond}" if beyond is not None
                else "; within the intervals at every severity")
        if s["first_severity_below"] is None:
            lines.append(f"- {name}: never, at the severities tried (lowest {number_text(s['worst_balanced_acc'])}"
                         f"{sure}).")
        else:
            lines.append(f"- {name}: from severity {s['first_severity_below']} (lowest "
                         f"{number_text(s['worst_balanced_acc'])} at severity {s['worst_severity']}{sure}).")
    lines += ["", "## Per perturbation", "",
              "| perturbation | mCE | mean balanced acc | worst balanced acc (severity) | collapsed at | mean ACC "
              "| flips | saliency RMSE | Pearson | top-10% IoU | flip AUROC of the RMSE [95% interval] |",
              "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for s in summary + ([overall] if overall else []):
        lines.append(f"| {s['perturbation'].replace('_', ' ')} | {number_text(s['mce'], 2)} | "
                     f"{number_text(s['mean_balanced_acc'])} | {number_text(s['worst_balanced_acc'])} "
                     f"({s['worst_severity']}) | {s.get('collapsed_severities') or '—'} | "
                     f"{number_text(s['mean_acc'])} | {percent_text(s['mean_flip_rate'])} | "
                     f"{number_text(s['saliency_rmse'])} | {number_text(s['saliency_pearson'])} | "
                     f"{number_text(s['saliency_iou'])} | {_with_interval(s, 'flip_auroc_rmse')} |")
    lines += ["", "## Per severity, with 95% intervals", "",
              "| perturbation | severity | balanced accuracy | AUC | ACC | one class |",
              "| --- | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        lines.append(f"| {r['perturbation'].replace('_', ' ')} | {r['severity']} | "
                     f"{_with_interval(r, 'balanced_acc')} | {_with_interval(r, 'auc')} | {_with_interval(r, 'acc')} | "
                     f"{'**collapsed** (' + percent_text(r['top_class_share']) + ')' if r.get('collapsed') else ''} |")
    lines += ["", "## The perturbations", "", "| perturbation | parameter | " +
              " | ".join(f"severity {s}" for s in info["severities"]) + " |",
              "| --- | --- |" + " ---: |" * len(info["severities"])]
    for name, p in info["perturbations"].items():
        values = " | ".join(f"{v:g}" for v in p["parameters"])
        lines.append(f"| {p['description']} (`{name}`) | {p['unit']} | {values} |")
    side = info["image_side"]
    lines += ["", f"Spatial parameters are given for 28 px images and scaled by {side}/28 for these "
              f"{side} px images.", "",
              "## What the numbers mean", "",
              "- **Balanced accuracy**: " + info["balanced_accuracy_definition"] + f"; a guess that ignores the "
              f"image scores {number_text(chance)}. **ACC / AUC**: as MedMNIST's evaluator computes them.",
              "- **Intervals**: " + info.get("interval_definition", "95% bootstrap") + ".",
              "- **collapsed**: at least " + percent_text(info.get("collapse_share", COLLAPSE_SHARE)) + " of the "
              "predictions are one class while the truth is more mixed.",
              "- **ECE**: expected calibration error with 15 equal-width confidence bins, as in "
              "`analyze_inference.py` (0 = perfectly calibrated).",
              "- **flips**: the share of images whose " + info["flip_definition"] + ".",
              "- **mCE** (mean corruption error): " + info["mce_definition"] + ". 1 means no worse than clean.",
              f"- **saliency shift** ({sal['method']}"
              f"{' at ' + markdown_text(sal['layer']) if sal['layer'] else ''}, on "
              f"{sal['n_images']} seeded images, explaining {sal['target']}): RMSE between the clean and perturbed "
              "maps (each scaled to [0, 1]; 0 = unchanged), Pearson correlation (1 = same pattern) and the overlap "
              f"(IoU) of the {int(100 * sal['top_fraction'])}% most salient pixels (1 = same hot spot).",
              "- **flip AUROC**: how well each shift (RMSE, 1 − Pearson, 1 − IoU) singles out the images whose "
              "prediction flipped: the chance that a flipped image's map moved more than a stable one's "
              "(0.5 = chance, 1 = perfect; undefined when nothing or everything flipped).", "",
              f"Files: `{FILES['results']}` (one row per perturbation and severity), `{FILES['summary_csv']}`, "
              f"`{FILES['per_image']}` (saliency shift of every explained image), `{FILES['summary']}`, "
              f"`{FILES['measures']}` (each measure against severity), `{FILES['heatmap']}`, and "
              f"`{FILES['examples'].replace('{id:05d}', '<id>')}`: a few images at every severity with their "
              "saliency overlaid"
              + (" (3D volumes as the middle axial, coronal and sagittal slices side by side)"
                 if info.get("spatial_dims") == 3 else "") + ".", ""]
    return "\n".join(lines)


def _flip_auroc_lines(summary: list[dict], overall: dict) -> list[str]:
    """Does the saliency shift warn of a flip? Per perturbation first, with intervals; then pooled."""
    best_key = max(SHIFT_MEASURES, key=lambda k: overall[f"flip_auroc_{k}"]
                   if _defined(overall[f"flip_auroc_{k}"]) else -1)
    per = [s for s in summary if _defined(s[f"flip_auroc_{best_key}"])]
    if not per:
        return [f"- Whether the saliency shift warns of failure cannot be said: {overall['flip_auroc_note']}."]
    lines = [f"- Does the saliency shift warn of a flip? The {_measure_words(best_key)} separates flipped from "
             "stable predictions, per perturbation: " + "; ".join(
                 f"{s['perturbation'].replace('_', ' ')} AUROC {_with_interval(s, f'flip_auroc_{best_key}')} "
                 f"({_auroc_words(s[f'flip_auroc_{best_key}'], s[f'flip_auroc_{best_key}_low'])})" for s in per)
             + " (0.5 is chance)."]
    value, low = overall[f"flip_auroc_{best_key}"], overall[f"flip_auroc_{best_key}_low"]
    if _defined(value):
        lines.append(f"- Pooled over all perturbations: AUROC {_with_interval(overall, f'flip_auroc_{best_key}')} "
                     f"({_auroc_words(value, low)}), over {overall['n_flipped_saliency']} flips among "
                     f"{overall['n_saliency_pairs']} explained image-perturbation pairs; the per-perturbation values "
                     f"range from {number_text(overall[f'flip_auroc_{best_key}_min'])} to "
                     f"{number_text(overall[f'flip_auroc_{best_key}_max'])}, so read the pooled value with them.")
    return lines


def _measure_words(key: str) -> str:
    return {"rmse": "RMSE between the maps", "pearson": "loss of correlation between the maps (1 − Pearson)",
            "iou": "loss of overlap of the hottest pixels (1 − IoU)"}[key]
