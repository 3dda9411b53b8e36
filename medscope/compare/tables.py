"""The comparison of runs: one table per test split, seed groups, published baselines, paired tests.

Rows
----
* **Runs.** Per run, the three headline metrics of :mod:`medscope.stats.bootstrap`
  -- AUC, ACC and balanced accuracy.  The AUC and ACC estimates are
  :func:`medscope.metrics.auc_score` / :func:`~medscope.metrics.acc_score` of the
  stored probabilities, i.e. exactly the numbers of ``metrics.json``; balanced
  accuracy is :func:`medscope.stats.bootstrap.point_metrics`'.  Each has the
  stratified percentile bootstrap interval of
  :func:`medscope.stats.bootstrap.metric_intervals` (same resamples, same seed),
  and a binary AUC also DeLong's normal interval
  (:func:`medscope.stats.delong.delong_interval`).
* **Seed groups.** Runs of one configuration -- equal run.json configuration
  except the seed and where it ran (:data:`medscope.compare.scores.EXECUTION_KEYS`),
  hence the same dataset, size and model -- with two or more runs.  Per metric:
  mean and sd across seeds with the t-interval of the mean
  (:func:`medscope.stats.seeds.seed_summary`: the spread due to training
  randomness, the test split held fixed), and the *pooled* interval: the
  percentile interval over the same stratified test resamples of the mean of
  the seeds' metric,

  .. math::  \\bar m^*_b = \\frac1S \\sum_s m_s(\\text{resample } b),

  the uncertainty of the seed mean due to the finite test split.  The two
  intervals answer different questions and both are shown.
* **Baselines.** The published MedMNIST v2 rows for the split's dataset and
  size (:mod:`medscope.baselines`): the reference ResNet-18 row and the
  paper's best method, AUC and ACC only.

Tests (two-sided; ``difference = a - b``)
-----------------------------------------
Between runs on the same test split -- every two runs of different
configurations, or with ``baseline`` every run against the baseline run:
DeLong's test when the metric is a binary AUC
(:func:`medscope.stats.delong.delong_test`, with the normal interval
``d +- z sqrt(var)`` of the difference), and the paired bootstrap of the
metric's difference for any task (:func:`medscope.stats.paired.paired_bootstrap`:
same resamples as the intervals).  Between seed groups of one split: the
paired test across seeds (:func:`medscope.stats.seeds.paired_seed_test`) when
both groups ran the same seeds, the unpaired permutation test
(:func:`medscope.stats.seeds.unpaired_permutation_test`) otherwise.

All p-values of one comparison -- every test row, over every split -- are
adjusted together with Holm's method (:func:`medscope.stats.multiplicity.holm`),
which controls the family-wise error rate under any dependence (DeLong's test
and the bootstrap of one pair test the same hypothesis twice; counting both
is conservative).  An undefined p-value (e.g. DeLong with a single positive)
is left out of the family and has no adjusted value.

Runs are only paired when their labels are identical arrays (same order);
runs of one dataset and size whose labels differ are an error.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from itertools import combinations
from typing import Sequence

import numpy as np
from scipy.stats import norm

from medscope import baselines as published
from medscope.errors import UsageError
from medscope.stats.bootstrap import bootstrap_distributions, method_name, percentile_interval, point_metrics
from medscope.stats.delong import delong_interval, delong_test
from medscope.stats.multiplicity import holm
from medscope.stats.paired import bootstrap_p_value
from medscope.stats.seeds import paired_seed_test, seed_summary, unpaired_permutation_test
from medscope.tasks import task as task_of

from .scores import EXECUTION_KEYS, RunScores

METRICS = ("auc", "acc", "balanced_acc")
METRIC_NAMES = {"auc": "AUC", "acc": "ACC", "balanced_acc": "balanced accuracy"}
PUBLISHED_METRICS = ("auc", "acc")  # what the MedMNIST v2 paper reports
NAN = float("nan")
# tolerance for "the stored scores reproduce metrics.json": far above rounding, far below any real change
_RECORDED_TOLERANCE = 1e-9

RUN_TEST_DELONG = "DeLong's test of two correlated AUCs"
BETWEEN_GROUPS, BETWEEN_RUNS = "seed groups", "runs"


@dataclass(frozen=True)
class Settings:
    """How a comparison was computed."""

    split: str = "test"
    metric: str = "auc"
    n_resamples: int = 2000
    level: float = 0.95
    seed: int = 0
    baseline: str | None = None


@dataclass(frozen=True)
class RunRow:
    """One run: estimates, bootstrap intervals (``(low, high)`` per metric) and DeLong's AUC interval."""

    name: str
    dataset: str
    size: int
    model: str
    seed: int | None
    status: str
    task: str
    n: int
    configuration: tuple
    estimates: dict
    bootstrap: dict  # metric -> (low, high); empty without bootstrap
    delong: tuple | None  # (low, high) of a binary AUC
    group: str | None = None  # label of its seed group


