"""``calibration_report.md``: a calibration analysis in plain words, every number with its interval.

:func:`report_markdown` takes the result of
:func:`medscope.calibration.analysis.analyze_calibration` (with or without its
curves and per-image lists) and returns Markdown; :func:`interval_text` is
the one way a number and its interval are written (the command's printed
summary uses it too).
"""
from __future__ import annotations

import math

from medscope.report_text import markdown_text

RULE_NAMES = {"youden": "Youden", "sensitivity": "target sensitivity", "specificity": "target specificity",
              "medmnist": "MedMNIST (0.5)"}
METHOD_NAMES = {"lac": "LAC", "aps": "APS", "lac_class_conditional": "LAC, class-conditional",
                "aps_class_conditional": "APS, class-conditional"}
RATE_NAMES = {"sensitivity": "sensitivity", "specificity": "specificity", "ppv": "PPV", "npv": "NPV",
              "balanced_accuracy": "balanced accuracy", "accuracy": "accuracy"}


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _number(value, digits: int, percent: bool) -> str:
    if _missing(value):
        return "n/a"
    return f"{100 * value:.{max(digits - 2, 0)}f}%" if percent else f"{value:.{digits}f}"


def interval_text(entry: dict, digits: int = 3, *, percent: bool = False) -> str:
    """An interval entry as ``0.046 (95% CI 0.010–0.080)``; fractions as percentages with ``percent``.

    A basic-bootstrap entry (one with ``bias_corrected``) reads
    ``0.065 (bias-corrected 0.048, 95% CI 0.035–0.061)``: its interval is
    around the bias-corrected value.

    >>> interval_text({"estimate": 0.5, "low": 0.25, "high": 0.75, "level": 0.95})
    '0.500 (95% CI 0.250–0.750)'
    >>> interval_text({"estimate": 0.912, "low": 0.87, "high": 0.95, "level": 0.95}, percent=True)
    '91.2% (95% CI 87.0–95.0%)'
    """
    level = f"{100 * entry.get('level', 0.95):g}% CI"
    low, high = _number(entry["low"], digits, percent), _number(entry["high"], digits, percent)
    if percent and low != "n/a":
        low = low.rstrip("%")
    bounds = "n/a" if "n/a" in (low, high) else f"{low}–{high}"
    corrected = ""
    if "bias_corrected" in entry:
        corrected = f"bias-corrected {_number(entry['bias_corrected'], digits, percent)}, "
    return f"{_number(entry['estimate'], digits, percent)} ({corrected}{level} {bounds})"


def threshold_text(value) -> str:
    """A decision threshold: 4 decimals; ``+inf`` (or None, as JSON writes it) is 'never positive'."""
    if value is None or value == math.inf:
        return "∞ (never positive)"
    return f"{value:.4f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    align = ["---"] + ["---:"] * (len(header) - 1)
    return ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |",
            *["| " + " | ".join(row) + " |" for row in rows]]


def report_markdown(result: dict, *, run_name: str | None = None) -> str:
    """The calibration report of one analysis result, in plain words."""
    r = result
    boot = r["bootstrap"]
    title = f"# Calibration, thresholds and prediction sets — {markdown_text(run_name)}" if run_name else \
        "# Calibration, thresholds and prediction sets"
    lines = [title, "",
             f"The temperature, the decision thresholds and the conformal sets were fitted on the "
             f"{r['n_validation']} validation images and judged on the {r['n_test']} test images "
             f"({markdown_text(r['task'])} task). Every number comes with its {100 * boot['level']:g}% interval: a "
             f"{boot['method']} ({boot['n_resamples']} resamples, seed {boot['seed']}); the temperature, "
             "thresholds and conformal quantiles stay as fitted on validation.", ""]
    note = (r.get("inputs") or {}).get("note")
    if note:
        lines += [f"**Note:** {markdown_text(note[0].upper() + note[1:])}.", ""]
    lines += ["## In short", ""] + _short_summary(r) + [""]
    lines += _temperature_section(r) + [""]
    lines += _thresholds_section(r) + [""]
    lines += _conformal_section(r) + [""]
    lines += _selective_section(r) + [""]
    lines += ["## Files", "",
              "`calibration_summary.json` (every number and interval), `temperature.json` (the temperature, "
              "for deployment), `thresholds.csv`, `conformal.csv`, `conformal_per_class.csv`, "
              "`conformal_sets.csv` (the set of every test image), `selective.csv`, `selective_curves.csv`, "
              "`reliability_bins.csv`, `reliability_diagram.png`, `risk_coverage.png`, "
              "`conformal_coverage.png`.", ""]
    return "\n".join(lines)


