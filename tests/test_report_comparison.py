"""report.py --study and report.py RUN RUN: the comparison page holds compare.py's numbers, offline, as valid HTML.

Two real short runs of one configuration (breastmnist, the small CNN, seeds 1
and 2) trained once for this module, recorded as a study with
``medscope.compare.study.write_study``; the first run also gets its own page,
the second not, so the comparison page must link the one and give the command
for the other.
"""
from __future__ import annotations

import html
import html.parser
import re
import types

import markupsafe
import pytest

import report
from medscope.app import cli
from medscope.compare import paths, tables
from medscope.compare import report as compare_report
from medscope.compare.scores import load_run_scores
from medscope.compare.study import write_study
from medscope.report.comparison import report_command, report_link
from medscope.report.images import embed_image
from medscope.report.text import number_text
from medscope.runs import Run
from tests.conftest import one_line_error, train_run

BOOTSTRAP = "300"  # resamples: enough for real intervals, quick on a laptop CPU
ALLOWED_LINKS = {"https://doi.org/10.1038/s41597-022-01721-8"}


def escaped(text: str) -> str:
    """Text as the page's autoescaping writes it (Jinja2's markupsafe)."""
    return str(markupsafe.escape(text))


def shown(value, digits: int = 3) -> str:
    """A number as the page shows it: the exact value in <data value>, the rounded text inside."""
    return f'<data value="{float(value)!r}">{number_text(value, digits)}</data>'


@pytest.fixture(scope="module")
def pages(tmp_path_factory, medmnist_dir):
    """Two runs, a study of both, the first run's own page, and the study and run-comparison pages."""
    workdir = tmp_path_factory.mktemp("comparison-page")
    common = ("--dataset", "breastmnist", "--model", "cnn", "--epochs", "1", "--subset", "96")
    first = train_run(workdir, medmnist_dir, *common, "--seed", "1")
    second = train_run(workdir, medmnist_dir, *common, "--seed", "2")
    results = workdir / "results"
    study = write_study(results, "pair", [Run(first), Run(second)], n_resamples=0)
    flags = ["--results-dir", str(results), "--bootstrap", BOOTSTRAP]
    assert report.main(["--run", first.name, "--results-dir", str(results)]) == 0
    assert report.main(["--study", "pair", *flags]) == 0
    assert report.main([first.name, second.name, "--baseline", first.name, *flags]) == 0
    (folder,) = list(paths.comparisons_dir(results).iterdir())
    scores = [load_run_scores(Run(p), "test") for p in (first, second)]
    return types.SimpleNamespace(
        results=results, first=first, second=second, study=study, folder=folder, scores=scores,
        study_html=(study.folder / "report.html").read_text(encoding="utf-8"),
        runs_html=(folder / "report.html").read_text(encoding="utf-8"))


def expected(pages, **settings) -> tables.Comparison:
    return tables.compare(pages.scores, n_resamples=int(BOOTSTRAP), level=0.95, seed=0, **settings)


def numbers_of(comparison) -> list[float]:
    """Every number of compare.py's rows (runs, seed groups, published baselines) and tests."""
    skip = {"size", "n", "level", "seed", "runs"}
    values = [v for row in compare_report.table_rows(comparison) for k, v in row.items()
              if k not in skip and isinstance(v, float)]
    values += [v for row in compare_report.rows_of_tests(comparison) for k, v in row.items()
               if k in ("estimate_a", "estimate_b", "low", "high") and isinstance(v, float)]
    return values


def test_study_page_holds_compares_numbers_exactly(pages):
    comparison = expected(pages)
    values = numbers_of(comparison)
    assert len(values) >= 3 * 3 * 2 + 3 * 5 + 2  # two runs' metrics and intervals, a seed group, a baseline
    for value in values:
        assert shown(value) in pages.study_html, value
    (table,) = comparison.tables
    assert len(table.groups) == 1 and table.groups[0].runs == (pages.first.name, pages.second.name)
    assert [b.method for b in table.baselines] and "Published MedMNIST v2 results" in pages.study_html
    for b in table.baselines:
        assert f'<tr class="baseline"><th scope="row">{escaped(b.method)}</th>' in pages.study_html
    assert "<h1>Study pair</h1>" in pages.study_html


def test_runs_page_has_the_paired_tests_with_holm_adjusted_p_values(pages):
    comparison = expected(pages, baseline=pages.first.name)
    for value in numbers_of(comparison):
        assert shown(value) in pages.runs_html, value
    assert len(comparison.tests) == 2  # DeLong and the paired bootstrap, second run against the first
    body = re.search(r'<table class="comparison tests">.*?</table>', pages.runs_html, re.DOTALL).group(0)
    assert body.count("<tr>") == 1 + len(comparison.tests)
    for t in comparison.tests:
        p, holm = compare_report.p_text(t.p_value), compare_report.p_text(t.p_holm)
        assert f'<data value="{t.p_value!r}">{escaped(p)}</data>' in body
        assert f'<data value="{t.p_holm!r}">{escaped(holm)}</data>' in body
        assert escaped(t.method) in body
    assert min(2 * min(t.p_value for t in comparison.tests), 1.0) == pytest.approx(
        min(t.p_holm for t in comparison.tests))  # Holm's smallest p is the smallest p times the family size


