"""Calibration of one model, from validation and test logits to one JSON-ready result.

Everything is fitted on the validation split and judged on the test split:

1. **temperature** (:mod:`.temperature`): one ``T`` (softmax tasks) or one per
   label (multi-label) minimising the validation NLL; every later step uses
   the test probabilities of ``logits / T``;
2. **calibration measures** (:mod:`.measures`) on test, before (``T = 1``) and
   after: ECE with equal-width and equal-mass ("adaptive") bins, Brier score,
   NLL and the equal-width reliability bins (pooled over labels for
   multi-label tasks);
3. **decision thresholds** (:mod:`.thresholds`; binary and multi-label tasks,
   per label): Youden's J, a target sensitivity and a target specificity,
   chosen on validation, with test sensitivity, specificity, PPV, NPV,
   balanced accuracy and accuracy; MedMNIST's rule ``score > 0.5`` is
   reported beside them. Multi-class and ordinal tasks predict the arg-max
   and have no threshold: the part is skipped with that reason;
4. **conformal prediction sets** (:mod:`.conformal`): split conformal at level
   ``alpha``, LAC and APS (include-last), each marginal and class-conditional
   (Mondrian; per label value for multi-label), with test coverage overall
   and per class, mean set size, singleton, empty and (binary) abstain
   fractions;
5. **selective classification** (:mod:`.selective`): risk-coverage curves,
   AURC, e-AURC and AUGRC of the errors of the model's predictions, ranked by
   its maximum probability, by the size of its LAC sets (smaller = surer)
   and, when given, by MC-dropout measures; the score with the lowest AUGRC
   is named, with paired intervals of every other score's AUGRC minus it.

Multi-label tasks: the selective part is per image (an image is an error
when any label is wrong, as :meth:`medscope.tasks.Task.correct`), its maximum
probability is the product over labels of the probability of each predicted
value, and its set size is the summed size of its per-label sets.

Intervals: a percentile bootstrap over the test samples
(:func:`medscope.stats.bootstrap.bootstrap_statistic`), stratified by true class
for single-label tasks (as :func:`medscope.stats.bootstrap.metric_intervals`)
and by rows for multi-label tasks. Every interval comes from the same
resamples, so differences are paired. The fitted quantities (``T``,
thresholds, conformal quantiles) are held fixed: an interval describes how
much the test sample leaves a number uncertain, not how a refit on another
validation set would move it.
"""
from __future__ import annotations

import math

import numpy as np

from medscope import tasks
from medscope.errors import UsageError
from medscope.stats.bootstrap import bootstrap_statistic

from . import conformal, measures, resampled, selective, temperature, thresholds
from ._inputs import check_alpha, check_task, label_array, scores_matrix

LEVEL = 0.95
# (name, score, class-conditional); APS sets are never empty (include-last)
CONFORMAL_METHODS = (("lac", "lac", False), ("aps", "aps", False),
                     ("lac_class_conditional", "lac", True), ("aps_class_conditional", "aps", True))
SET_SIZE_METHOD = "lac"  # the sets whose size ranks predictions in selective classification
# MC-dropout measures of uncertainty_per_image.csv: +1 when higher means surer, -1 when higher means less sure
MC_MEASURES = {"confidence": (1, "MC-dropout confidence: mean probability of the predicted class"),
               "normalised_entropy": (-1, "MC-dropout normalised entropy H(mean p)/log K"),
               "predictive_entropy": (-1, "MC-dropout predictive entropy H(mean p)"),
               "expected_entropy": (-1, "MC-dropout expected entropy mean H(p_t)"),
               "mutual_information": (-1, "MC-dropout mutual information"),
               "std_predicted_probability": (-1, "MC-dropout spread of the predicted probability")}
RULES = ("youden", "sensitivity", "specificity", "medmnist")
RATES = ("sensitivity", "specificity", "ppv", "npv", "balanced_accuracy", "accuracy")
MEASURE_NAMES = ("ece", "adaptive_ece", "brier", "nll")


# --------------------------------------------------------------------------- per-sample terms