def _temperature_words(r: dict) -> str:
    t = r["temperature"]
    if t["kind"] == "scalar":
        value = t["temperature"]
        effect = {"softens": "the model was over-confident, so its probabilities were softened",
                  "sharpens": "the model was under-confident, so its probabilities were sharpened",
                  "unchanged": "the model's probabilities were already about right"}[t["effect"]]
        bound = " (the search range ended there: the true optimum lies beyond it)" if t["at_bound"] else ""
        return f"T = {value:.3f}{bound}: {effect} (logits divided by {value:.3f} before the softmax)"
    softened = sum(e["effect"] == "softens" for e in t["per_label"])
    sharpened = sum(e["effect"] == "sharpens" for e in t["per_label"])
    values = [e["temperature"] for e in t["per_label"]]
    return (f"one temperature per label, from {min(values):.3f} to {max(values):.3f}: {softened} label(s) softened "
            f"(over-confident), {sharpened} sharpened (under-confident); each label's logit is divided by its "
            "own T before the sigmoid")


def _short_summary(r: dict) -> list[str]:
    cal = r["calibration"]
    out = [f"- **Temperature:** {_temperature_words(r)}. Test ECE {interval_text(cal['before']['ece'])} before, "
           f"{interval_text(cal['after']['ece'])} after; NLL {interval_text(cal['before']['nll'])} before, "
           f"{interval_text(cal['after']['nll'])} after.",
           f"- **Accuracy** (MedMNIST's ACC, {r['accuracy']['rule']}): {interval_text(r['accuracy']['accuracy'])}. "
           "Temperature scaling never changes a prediction, so this is the same before and after."]
    thr = r["thresholds"]
    if thr["applicable"]:
        for problem in thr["problems"]:
            rules = {e["rule"]: e for e in problem["rules"] if e["applicable"]}
            parts = []
            if "youden" in rules:
                e = rules["youden"]
                parts.append(f"for a balance of both, {threshold_text(e['threshold'])} (Youden; test sensitivity "
                             f"{interval_text(e['test']['sensitivity'])}, specificity "
                             f"{interval_text(e['test']['specificity'])})")
            if "sensitivity" in rules:
                e = rules["sensitivity"]
                parts.append(f"to miss few positives (screening), {threshold_text(e['threshold'])} (test sensitivity "
                             f"{interval_text(e['test']['sensitivity'])})")
            if "specificity" in rules:
                e = rules["specificity"]
                parts.append(f"to raise few false alarms (confirmation), {threshold_text(e['threshold'])} (test "
                             f"specificity {interval_text(e['test']['specificity'])})")
            if parts:
                out.append(f"- **Threshold for {markdown_text(problem['label'])}:** " + "; ".join(parts) + ".")
    else:
        out.append(f"- **Thresholds:** not applicable: {markdown_text(thr['reason'])}.")
    cp = r["conformal"]
    lac = next(m for m in cp["methods"] if m["name"] == "lac")
    target = f"{100 * cp['target_coverage']:g}%"
    what = "value of each label" if cp["per_label"] else "class"
    sentence = (f"- **Prediction sets (LAC, alpha = {cp['alpha']:g}):** the set holds the true {what} for "
                f"{interval_text(lac['test']['coverage'], percent=True)} of test "
                f"{'label decisions' if cp['per_label'] else 'images'} (target at least {target}); "
                f"mean set size {interval_text(lac['test']['mean_set_size'], 2)}")
    if "abstain_fraction" in lac["test"]:
        sentence += (f"; {interval_text(lac['test']['abstain_fraction'], percent=True)} of "
                     f"{'label decisions' if cp['per_label'] else 'images'} get no single answer (abstain)")
    out.append(sentence + ".")
    out.append(_best_sentence(r))
    return out