def test_run_comparison_goes_into_a_new_comparison_folder_with_compares_files(pages):
    assert pages.folder.parent == paths.comparisons_dir(pages.results)
    assert re.fullmatch(r"\d{8}-\d{6}_0001-0002_breastmnist28", pages.folder.name)
    names = {p.name for p in pages.folder.iterdir()}
    assert names == {"report.html", paths.MD, paths.CSV, paths.TESTS_CSV, paths.JSON, paths.forest_png("auc")}


def test_forest_plot_is_embedded_with_a_caption(pages):
    for page in (pages.study_html, pages.runs_html):
        assert page.count("<img ") == 1
        assert '<img src="data:image/png;base64,' in page
        assert "<figcaption><strong>Forest plot of AUC.</strong>" in page
    # the comparison folder keeps the plot it embedded: the encoding is deterministic
    assert embed_image(pages.folder / paths.forest_png("auc")).data_uri in pages.runs_html


def test_each_run_has_a_verdict_line_linked_to_its_own_page(pages):
    for page in (pages.study_html, pages.runs_html):
        assert f'<a href="../../{pages.first.name}/report.html">' in page
        assert f'href="../../{pages.second.name}/' not in page
        assert escaped(report_command(pages.second.name, pages.results)) in page
    table = expected(pages).tables[0]
    for r in table.runs:
        line = re.search(rf'<li id="run-{r.name}">.*?</li>', pages.study_html, re.DOTALL).group(0)
        low, high = r.bootstrap["auc"]
        assert f"test AUC {shown(r.estimates['auc'])} <span class=\"ci\">95% interval [{shown(low)}, {shown(high)}]" \
               in line
        assert f"ACC {shown(r.estimates['acc'])}" in line


def test_report_link_is_relative_to_the_page_and_none_without_a_page(pages):
    assert report_link(pages.first, pages.study.folder) == f"../../{pages.first.name}/report.html"
    assert report_link(pages.second, pages.study.folder) is None


def test_pages_are_valid_html5_and_reference_nothing_outside_themselves(pages):
    import html5lib

    class Urls(html.parser.HTMLParser):
        def __init__(self):
            super().__init__()
            self.urls = []

        def handle_starttag(self, tag, attrs):
            self.urls += [(tag, k, v or "") for k, v in attrs if k in ("src", "href", "srcset", "data", "action")]

    for page in (pages.study_html, pages.runs_html):
        document = html5lib.HTMLParser(strict=True, namespaceHTMLElements=False).parse(page)
        assert len(document.findall(".//table")) >= 3  # real tables: runs, seed group, published rows
        parser = Urls()
        parser.feed(page)
        for tag, attribute, value in parser.urls:
            if attribute == "src":
                assert value.startswith("data:image/"), value
            elif attribute == "href":
                assert value.startswith("#") or value.endswith("/report.html") and "://" not in value, value
        assert "<link" not in page and "<script" not in page and "@import" not in page
        assert '<div class="table-wrap">\n<table' in page
        assert page.count("<table") == page.count('<div class="table-wrap">\n<table')


def test_one_run_still_writes_its_own_page(pages, tmp_path):
    assert cli.run(report.main, [pages.second.name, "--results-dir", str(pages.results)]) == 0
    assert (pages.second / "report.html").is_file()
    (pages.second / "report.html").unlink()  # the other tests expect it to have none
    assert len(list(paths.comparisons_dir(pages.results).iterdir())) == 1


def test_bad_input_is_one_line_and_exit_2(pages, capsys):
    results = ["--results-dir", str(pages.results)]
    assert cli.run(report.main, ["--study", "nothing-like-it", *results]) == 2
    one_line_error(capsys, "no study named 'nothing-like-it'")
    assert cli.run(report.main, ["9999", "0001", *results]) == 2
    one_line_error(capsys, "no run named '9999'")
    assert cli.run(report.main, ["'9*_x*'", "0001", *results]) == 2
    one_line_error(capsys, "no run matches")
    assert cli.run(report.main, ["0001", "--run", "0002", *results]) == 2
    one_line_error(capsys, "--run names one run's page")


def test_page_renders_at_phone_width_in_chromium(pages):
    from tests.chromium import Chromium, find_chromium
    from tests.test_report_browser import look

    executable = find_chromium()
    if executable is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium)")
    with Chromium(executable) as browser:
        seen = look(browser, pages.study.folder / "report.html", 390)
    assert seen["images"] == 1 and seen["undecoded"] == []
    assert seen["errors"] == []
    assert seen["scrollWidth"] <= seen["innerWidth"] == 390
    assert seen["sections"][0] == "runs" and seen["sections"][-1] == "methods"


def test_doctests():
    import doctest

    from medscope.report import comparison, render

    for module in (comparison, render):
        assert doctest.testmod(module).failed == 0
