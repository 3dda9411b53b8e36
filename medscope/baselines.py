"""The published MedMNIST v2 baselines (test AUC and ACC), as data.

Source: J. Yang, R. Shi, D. Wei, Z. Liu, L. Zhao, B. Ke, H. Pfister and B. Ni,
"MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D biomedical
image classification", Scientific Data 10, 41 (2023),
doi:10.1038/s41597-022-01721-8 (arXiv:2110.14795): Table 3 (the twelve 2D
datasets, seven methods) and Table 4 (the six 3D datasets, eight methods).

The numbers were transcribed from the benchmark tables that the paper's authors
publish on the official project page, https://medmnist.com/ (GitHub
MedMNIST/medmnist.github.io, ``index.html`` and ``v2.html``). Those tables have
not changed since commit 8ff01c1 (2022-04-27, "fix nodulemnist3d", which
replaced the NoduleMNIST3D column after that dataset was corrected), nine months
before the Scientific Data publication; the NoduleMNIST3D numbers of the first
arXiv versions are superseded.
Independent transcriptions of the paper agree cell for cell wherever one exists:
every 2D cell of ResNet-18 (28), ResNet-18 (224), ResNet-50 (224) and the three
AutoML tools; ResNet-50 (28) for eight 2D datasets (not BloodMNIST, OrganCMNIST
or OrganSMNIST, and ChestMNIST only for AUC); and in 3D the ResNet-18+3D and
+ACS rows of OrganMNIST3D and AdrenalMNIST3D, the ResNet-18+3D AUC of
VesselMNIST3D and the ResNet-50+3D AUCs of five datasets. The rest of Table 4
rests on the project page alone.

Every value is the paper's own three-decimal number: the mean over at least
three runs of the test-split AUC and ACC, as ``medmnist.Evaluator`` computes
them (ACC: argmax, positive score > 0.5 for binary tasks, and the mean
per-label accuracy at 0.5 for the multi-label ChestMNIST). The "(224)" 2D
columns are the 28-pixel images upsampled to 224 pixels (nearest neighbour),
not the native 224-pixel MedMNIST+ files; the 3D results are all at 28³.

>>> comparison_text(reference_baseline("breastmnist"))
'paper ResNet-18 (28): AUC .901 / ACC .863'
>>> best_baseline("adrenalmnist3d").method
'ResNet-18+ACS'
"""
from __future__ import annotations

from dataclasses import dataclass

from medscope.errors import UsageError

SOURCE = (
    "Yang J., Shi R., Wei D., Liu Z., Zhao L., Ke B., Pfister H., Ni B. "
    "MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D biomedical "
    "image classification. Scientific Data 10, 41 (2023), "
    "doi:10.1038/s41597-022-01721-8: Table 3 (2D) and Table 4 (3D), test AUC / ACC."
)

METHODS_2D = ("ResNet-18 (28)", "ResNet-18 (224)", "ResNet-50 (28)", "ResNet-50 (224)",
              "auto-sklearn", "AutoKeras", "Google AutoML Vision")
METHODS_3D = ("ResNet-18+2.5D", "ResNet-18+3D", "ResNet-18+ACS", "ResNet-50+2.5D",
              "ResNet-50+3D", "ResNet-50+ACS", "auto-sklearn", "AutoKeras")

