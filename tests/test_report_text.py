"""Report text: labels and numbers read the same in every report."""
import doctest

from medscope import report_text


def test_the_documented_examples_hold():
    assert doctest.testmod(report_text).failed == 0


def test_missing_values_read_n_a_and_multilabel_rows_join_with_semicolons():
    assert report_text.number_text(None) == report_text.percent_text(float("nan")) == "n/a"
    assert report_text.number_text(2 / 3, digits=1) == "0.7" and report_text.percent_text(1.0) == "100%"
    assert report_text.label_text([[1], ]) == "1" and report_text.label_text([1, 0]) == "1;0"