@dataclass(frozen=True)
class GroupRow:
    """Runs of one configuration with several seeds."""

    label: str
    dataset: str
    size: int
    model: str
    runs: tuple
    seeds: tuple
    configuration: tuple
    summary: dict  # metric -> seed_summary dict (mean, sd, n, low, high, level, method)
    pooled: dict  # metric -> (low, high); empty without bootstrap

    def values(self, rows: dict, metric: str) -> list[float]:
        return [rows[name].estimates[metric] for name in self.runs]


@dataclass(frozen=True)
class PairTest:
    """One test of ``a`` against ``b`` (runs or seed groups)."""

    dataset: str
    size: int
    between: str  # "runs" or "seed groups"
    a: str
    b: str
    metric: str
    method: str
    estimate_a: float
    estimate_b: float
    difference: float
    low: float
    high: float
    statistic: float
    p_value: float
    p_holm: float = NAN
    n: int = 0


@dataclass
class SplitTable:
    """Everything about one test split (dataset and size)."""

    dataset: str
    size: int
    task: str
    n: int
    class_counts: dict
    runs: list = field(default_factory=list)
    groups: list = field(default_factory=list)
    baselines: list = field(default_factory=list)
    tests: list = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.dataset}{self.size}"

    def row(self, name: str) -> RunRow:
        return next(r for r in self.runs if r.name == name)


@dataclass
class Comparison:
    """The result of :func:`compare`: one table per split, every test, notes for the reader."""

    settings: Settings
    tables: list
    notes: list

    @property
    def tests(self) -> list:
        return [t for table in self.tables for t in table.tests]

    @property
    def interval_method(self) -> str:
        tasks = {t.task for t in self.tables}
        if not self.settings.n_resamples:
            return "none (--bootstrap 0)"
        return "; ".join(sorted({method_name(t, True) for t in tasks}))


# ---------------------------------------------------------------- estimates


def estimates(task: str, labels, probabilities) -> dict:
    """AUC and ACC as ``metrics.json`` has them, balanced accuracy as the bootstrap's point estimate.

    >>> labels = np.array([[0], [0], [1], [1]]); p = np.array([[.9, .1], [.4, .6], [.3, .7], [.2, .8]])
    >>> estimates("binary-class", labels, p)
    {'auc': 1.0, 'acc': 0.75, 'balanced_acc': 0.75}
    """
    from medscope.metrics import acc_score, auc_score

    return {"auc": auc_score(task, labels, probabilities), "acc": acc_score(task, labels, probabilities),
            "balanced_acc": point_metrics(task, labels, probabilities)["balanced_acc"]}


def _finite(values) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


# ---------------------------------------------------------------- grouping


def split_groups(scores: Sequence[RunScores]) -> list[list[RunScores]]:
    """Runs by (dataset, size), in order of first appearance; checks they share one test split.

    Raises
    ------
    UsageError
        Two runs of one dataset and size whose tasks, labels or row indices differ.
    """
    groups: dict[tuple, list[RunScores]] = {}
    for s in scores:
        groups.setdefault(s.split_key, []).append(s)
    for members in groups.values():
        first = members[0]
        for other in members[1:]:
            why = _split_difference(first, other)
            if why:
                raise UsageError(f"runs {first.name} and {other.name} are both {first.dataset_label} but were not "
                                 f"evaluated on the same {first.split} split ({why}); they cannot be paired")
    return list(groups.values())


def _split_difference(a: RunScores, b: RunScores) -> str | None:
    if a.task != b.task:
        return f"tasks {a.task} and {b.task}"
    if a.labels.shape != b.labels.shape:
        return f"{a.labels.shape[0]} and {b.labels.shape[0]} images" if a.labels.shape[0] != b.labels.shape[0] \
            else f"label shapes {a.labels.shape} and {b.labels.shape}"
    if not np.array_equal(a.labels, b.labels):
        first = int(np.flatnonzero(np.any(a.labels != b.labels, axis=1))[0])
        return f"their labels differ, first at row {first}"
    if a.indices is not None and b.indices is not None and not np.array_equal(a.indices, b.indices):
        return "their images are in a different order"
    if a.probabilities.shape != b.probabilities.shape:
        return f"score columns {a.probabilities.shape[1]} and {b.probabilities.shape[1]}"
    return None


