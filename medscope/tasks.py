"""The four MedMNIST task types, and everything that depends on which one a dataset has.

A :class:`Task` turns logits into scores, scores into predictions, compares
predictions with labels, and writes labels as text, so that no other module
branches on the task type for these. MedMNIST's own conventions are kept
(``medmnist.Evaluator``):

* binary-class: two softmax scores; the prediction is class 1 when the last
  score is above 0.5;
* multi-class and ordinal-regression: softmax; the prediction is the arg-max
  (MedMNIST evaluates ordinal regression as multi-class);
* multi-label, binary-class: one sigmoid score per label; each label is
  predicted positive above 0.5, and a sample is correct only when every
  label is.

The names are the strings of ``medmnist.INFO[flag]["task"]``; they are what
run.json and metrics.json record.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BINARY = "binary-class"
MULTICLASS = "multi-class"
MULTILABEL = "multi-label, binary-class"
ORDINAL = "ordinal-regression"
NAMES = (BINARY, MULTICLASS, MULTILABEL, ORDINAL)

THRESHOLD = 0.5  # binary (last column) and multi-label (each label) decisions
LABEL_SEPARATOR = ";"  # between the labels of a multi-label sample, in every CSV and report


@dataclass(frozen=True)
class Task:
    """One MedMNIST task type; get it with :func:`task`."""

    name: str

    @property
    def is_binary(self) -> bool:
        return self.name == BINARY

    @property
    def is_multilabel(self) -> bool:
        return self.name == MULTILABEL

    @property
    def is_single_label(self) -> bool:
        """One class per sample: binary, multi-class and ordinal tasks."""
        return self.name != MULTILABEL

    def scores(self, logits):
        """Probabilities from logits (a torch tensor or numpy array of shape (N, K)).

        Sigmoid per label for multi-label tasks, softmax over classes otherwise;
        returned as float32 in the type it was given, except that a float64
        torch tensor is computed and returned in float64 (AUC ranks scores, and
        in float32 confident scores round to ties).
        """
        if isinstance(logits, np.ndarray):
            z = logits.astype(np.float64)
            if self.is_multilabel:
                return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)
            z = z - z.max(axis=1, keepdims=True)
            e = np.exp(z)
            return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
        import torch

        logits = logits if logits.dtype == torch.float64 else logits.float()
        return torch.sigmoid(logits) if self.is_multilabel else torch.softmax(logits, dim=1)

    def predictions(self, probabilities) -> np.ndarray:
        """(N,) predicted class indices, or an (N, L) 0/1 matrix for multi-label tasks.

        >>> task(BINARY).predictions(np.array([[0.3, 0.7], [0.6, 0.4]])).tolist()
        [1, 0]
        >>> task(MULTILABEL).predictions(np.array([[0.9, 0.2]])).tolist()
        [[1, 0]]
        """
        probabilities = np.asarray(probabilities)
        if self.is_multilabel:
            return (probabilities > THRESHOLD).astype(np.int64)
        if self.is_binary:
            return (probabilities[:, -1] > THRESHOLD).astype(np.int64)
        return np.argmax(probabilities, axis=-1)

    def correct(self, labels, predicted) -> np.ndarray:
        """(N,) bool: the prediction equals the label; multi-label: every label is right."""
        labels = np.asarray(labels).astype(np.int64)
        predicted = np.asarray(predicted)
        if self.is_multilabel:
            return (labels == predicted).all(axis=1)
        return labels.reshape(-1) == predicted.reshape(-1)

    def predicted_probability(self, probabilities, predicted=None) -> np.ndarray:
        """The probability the model gives its own prediction: (N,), or (N, L) per label.

        Binary tasks: the last column's side of 0.5 (``p`` or ``1 - p``);
        multi-class: the arg-max probability; multi-label: each label's
        probability of its predicted value.
        """
        probabilities = np.asarray(probabilities)
        predicted = self.predictions(probabilities) if predicted is None else np.asarray(predicted)
        if self.is_multilabel:
            return np.where(predicted == 1, probabilities, 1 - probabilities)
        if self.is_binary:
            positive = probabilities[:, -1]
            return np.where(predicted == 1, positive, 1 - positive)
        return probabilities[np.arange(len(predicted)), predicted]

    def label_text(self, label, class_names=None) -> str:
        """A label (or prediction) row as text.

        Single-label: the class index, or its name when ``class_names`` is given;
        multi-label: the 0/1 vector, or the names of the positive labels
        (``"none"`` if there is none), joined by ``;``.

        >>> task(MULTILABEL).label_text(np.array([0, 1, 1]))
        '0;1;1'
        >>> task(MULTILABEL).label_text(np.array([0, 1, 1]), ["a", "b", "c"])
        'b;c'
        >>> task(BINARY).label_text(np.array([1]), ["benign", "malignant"])
        'malignant'
        """
        label = np.asarray(label).reshape(-1)
        if self.is_single_label:
            index = int(label[0])
            return str(class_names[index]) if class_names is not None else str(index)
        if class_names is None:
            return LABEL_SEPARATOR.join(str(int(v)) for v in label)
        positive = [str(class_names[i]) for i in np.flatnonzero(label)]
        return LABEL_SEPARATOR.join(positive) if positive else "none"


_TASKS = {name: Task(name) for name in NAMES}


def task(name: str | Task) -> Task:
    """The :class:`Task` of a MedMNIST task name (a Task is returned as it is)."""
    if isinstance(name, Task):
        return name
    try:
        return _TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task type {name!r}; expected one of {', '.join(NAMES)}") from None
