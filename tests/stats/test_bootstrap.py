"""medscope.stats.bootstrap: the metrics of medscope.metrics on resamples, and their percentile intervals."""
import doctest

import numpy as np
import pytest
from medmnist.evaluator import getACC, getAUC
from scipy import stats
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from medscope import data, metrics
from medscope.errors import UsageError
from medscope.stats import bootstrap
from medscope.tasks import BINARY as TASK_BINARY, MULTICLASS as TASK_MULTICLASS, MULTILABEL as TASK_MULTILABEL, ORDINAL as TASK_ORDINAL

TASKS = [TASK_BINARY, TASK_MULTICLASS, TASK_MULTILABEL, TASK_ORDINAL]


def case(task, n=300, k=4, seed=0, decimals=None):
    """Labels and probabilities like a trained model's; ``decimals`` rounds the scores (ties)."""
    rng = np.random.default_rng(seed)
    if task == TASK_MULTILABEL:
        labels = (rng.random((n, k)) < 0.3).astype(np.uint8)
        scores = 1 / (1 + np.exp(-(rng.normal(size=(n, k)) + 1.2 * labels)))
    else:
        k = 2 if task == TASK_BINARY else k
        labels = rng.integers(0, k, size=(n, 1)).astype(np.uint8)
        logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[labels[:, 0]]
        scores = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    if decimals is not None:
        scores = np.round(scores, decimals)
    return labels, scores


def reference_metrics(task, labels, scores):
    """The metrics on materialised arrays: medscope.metrics, sklearn, and metrics.evaluate's per-class values."""
    n_classes = labels.shape[1] if task == TASK_MULTILABEL else (2 if task == TASK_BINARY else scores.shape[1])
    names = [str(k) for k in range(n_classes)]
    pred = metrics.predictions(task, scores)
    if task == TASK_MULTILABEL:
        balanced = np.mean([balanced_accuracy_score(labels[:, k], pred[:, k]) for k in range(n_classes)])
    else:
        balanced = balanced_accuracy_score(labels[:, 0], pred)
    ref = {"auc": metrics.auc_score(task, labels, scores), "acc": metrics.acc_score(task, labels, scores),
           "balanced_acc": balanced}
    with np.errstate(invalid="ignore"):
        per_class = metrics.evaluate(task, labels, scores, names)["per_class"]
    for k, name in enumerate(names):
        ref[f"sensitivity/{k}"] = per_class[name]["sensitivity"]
        ref[f"specificity/{k}"] = per_class[name]["specificity"]
        if task == TASK_MULTILABEL:
            ref[f"auc/{k}"] = metrics._safe_auc(labels[:, k], scores[:, k])
        elif task != TASK_BINARY:
            ref[f"auc/{k}"] = metrics._safe_auc((labels[:, 0] == k).astype(int), scores[:, k])
    return ref


def assert_same(ours, ref, tol=1e-12):
    assert set(ours) == set(ref)
    for key in ref:
        a, b = float(ours[key]), float(ref[key])
        assert (np.isnan(a) and np.isnan(b)) or abs(a - b) <= tol, (key, a, b)


def counts_of(indices, n):
    return np.stack([np.bincount(row, minlength=n) for row in np.atleast_2d(indices)])


def test_task_strings_are_those_of_medscope_data():
    assert (TASK_BINARY, TASK_MULTICLASS, TASK_MULTILABEL, TASK_ORDINAL) == (
        data.TASK_BINARY, data.TASK_MULTICLASS, data.TASK_MULTILABEL, data.TASK_ORDINAL)


def test_doctests():
    assert doctest.testmod(bootstrap).failed == 0


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("seed, decimals", [(0, None), (1, 2), (2, 1)])
def test_point_estimates_equal_medscope_metrics_and_medmnist(task, seed, decimals):
    labels, scores = case(task, seed=seed, decimals=decimals)
    ours = bootstrap.point_metrics(task, labels, scores)
    assert_same(ours, reference_metrics(task, labels, scores))
    assert ours["auc"] == pytest.approx(getAUC(labels, scores, task), abs=1e-12)
    assert ours["acc"] == getACC(labels, scores, task)