def configurations(members: Sequence[RunScores]) -> dict[tuple, list[RunScores]]:
    """Runs by configuration (everything but the seed and execution entries), first appearance order."""
    by_config: dict[tuple, list[RunScores]] = {}
    for s in members:
        by_config.setdefault(s.configuration, []).append(s)
    return by_config


def _distinguishing(configs: Sequence[dict]) -> list[str]:
    """Configuration keys (besides dataset, size, model) whose values differ among ``configs``."""
    keys = sorted({k for c in configs for k in c} - {"dataset", "size", "model"})
    return [k for k in keys if k not in EXECUTION_KEYS and len({repr(c.get(k)) for c in configs}) > 1]


def _group_label(model: str, config: dict, differing: list[str], seeds: Sequence) -> str:
    settings = ", ".join(f"{k}={config.get(k)}" for k in differing)
    seed_text = ", ".join("?" if s is None else str(s) for s in seeds)
    return f"{model}{' (' + settings + ')' if settings else ''}: mean of {len(seeds)} seeds ({seed_text})"


# ---------------------------------------------------------------- the comparison


def compare(scores: Sequence[RunScores], *, metric: str = "auc", n_resamples: int = 2000, level: float = 0.95,
            seed: int = 0, baseline: str | None = None, tests: bool = True) -> Comparison:
    """Tables, seed groups, baselines and tests for runs (module notes).

    Parameters
    ----------
    scores : sequence of RunScores
        The runs, each once, all on the same split (``"test"`` or ``"val"``).
    metric : {"auc", "acc", "balanced_acc"}
        The metric of the tests (the tables hold all three).
    n_resamples : int
        Bootstrap resamples; 0 leaves out the bootstrap intervals and the paired
        bootstrap tests (DeLong's and the seed tests remain).
    level : float
        Confidence level of every interval, e.g. 0.95.
    seed : int
        Seed of the bootstrap (and of a Monte Carlo permutation test).
    baseline : str, optional
        Name of one of the runs: test every other run (and its seed group every
        other group) against it instead of all pairs.
    tests : bool
        False skips the tests (study records).

    Returns
    -------
    Comparison

    Raises
    ------
    UsageError
        Bad settings, no runs, runs of one dataset and size on different splits, or a
        baseline run that is not among them or cannot be paired with every other run.
    """
    _check_settings(scores, metric, n_resamples, level, seed)
    settings = Settings(split=scores[0].split, metric=metric, n_resamples=int(n_resamples), level=float(level),
                        seed=int(seed), baseline=baseline)
    splits = split_groups(scores)
    if baseline is not None:
        _check_baseline(splits, baseline)
    notes = [s.note for s in scores if s.note]
    tables = [_table(members, settings, notes, tests) for members in splits]
    _adjust(tables)
    if not settings.n_resamples:
        notes.append("--bootstrap 0: no bootstrap intervals and no paired bootstrap tests")
    return Comparison(settings, tables, notes)


