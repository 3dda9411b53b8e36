"""medscope.stats.bootstrap.bootstrap_statistic: any statistic, percentile or basic interval, stratified or not."""
import numpy as np
import pytest
from scipy import stats

from medscope.errors import UsageError
from medscope.stats.bootstrap import bootstrap_statistic, percentile_interval, resample_indices


def test_resamples_depend_only_on_n_seed_and_strata():
    first = np.concatenate(list(resample_indices(50, 30000, seed=4)))  # more than one chunk
    again = np.concatenate(list(resample_indices(50, 30000, seed=4)))
    other = np.concatenate(list(resample_indices(50, 30000, seed=5)))
    assert first.shape == (30000, 50) and np.array_equal(first, again) and not np.array_equal(first, other)
    assert len(list(resample_indices(50, 30000, seed=4))) > 1


def test_stratified_resamples_keep_every_stratum_and_its_count():
    strata = np.array([2, 0, 1, 0, 2, 2, 1, 0, 0])
    (index,) = list(resample_indices(len(strata), 400, seed=0, strata=strata))
    for row in index:
        assert sorted(strata[row].tolist()) == sorted(strata.tolist())
    # within a stratum every member is drawn, uniformly
    counts = np.bincount(index.ravel(), minlength=len(strata))
    for value in np.unique(strata):
        members = counts[strata == value]
        assert members.min() > 0.8 * members.mean()


def test_the_interval_is_the_percentile_interval_of_the_statistic_on_the_documented_resamples():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=80), rng.normal(size=80)

    def statistic(a, b):
        return float(np.corrcoef(a, b)[0, 1])

    result = bootstrap_statistic(statistic, [x, y], n_resamples=300, seed=7)
    values = [statistic(x[r], y[r]) for chunk in resample_indices(80, 300, seed=7) for r in chunk]
    low, high, dropped = percentile_interval(values, 0.95)
    assert (result["low"], result["high"], result["n_dropped"]) == (low, high, dropped)
    assert result["estimate"] == statistic(x, y) and result["method"] == "percentile bootstrap"


def test_batched_and_per_resample_statistics_agree_exactly_and_dicts_share_resamples():
    rng = np.random.default_rng(1)
    x = rng.exponential(size=(60, 2))
    strata = rng.integers(0, 3, 60)
    loop = bootstrap_statistic(lambda a: {"mean": a[:, 0].mean(), "max": a[:, 1].max()}, [x], n_resamples=250,
                               seed=2, strata=strata)
    batched = bootstrap_statistic(lambda a: {"mean": a[:, :, 0].mean(axis=1), "max": a[:, :, 1].max(axis=1)}, [x],
                                  n_resamples=250, seed=2, strata=strata, batched=True)
    for key in ("mean", "max"):
        assert (loop[key]["low"], loop[key]["high"]) == pytest.approx((batched[key]["low"], batched[key]["high"]),
                                                                      rel=1e-14)
        assert loop[key]["method"] == "percentile bootstrap stratified"


def test_basic_interval_mirrors_the_percentile_interval_around_the_estimate():
    x = np.random.default_rng(3).exponential(size=40)
    percentile = bootstrap_statistic(np.std, [x], n_resamples=400, seed=0)
    named_elsewhere = bootstrap_statistic(np.std, [x], n_resamples=400, seed=0, interval={"other": "basic"})
    assert named_elsewhere == percentile  # keys not named are percentile
    basic = bootstrap_statistic(np.std, [x], n_resamples=400, seed=0, interval="basic")
    theta = float(np.std(x))
    assert basic["low"] == pytest.approx(2 * theta - percentile["high"])
    assert basic["high"] == pytest.approx(2 * theta - percentile["low"])
    values = [np.std(x[r]) for chunk in resample_indices(40, 400, seed=0) for r in chunk]
    assert basic["bias_corrected"] == pytest.approx(2 * theta - np.mean(values))
    assert basic["method"] == "basic bootstrap"


def test_undefined_resamples_are_left_out_and_counted():
    labels = np.array([0] * 3 + [1] * 27)

    def share_of_class_zero_among_first_three(a):
        return np.nan if not (a == 0).any() else float(np.mean(a == 0))

    result = bootstrap_statistic(share_of_class_zero_among_first_three, [labels], n_resamples=500, seed=0)
    assert 0 < result["n_dropped"] < 500  # about (27/30)^30 of the resamples draw no 0
    assert result["n_dropped"] == pytest.approx(500 * (27 / 30) ** 30, abs=15)


def test_agrees_with_scipy_percentile_bootstrap_up_to_resampling_noise():
    x = np.random.default_rng(5).normal(size=200)
    ours = bootstrap_statistic(np.mean, [x], n_resamples=20000, seed=0)
    scipy_ci = stats.bootstrap((x,), np.mean, n_resamples=20000, method="percentile",
                               random_state=0).confidence_interval
    assert ours["low"] == pytest.approx(scipy_ci.low, abs=0.01)
    assert ours["high"] == pytest.approx(scipy_ci.high, abs=0.01)


@pytest.mark.parametrize("kwargs, message", [
    ({"arrays": [np.zeros(3), np.zeros(4)]}, "same number of rows"),
    ({"n_resamples": 0}, "positive integer"),
    ({"level": 1.0}, "level must be between 0 and 1"),
    ({"interval": "bca"}, "unknown bootstrap interval"),
    ({"strata": [0, 1]}, "one value per sample"),
])
def test_bad_arguments_are_usage_errors(kwargs, message):
    arguments = {"arrays": [np.arange(3.0)], **kwargs}
    with pytest.raises(UsageError, match=message):
        bootstrap_statistic(np.mean, **arguments)