@pytest.mark.parametrize("task", TASKS)
def test_metrics_on_counts_equal_metrics_on_materialised_resamples(task):
    labels, scores = case(task, n=120, seed=3, decimals=2)
    rng = np.random.default_rng(4)
    indices = rng.integers(0, len(labels), size=(12, len(labels)))
    ours = bootstrap.resample_metrics(task, labels, scores, counts_of(indices, len(labels)))
    for b, rows in enumerate(indices):
        assert_same({k: v[b] for k, v in ours.items()}, reference_metrics(task, labels[rows], scores[rows]))


def test_auc_with_heavy_ties_equals_sklearn():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, size=(500, 1))
    p = np.round(np.clip(0.2 * labels[:, 0] + rng.random(500) * 0.8, 0, 1), 1)  # 11 distinct values
    indices = rng.integers(0, 500, size=(10, 500))
    ours = bootstrap.resample_metrics(TASK_BINARY, labels, np.stack([1 - p, p], 1), counts_of(indices, 500))
    for b, rows in enumerate(indices):
        assert ours["auc"][b] == pytest.approx(roc_auc_score(labels[rows, 0], p[rows]), abs=1e-12)


def test_binary_scores_may_be_one_column_or_the_probability_alone():
    labels, scores = case(TASK_BINARY, seed=6)
    two = bootstrap.metric_intervals(TASK_BINARY, labels, scores, n_resamples=200)
    assert bootstrap.metric_intervals(TASK_BINARY, labels, scores[:, 1], n_resamples=200) == two
    assert bootstrap.metric_intervals(TASK_BINARY, labels, scores[:, 1:], n_resamples=200) == two


def test_stratified_resamples_keep_each_class_count():
    # every image is predicted positive, so a resample's ACC is its fraction of positives
    labels = np.array([[1]] * 30 + [[0]] * 70)
    scores = np.tile([0.1, 0.9], (100, 1))
    strat, = bootstrap.bootstrap_distributions(TASK_BINARY, labels, [scores], n_resamples=300)
    plain, = bootstrap.bootstrap_distributions(TASK_BINARY, labels, [scores], n_resamples=300, stratified=False)
    assert np.all(strat["acc"] == 0.3)
    assert plain["acc"].std() > 0.02


def test_percentile_interval_uses_numpy_linear_quantiles_at_scipys_levels():
    values = np.random.default_rng(7).normal(size=1001)
    alpha = (1 - 0.9) / 2  # scipy.stats.bootstrap's expression, bit for bit
    low, high, dropped = bootstrap.percentile_interval(values, 0.9)
    assert (low, high, dropped) == tuple(np.quantile(values, [alpha, 1 - alpha])) + (0,)


def test_identical_resamples_give_scipy_bootstrap_percentile_interval_exactly():
    """Non-stratified: scipy.stats.bootstrap(paired=True) turns the data into indices 0..n-1 and draws
    ``rng.integers(0, n, (B, n))`` in one batch; the same draws as counts must give scipy's
    bootstrap distribution value for value and hence the same percentile endpoints."""
    labels, scores = case(TASK_BINARY, n=200, seed=8, decimals=2)
    y, p = labels[:, 0], scores[:, 1]
    n_resamples, seed = 400, 11
    reference = stats.bootstrap((y, p), lambda yy, pp: roc_auc_score(yy, pp), paired=True, vectorized=False,
                                n_resamples=n_resamples, method="percentile", confidence_level=0.9,
                                rng=np.random.default_rng(seed))
    indices = np.random.default_rng(seed).integers(0, len(y), (n_resamples, len(y)))
    ours = bootstrap.resample_metrics(TASK_BINARY, labels, scores, counts_of(indices, len(y)))["auc"]
    np.testing.assert_allclose(ours, reference.bootstrap_distribution, rtol=0, atol=1e-12)
    low, high, _ = bootstrap.percentile_interval(ours, 0.9)
    assert low == pytest.approx(reference.confidence_interval.low, abs=1e-12)
    assert high == pytest.approx(reference.confidence_interval.high, abs=1e-12)