# (AUC, ACC) per method, in the order of METHODS_2D / METHODS_3D, copied from the paper.
_TABLE_2D = {
    "pathmnist": ((0.983, 0.907), (0.989, 0.909), (0.990, 0.911), (0.989, 0.892), (0.934, 0.716), (0.959, 0.834), (0.944, 0.728)),
    "chestmnist": ((0.768, 0.947), (0.773, 0.947), (0.769, 0.947), (0.773, 0.948), (0.649, 0.779), (0.742, 0.937), (0.778, 0.948)),
    "dermamnist": ((0.917, 0.735), (0.920, 0.754), (0.913, 0.735), (0.912, 0.731), (0.902, 0.719), (0.915, 0.749), (0.914, 0.768)),
    "octmnist": ((0.943, 0.743), (0.958, 0.763), (0.952, 0.762), (0.958, 0.776), (0.887, 0.601), (0.955, 0.763), (0.963, 0.771)),
    "pneumoniamnist": ((0.944, 0.854), (0.956, 0.864), (0.948, 0.854), (0.962, 0.884), (0.942, 0.855), (0.947, 0.878), (0.991, 0.946)),
    "retinamnist": ((0.717, 0.524), (0.710, 0.493), (0.726, 0.528), (0.716, 0.511), (0.690, 0.515), (0.719, 0.503), (0.750, 0.531)),
    "breastmnist": ((0.901, 0.863), (0.891, 0.833), (0.857, 0.812), (0.866, 0.842), (0.836, 0.803), (0.871, 0.831), (0.919, 0.861)),
    "bloodmnist": ((0.998, 0.958), (0.998, 0.963), (0.997, 0.956), (0.997, 0.950), (0.984, 0.878), (0.998, 0.961), (0.998, 0.966)),
    "tissuemnist": ((0.930, 0.676), (0.933, 0.681), (0.931, 0.680), (0.932, 0.680), (0.828, 0.532), (0.941, 0.703), (0.924, 0.673)),
    "organamnist": ((0.997, 0.935), (0.998, 0.951), (0.997, 0.935), (0.998, 0.947), (0.963, 0.762), (0.994, 0.905), (0.990, 0.886)),
    "organcmnist": ((0.992, 0.900), (0.994, 0.920), (0.992, 0.905), (0.993, 0.911), (0.976, 0.829), (0.990, 0.879), (0.988, 0.877)),
    "organsmnist": ((0.972, 0.782), (0.974, 0.778), (0.972, 0.770), (0.975, 0.785), (0.945, 0.672), (0.974, 0.813), (0.964, 0.749)),
}
_TABLE_3D = {
    "organmnist3d": ((0.977, 0.788), (0.996, 0.907), (0.994, 0.900), (0.974, 0.769), (0.994, 0.883), (0.994, 0.889), (0.977, 0.814), (0.979, 0.804)),
    "nodulemnist3d": ((0.838, 0.835), (0.863, 0.844), (0.873, 0.847), (0.835, 0.848), (0.875, 0.847), (0.886, 0.841), (0.914, 0.874), (0.844, 0.834)),
    "adrenalmnist3d": ((0.718, 0.772), (0.827, 0.721), (0.839, 0.754), (0.732, 0.763), (0.828, 0.745), (0.828, 0.758), (0.828, 0.802), (0.804, 0.705)),
    "fracturemnist3d": ((0.587, 0.451), (0.712, 0.508), (0.714, 0.497), (0.552, 0.397), (0.725, 0.494), (0.750, 0.517), (0.628, 0.453), (0.642, 0.458)),
    "vesselmnist3d": ((0.748, 0.846), (0.874, 0.877), (0.930, 0.928), (0.751, 0.877), (0.907, 0.918), (0.912, 0.858), (0.910, 0.915), (0.773, 0.894)),
    "synapsemnist3d": ((0.634, 0.696), (0.820, 0.745), (0.705, 0.722), (0.669, 0.735), (0.851, 0.795), (0.719, 0.709), (0.631, 0.730), (0.538, 0.724)),
}

#: Every flag with published baselines, in ``medmnist.INFO`` order (2D first).
FLAGS = tuple(_TABLE_2D) + tuple(_TABLE_3D)

_SIZES_2D = {28: "ResNet-18 (28)", 64: "ResNet-18 (28)", 128: "ResNet-18 (224)", 224: "ResNet-18 (224)"}
_SIZES_3D = {28: "ResNet-18+3D", 64: "ResNet-18+3D"}


@dataclass(frozen=True)
class Baseline:
    """One published result: ``method`` on the test split of ``dataset``.

    Attributes
    ----------
    dataset : str
        The MedMNIST flag, e.g. ``"breastmnist"``.
    method : str
        The method as the paper names it, e.g. ``"ResNet-18 (28)"`` or ``"ResNet-18+3D"``.
    auc, acc : float
        Test AUC and accuracy in [0, 1], three decimals, as printed in the paper.
    source : str
        Where the row comes from (paper and table); :data:`SOURCE` is the full citation.
    """

    dataset: str
    method: str
    auc: float
    acc: float
    source: str


def _rows(flag: str) -> list[Baseline]:
    if flag in _TABLE_2D:
        methods, values, table = METHODS_2D, _TABLE_2D[flag], "Table 3"
    elif flag in _TABLE_3D:
        methods, values, table = METHODS_3D, _TABLE_3D[flag], "Table 4"
    else:
        return []
    source = f"MedMNIST v2 (Yang et al., Scientific Data 2023), {table}"
    return [Baseline(flag, method, auc, acc, source) for method, (auc, acc) in zip(methods, values)]


