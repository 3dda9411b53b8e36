"""Maps over a split: explain a set of images batch by batch, and the tables and summaries that describe them.

:func:`explain_split` runs any map method (a Grad-CAM object, a saliency
function) over chosen images of a split and, optionally, measures the
faithfulness of the maps. The functions below it turn the result into the
arrays, rows and summary of the ``gradcam/`` and ``saliency/`` folders;
writing them is the caller's business.

Every file of those folders is named in :data:`FILES`, under a stem per
method (:data:`STEMS`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from medscope.data import gather, normalize
from medscope.explain.cam import select_targets
from medscope.explain.faithfulness import (
    Faithfulness,
    background_value,
    choose_deletion_baseline,
    concat_faithfulness,
    faithfulness,
    faithfulness_summary,
)
from medscope.tasks import Task
from medscope.tasks import task as as_task

FILES = {
    "maps": "{stem}_maps.npz",
    "metrics": "{stem}_metrics.csv",
    "faithfulness": "{stem}_faithfulness.png",
    "summary": "{stem}_summary.json",
    "page": "{stem}_page{page:02d}.png",  # 2D figures, a few images per page
    "volume": "{stem}_volume_{id:05d}.png",  # 3D figures, one per volume
}
STEMS = {"gradcam": "gradcam", "gradcam++": "gradcampp",
         "vanilla": "saliency_vanilla", "smoothgrad": "saliency_smoothgrad"}
METHOD_LABELS = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++"}
METRICS_COLUMNS = ["row", "id", "label", "target", "target_name", "target_probability", "deletion_auc",
                   "insertion_auc", "random_deletion_auc", "random_insertion_auc"]


def file_name(kind: str, stem: str, **fields) -> str:
    """The name of one file of a method's outputs.

    >>> file_name("page", "gradcam", page=2), file_name("volume", "saliency_vanilla", id=7)
    ('gradcam_page02.png', 'saliency_vanilla_volume_00007.png')
    """
    return FILES[kind].format(stem=stem, **fields)


def figure_pattern(stem: str) -> re.Pattern:
    """The files of a stem that depend on which images were explained: figures and the metrics table.

    (:data:`FILES`' ``page``, ``volume``, ``metrics`` and ``faithfulness``, with any page or id.)

    >>> [bool(figure_pattern("gradcam").match(n)) for n in ("gradcam_page03.png", "gradcam_volume_00012.png",
    ...                                                    "gradcam_maps.npz", "gradcampp_page01.png")]
    [True, True, False, False]
    """
    return re.compile(rf"^{re.escape(stem)}_(page\d+\.png|volume_\d+\.png|metrics\.csv|faithfulness\.png)$")


# --------------------------------------------------------------------------- batches over a split

@dataclass
class Explained:
    """Maps and outputs for a set of images of a split (numpy, on the CPU)."""

    ids: np.ndarray
    maps: np.ndarray  # (N, *spatial) float32 in [0, 1]
    probabilities: np.ndarray  # (N, K)
    targets: np.ndarray  # (N,)
    labels: np.ndarray  # (N, 1) or (N, L)
    layer_maps: np.ndarray | None
    faithfulness: Faithfulness | None


def explain_split(explain_batch, model, split, ids: np.ndarray, task: str | Task, device, *, batch_size: int = 32,
                  target="pred", steps: int | None = 20, seed: int = 0, deletion_baseline: str = "auto",
                  progress=None) -> Explained:
    """Run ``explain_batch(x, targets) -> MapBatch`` over ``split[ids]`` in batches.

    With ``steps``, the deletion/insertion faithfulness of the maps is measured
    too (random orders drawn from ``seed``); deleted pixels become
    ``deletion_baseline``: ``"auto"`` chooses the background or a blurred
    copy from the split's images (:func:`~medscope.explain.faithfulness.choose_deletion_baseline`),
    and the background is measured on the split (:func:`split_background`).
    ``progress``: a wrapper such as
    :func:`medscope.progress.progress` that draws a bar over the batches.
    """
    task = as_task(task)
    device = torch.device(device)
    generator = torch.Generator().manual_seed(seed)
    maps, layer_maps, probs, targets, parts = [], [], [], [], []
    ids_t = torch.as_tensor(ids, dtype=torch.long)
    background = reason = None
    if steps and deletion_baseline in ("auto", "background"):
        sample = split_sample(split)
        if deletion_baseline == "auto":
            deletion_baseline, reason = choose_deletion_baseline(sample)
        background = background_value(sample) if deletion_baseline == "background" else None
    starts = range(0, len(ids_t), batch_size)
    for start in (progress(starts, desc="explaining", unit="batch") if progress else starts):
        index = ids_t[start:start + batch_size]
        images, labels = gather(split, index, device)
        x = normalize(images)
        out = explain_batch(x, lambda logits, labels=labels: select_targets(target, task, logits, labels))
        maps.append(out.maps.float().cpu())
        if out.layer_maps is not None:
            layer_maps.append(out.layer_maps.float().cpu())
        probs.append(task.scores(out.logits).float().cpu())
        targets.append(out.targets)
        if steps:
            parts.append(faithfulness(model, x, out.maps, out.targets, task, steps=steps, generator=generator,
                                      chunk=max(64, 4 * batch_size), baseline=deletion_baseline,
                                      background=background))
    for part in parts:
        part.baseline_reason = reason
    return Explained(
        ids=np.asarray(ids, dtype=np.int64), maps=torch.cat(maps).numpy(),
        probabilities=torch.cat(probs).numpy(), targets=torch.cat(targets).numpy(),
        labels=split.labels[ids_t].numpy(),
        layer_maps=torch.cat(layer_maps).numpy() if layer_maps else None,
        faithfulness=concat_faithfulness(parts) if parts else None)


BACKGROUND_IMAGES = 512  # images whose borders decide the baseline: the median is stable long before


def split_sample(split) -> torch.Tensor:
    """Up to :data:`BACKGROUND_IMAGES` evenly spaced images of a split in the model's input range (no labels)."""
    index = torch.linspace(0, len(split) - 1, min(len(split), BACKGROUND_IMAGES)).round().long().unique()
    images, _ = gather(split, index, torch.device("cpu"))
    return normalize(images)


def split_background(split) -> torch.Tensor:
    """The background of a split's images in the model's input range, per channel (:func:`background_value`)."""
    return background_value(split_sample(split))


def stratified_ids(labels: np.ndarray, probabilities: np.ndarray, task: str | Task, n: int,
                   classes: list[int] | None = None) -> np.ndarray:
    """``n`` image ids that show every true class present, right and wrong, the most confident errors first.

    Each class ``k`` (``classes``, default every class present; multi-label:
    the images positive for label ``k``) queues its wrong and right
    predictions alternately, each most confident first (so its most
    confident error leads). One id is taken from each class in turn until
    ``n`` are chosen (an id is taken once): every class is shown before any
    gets a second image. Deterministic: no random draw, so a rare class is
    never left out by chance.

    >>> labels = np.array([[0], [0], [0], [0], [1], [1]])
    >>> probs = np.array([[.9, .1], [.6, .4], [.2, .8], [.7, .3], [.3, .7], [.55, .45]])
    >>> stratified_ids(labels, probs, "binary-class", 4).tolist()  # errors 2 (0.8) and 5 first, then the sure ones
    [0, 2, 4, 5]
    """
    task = as_task(task)
    probs = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    pred = task.predictions(probs)
    confidence = task.predicted_probability(probs, pred)
    if task.is_multilabel:
        member = labels.astype(bool)  # (N, L)
        right = np.all(pred == labels, axis=1)
        confidence = confidence.mean(axis=1)
    else:
        truth = labels.reshape(-1).astype(np.int64)
        member = truth[:, None] == np.arange(probs.shape[1])[None, :]
        right = np.asarray(task.correct(labels, pred)).reshape(-1)
    present = [k for k in range(member.shape[1]) if member[:, k].any()]
    chosen_classes = present if classes is None else [k for k in classes if k in present]
    queues = []  # per class: wrong and right alternately, each most confident first
    for k in chosen_classes:
        wrong, right_rows = (np.flatnonzero(member[:, k] & (right == ok)) for ok in (False, True))
        wrong = list(wrong[np.argsort(-confidence[wrong], kind="stable")])
        right_rows = list(right_rows[np.argsort(-confidence[right_rows], kind="stable")])
        merged = [row for pair in zip(wrong, right_rows) for row in pair]
        merged += wrong[len(right_rows):] + right_rows[len(wrong):]
        queues.append(merged)
    picked: list[int] = []
    taken = set()
    while len(picked) < n and any(queues):
        for queue in queues:  # one image per class in turn, so every class is shown before any second one
            while queue and queue[0] in taken:
                queue.pop(0)
            if queue and len(picked) < n:
                taken.add(queue[0])
                picked.append(int(queue.pop(0)))
    return np.array(sorted(picked), dtype=np.int64)


def choose_ids(n_total: int, n: int | None, seed: int) -> np.ndarray:
    """``n`` image ids of a split drawn with ``seed`` (sorted), or all of them when ``n`` is None.

    >>> choose_ids(5, None, 0).tolist(), len(choose_ids(100, 3, 0))
    ([0, 1, 2, 3, 4], 3)
    """
    if n is None or n >= n_total:
        return np.arange(n_total)
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n_total, generator=generator)[:n].sort().values.numpy()


