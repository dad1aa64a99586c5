"""Defaults that the command line states (its option defaults and the numbers in its help) and the library uses.

They live here, apart from the code that applies them, so that `medvol --help` reads them without importing torch
or MONAI; the modules that apply them import them from here (nnU-Net keeps such numbers in one configuration module
too). Defaults that the CLI does not mention stay with their code.
"""

SEED = 0  # of every command that draws random numbers (splits, training, sampling, evaluation)

# network width (channels at full resolution) by dimensionality, and the training-set sizes from which it doubles:
# a few hundred 2D images get a 2D DCGAN of about 3 M parameters at 64^2 (docs/benchmarks.md), not the published 38 M
BASE_WIDTH = {2: 32, 3: 16}
WIDTH_DOUBLING_DATASET_SIZES = (2000, 20000)

# evaluation during training without --evaluate-every: this many times in runs of at least that many iterations
AUTO_EVALUATIONS = 10
AUTO_EVALUATION_MIN_ITERATIONS = 2000

# the utility study of `medvol evaluate`
UTILITY_SEEDS = 3
SYNTHETIC_RATIO = 1.0  # synthetic samples per real sample in the mixed arms
CLASSIFIER_EPOCHS = 10  # the classifier recipe's epochs ...
CLASSIFIER_MIN_STEPS = 500  # ... and at least this many optimiser steps, so that small training sets converge