def test_identical_resamples_give_scipy_balanced_accuracy_interval_for_multiclass():
    labels, scores = case(TASK_MULTICLASS, n=150, seed=9)
    n_resamples, seed = 300, 12
    pred = scores.argmax(1)
    reference = stats.bootstrap((labels[:, 0], pred), balanced_accuracy_score, paired=True, vectorized=False,
                                n_resamples=n_resamples, method="percentile", rng=np.random.default_rng(seed))
    indices = np.random.default_rng(seed).integers(0, len(labels), (n_resamples, len(labels)))
    ours = bootstrap.resample_metrics(TASK_MULTICLASS, labels, scores, counts_of(indices, len(labels)))
    np.testing.assert_allclose(ours["balanced_acc"], reference.bootstrap_distribution, rtol=0, atol=1e-12)
    low, high, _ = bootstrap.percentile_interval(ours["balanced_acc"])
    assert (low, high) == pytest.approx(tuple(reference.confidence_interval), abs=1e-12)


def test_stratified_resamples_are_scipys_two_sample_bootstrap():
    """Stratified binary AUC = scipy.stats.bootstrap on the two samples (positives' scores, negatives'
    scores), each resampled on its own; scipy draws ``rng.integers(0, n_s, (B, n_s))`` per sample in turn."""
    labels, scores = case(TASK_BINARY, n=160, seed=13, decimals=2)
    y, p = labels[:, 0], scores[:, 1]
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)

    def auc(x, z, axis):
        return stats.mannwhitneyu(x, z, axis=axis).statistic / (x.shape[axis] * z.shape[axis])

    n_resamples, seed = 500, 14
    reference = stats.bootstrap((p[pos], p[neg]), auc, n_resamples=n_resamples, method="percentile",
                                rng=np.random.default_rng(seed))
    rng = np.random.default_rng(seed)
    draws = np.concatenate([pos[rng.integers(0, pos.size, (n_resamples, pos.size))],
                            neg[rng.integers(0, neg.size, (n_resamples, neg.size))]], axis=1)
    ours = bootstrap.resample_metrics(TASK_BINARY, labels, scores, counts_of(draws, len(y)))["auc"]
    np.testing.assert_allclose(ours, reference.bootstrap_distribution, rtol=0, atol=1e-12)
    low, high, _ = bootstrap.percentile_interval(ours)
    assert (low, high) == pytest.approx(tuple(reference.confidence_interval), abs=1e-12)


def test_stratified_interval_agrees_with_scipy_within_monte_carlo_error():
    """Independent random streams, B = 20,000 each.  The Monte Carlo standard error of a percentile
    q_a of B draws is sqrt(a (1 - a) / B) / f(q_a); with f from the normal approximation of the bootstrap
    distribution (f(q_a) = phi(z_a) / sd) the difference of two independent estimates has standard error
    sqrt(2) times that.  Tolerance: 5 of those standard errors (about 0.003 here)."""
    labels, scores = case(TASK_BINARY, n=300, seed=15)
    y, p = labels[:, 0], scores[:, 1]
    n_resamples = 20_000

    def auc(x, z, axis):
        return stats.mannwhitneyu(x, z, axis=axis).statistic / (x.shape[axis] * z.shape[axis])

    reference = stats.bootstrap((p[y == 1], p[y == 0]), auc, n_resamples=n_resamples, method="percentile",
                                rng=np.random.default_rng(16))
    ours = bootstrap.metric_intervals(TASK_BINARY, labels, scores, n_resamples=n_resamples, seed=17)["auc"]
    alpha = 0.025
    sd = reference.standard_error
    se_quantile = np.sqrt(alpha * (1 - alpha) / n_resamples) * sd / stats.norm.pdf(stats.norm.ppf(alpha))
    tolerance = 5 * np.sqrt(2) * se_quantile
    assert tolerance < 0.005
    assert ours["low"] == pytest.approx(reference.confidence_interval.low, abs=tolerance)
    assert ours["high"] == pytest.approx(reference.confidence_interval.high, abs=tolerance)


