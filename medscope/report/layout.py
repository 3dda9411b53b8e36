"""The files the report reads inside each analysis folder.

The run folder itself (top-level files and one folder per analysis) is named by
:class:`medscope.runs.RunLayout`; :data:`ANALYSIS_FILES` names the files the
report reads inside those folders (each written by the module noted beside it).
Nothing else in :mod:`medscope.report` spells a file name.
"""
from __future__ import annotations

from pathlib import Path

from medscope.runs import RunLayout

ANALYSIS_FILES = {
    "inference_dir": {  # medscope/inference.py
        "calibration_json": "inference_calibration.json",
        "reliability_png": "reliability_diagram.png",
        "confident_errors_png": "confident_errors.png",
        "roc_pr_png": "roc_pr_curves.png",
        "embedding_png": "embedding_2d.png",
        "layer_activation_png": "layer_mean_activation.png",
        "neuron_classes_png": "neuron_heatmap_classes.png",
        "neuron_samples_png": "neuron_heatmap_samples.png",
    },
    "complexity_dir": {  # medscope/weights.py, medscope/complexity_plots.py
        "summary_json": "weights_entropy_summary.json",
        "lmc_per_layer_png": "lmc_per_layer.png",
        "sampen_per_layer_png": "sampen_per_layer.png",
        "lmc_by_type_png": "lmc_by_type.png",
    },
    # medscope/explain.py writes each method under its own stem: <stem>_summary.json, <stem>_maps.npz,
    # <stem>_faithfulness.png and figures (2D: pages of PAGE_SIZE images; 3D: one volume per image)
    "gradcam_dir": {"stems": ("gradcam", "gradcampp")},
    "saliency_dir": {"stems": ("saliency_vanilla", "saliency_smoothgrad")},
    "uncertainty_dir": {  # medscope/uncertainty.py
        "summary_json": "uncertainty_summary.json",
        "accuracy_coverage_png": "accuracy_coverage.png",
        "distributions_png": "uncertainty_distributions.png",
    },
    "robustness_dir": {  # medscope/robustness.py, medscope/robustness_plots.py
        "summary_csv": "robustness_summary.csv",
        "summary_json": "robustness_summary.json",
        "heatmap_png": "robustness_balanced_acc_heatmap.png",
        "measures_png": "robustness_measures.png",
        "examples_glob": "robustness_examples_*.png",
    },
    "calibration_dir": {  # explain.py calibrate
        "report_md": "calibration_report.md",
        "summary_json": "calibration_summary.json",
        "figures_glob": "*.png",
    },
    "export_dir": {  # medscope/deploy.py
        "report_json": "export_report.json",
    },
}


EXPLANATION_FILES = {
    "summary_json": "{stem}_summary.json",
    "maps_npz": "{stem}_maps.npz",
    "faithfulness_png": "{stem}_faithfulness.png",
    "pages_glob": "{stem}_page*.png",
    "volumes_glob": "{stem}_volume_*.png",
}
PAGE_SIZE = 8  # images per 2D page: medscope.explain.plots.heatmap_pages's per_page


def analysis_file(layout: RunLayout, folder: str, key: str) -> Path:
    """The path of file ``key`` of analysis folder ``folder`` (an attribute of :class:`RunLayout`).

    >>> analysis_file(RunLayout(Path("r")), "export_dir", "report_json").as_posix()
    'r/export/export_report.json'
    """
    return getattr(layout, folder) / ANALYSIS_FILES[folder][key]


def explanation_file(layout: RunLayout, folder: str, key: str, stem: str) -> Path:
    """A file (or glob pattern) of explanation method ``stem`` in ``folder``.

    >>> explanation_file(RunLayout(Path("r")), "gradcam_dir", "pages_glob", "gradcam").as_posix()
    'r/gradcam/gradcam_page*.png'
    """
    return getattr(layout, folder) / EXPLANATION_FILES[key].format(stem=stem)