def brier_terms(task: str, probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-sample Brier terms (n,) whose mean is :func:`medscope.calibration.measures.brier_score`.

    Binary: ``(p_i - y_i)^2`` on the last column; multi-class and ordinal:
    ``sum_k (p_ik - y_ik)^2``; multi-label: ``mean_j (p_ij - y_ij)^2``.

    >>> brier_terms("multi-class", np.array([[0.5, 0.3, 0.2]]), np.array([0])).round(2).tolist()
    [0.38]
    """
    if task == tasks.MULTILABEL:
        return np.mean((probabilities - labels) ** 2, axis=1)
    if task == tasks.BINARY:
        return (probabilities[:, -1] - labels) ** 2
    return np.sum((probabilities - np.eye(probabilities.shape[1])[labels]) ** 2, axis=1)


def nll_terms(task: str, probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-sample NLL terms (n,), nats, whose mean is :func:`medscope.calibration.measures.negative_log_likelihood`
    (same clipping of the probabilities to ``[eps, 1 - eps]``)."""
    eps = np.finfo(np.float64).eps
    if task in (tasks.MULTILABEL, tasks.BINARY):
        p = np.clip(probabilities if task == tasks.MULTILABEL else probabilities[:, -1], eps, 1.0 - eps)
        terms = -(labels * np.log(p) + (1 - labels) * np.log1p(-p))
        return terms.mean(axis=1) if terms.ndim == 2 else terms
    return -np.log(np.clip(probabilities[np.arange(len(labels)), labels], eps, 1.0 - eps))


# --------------------------------------------------------------------------- the bootstrap

class _Bootstrap:
    """Named per-sample arrays and the statistics of them, evaluated together on the same resamples."""

    def __init__(self):
        self.arrays: dict[str, np.ndarray] = {}
        self.statistics = []
        self.basic: set[str] = set()  # keys whose interval is the basic (bias-correcting) bootstrap

    def add(self, name: str, array) -> None:
        self.arrays[name] = np.asarray(array)

    def statistic(self, function) -> None:
        """``function(arrays) -> {key: (b,) values}``, ``arrays`` the resampled ``{name: (b, n, ...)}``."""
        self.statistics.append(function)

    def run(self, n_resamples: int, seed: int, level: float, strata) -> dict:
        names = list(self.arrays)

        def all_statistics(*values):
            arrays = dict(zip(names, values))
            out = {}
            for function in self.statistics:
                out.update(function(arrays))
            return out

        return bootstrap_statistic(all_statistics, [self.arrays[name] for name in names], n_resamples=n_resamples,
                                   seed=seed, level=level, strata=strata, batched=True,
                                   interval={key: "basic" for key in self.basic})


def _entry(intervals: dict, key: str, method: str) -> dict:
    entry = dict(intervals[key])
    if not entry["method"].startswith("percentile"):
        method = f"basic {method.removeprefix('percentile ')}"
    entry["method"] = method
    if "bias_corrected" in entry:  # calibration errors are >= 0: so are their corrected values and intervals
        entry.update(bias_corrected=max(entry["bias_corrected"], 0.0), low=max(entry["low"], 0.0),
                     high=max(entry["high"], 0.0))
    return entry


# --------------------------------------------------------------------------- the analysis

def analyze_calibration(task, val_logits, val_labels, test_logits, test_labels, *, class_names,
                        alpha: float = 0.1, sensitivity: float = 0.9, specificity: float = 0.9, n_bins: int = 15,
                        n_resamples: int = 2000, seed: int = 0, mc_dropout: dict | None = None,
                        level: float = LEVEL) -> dict:
    """Temperature, calibration, thresholds, conformal sets and selective classification of one model.

    Parameters
    ----------
    task : str or medscope.tasks.Task
        A MedMNIST task.
    val_logits, test_logits : arrays (n, K)
        Logits (pre-softmax, or pre-sigmoid per label for multi-label) of the
        validation and test splits.
    val_labels, test_labels : arrays (n, 1), or (n, L) of 0/1 for multi-label
    class_names : sequence of str
        One name per class (per label for multi-label).
    alpha : float
        Conformal miscoverage: sets hold the true label with probability
        ``>= 1 - alpha``.
    sensitivity, specificity : float
        Targets of the two threshold rules, in (0, 1].
    n_bins : int
        Bins of the ECEs and the reliability diagram.
    n_resamples, seed, level : int, int, float
        The test bootstrap (see the module docstring).
    mc_dropout : dict of str -> array (n_test,), optional
        Per-image MC-dropout measures of the test images, in the model's test
        order, named as in ``uncertainty_per_image.csv`` (keys of
        :data:`MC_MEASURES`); entropies, mutual information and spread are
        uncertainties (higher = less sure), ``confidence`` is the reverse.

    Returns
    -------
    dict
        JSON-ready (floats, lists, dicts; infinities are floats): ``task``,
        ``class_names``, ``n_validation``, ``n_test``, ``settings``,
        ``bootstrap``, ``temperature``, ``accuracy``, ``calibration``,
        ``thresholds``, ``conformal``, ``selective``, ``mc_dropout`` and
        ``per_image`` (test ids, labels, predictions and conformal sets, one
        list entry per image). Every number with an interval is an entry
        ``{"estimate", "low", "high", "level", "method", "n_resamples",
        "n_dropped"}``. A part that does not apply has ``"applicable": False``
        and a ``"reason"``.
    """
    name = check_task(tasks.task(task).name if isinstance(task, tasks.Task) else task)
    kind = tasks.task(name)
    alpha = check_alpha(alpha)
    for what, target in (("sensitivity", sensitivity), ("specificity", specificity)):
        if not 0.0 < float(target) <= 1.0:
            raise UsageError(f"the target {what} must lie in (0, 1], got {target}")
    if isinstance(n_bins, bool) or int(n_bins) != n_bins or n_bins < 1:
        raise UsageError(f"the number of bins must be an integer >= 1, got {n_bins}")
    val_z = scores_matrix(name, val_logits, "logits")
    test_z = scores_matrix(name, test_logits, "logits")
    if val_z.shape[1] != test_z.shape[1]:
        raise UsageError(f"validation logits have {val_z.shape[1]} columns, test logits {test_z.shape[1]}")
    if not (np.isfinite(val_z).all() and np.isfinite(test_z).all()):
        raise UsageError("the logits contain NaN or infinite values")
    y_val = label_array(name, val_labels, len(val_z), val_z.shape[1])
    y_test = label_array(name, test_labels, len(test_z), test_z.shape[1])
    if len(val_z) < 2 or len(test_z) < 2:
        raise UsageError(f"calibration needs at least 2 validation and 2 test samples, got {len(val_z)} and "
                         f"{len(test_z)}")
    class_names = [str(c) for c in class_names]
    if len(class_names) != val_z.shape[1]:
        raise UsageError(f"{len(class_names)} class names for {val_z.shape[1]} output columns")
    mc = _check_mc(mc_dropout, len(test_z))

    fit = temperature.fit_temperature(name, val_z, y_val)
    t = fit.temperature
    val_probs = temperature.apply_temperature(name, val_z, t)
    test_probs = {"before": temperature.apply_temperature(name, test_z, 1.0),
                  "after": temperature.apply_temperature(name, test_z, t)}
    n_test = len(test_z)
    strata = None if kind.is_multilabel else y_test
    method = ("percentile bootstrap over test images, not stratified" if kind.is_multilabel
              else "percentile bootstrap over test samples, stratified by true class")
    boot = _Bootstrap()

    calibration_part = _calibration_part(boot, name, kind, test_probs, y_test, int(n_bins))
    accuracy_part = _accuracy_part(boot, name, kind, test_probs["after"], y_test)
    thresholds_part = _thresholds_part(boot, name, kind, val_probs, y_val, test_probs["after"], y_test,
                                       class_names, sensitivity, specificity)
    conformal_part, sets = _conformal_part(boot, name, kind, val_probs, y_val, test_probs["after"], y_test,
                                           class_names, alpha, seed)
    selective_part = _selective_part(boot, name, kind, test_probs["after"], y_test, sets, mc)
    intervals = boot.run(n_resamples, seed, level, strata)

    def fill(node):
        """Replace every ``("interval", key)`` placeholder by its bootstrap entry."""
        if isinstance(node, dict):
            return {k: fill(v) for k, v in node.items()}
        if isinstance(node, list):
            return [fill(v) for v in node]
        if isinstance(node, tuple) and len(node) == 2 and node[0] == "interval":
            return _entry(intervals, node[1], method)
        return node

    result = {
        "task": name, "class_names": class_names, "n_validation": len(val_z), "n_test": n_test,
        "settings": {"alpha": alpha, "target_sensitivity": float(sensitivity),
                     "target_specificity": float(specificity), "n_bins": int(n_bins)},
        "bootstrap": {"method": method, "n_resamples": int(n_resamples), "seed": int(seed), "level": float(level),
                      "held_fixed": "the temperature, thresholds and conformal quantiles fitted on validation"},
        "temperature": _temperature_part(fit, class_names),
        "accuracy": fill(accuracy_part),
        "calibration": fill(calibration_part),
        "thresholds": fill(thresholds_part),
        "conformal": fill(conformal_part),
        "selective": fill(selective_part),
        "mc_dropout": ({"used": True, "measures": list(mc)} if mc else
                       {"used": False, "reason": "no MC-dropout results were given (run explain.py uncertainty "
                                                 "on the test split first)"}),
        "per_image": _per_image(name, kind, test_probs["after"], y_test, sets, class_names),
    }
    _name_best(result["selective"], method)
    return result


def _check_mc(mc_dropout, n: int) -> dict:
    if not mc_dropout:
        return {}
    unknown = sorted(set(mc_dropout) - set(MC_MEASURES))
    if unknown:
        raise ValueError(f"unknown MC-dropout measures {unknown}; expected some of {sorted(MC_MEASURES)}")
    out = {}
    for key, values in mc_dropout.items():
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if values.shape != (n,):
            raise UsageError(f"MC-dropout {key} has {values.size} values for {n} test images")
        if not np.isfinite(values).all():
            raise UsageError(f"MC-dropout {key} contains NaN or infinite values")
        out[key] = values
    return out


def _temperature_part(fit, class_names) -> dict:
    if np.ndim(fit.temperature) == 0:
        t = float(fit.temperature)
        return {"kind": "scalar", "temperature": t, "at_bound": bool(fit.at_bound), "effect": _effect(t),
                "n_validation": fit.n, "nll_validation_before": fit.nll_before, "nll_validation_after": fit.nll_after}
    per_label = [{"label": label, "temperature": float(t), "at_bound": bool(b), "effect": _effect(float(t)),
                  "nll_validation_before": float(before), "nll_validation_after": float(after)}
                 for label, t, b, before, after in zip(class_names, fit.temperature, fit.at_bound,
                                                       fit.nll_before_per_label, fit.nll_after_per_label)]
    return {"kind": "per label", "temperature": [float(t) for t in fit.temperature],
            "at_bound": [bool(b) for b in fit.at_bound], "per_label": per_label, "n_validation": fit.n,
            "nll_validation_before": fit.nll_before, "nll_validation_after": fit.nll_after}


def _effect(t: float) -> str:
    if math.isclose(t, 1.0, rel_tol=1e-3):
        return "unchanged"
    return "softens" if t > 1.0 else "sharpens"


def _calibration_part(boot: _Bootstrap, name: str, kind, probs: dict, y: np.ndarray, n_bins: int) -> dict:
    part = {"n_bins": n_bins, "probabilities": "test probabilities before (T = 1) and after temperature scaling",
            "reliability_pooled_over_labels": kind.is_multilabel}
    for state, p in probs.items():
        conf, correct = measures.predicted_confidence(name, p, y)
        boot.add(f"{state}/confidence", conf)
        boot.add(f"{state}/correct", correct)
        boot.add(f"{state}/brier", brier_terms(name, p, y))
        boot.add(f"{state}/nll", nll_terms(name, p, y))

        def statistic(a, state=state):
            c, ok = a[f"{state}/confidence"], a[f"{state}/correct"]
            bins = resampled.reliability_bins(c.reshape(len(c), -1), ok.reshape(len(ok), -1), n_bins)
            # one label: the pooled bins are the ECE's bins; several: the ECE is the mean of per-label ECEs
            ece = resampled.ece_from_bins(bins) if c.ndim == 2 else resampled.task_ece(c, ok, n_bins, "uniform")
            out = {f"{state}/ece": ece, f"{state}/adaptive_ece": resampled.task_ece(c, ok, n_bins, "quantile"),
                   f"{state}/brier": a[f"{state}/brier"].mean(axis=1), f"{state}/nll": a[f"{state}/nll"].mean(axis=1)}
            for k in range(n_bins):
                out[f"{state}/bin/{k}"] = bins["accuracy"][:, k]
            return out

        boot.statistic(statistic)
        boot.basic.update({f"{state}/ece", f"{state}/adaptive_ece"})
        edges = measures.bin_edges(conf, n_bins)
        bins = measures.reliability_bins(conf.reshape(-1), correct.reshape(-1), n_bins)
        part[state] = {key: ("interval", f"{state}/{key}") for key in MEASURE_NAMES}
        part[f"reliability_{state}"] = [
            {"bin": k, "lower": float(edges[k]), "upper": float(edges[k + 1]), "count": int(bins["count"][k]),
             "confidence": float(bins["confidence"][k]), "accuracy": ("interval", f"{state}/bin/{k}")}
            for k in range(n_bins)]
    return part


def _accuracy_part(boot: _Bootstrap, name: str, kind, probs: np.ndarray, y: np.ndarray) -> dict:
    predicted = kind.predictions(probs)
    if kind.is_multilabel:
        per_sample = (predicted == y).mean(axis=1)  # MedMNIST: mean over labels of the accuracy at 0.5
        rule = "mean over labels of the accuracy of score > 0.5"
    else:
        per_sample = kind.correct(y, predicted).astype(np.float64)
        rule = "score > 0.5 on the positive class" if kind.is_binary else "arg-max over classes"
    boot.add("accuracy", per_sample)
    boot.statistic(lambda a: {"accuracy": a["accuracy"].mean(axis=1)})
    return {"accuracy": ("interval", "accuracy"), "rule": rule,
            "note": "the ACC of medscope.metrics (and MedMNIST); temperature scaling never changes it"}


RULE_TEXT = {"youden": "Youden's J (sensitivity + specificity - 1) largest on validation",
             "sensitivity": "the highest threshold with validation sensitivity >= {sensitivity:g}",
             "specificity": "the lowest threshold with validation specificity >= {specificity:g}",
             "medmnist": "MedMNIST's rule: positive when the score is above 0.5"}


def _thresholds_part(boot, name, kind, val_probs, y_val, test_probs, y_test, class_names, sensitivity,
                     specificity) -> dict:
    if not (kind.is_binary or kind.is_multilabel):
        return {"applicable": False,
                "reason": f"a {name} task predicts the class with the highest probability; there is no single "
                          "positive class to put a threshold on"}
    chosen = thresholds.choose_thresholds(name, val_probs, y_val, target_sensitivity=sensitivity,
                                          target_specificity=specificity)
    val_problems = thresholds.positive_scores(name, val_probs, y_val)
    test_problems = thresholds.positive_scores(name, test_probs, y_test)
    labels = [class_names[-1]] if kind.is_binary else class_names
    problems = []
    for j, (rules, (val_s, val_y), (test_s, test_y)) in enumerate(zip(chosen, val_problems, test_problems)):
        boot.add(f"thr/{j}/score", test_s)
        boot.add(f"thr/{j}/label", test_y)
        entries = []
        for rule in RULES:
            text = RULE_TEXT[rule].format(sensitivity=sensitivity, specificity=specificity)
            if rule == "medmnist":
                point = {"threshold": thresholds.MEDMNIST_THRESHOLD}
                point.update(thresholds.evaluate_threshold(val_s, val_y, thresholds.MEDMNIST_THRESHOLD))
            else:
                point = rules[rule]
            entry = {"rule": rule, "description": text, "threshold": float(point["threshold"])}
            if math.isnan(entry["threshold"]):
                entry.update(applicable=False, reason="the validation labels hold only one class here, so no "
                                                      "threshold can be chosen")
                entries.append(entry)
                continue
            entry["applicable"] = True
            entry["validation"] = {"sensitivity": float(point["sensitivity"]),
                                   "specificity": float(point["specificity"])}
            test_point = thresholds.evaluate_threshold(test_s, test_y, entry["threshold"])
            entry["test"] = {rate: ("interval", f"thr/{j}/{rule}/{rate}") for rate in RATES}
            entry["test"].update({key: test_point[key] for key in ("tp", "fp", "tn", "fn", "n")})

            def statistic(a, j=j, rule=rule, threshold=entry["threshold"]):
                rates = resampled.binary_rates(a[f"thr/{j}/score"], a[f"thr/{j}/label"], threshold)
                return {f"thr/{j}/{rule}/{rate}": rates[rate] for rate in RATES}

            boot.statistic(statistic)
            entries.append(entry)
        problems.append({"label": labels[j], "n_validation_positive": int(np.sum(val_y == 1)),
                         "n_validation_negative": int(np.sum(val_y == 0)), "rules": entries})
    score = ("the positive-class probability after temperature scaling" if kind.is_binary
             else "each label's probability after temperature scaling")
    return {"applicable": True, "reason": None, "score": score, "rule": "positive when score >= threshold",
            "problems": problems}


def _conformal_part(boot, name, kind, val_probs, y_val, test_probs, y_test, class_names, alpha, seed):
    methods, sets_by_method = [], {}
    for method_name, score, class_conditional in CONFORMAL_METHODS:
        calibration = conformal.calibrate(name, val_probs, y_val, alpha=alpha, score=score,
                                          class_conditional=class_conditional, seed=seed)
        sets = conformal.prediction_sets(calibration, test_probs)
        sets_by_method[method_name] = sets
        if kind.is_multilabel:
            covered = np.take_along_axis(sets, y_test[:, :, None], axis=2)[:, :, 0]  # (n, L)
            size = sets.sum(axis=2)  # (n, L)
        else:
            covered = sets[np.arange(len(y_test)), y_test]
            size = sets.sum(axis=1)
        boot.add(f"cp/{method_name}/covered", covered)
        boot.add(f"cp/{method_name}/size", size)
        boot.add(f"cp/{method_name}/label", y_test)
        test = {"coverage": ("interval", f"cp/{method_name}/coverage"),
                "mean_set_size": ("interval", f"cp/{method_name}/mean_set_size"),
                "singleton_fraction": ("interval", f"cp/{method_name}/singleton_fraction"),
                "empty_fraction": ("interval", f"cp/{method_name}/empty_fraction")}
        point = conformal.evaluate_sets(name, sets, y_test)
        if kind.is_binary or kind.is_multilabel:
            test["abstain_fraction"] = ("interval", f"cp/{method_name}/abstain_fraction")
        if kind.is_multilabel:
            test["all_labels_covered"] = ("interval", f"cp/{method_name}/all_labels_covered")
            test["coverage_per_label"] = {label: ("interval", f"cp/{method_name}/label/{j}")
                                          for j, label in enumerate(class_names)}
            test["coverage_per_label_value"] = {
                label: {str(v): ("interval", f"cp/{method_name}/label/{j}/{v}") for v in (0, 1)}
                for j, label in enumerate(class_names)}
            test["set_size_counts_per_label"] = {label: [int(c) for c in counts]
                                                 for label, counts in zip(class_names, point["set_size_counts"])}
        else:
            test["coverage_per_class"] = {label: ("interval", f"cp/{method_name}/class/{k}")
                                          for k, label in enumerate(class_names)}
            test["class_count"] = {label: int(c) for label, c in zip(class_names, point["class_count"])}
            test["set_size_counts"] = [int(c) for c in point["set_size_counts"]]
        boot.statistic(_conformal_statistic(method_name, kind, len(class_names)))
        quantile = calibration.quantile
        methods.append({"name": method_name, "score": score, "class_conditional": class_conditional,
                        "aps_mode": calibration.aps_mode if score == "aps" else None,
                        "quantile": quantile.tolist() if quantile.ndim else float(quantile),
                        "n_calibration": calibration.n_calibration.tolist(), "test": test})
    part = {"alpha": alpha, "target_coverage": 1.0 - alpha,
            "probabilities": "validation and test probabilities after temperature scaling",
            "per_label": kind.is_multilabel, "methods": methods}
    return part, sets_by_method


def _conformal_statistic(method_name: str, kind, n_classes: int):
    def statistic(a):
        covered = a[f"cp/{method_name}/covered"].astype(np.float64)
        size = a[f"cp/{method_name}/size"]
        y = a[f"cp/{method_name}/label"]
        prefix = f"cp/{method_name}"
        if kind.is_multilabel:  # the task-level numbers are means over labels, as evaluate_sets' mean_*
            out = {f"{prefix}/coverage": covered.mean(axis=(1, 2)),
                   f"{prefix}/mean_set_size": size.mean(axis=(1, 2)),
                   f"{prefix}/singleton_fraction": (size == 1).mean(axis=(1, 2)),
                   f"{prefix}/empty_fraction": (size == 0).mean(axis=(1, 2)),
                   f"{prefix}/abstain_fraction": (size != 1).mean(axis=(1, 2)),
                   f"{prefix}/all_labels_covered": covered.min(axis=2).mean(axis=1)}
            for j in range(n_classes):
                out[f"{prefix}/label/{j}"] = covered[:, :, j].mean(axis=1)
                for v in (0, 1):
                    in_value = y[:, :, j] == v
                    out[f"{prefix}/label/{j}/{v}"] = resampled._divide((covered[:, :, j] * in_value).sum(axis=1),
                                                                      in_value.sum(axis=1))
            return out
        out = {f"{prefix}/coverage": covered.mean(axis=1), f"{prefix}/mean_set_size": size.mean(axis=1),
               f"{prefix}/singleton_fraction": (size == 1).mean(axis=1),
               f"{prefix}/empty_fraction": (size == 0).mean(axis=1)}
        if kind.is_binary:
            out[f"{prefix}/abstain_fraction"] = (size != 1).mean(axis=1)
        for k in range(n_classes):
            in_class = y == k
            out[f"{prefix}/class/{k}"] = resampled._divide((covered * in_class).sum(axis=1), in_class.sum(axis=1))
        return out

    return statistic


def confidence_scores(name: str, probabilities, sets: dict, mc: dict) -> dict:
    """The confidence scores that rank test predictions (higher = surer), ``{name: (n,)}``, in report order.

    ``max_probability``: the probability of the predicted class (binary: of
    the predicted side of 0.5; multi-label: the product over labels of the
    probability of each predicted value). ``conformal_set_size``: minus the
    size of the LAC set (multi-label: summed over labels). MC-dropout
    measures: as given, negated when higher means less sure.
    """
    kind = tasks.task(name)
    per_prediction = kind.predicted_probability(probabilities)
    scores = {"max_probability": per_prediction.prod(axis=1) if kind.is_multilabel else per_prediction}
    size = sets[SET_SIZE_METHOD].sum(axis=(1, 2) if kind.is_multilabel else 1)
    scores["conformal_set_size"] = -size.astype(np.float64)
    for measure, values in mc.items():
        scores[f"mc_{measure}"] = MC_MEASURES[measure][0] * values
    return scores


def score_description(score: str) -> str:
    """What a confidence score of :func:`confidence_scores` is, in words."""
    if score == "max_probability":
        return "maximum probability after temperature scaling"
    if score == "conformal_set_size":
        return f"size of the {SET_SIZE_METHOD.upper()} conformal set (smaller = surer)"
    return MC_MEASURES[score.removeprefix("mc_")][1]


def _selective_part(boot, name, kind, probs, y, sets, mc) -> dict:
    errors = (~kind.correct(y, kind.predictions(probs))).astype(np.float64)
    scores = confidence_scores(name, probs, sets, mc)
    boot.add("sel/errors", errors)
    for score, values in scores.items():
        boot.add(f"sel/{score}", values)
    names = list(scores)
    augrc_points = {s: selective.augrc(scores[s], errors) for s in names}
    n_errors = int(errors.sum())
    rankable = 0 < n_errors < len(errors)
    best = min(names, key=lambda s: augrc_points[s]) if rankable else None

    def statistic(a):
        e = a["sel/errors"]
        optimal = resampled.optimal_risk_areas(e)
        out = {"sel/error_rate": e.mean(axis=1), "sel/aurc_optimal": optimal["aurc"],
               "sel/augrc_optimal": optimal["augrc"]}
        for s in names:
            areas = resampled.risk_areas(a[f"sel/{s}"], e)
            out[f"sel/{s}/aurc"] = areas["aurc"]
            out[f"sel/{s}/eaurc"] = areas["aurc"] - optimal["aurc"]
            out[f"sel/{s}/augrc"] = areas["augrc"]
        if best is not None:
            for s in names:
                out[f"sel/{s}/augrc_minus_best"] = out[f"sel/{s}/augrc"] - out[f"sel/{best}/augrc"]
        return out

    boot.statistic(statistic)
    entries, curves = [], {}
    for s in names:
        curve = selective.risk_coverage_curve(scores[s], errors)
        curves[s] = {key: curve[key].tolist() for key in ("threshold", "coverage", "selective_risk",
                                                           "generalized_risk")}
        entry = {"name": s, "description": score_description(s),
                 "source": "mc_dropout" if s.startswith("mc_") else ("conformal" if s == "conformal_set_size"
                                                                       else "probabilities"),
                 "aurc": ("interval", f"sel/{s}/aurc"), "eaurc": ("interval", f"sel/{s}/eaurc"),
                 "augrc": ("interval", f"sel/{s}/augrc")}
        if best is not None:
            entry["augrc_minus_best"] = ("interval", f"sel/{s}/augrc_minus_best")
        entries.append(entry)
    errors_text = ("an image is an error when any of its labels is predicted wrong" if kind.is_multilabel
                   else "an error is a wrong prediction")
    part = {"errors": errors_text, "predictions": "the model's predictions (unchanged by temperature scaling)",
            "n_errors": n_errors, "error_rate": ("interval", "sel/error_rate"),
            "aurc_optimal": ("interval", "sel/aurc_optimal"), "augrc_optimal": ("interval", "sel/augrc_optimal"),
            "scores": entries, "curves": curves, "best": best}
    if not rankable:
        part["best_reason"] = ("every test prediction is right" if n_errors == 0 else "every test prediction is "
                               "wrong") + ": there are no errors to rank apart from right predictions"
    return part


def _name_best(part: dict, method: str) -> None:
    best = part.pop("best")
    if best is None:
        part["best"] = {"applicable": False, "reason": part.pop("best_reason")}
        return
    entry = next(e for e in part["scores"] if e["name"] == best)
    part["best"] = {"applicable": True, "name": best, "description": entry["description"], "augrc": entry["augrc"],
                    "criterion": "lowest AUGRC on test; augrc_minus_best of every other score is a paired "
                                 "bootstrap interval of its AUGRC minus the best's"}


def _set_text(row: np.ndarray) -> str:
    return tasks.LABEL_SEPARATOR.join(str(k) for k in np.flatnonzero(row))


def _per_image(name, kind, probs, y, sets, class_names) -> dict:
    predicted = kind.predictions(probs)
    out = {"id": list(range(len(y))), "label": [kind.label_text(row) for row in y.reshape(len(y), -1)],
           "predicted": [kind.label_text(row) for row in np.asarray(predicted).reshape(len(y), -1)],
           "correct": kind.correct(y, predicted).tolist(), "sets": {}}
    for method, s in sets.items():
        if kind.is_multilabel:
            # per label: decided positive ({1}), decided negative ({0}), or undecided ({0, 1} or empty)
            decided_positive = s[:, :, 1] & ~s[:, :, 0]
            undecided = s[:, :, 0] == s[:, :, 1]
            out["sets"][method] = {"positive": [_set_text(r) for r in decided_positive],
                                   "undecided": [_set_text(r) for r in undecided],
                                   "size": s.sum(axis=(1, 2)).tolist()}
        else:
            out["sets"][method] = {"set": [_set_text(r) for r in s], "size": s.sum(axis=1).tolist()}
    return out