def test_perfect_classifier_has_degenerate_intervals():
    labels = np.array([[0]] * 20 + [[1]] * 10)
    p = np.r_[np.linspace(0.0, 0.4, 20), np.linspace(0.6, 1.0, 10)]
    result = bootstrap.metric_intervals(TASK_BINARY, labels, np.stack([1 - p, p], 1), n_resamples=300)
    for key in ("auc", "acc", "balanced_acc"):
        assert (result[key]["estimate"], result[key]["low"], result[key]["high"]) == (1.0, 1.0, 1.0)
    assert result["per_class"]["1"]["sensitivity"]["low"] == 1.0


def test_a_class_missing_from_a_resample_drops_that_resample_and_counts_it():
    # non-stratified, 2 positives in 8: about (6/8)^8 = 10% of the resamples have no positive
    labels = np.array([[0]] * 6 + [[1]] * 2)
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.5, 0.7, 0.35])
    scores = np.stack([1 - p, p], 1)
    values, = bootstrap.bootstrap_distributions(TASK_BINARY, labels, [scores], n_resamples=1000, seed=3,
                                                stratified=False)
    no_positive = np.isnan(values["sensitivity/1"])
    assert 50 < no_positive.sum() < 200
    assert np.array_equal(np.isnan(values["auc"]), no_positive)  # 8 draws from 6 negatives: never all positive
    result = bootstrap.metric_intervals(TASK_BINARY, labels, scores, n_resamples=1000, seed=3, stratified=False)
    assert result["auc"]["n_dropped"] == no_positive.sum()
    assert (result["auc"]["low"], result["auc"]["high"]) == tuple(
        np.quantile(values["auc"][~no_positive], [0.025, 0.975]))
    assert result["acc"]["n_dropped"] == 0
    stratified = bootstrap.metric_intervals(TASK_BINARY, labels, scores, n_resamples=1000, seed=3)
    assert stratified["auc"]["n_dropped"] == 0


def test_multilabel_mean_auc_is_undefined_when_any_label_lacks_positives():
    labels, scores = case(TASK_MULTILABEL, n=40, k=3, seed=18)
    labels[:, 2] = 0
    labels[:3, 2] = 1  # a rare label: 3 positives in 40
    values, = bootstrap.bootstrap_distributions(TASK_MULTILABEL, labels, [scores], n_resamples=2000, seed=1)
    any_label_undefined = np.isnan(np.stack([values[f"auc/{k}"] for k in range(3)])).any(axis=0)
    assert any_label_undefined.sum() > 0
    assert np.array_equal(np.isnan(values["auc"]), any_label_undefined)
    assert not np.isnan(values["balanced_acc"]).any()  # sklearn's rule: mean over the classes present
    result = bootstrap.metric_intervals(TASK_MULTILABEL, labels, scores, n_resamples=2000, seed=1,
                                        class_names=["a", "b", "rare"])
    assert result["auc"]["n_dropped"] == any_label_undefined.sum()
    assert result["per_class"]["rare"]["auc"]["n_dropped"] == np.isnan(values["auc/2"]).sum()
    assert result["per_class"]["a"]["auc"]["n_dropped"] == 0
    assert result["auc"]["method"] == "percentile bootstrap (rows resampled, not stratified)"


def test_ordinal_regression_is_evaluated_as_multiclass():
    labels, scores = case(TASK_ORDINAL, k=5, seed=19)
    assert (bootstrap.metric_intervals(TASK_ORDINAL, labels, scores, n_resamples=300)
            == bootstrap.metric_intervals(TASK_MULTICLASS, labels, scores, n_resamples=300))


def test_tiny_input_one_image_per_class():
    labels, scores = np.array([[0], [1]]), np.array([[0.7, 0.3], [0.2, 0.8]])
    result = bootstrap.metric_intervals(TASK_BINARY, labels, scores, n_resamples=50)
    assert (result["auc"]["low"], result["auc"]["high"], result["auc"]["n_dropped"]) == (1.0, 1.0, 0)