def _best_sentence(r: dict) -> str:
    sel = r["selective"]
    best = sel["best"]
    if not best["applicable"]:
        return f"- **Ranking errors:** not possible: {markdown_text(best['reason'])}."
    others = [e for e in sel["scores"] if e["name"] != best["name"]]
    clear = [e["description"] for e in others
             if not _missing(e["augrc_minus_best"]["low"]) and e["augrc_minus_best"]["low"] > 0]
    within = [e["description"] for e in others if e["description"] not in clear]
    text = (f"- **Ranking errors:** the {best['description']} sets errors apart best (lowest AUGRC, "
            f"{interval_text(best['augrc'], 4)}).")
    if clear:
        text += f" It is clearly better than {_listing(clear)} (the paired interval of the difference excludes 0)."
    if within:
        text += f" Its lead over {_listing(within)} is within the noise (the interval includes 0)."
    return text


def _listing(descriptions: list[str]) -> str:
    """``the a, the b and the c``."""
    items = [f"the {d}" for d in descriptions]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _temperature_section(r: dict) -> list[str]:
    t, cal = r["temperature"], r["calibration"]
    lines = ["## 1. Temperature scaling", "",
             f"{_temperature_words(r)[0].upper()}{_temperature_words(r)[1:]}. It was chosen to minimise the "
             f"negative log-likelihood of the validation labels: {t['nll_validation_before']:.4f} nats at T = 1, "
             f"{t['nll_validation_after']:.4f} after. No prediction changes, and neither does any AUC.",
             ""]
    if t["kind"] == "per label":
        lines += _table(["label", "T", "validation NLL before", "after"],
                        [[markdown_text(e["label"]),
                          f"{e['temperature']:.3f}" + (" (at bound)" if e["at_bound"] else ""),
                          f"{e['nll_validation_before']:.4f}", f"{e['nll_validation_after']:.4f}"]
                         for e in t["per_label"]]) + [""]
    names = {"ece": f"ECE ({cal['n_bins']} equal-width bins)", "adaptive_ece": f"adaptive ECE ({cal['n_bins']} "
             "equal-mass bins)", "brier": "Brier score", "nll": "NLL (nats)"}
    lines += _table(["on the test split", "before", "after"],
                    [[names[key], interval_text(cal["before"][key], 4), interval_text(cal["after"][key], 4)]
                     for key in ("ece", "adaptive_ece", "brier", "nll")])
    per_label = " (the mean of the per-label ECEs)" if t["kind"] == "per label" else ""
    lines += ["", f"Lower is better for all four. The ECE is the average gap between confidence and accuracy over "
              f"bins{per_label}. On a finite test set it is biased upward (noise alone opens gaps between confidence "
              "and accuracy), so its interval is a basic bootstrap around the bias-corrected value; the other "
              "intervals are percentile intervals. See `reliability_diagram.png`."]
    return lines


def _thresholds_section(r: dict) -> list[str]:
    thr = r["thresholds"]
    lines = ["## 2. Decision thresholds", ""]
    if not thr["applicable"]:
        return lines + [f"Not applicable: {markdown_text(thr['reason'])}."]
    s = r["settings"]
    lines += [f"Each threshold was chosen on validation ({thr['score']}; {thr['rule']}) and is judged on test. "
              f"Youden's J balances sensitivity and specificity; the target-sensitivity rule (at least "
              f"{s['target_sensitivity']:g} on validation) suits screening, where a missed case costs most; the "
              f"target-specificity rule (at least {s['target_specificity']:g}) suits confirmation, where a false "
              "alarm costs most. MedMNIST's fixed 0.5 is kept for comparison with published numbers. The "
              "thresholds apply to probabilities after temperature scaling (`temperature.json`).", ""]
    for problem in thr["problems"]:
        lines += [f"### {markdown_text(problem['label'])}", "",
                  f"Validation: {problem['n_validation_positive']} positive and "
                  f"{problem['n_validation_negative']} negative images.", ""]
        rows = []
        for e in problem["rules"]:
            if not e["applicable"]:
                rows.append([RULE_NAMES[e["rule"]], "—", markdown_text(e["reason"]), "", "", "", "", ""])
                continue
            test = e["test"]
            shown = "> 0.5" if e["rule"] == "medmnist" else threshold_text(e["threshold"])
            rows.append([RULE_NAMES[e["rule"]], shown]
                        + [interval_text(test[rate]) for rate in RATE_NAMES])
        lines += _table(["rule", "threshold", *RATE_NAMES.values()], rows) + [""]
    return lines


