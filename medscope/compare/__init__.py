"""Runs and multi-seed studies side by side, with intervals and paired tests.

The library behind ``compare.py``, one concern per module:

* :mod:`~medscope.compare.select` -- runs and studies by name, prefix or glob.
* :mod:`~medscope.compare.scores` -- one run's stored scores, labels and configuration.
* :mod:`~medscope.compare.tables` -- the comparison: per-dataset tables of runs,
  seed groups and published baselines, and the paired tests with Holm's correction.
* :mod:`~medscope.compare.plots` -- the forest plot.
* :mod:`~medscope.compare.report` -- the comparison as Markdown, CSV rows and JSON.
* :mod:`~medscope.compare.study` -- study records: ``results/studies/<name>/``.
* :mod:`~medscope.compare.paths` -- where a comparison is written.

The statistics themselves live in :mod:`medscope.stats`.
"""