# --------------------------------------------------------------------------- what the files hold

def target_probability(explained: Explained) -> np.ndarray:
    """(N,) the probability of the class each map explains."""
    return explained.probabilities[np.arange(len(explained.targets)), explained.targets]


def map_arrays(explained: Explained, task: str | Task, class_names: list[str], *, method_label: str,
               split_name: str, layer: str | None) -> dict[str, np.ndarray]:
    """The arrays of ``<stem>_maps.npz``: maps, ids, targets, probabilities, labels, predictions and what made them.

    ``layer_maps`` and ``layer`` are there only for class activation maps.
    """
    task = as_task(task)
    arrays = dict(ids=explained.ids, maps=explained.maps.astype(np.float32), targets=explained.targets,
                  target_names=np.array([class_names[t] for t in explained.targets]),
                  target_probability=target_probability(explained).astype(np.float32),
                  probabilities=explained.probabilities.astype(np.float32), labels=explained.labels,
                  predictions=np.asarray(task.predictions(explained.probabilities)),
                  class_names=np.array(class_names), method=np.array(method_label), split=np.array(split_name))
    if explained.layer_maps is not None:
        arrays.update(layer_maps=explained.layer_maps.astype(np.float32), layer=np.array(layer))
    return arrays


def metrics_rows(explained: Explained, task: str | Task, class_names: list[str]) -> list[dict]:
    """``<stem>_metrics.csv``: one row per image (faithfulness AUCs), then the ``mean`` and ``std`` rows.

    The standard deviation is the population one (ddof = 0). Columns: :data:`METRICS_COLUMNS`.
    """
    task = as_task(task)
    fa = explained.faithfulness
    probability = target_probability(explained)
    rows = [dict(row="image", id=int(i), label=task.label_text(explained.labels[k]),
                 target=int(explained.targets[k]), target_name=class_names[explained.targets[k]],
                 target_probability=float(probability[k]), deletion_auc=float(fa.deletion[k]),
                 insertion_auc=float(fa.insertion[k]), random_deletion_auc=float(fa.random_deletion[k]),
                 random_insertion_auc=float(fa.random_insertion[k]))
            for k, i in enumerate(explained.ids)]
    for stat, fn in (("mean", np.mean), ("std", np.std)):
        rows.append(dict(row=stat, deletion_auc=float(fn(fa.deletion)), insertion_auc=float(fn(fa.insertion)),
                         random_deletion_auc=float(fn(fa.random_deletion)),
                         random_insertion_auc=float(fn(fa.random_insertion)),
                         target_probability=float(fn(probability))))
    return rows


def summary_record(explained: Explained, *, method_label: str, layer: str | None, target, split_name: str,
                   n_figures: int, extra: dict | None = None) -> dict:
    """``<stem>_summary.json``: what was explained and how, with the faithfulness means when measured."""
    empty = [int(i) for i, m in zip(explained.ids, explained.maps) if float(m.max() - m.min()) <= 1e-8]
    summary = {"method": method_label, "layer": layer, "target": target, "split": split_name,
               "n_images": int(len(explained.ids)), "n_figures": int(n_figures),
               "n_empty_maps": len(empty), "empty_map_ids": empty, **(extra or {})}
    if explained.faithfulness is not None:
        summary["faithfulness"] = faithfulness_summary(explained.faithfulness)
    return summary
