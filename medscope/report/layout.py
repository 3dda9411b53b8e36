"""Every file and folder of a run that the report reads: the one list of them.

:class:`RunLayout` names the files ``train.py`` writes at the top of a run folder
and the subfolder each analysis writes into; :data:`ANALYSIS_FILES` names the files
the report reads inside those subfolders (each written by the module noted
beside it). Nothing else in :mod:`medscope.report` spells a file name.

The attribute names are those of the run-folder layout DESIGN.md describes, so
that one shared layout object can take this one's place unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunLayout:
    """Paths inside one run folder ``path`` (nothing is checked or created).

    >>> layout = RunLayout(Path("results/0001_breastmnist28_resnet18"))
    >>> layout.metrics_json.name, layout.gradcam_dir.name
    ('metrics.json', 'gradcam')
    """

    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    # written by train.py
    @property
    def run_json(self) -> Path:
        return self.path / "run.json"

    @property
    def metrics_json(self) -> Path:
        return self.path / "metrics.json"

    @property
    def history_csv(self) -> Path:
        return self.path / "history.csv"

    @property
    def summary_csv(self) -> Path:
        return self.path / "summary.csv"

    @property
    def training_curves_png(self) -> Path:
        return self.path / "training_curves.png"

    @property
    def confusion_matrix_png(self) -> Path:
        return self.path / "confusion_matrix.png"

    @property
    def sample_predictions_png(self) -> Path:
        return self.path / "sample_predictions.png"

    # one folder per analysis
    @property
    def inference_dir(self) -> Path:
        return self.path / "inference"

    @property
    def complexity_dir(self) -> Path:
        return self.path / "complexity"

    @property
    def gradcam_dir(self) -> Path:
        return self.path / "gradcam"

    @property
    def saliency_dir(self) -> Path:
        return self.path / "saliency"

    @property
    def uncertainty_dir(self) -> Path:
        return self.path / "uncertainty"

    @property
    def robustness_dir(self) -> Path:
        return self.path / "robustness"

    @property
    def calibration_dir(self) -> Path:
        return self.path / "calibration"

    @property
    def export_dir(self) -> Path:
        return self.path / "export"

    # written by report.py
    @property
    def report_html(self) -> Path:
        return self.path / "report.html"

    @property
    def model_card_md(self) -> Path:
        return self.path / "model_card.md"

    @property
    def model_card_json(self) -> Path:
        return self.path / "model_card.json"


# Files the report reads inside the analysis folders, by folder attribute of RunLayout.
ANALYSIS_FILES = {
    "inference_dir": {  # medscope/inference.py
        "calibration_json": "inference_calibration.json",
        "reliability_png": "reliability_diagram.png",
        "confident_errors_png": "confident_errors.png",
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
        "acc_heatmap_png": "robustness_acc_heatmap.png",
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
PAGE_SIZE = 8  # images per 2D page: medscope.explain_plots.heatmap_pages's per_page


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
