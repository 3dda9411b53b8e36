"""Numbers a researcher can publish: intervals and tests for medscope's metrics.

Pure numpy/scipy; every function takes values and returns plain dicts.

Intervals on one test split
    :func:`metric_intervals` -- stratified percentile bootstrap of AUC, ACC,
    balanced accuracy and per-class sensitivity/specificity/AUC.
    :func:`delong_interval` -- DeLong's normal interval of a binary AUC.
    :func:`bootstrap_statistic` -- percentile bootstrap of any statistic of
    per-sample arrays (optionally stratified, optionally batched).

Two models on the same test split
    :func:`paired_bootstrap` -- paired bootstrap of every metric difference.
    :func:`delong_test` -- DeLong's test of two correlated AUCs.

Across training seeds
    :func:`seed_summary` -- mean, sd and t-interval of the mean.
    :func:`paired_seed_test` -- exact sign-flip (n <= 16) or Wilcoxon test.
    :func:`unpaired_permutation_test` -- two unpaired groups of seeds.

Several comparisons
    :func:`holm` -- Holm-Bonferroni adjusted p-values.
"""
from .bootstrap import (bootstrap_distributions, bootstrap_statistic, metric_intervals, percentile_interval,
                        point_metrics, resample_indices, resample_metrics)
from .delong import delong_covariance, delong_interval, delong_test
from .multiplicity import holm
from .paired import bootstrap_p_value, paired_bootstrap
from .seeds import paired_seed_test, seed_summary, sign_flip_test, unpaired_permutation_test, wilcoxon_test

__all__ = [
    "bootstrap_distributions", "bootstrap_p_value", "bootstrap_statistic", "delong_covariance", "delong_interval",
    "delong_test", "holm", "metric_intervals", "paired_bootstrap", "paired_seed_test", "percentile_interval",
    "point_metrics", "resample_indices", "resample_metrics", "seed_summary", "sign_flip_test",
    "unpaired_permutation_test", "wilcoxon_test",
]