def _check_settings(scores, metric, n_resamples, level, seed) -> None:
    if not scores:
        raise UsageError("no runs to compare")
    if metric not in METRICS:
        raise UsageError(f"metric {metric!r}: expected one of {', '.join(METRICS)}")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 0:
        raise UsageError(f"bootstrap resamples must be an integer >= 0, got {n_resamples!r}")
    if not 0 < level < 1:
        raise UsageError(f"level must be between 0 and 1 (exclusive), got {level!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UsageError(f"seed must be a non-negative integer, got {seed!r}")
    seen: dict[str, RunScores] = {}
    for s in scores:
        if s.name in seen:
            where = f" ({seen[s.name].run.path} and {s.run.path})" if seen[s.name].run.path != s.run.path else ""
            raise UsageError(f"two runs are named {s.name}{where}; rows are named by run, so compare runs "
                             "with different names")
        seen[s.name] = s
    if len({s.split for s in scores}) > 1:
        raise UsageError("the runs' scores are of different splits")


def _check_baseline(splits, baseline: str) -> None:
    home = next((members for members in splits if any(s.name == baseline for s in members)), None)
    if home is None:
        raise UsageError(f"--baseline {baseline}: not among the runs compared")
    for members in splits:
        if members is not home:
            raise UsageError(f"--baseline {baseline} is a {home[0].dataset_label} run; {members[0].name} is "
                             f"{members[0].dataset_label}, on another test split, and cannot be compared with it")


def _table(members: list[RunScores], settings: Settings, notes: list, tests: bool) -> SplitTable:
    first = members[0]
    labels = first.labels
    task = task_of(first.task)
    n_classes = first.probabilities.shape[1]
    if task.is_multilabel:
        class_counts = {str(k): int(labels[:, k].sum()) for k in range(labels.shape[1])}
    else:
        class_counts = {str(k): int(np.count_nonzero(labels[:, 0] == k)) for k in range(n_classes)}
    table = SplitTable(first.dataset, first.size, first.task, int(labels.shape[0]), class_counts)
    level = settings.level

    point = {s.name: estimates(s.task, s.labels, s.probabilities) for s in members}
    for s in members:
        for key in PUBLISHED_METRICS:
            recorded = s.recorded.get(key)
            if recorded is not None and abs(recorded - point[s.name][key]) > _RECORDED_TOLERANCE:
                notes.append(f"run {s.name}: its stored {s.split} scores give {METRIC_NAMES[key]} "
                             f"{point[s.name][key]:.6f}, metrics.json says {recorded:.6f}")
    distributions = {}
    if settings.n_resamples:
        values = bootstrap_distributions(first.task, labels, [s.probabilities for s in members],
                                         n_resamples=settings.n_resamples, seed=settings.seed)
        distributions = {s.name: v for s, v in zip(members, values)}
    binary_auc = task.is_binary and 0 < int(np.count_nonzero(labels[:, 0] == 1)) < labels.shape[0]

    by_config = configurations(members)
    group_of: dict[str, str] = {}
    differing_by_model: dict[str, list[str]] = {}
    for config_members in by_config.values():
        same_model = [c[0].config for c in by_config.values() if c[0].model == config_members[0].model]
        differing_by_model[config_members[0].model] = _distinguishing(same_model)
    for config_members in by_config.values():
        if len(config_members) < 2:
            continue
        ordered = sorted(config_members, key=lambda s: (s.seed is None, s.seed if s.seed is not None else 0, s.name))
        head = ordered[0]
        label = _group_label(head.model, head.config, differing_by_model[head.model], [s.seed for s in ordered])
        summary, pooled = {}, {}
        for key in METRICS:
            values = [point[s.name][key] for s in ordered]
            summary[key] = seed_summary(values, level) if _finite(values) else \
                {"mean": NAN, "sd": NAN, "n": len(values), "low": NAN, "high": NAN, "level": level,
                 "method": "t interval of the mean"}
            if distributions:
                mean = np.mean([distributions[s.name][key] for s in ordered], axis=0)
                pooled[key] = percentile_interval(mean, level)[:2]
        table.groups.append(GroupRow(label, head.dataset, head.size, head.model, tuple(s.name for s in ordered),
                                     tuple(s.seed for s in ordered), head.configuration, summary, pooled))
        for s in ordered:
            group_of[s.name] = label

    for s in members:
        bootstrap = {key: percentile_interval(distributions[s.name][key], level)[:2] for key in METRICS} \
            if distributions else {}
        delong = None
        if binary_auc:
            d = delong_interval(labels, s.probabilities[:, -1], level)
            delong = (d["low"], d["high"])
        table.runs.append(RunRow(s.name, s.dataset, s.size, s.model, s.seed, s.status, s.task, int(labels.shape[0]),
                                 s.configuration, point[s.name], bootstrap, delong, group_of.get(s.name)))

    table.baselines = _baselines(first.dataset, first.size, [s.model for s in members])
    if tests:
        table.tests = _tests(table, members, distributions, settings, binary_auc, notes)
    return table


def _baselines(dataset: str, size: int, models: Sequence[str]) -> list:
    rows = []
    for model in dict.fromkeys(models):
        reference = published.reference_baseline(dataset, size, model)
        if reference is not None and reference not in rows:
            rows.append(reference)
    if published.baselines_for(dataset):
        best = published.best_baseline(dataset)
        if best not in rows:
            rows.append(best)
    return rows


def _run_pairs(table: SplitTable, settings: Settings) -> list[tuple[RunRow, RunRow]]:
    """The runs to test: each against the baseline run, or every two of different configurations.

    When both runs belong to seed groups that ran the same seeds, only runs of
    equal seeds are paired (same initialisation and data order; the groups
    themselves are tested across seeds).
    """
    runs = table.runs
    if settings.baseline is not None:
        base = table.row(settings.baseline)
        return [(r, base) for r in runs if r.name != base.name]
    seeds_of = {g.label: g.seeds for g in table.groups}
    pairs = []
    for a, b in combinations(runs, 2):
        if a.configuration == b.configuration:
            continue  # seeds of one configuration: summarised by its group, not tested
        if a.group and b.group and _paired_seeds(seeds_of[a.group], seeds_of[b.group]) and a.seed != b.seed:
            continue
        pairs.append((a, b))
    return pairs


def _group_pairs(table: SplitTable, settings: Settings) -> list[tuple[GroupRow, GroupRow]]:
    groups = table.groups
    if settings.baseline is not None:
        base = next((g for g in groups if settings.baseline in g.runs), None)
        return [] if base is None else [(g, base) for g in groups if g is not base]
    return list(combinations(groups, 2))


def _tests(table: SplitTable, members, distributions, settings: Settings, binary_auc: bool, notes: list) -> list:
    metric, level = settings.metric, settings.level
    scores = {s.name: s for s in members}
    labels = members[0].labels
    rows = []
    run_pairs = _run_pairs(table, settings)
    if len(table.runs) < 2:
        notes.append(f"{table.label}: one run only, nothing to test")
    elif not run_pairs:
        notes.append(f"{table.label}: the runs are seeds of one configuration; no pairs of different models to "
                     "test (name one with --baseline RUN to test every other run against it)")
    z = float(norm.ppf((1 + level) / 2))
    for a, b in run_pairs:
        if metric == "auc" and binary_auc:
            d = delong_test(labels, scores[a.name].probabilities[:, -1], scores[b.name].probabilities[:, -1])
            half = z * math.sqrt(d["variance_difference"]) if math.isfinite(d["variance_difference"]) else NAN
            rows.append(PairTest(table.dataset, table.size, BETWEEN_RUNS, a.name, b.name, metric, RUN_TEST_DELONG,
                                d["auc_a"], d["auc_b"], d["difference"], d["difference"] - half,
                                d["difference"] + half, d["z"], d["p_value"], n=table.n))
        if distributions:
            differences = distributions[a.name][metric] - distributions[b.name][metric]
            low, high, _ = percentile_interval(differences, level)
            ea, eb = a.estimates[metric], b.estimates[metric]
            rows.append(PairTest(table.dataset, table.size, BETWEEN_RUNS, a.name, b.name, metric,
                                "paired " + method_name(table.task, True), ea, eb, ea - eb, low, high, NAN,
                                bootstrap_p_value(differences), n=table.n))
    by_name = {r.name: r for r in table.runs}
    for ga, gb in _group_pairs(table, settings):
        va, vb = ga.values(by_name, metric), gb.values(by_name, metric)
        if not (_finite(va) and _finite(vb)):
            notes.append(f"{table.label}: {METRIC_NAMES[metric]} is undefined for a run of {ga.label} or "
                         f"{gb.label}; their seeds are not tested")
            continue
        if _paired_seeds(ga.seeds, gb.seeds):
            order_a, order_b = np.argsort(ga.seeds), np.argsort(gb.seeds)
            result = paired_seed_test(np.asarray(va)[order_a], np.asarray(vb)[order_b])
            difference, n = result["mean_difference"], result["n"]
        else:
            result = unpaired_permutation_test(va, vb, seed=settings.seed)
            difference, n = result["statistic"], result["n_a"] + result["n_b"]
        ea, eb = float(np.mean(va)), float(np.mean(vb))
        rows.append(PairTest(table.dataset, table.size, BETWEEN_GROUPS, ga.label, gb.label, metric, result["method"],
                            ea, eb, difference, NAN, NAN, result["statistic"], result["p_value"], n=n))
    return rows


def _paired_seeds(a: Sequence, b: Sequence) -> bool:
    """Both groups ran exactly the same seeds, each once."""
    return None not in a and None not in b and len(set(a)) == len(a) and sorted(a) == sorted(b)


def _adjust(tables: list) -> None:
    """Holm's adjustment over every defined p-value of the comparison, written into the rows."""
    tests = [t for table in tables for t in table.tests]
    defined = [i for i, t in enumerate(tests) if math.isfinite(t.p_value)]
    adjusted = holm([tests[i].p_value for i in defined]) if defined else []
    by_index = dict(zip(defined, adjusted))
    position = 0
    for table in tables:
        new = []
        for t in table.tests:
            new.append(_with_holm(t, by_index.get(position, NAN)))
            position += 1
        table.tests = new


def _with_holm(test: PairTest, p_holm: float) -> PairTest:
    return replace(test, p_holm=p_holm)