def test_layout_of_the_result():
    labels, scores = case(TASK_MULTICLASS, k=3, seed=20)
    result = bootstrap.metric_intervals(TASK_MULTICLASS, labels, scores, n_resamples=100, level=0.9, seed=5,
                                        class_names=["a", "b", "c"])
    assert list(result) == ["auc", "acc", "balanced_acc", "per_class"]
    assert list(result["per_class"]) == ["a", "b", "c"]
    entry = result["per_class"]["b"]["sensitivity"]
    assert set(entry) == {"estimate", "low", "high", "level", "method", "n_resamples", "n_dropped"}
    assert entry["level"] == 0.9 and entry["n_resamples"] == 100
    assert entry["method"] == "percentile bootstrap stratified by true class"
    assert entry["low"] <= entry["estimate"] <= entry["high"]


def test_same_seed_same_intervals_other_seed_other_intervals():
    labels, scores = case(TASK_BINARY, seed=21)
    first = bootstrap.metric_intervals(TASK_BINARY, labels, scores, n_resamples=300, seed=1)
    assert bootstrap.metric_intervals(TASK_BINARY, labels, scores, n_resamples=300, seed=1) == first
    assert bootstrap.metric_intervals(TASK_BINARY, labels, scores, n_resamples=300, seed=2) != first


def test_results_do_not_depend_on_sample_order_within_a_class():
    labels, scores = case(TASK_MULTICLASS, seed=22)
    shuffled = np.random.default_rng(0).permutation(len(labels))
    point = bootstrap.point_metrics(TASK_MULTICLASS, labels, scores)
    assert_same(bootstrap.point_metrics(TASK_MULTICLASS, labels[shuffled], scores[shuffled]), point)


@pytest.mark.parametrize("call, message", [
    (lambda: bootstrap.metric_intervals("regression", [[0]], [[1.0]]), "unknown task"),
    (lambda: bootstrap.metric_intervals(TASK_BINARY, [[0], [1]], [[0.5, 0.5]]), "shape"),
    (lambda: bootstrap.metric_intervals(TASK_BINARY, [[0], [2]], [[0.5, 0.5]] * 2), "0 or 1"),
    (lambda: bootstrap.metric_intervals(TASK_MULTICLASS, [[0], [3]], [[0.5, 0.5]] * 2), "score columns"),
    (lambda: bootstrap.metric_intervals(TASK_BINARY, [[0], [1]], [[np.nan, 1.0]] * 2), "NaN"),
    (lambda: bootstrap.metric_intervals(TASK_BINARY, [[0], [1]], [[0.5, 0.5]] * 2, n_resamples=0), "n_resamples"),
    (lambda: bootstrap.metric_intervals(TASK_BINARY, [[0], [1]], [[0.5, 0.5]] * 2, level=1.0), "level"),
    (lambda: bootstrap.metric_intervals(TASK_MULTILABEL, [[0, 2]], [[0.5, 0.5]]), "0 or 1"),
    (lambda: bootstrap.metric_intervals(TASK_BINARY, [[0], [1]], [[0.5, 0.5]] * 2, class_names=["x"]), "names"),
    (lambda: bootstrap.resample_metrics(TASK_BINARY, [[0], [1]], [[0.5, 0.5]] * 2, [[1, -1]]), "non-negative"),
])
def test_bad_input_is_a_usage_error(call, message):
    with pytest.raises(UsageError, match=message):
        call()


@pytest.mark.parametrize("big", [3_000, 2**20, 2**31])
def test_large_counts_take_the_wide_integer_paths_exactly(big):
    """Counts so large that products count x cumulative count overflow int32 (2**20), or that the counts
    themselves need int64 (2**31): AUC as sklearn's with the counts as sample weights."""
    labels, scores = case(TASK_MULTICLASS, n=60, k=3, seed=23, decimals=2)
    counts = np.random.default_rng(24).integers(0, 4, size=(3, 60))
    counts[:, 5] = big
    ours = bootstrap.resample_metrics(TASK_MULTICLASS, labels, scores, counts)
    for b, weights in enumerate(counts):
        for k in range(3):
            ref = roc_auc_score(labels[:, 0] == k, scores[:, k], sample_weight=weights.astype(float))
            assert ours[f"auc/{k}"][b] == pytest.approx(ref, rel=1e-9)
        assert ours["acc"][b] == pytest.approx(np.average(scores.argmax(1) == labels[:, 0], weights=weights))
