"""The ranges of medscope's numeric settings, in one place.

A flag's value is refused (one line, exit 2) before any work when it lies
outside its range: the scripts' flags take these bounds through
:func:`medscope.app.cli.int_in_range` / :func:`~medscope.app.cli.float_in_range`,
and :class:`medscope.train.config.TrainConfig` checks a config read back from
run.json against the same numbers. Each bound is far above any useful value and
below what breaks: numpy's seed range, the memory a count of arrays takes, the
threads or processes a machine can start.
"""
from __future__ import annotations

SEED_MAX = 2**32 - 1  # numpy.random.seed and torch's generators accept 0 .. 2**32 - 1
WORKERS_MAX = 64  # background loader processes or analysis threads: more only multiplies the memory
THREADS_MAX = 1024  # intra-op threads (libgomp aborts the process when it cannot start them)
BATCH_SIZE_MAX = 65_536  # images per batch
IMAGES_MAX = 10_000_000  # images of a split (a subset, a test subset, images explained); MedMNIST's largest has 165k
EPOCHS_MAX = 10_000  # also bounds --warmup-epochs and --patience
LR_MAX = 10.0  # peak learning rate, in (0, LR_MAX]
WEIGHT_DECAY_MAX = 10.0
MIXUP_MAX = 100.0  # Beta(alpha, alpha): at 100 every mix is within a few percent of half and half
CLIP_GRAD_MAX = 1e6
DIST_TIMEOUT_MAX = 7 * 24 * 3600.0  # seconds a torchrun process waits for the others: a week
RESAMPLES_MAX = 100_000  # bootstrap resamples: every metric keeps one value per resample
BINS_MAX = 1_000  # confidence bins of an ECE or reliability diagram
HISTOGRAM_BINS_MAX = 1_000_000  # bins of the LMC weight histogram
PASSES_MAX = 1_000  # MC-dropout passes: passes x images x classes probabilities are kept
SAMPLES_MAX = 1_000  # SmoothGrad noisy copies of each image
STEPS_MAX = 1_000  # steps of a deletion/insertion curve
TSNE_POINTS_MAX = 100_000
FIGURES_MAX = 10_000  # figures one command draws
EXAMPLES_MAX = 100  # images drawn at every severity of a robustness sweep
CALIBRATION_IMAGES_MAX = 10_000  # static INT8 calibration images, all held in memory
TIMED_CALLS_MAX = 100_000  # timed (or warm-up) calls of a benchmark
FIGURE_WIDTH_MAX = 20_000  # pixels of an embedded figure
SAMPEN_M_MAX = 10  # Sample Entropy embedding dimension
R_FACTOR_MAX = 100.0  # Sample Entropy tolerance, in standard deviations
NOISE_MAX = 10.0  # SmoothGrad sigma, as a fraction of the input range