def baselines_for(flag: str) -> list[Baseline]:
    """All published methods for ``flag``, in the paper's table order.

    Parameters
    ----------
    flag : str
        A MedMNIST flag such as ``"pneumoniamnist"``.

    Returns
    -------
    list of Baseline
        Seven rows for a 2D flag, eight for a 3D flag, an empty list for a flag
        the paper does not cover.

    >>> [b.method for b in baselines_for("adrenalmnist3d")][:3]
    ['ResNet-18+2.5D', 'ResNet-18+3D', 'ResNet-18+ACS']
    >>> baselines_for("mnist")
    []
    """
    return _rows(flag)


def reference_baseline(flag: str, size: int = 28, model: str = "resnet18") -> Baseline | None:
    """The published row a run of ``model`` on ``flag`` at ``size`` is compared with.

    The reference is always the paper's ResNet-18 trained with the official
    recipe, at the paper's input size nearest to the run's:

    * 2D, size 28 or 64: ``ResNet-18 (28)``; size 128 or 224: ``ResNet-18 (224)``
      (the paper has no 64 or 128 columns; its 224 column is upsampled 28-pixel data).
    * 3D, size 28 or 64: ``ResNet-18+3D`` (the paper's 3D results are at 28³ only).

    The model does not change the row: a ``resnet18`` run is compared like for
    like, and any other model (e.g. the small ``cnn``) is compared with the same
    ResNet-18 row, which answers "how far is this from the paper's standard
    baseline?". The paper's best method is :func:`best_baseline`.

    Parameters
    ----------
    flag : str
        A MedMNIST flag.
    size : int
        Input size of the run in pixels per side: 28, 64, 128 or 224 for 2D; 28 or 64 for 3D.
    model : str
        Name of the model that was trained (any non-empty name).

    Returns
    -------
    Baseline or None
        None when the paper has no results for ``flag``.

    Raises
    ------
    UsageError
        If ``size`` is not a MedMNIST size for the flag's dimension, or ``model`` is empty.

    >>> reference_baseline("pneumoniamnist", size=224).method
    'ResNet-18 (224)'
    >>> reference_baseline("adrenalmnist3d", size=64, model="cnn").method
    'ResNet-18+3D'
    >>> reference_baseline("mnist") is None
    True
    """
    if not isinstance(model, str) or not model:
        raise UsageError(f"model must be a non-empty name, got {model!r}")
    if flag not in FLAGS:
        return None
    sizes = _SIZES_2D if flag in _TABLE_2D else _SIZES_3D
    if isinstance(size, bool) or size not in sizes:
        raise UsageError(f"size {size!r} is not a MedMNIST size for {flag}; "
                         f"use one of {', '.join(str(s) for s in sizes)}")
    return next(b for b in _rows(flag) if b.method == sizes[size])


def best_baseline(flag: str) -> Baseline:
    """The paper's best method for ``flag``: highest AUC, ties broken by higher ACC.

    Remaining ties keep the paper's table order (none occur in Tables 3 and 4).

    Raises
    ------
    UsageError
        If the paper has no results for ``flag``.

    >>> b = best_baseline("breastmnist"); (b.method, b.auc, b.acc)
    ('Google AutoML Vision', 0.919, 0.861)
    >>> best_baseline("bloodmnist").method   # four methods share AUC .998; ACC .966 wins
    'Google AutoML Vision'
    """
    rows = _rows(flag)
    if not rows:
        raise UsageError(f"the MedMNIST v2 paper has no results for {flag!r}; "
                         f"known flags: {', '.join(FLAGS)}")
    # max() keeps the first of equal keys, i.e. the table order.
    return max(rows, key=lambda b: (b.auc, b.acc))


def _paper_number(value: float) -> str:
    """Three decimals without the leading zero, as the paper's tables print them.

    >>> _paper_number(0.9), _paper_number(1.0)
    ('.900', '1.000')
    """
    text = f"{value:.3f}"
    return text[1:] if text.startswith("0.") else text


def comparison_text(baseline: Baseline) -> str:
    """One line naming the published row, in the paper's three-decimal style.

    >>> comparison_text(best_baseline("pneumoniamnist"))
    'paper Google AutoML Vision: AUC .991 / ACC .946'
    """
    return f"paper {baseline.method}: AUC {_paper_number(baseline.auc)} / ACC {_paper_number(baseline.acc)}"
