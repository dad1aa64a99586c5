"""The evaluation of synthetic data (`medvol evaluate`), built on the pure computations of `medvol.metrics`.

- `classifier`: the one classifier recipe (`train_classifier`) of the feature extractor, the utility arms,
  recognisability and the real-vs-synthetic filter;
- `features`: the feature space without downloads (a classifier trained on the real training split, an autoencoder
  encoder for unlabelled data, or the user's network), cached in the output folder;
- `utility`: classifiers trained on real / augmented / synthetic / mixed data with paired seeds (the utility study),
  recognisability, the real-vs-synthetic filter;
- `data`: the real splits and the synthetic set through the same preprocessing (`load_real`, `load_synthetic`);
- `pipeline`: `evaluate` as named stages (load, features, fidelity, diversity, coherence, privacy, recognisability,
  utility, filtering, report) and `run_datalist`, the real datalist of a training run;
- `methods`: how each number was computed, in words (metrics.json ``methods``);
- `verdict`: the verdict on the samples that opens report.html;
- `keys`: the names of metrics.json;
- `reconstruction`: `medvol evaluate --reconstruct`, an autoencoder run on the held-out images.
"""

from medvol.evaluation.classifier import train_classifier
from medvol.evaluation.data import ImageSet, RealData, SyntheticData, load_real, load_synthetic
from medvol.evaluation.features import FeatureExtractor, build_feature_extractor, load_feature_extractor
from medvol.evaluation.pipeline import evaluate, run_datalist
from medvol.evaluation.reconstruction import evaluate_reconstruction
from medvol.evaluation.utility import ARMS, realness_filter, recognisability, utility_study

__all__ = [
    "train_classifier",
    "FeatureExtractor",
    "build_feature_extractor",
    "load_feature_extractor",
    "ARMS",
    "utility_study",
    "recognisability",
    "realness_filter",
    "ImageSet",
    "RealData",
    "SyntheticData",
    "load_real",
    "load_synthetic",
    "evaluate",
    "run_datalist",
    "evaluate_reconstruction",
]