def _conformal_section(r: dict) -> list[str]:
    cp = r["conformal"]
    per_label = cp["per_label"]
    target = f"{100 * cp['target_coverage']:g}%"
    unit = "label decision" if per_label else "image"
    lines = ["## 3. Conformal prediction sets", "",
             f"Instead of one answer, each test {unit} gets the set of answers the model cannot rule out. Split "
             f"conformal prediction guarantees that the set holds the true answer for at least {target} of "
             "images on average, provided the validation and test images are exchangeable (drawn alike). "
             "Class-conditional (Mondrian) sets keep that promise within every class separately, at the price of "
             "larger sets. LAC keeps every class whose probability is at least 1 − q; APS adds classes from the "
             "most probable down until their mass reaches q (never empty)."
             + (" For a multi-label task each label is its own two-valued problem: a set of {0, 1} leaves that "
                "label undecided." if per_label else "")
             + (" For a binary task a set of both classes (or none) is an abstention: refer the case to a "
                "person." if r["task"] == "binary-class" else ""), "",
             "The validation images also chose the training epoch and the temperature, so the guarantee holds "
             "only approximately; the test coverage below is the check.", ""]
    header = ["method", "coverage", "mean set size", "singletons", "empty"]
    has_abstain = "abstain_fraction" in cp["methods"][0]["test"]
    if has_abstain:
        header.append("abstain")
    if per_label:
        header.append("all labels covered")
    rows = []
    for m in cp["methods"]:
        test = m["test"]
        row = [METHOD_NAMES.get(m["name"], m["name"]), interval_text(test["coverage"], percent=True),
               interval_text(test["mean_set_size"], 2), interval_text(test["singleton_fraction"], percent=True),
               interval_text(test["empty_fraction"], percent=True)]
        if has_abstain:
            row.append(interval_text(test["abstain_fraction"], percent=True))
        if per_label:
            row.append(interval_text(test["all_labels_covered"], percent=True))
        rows.append(row)
    lines += _table(header, rows)
    key = "coverage_per_label" if per_label else "coverage_per_class"
    lines += ["", f"Coverage per {'label' if per_label else 'class'} (target {target}; see `conformal_coverage.png`):",
              ""]
    lines += _table([("label" if per_label else "class"), *[METHOD_NAMES.get(m["name"], m["name"])
                                                            for m in cp["methods"]]],
                    [[markdown_text(name), *[interval_text(m["test"][key][name], percent=True) for m in cp["methods"]]]
                     for name in r["class_names"]])
    if per_label:
        lines += ["", "Multi-label sets are calibrated label by label: all labels of an image are covered at "
                      "once less often than each label alone (column 'all labels covered')."]
    return lines


def _selective_section(r: dict) -> list[str]:
    sel = r["selective"]
    mc = r["mc_dropout"]
    lines = ["## 4. Which uncertainty score ranks errors best", "",
             f"If the model may set its least certain cases aside, how much does that lower the error rate? Test "
             f"error rate with no abstention: {interval_text(sel['error_rate'], percent=True)} ({sel['errors']}; "
             f"{sel['n_errors']} errors). Each score below orders the test images from surest to least sure; "
             "the risk–coverage curve follows the error rate of the accepted images as more are accepted "
             "(`risk_coverage.png`). AURC is the area under it; AUGRC (Traub et al., 2024) is the area under the "
             "errors accepted per image, the average risk that an error slips through; e-AURC is AURC minus "
             "that of a perfect ranking. Lower is better for all three. The best possible ranking has AUGRC "
             f"{interval_text(sel['augrc_optimal'], 4)}.", ""]
    if not mc["used"]:
        lines += [f"MC-dropout measures are not included: {markdown_text(mc['reason'])}.", ""]
    elif mc.get("source"):
        lines += [f"MC-dropout measures come from {markdown_text(mc['source'])}.", ""]
    has_difference = sel["best"]["applicable"]
    header = ["score", "AURC", "e-AURC", "AUGRC"] + (["AUGRC − best"] if has_difference else [])
    rows = []
    for e in sel["scores"]:
        row = [e["description"], *(interval_text(e[key], 4) for key in ("aurc", "eaurc", "augrc"))]
        if has_difference:
            row.append("best" if e["name"] == sel["best"]["name"] else interval_text(e["augrc_minus_best"], 4))
        rows.append(row)
    lines += _table(header, rows)
    sentence = _best_sentence(r).removeprefix("- **Ranking errors:** ")
    lines += ["", sentence[0].upper() + sentence[1:]]
    if has_difference:
        lines += ["", "The best score was picked on the same test images, so a small lead can be luck; the "
                      "paired interval of each difference says whether it is."]
    return lines
