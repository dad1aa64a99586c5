"""The evaluation's feature space, without downloads.

`build_feature_extractor`: a user checkpoint (TorchScript, `torch.export` program or medvol classifier), or a
classifier trained on the labelled real training split (`medvol.evaluation.classifier.train_classifier`), or an
autoencoder's encoder when the data has no labels; trained networks are cached in the output folder and reused when the
data and settings are unchanged.

Images are float32 tensors `[N, 1, *size]` in [-1, 1]; features come back as float64 numpy arrays `[N, F]`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from medvol.errors import MedvolInputError
from medvol.devices import default_device
from medvol.evaluation.classifier import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CHANNELS,
    DEFAULT_LR,
    DEFAULT_WEIGHT_DECAY,
    _learning_rate_factor,
    check_images,
    cpu_threads,
    recipe_epochs,
    seeded,
    train_classifier,
)
from medvol.networks.autoencoders import ConvAutoencoder
from medvol.networks.classifiers import ResNetClassifier

DEFAULT_AUTOENCODER_EPOCHS = 15
AUTOENCODER_CHANNELS = (16, 32, 64)
CLASSIFIER_FORMAT = "medvol-classifier"
AUTOENCODER_FORMAT = "medvol-autoencoder"
CACHE_WEIGHTS = "feature_extractor.pt"
CACHE_INFO = "feature_extractor.json"
CACHE_VERSION = 1


class FeatureExtractor:
    """Maps images `[N, 1, *size]` in [-1, 1] to features `[N, F]` (float64 numpy), in batches, without gradients.

    Attributes:
        module: the network.
        spatial_dims: 2 or 3.
        kind: "classifier", "autoencoder" or "user".
        description: how the extractor was made, in words, for the report.
        feature_size: F.
        classifier: the `ResNetClassifier` when `kind` is "classifier" (usable for recognisability), else None.
        info: what was recorded about its making (settings, training accuracy, cache use).
    """

    def __init__(
        self,
        module: nn.Module,
        spatial_dims: int,
        kind: str,
        description: str,
        embed: Callable[[nn.Module, torch.Tensor], torch.Tensor],
        device: str | torch.device | None = None,
        batch_size: int = 64,
        info: dict[str, Any] | None = None,
    ) -> None:
        self.device = default_device(device)
        self.module = module.to(self.device)
        try:
            self.module.eval()
        except NotImplementedError:  # a torch.export program keeps the mode it was exported in
            pass
        self.spatial_dims = spatial_dims
        self.kind = kind
        self.description = description
        self.batch_size = batch_size
        self.info = dict(info or {})
        self.classifier = module if isinstance(module, ResNetClassifier) else None
        self._embed = embed
        self.feature_size: int | None = None

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        images = check_images(images)
        if images.ndim - 2 != self.spatial_dims:
            raise ValueError(
                f"this feature extractor takes {self.spatial_dims}D images, got shape {tuple(images.shape)}"
            )
        parts = [
            _pooled(self._embed(self.module, images[i : i + self.batch_size].to(self.device))).double().cpu()
            for i in range(0, images.shape[0], self.batch_size)
        ]
        features = torch.cat(parts).numpy() if parts else np.zeros((0, self.feature_size or 0))
        self.feature_size = features.shape[1]
        return features


def _pooled(output: torch.Tensor) -> torch.Tensor:
    """`[N, F]` from `[N, F]` or `[N, F, *spatial]` (mean over the spatial axes)."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    if output.ndim < 2:
        raise ValueError(f"feature network returned shape {tuple(output.shape)}; expected [N, F] or [N, F, ...]")
    return output.flatten(2).mean(2) if output.ndim > 2 else output


def _classifier_features(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return module.features(x)


def _padding(size: Sequence[int], multiple: int) -> list[int]:
    """F.pad argument that pads each axis at its end up to a multiple of `multiple` (last axis first)."""
    return [p for s in reversed(size) for p in (0, (-s) % multiple)]


class AutoencoderEncoder(nn.Module):
    """The convolutional encoder of a `ConvAutoencoder` with its coarsest feature map average-pooled:
    `[B, channels[-1]]`. Images are padded at their far ends (edge values repeated) to a size the autoencoder takes."""

    def __init__(self, autoencoder: ConvAutoencoder, multiple: int) -> None:
        super().__init__()
        self.autoencoder = autoencoder
        self.multiple = multiple

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        padding = _padding(x.shape[2:], self.multiple)
        return F.pad(x, padding, mode="replicate") if any(padding) else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        convolutional = self.autoencoder.encoder[:-1]  # the encoder ends with Flatten
        return convolutional(self.pad(x)).flatten(2).mean(2)


def _autoencoder(spatial_dims: int, image_size: Sequence[int]) -> tuple[ConvAutoencoder, int]:
    multiple = 2 ** len(AUTOENCODER_CHANNELS)
    padded = [s + (-s) % multiple for s in image_size]
    model = ConvAutoencoder(
        spatial_dims, padded, channels=AUTOENCODER_CHANNELS, latent_size=64, output_activation="tanh"
    )
    return model, multiple


def train_autoencoder_encoder(
    images: torch.Tensor,
    *,
    seed: int = 0,
    epochs: int = DEFAULT_AUTOENCODER_EPOCHS,
    device: str | torch.device | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lr: float = DEFAULT_LR,
    progress: bool = False,
    threads: int | None = 1,
) -> tuple[AutoencoderEncoder, dict[str, Any]]:
    """Train a small `ConvAutoencoder` (widths 16, 32, 64; tanh output; mean squared error) on unlabelled images, seeded
    and threaded like `train_classifier`; returns its pooled encoder and `{"reconstruction_mse": last epoch's mean
    loss}`."""
    images = check_images(images)
    device = default_device(device)
    count = images.shape[0]
    if count < 2:
        raise MedvolInputError(None, f"an autoencoder needs at least 2 training images, got {count}")
    order_generator = torch.Generator().manual_seed(int(seed))
    total_steps = math.ceil(count / batch_size) * epochs
    loss_sum = 0.0
    with seeded(int(seed), device), cpu_threads(threads, device):
        autoencoder, multiple = _autoencoder(images.ndim - 2, images.shape[2:])
        encoder = AutoencoderEncoder(autoencoder, multiple).to(device)
        optimizer = torch.optim.AdamW(autoencoder.parameters(), lr=lr, weight_decay=DEFAULT_WEIGHT_DECAY)
        step = 0
        for _ in tqdm(range(epochs), desc="autoencoder features", leave=False, disable=not progress, unit="epoch"):
            autoencoder.train()
            loss_sum = 0.0
            order = torch.randperm(count, generator=order_generator)
            for start in range(0, count, batch_size):
                batch = encoder.pad(images[order[start : start + batch_size]].to(device))
                for group in optimizer.param_groups:
                    group["lr"] = lr * _learning_rate_factor("cosine", step, total_steps)
                loss = F.mse_loss(autoencoder(batch), batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                loss_sum += float(loss.detach()) * batch.shape[0]
    encoder.eval()
    return encoder, {"reconstruction_mse": loss_sum / count}


def save_checkpoint(module: nn.Module, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Save a `ResNetClassifier` or `AutoencoderEncoder` as `{format, config, state_dict, ...}` (loadable with
    `torch.load(weights_only=True)`), atomically (write, then rename)."""
    if isinstance(module, ResNetClassifier):
        payload = {"format": CLASSIFIER_FORMAT, "config": module.config()}
    elif isinstance(module, AutoencoderEncoder):
        autoencoder = module.autoencoder
        payload = {
            "format": AUTOENCODER_FORMAT,
            "config": {
                "spatial_dims": autoencoder.spatial_dims,
                "image_size": list(autoencoder.image_size),
                "multiple": module.multiple,
            },
        }
    else:
        raise TypeError(f"cannot save a {type(module).__name__} as a medvol feature checkpoint")
    payload.update(extra or {})
    payload["state_dict"] = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    torch.save(payload, temporary)
    os.replace(temporary, path)
    return path


def load_checkpoint(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network saved by `save_checkpoint`; returns `(module, payload without the weights)`."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a broken file
        raise MedvolInputError(path, f"not a readable checkpoint ({type(err).__name__}: {_first_line(err)})") from None
    if not isinstance(payload, dict) or payload.get("format") not in (CLASSIFIER_FORMAT, AUTOENCODER_FORMAT):
        raise MedvolInputError(
            path,
            "not a medvol feature checkpoint (expected a TorchScript file, a torch.export program (.pt2), or a "
            f"'{CLASSIFIER_FORMAT}' checkpoint saved by medvol)",
        )
    config = payload.get("config") or {}
    try:
        if payload["format"] == CLASSIFIER_FORMAT:
            module: nn.Module = ResNetClassifier(**config)
        else:
            autoencoder, _ = _autoencoder(config["spatial_dims"], config["image_size"])
            module = AutoencoderEncoder(autoencoder, config["multiple"])
        module.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise MedvolInputError(path, f"damaged {payload['format']} checkpoint ({_first_line(err)})") from None
    return module.eval(), {k: v for k, v in payload.items() if k != "state_dict"}


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _archive_kind(path: Path) -> str:
    """"torchscript", "export" or "checkpoint" from the entries of a PyTorch zip archive."""
    if not zipfile.is_zipfile(path):
        return "checkpoint"
    with zipfile.ZipFile(path) as archive:
        names = [name.split("/", 1)[-1] for name in archive.namelist()]
    if "archive_format" in names:
        return "export"
    if "constants.pkl" in names:
        return "torchscript"
    return "checkpoint"


def _load_user_module(path: Path, device: torch.device) -> nn.Module:
    kind = _archive_kind(path)
    try:
        if kind == "torchscript":
            with warnings.catch_warnings():
                warnings.filterwarnings(
                    "ignore", message=r".*torch\.jit\.load.* is deprecated", category=DeprecationWarning
                )
                return torch.jit.load(str(path), map_location=device)
        if kind == "export":
            return torch.export.load(str(path)).module()
    except Exception as err:  # noqa: BLE001 - any loading failure is a broken user file
        problem = f"not a loadable {kind} model ({type(err).__name__}: {_first_line(err)})"
        raise MedvolInputError(path, problem) from None
    module, _ = load_checkpoint(path)
    return module


def load_feature_extractor(
    path: str | os.PathLike, example_images: torch.Tensor, device: str | torch.device | None = None
) -> FeatureExtractor:
    """A feature extractor from a user file: a TorchScript model, a `torch.export` program (.pt2), or a medvol
    classifier/autoencoder checkpoint. The model must map `[N, 1, *size]` images in [-1, 1] to `[N, F]` or `[N, F, ...]`
    (averaged over the trailing axes); it is tried on `example_images` (two suffice) before use.

    Raises:
        MedvolInputError: missing, unreadable or damaged file, or a model that does not take these images.
    """
    path = Path(path)
    example_images = check_images(example_images)
    spatial_dims = example_images.ndim - 2
    if not path.is_file():
        raise MedvolInputError(path, "feature network file does not exist")
    device = default_device(device)
    module = _load_user_module(path, device)
    if isinstance(module, ResNetClassifier):
        kind, embed = "classifier", _classifier_features
    elif isinstance(module, AutoencoderEncoder):
        kind, embed = "autoencoder", lambda m, x: m(x)
    else:
        kind, embed = "user", lambda m, x: m(x)
    if getattr(module, "spatial_dims", spatial_dims) != spatial_dims:
        raise MedvolInputError(path, f"is a {module.spatial_dims}D network but the data is {spatial_dims}D")
    extractor = FeatureExtractor(
        module,
        spatial_dims,
        kind,
        f"{kind} network loaded from {path} (features: its output, averaged over any spatial axes)",
        embed,
        device=device,
        info={"source": str(path), "kind": kind},
    )
    probe = example_images[:2]
    try:
        features = extractor(probe)
    except Exception as err:  # noqa: BLE001 - whatever the user network raises means it does not fit the data
        shape = ", ".join(map(str, probe.shape[1:]))
        raise MedvolInputError(
            path, f"does not take this data's {spatial_dims}D images [N, {shape}] ({_first_line(err)})"
        ) from None
    if features.shape[0] != probe.shape[0] or not np.all(np.isfinite(features)):
        raise MedvolInputError(
            path, f"returned {features.shape[0]} feature rows (or non-finite values) for {probe.shape[0]} images"
        )
    extractor.info["feature_size"] = extractor.feature_size
    return extractor


def settings_hash(images: torch.Tensor, labels: np.ndarray | None, settings: dict[str, Any]) -> str:
    """SHA-256 of the training images, labels and settings: the cache key of a trained feature network."""
    digest = hashlib.sha256()
    digest.update(json.dumps(settings, sort_keys=True).encode())
    digest.update(str(tuple(images.shape)).encode())
    digest.update(images.detach().cpu().contiguous().numpy().tobytes())
    if labels is not None:
        digest.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return digest.hexdigest()


def _cached_network(out_dir: Path, key: str) -> tuple[nn.Module | None, dict[str, Any] | None]:
    """The feature network cached in `out_dir` under the settings hash `key` and its recorded info, or `(None, None)`
    when absent, made with other settings, or damaged (then it is trained again)."""
    weights_path, info_path = out_dir / CACHE_WEIGHTS, out_dir / CACHE_INFO
    if not (weights_path.is_file() and info_path.is_file()):
        return None, None
    try:
        cached = json.loads(info_path.read_text())
    except (OSError, ValueError):
        cached = {}
    if cached.get("settings_hash") != key:
        return None, None
    try:
        module, _ = load_checkpoint(weights_path)
    except MedvolInputError:
        return None, None
    return module, {**cached, "reused_cache": True}


def _train_feature_network(train_images: torch.Tensor, labels: np.ndarray | None, num_classes: int,
                           settings: dict[str, Any], key: str, out_dir: Path, device: torch.device,
                           progress: bool) -> tuple[nn.Module, dict[str, Any]]:
    """Train the feature network `settings` describe and save it (weights and info) in `out_dir`."""
    seed, epochs = settings["seed"], settings["epochs"]
    if settings["kind"] == "classifier":
        module = train_classifier(
            train_images, labels, num_classes, seed=seed, epochs=epochs, device=device, progress=progress,
            description="feature classifier",
        )
        last = module.history[-1]
        training = {"training_accuracy": last["train_accuracy"], "training_loss": last["loss"]}
    else:
        module, training = train_autoencoder_encoder(train_images, seed=seed, epochs=epochs, device=device,
                                                     progress=progress)
    info = {**settings, "settings_hash": key, "training_images": train_images.shape[0], **training}
    save_checkpoint(module, out_dir / CACHE_WEIGHTS, {"settings_hash": key})
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / CACHE_INFO).write_text(json.dumps(info, indent=2) + "\n")
    return module, {**info, "reused_cache": False}


def _trained_description(kind: str, epochs: int, seed: int, count: int, info: dict[str, Any]) -> str:
    """How a feature network trained here was made, in words."""
    if kind == "classifier":
        return (
            f"pooled penultimate layer ({DEFAULT_CHANNELS[-1]} features) of a ResNetClassifier (widths "
            f"{list(DEFAULT_CHANNELS)}) trained for {epochs} epochs on the {count} labelled real training images, seed "
            f"{seed}; training accuracy {info.get('training_accuracy', float('nan')):.3f}"
        )
    return (
        f"average-pooled encoder output ({AUTOENCODER_CHANNELS[-1]} features) of a convolutional autoencoder "
        f"trained for {epochs} epochs on the {count} real training images (unlabelled), seed {seed}; "
        f"reconstruction MSE {info.get('reconstruction_mse', float('nan')):.4f}"
    )


def build_feature_extractor(
    train_images: torch.Tensor,
    train_labels: Any,
    num_classes: int,
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    epochs: int | None = None,
    features_path: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> FeatureExtractor:
    """The evaluation's feature extractor.

    With `features_path`, the user's network (see `load_feature_extractor`). Otherwise a network trained on the real
    training split: a `ResNetClassifier` (`train_classifier`, features = its pooled penultimate layer) when every
    training image has a label and there are at least 2 classes, else a `ConvAutoencoder` whose pooled encoder gives the
    features. The trained network is saved as `out_dir/feature_extractor.pt` with `out_dir/feature_extractor.json`
    (settings hash, kind, epochs, training accuracy or reconstruction error); a later call with equal images, labels
    and settings loads it instead of training again.

    Args:
        train_images: real training images `[N, 1, *size]` in [-1, 1].
        train_labels: class index per image (-1 = unlabelled), or None.
        num_classes: number of classes (0 or 1 for unlabelled data).
        out_dir: folder of the cache.
        seed: training seed.
        epochs: training epochs (default `recipe_epochs` for the classifier, `DEFAULT_AUTOENCODER_EPOCHS` for the
            autoencoder).
        features_path: a user TorchScript / torch.export / medvol checkpoint file.
        device: torch device (default: CUDA when available).
        progress: show progress bars.
    """
    train_images = check_images(train_images, "real training images")
    device = default_device(device)
    if features_path is not None:
        return load_feature_extractor(features_path, train_images, device)
    count = train_images.shape[0]
    labels = None if train_labels is None else np.asarray(train_labels, dtype=np.int64).reshape(-1)
    labelled = labels is not None and num_classes >= 2 and labels.shape[0] == count and bool(np.all(labels >= 0))
    kind = "classifier" if labelled else "autoencoder"
    settings = {
        "cache_version": CACHE_VERSION,
        "kind": kind,
        "seed": int(seed),
        "epochs": recipe_epochs(count, epochs) if labelled else int(epochs or DEFAULT_AUTOENCODER_EPOCHS),
        "num_classes": int(num_classes) if labelled else 0,
        "channels": list(DEFAULT_CHANNELS if labelled else AUTOENCODER_CHANNELS),
        "batch_size": DEFAULT_BATCH_SIZE,
        "lr": DEFAULT_LR,
    }
    key = settings_hash(train_images, labels if labelled else None, settings)
    out_dir = Path(out_dir)
    module, info = _cached_network(out_dir, key)
    if module is None:
        module, info = _train_feature_network(train_images, labels, num_classes, settings, key, out_dir, device,
                                              progress)
    description = _trained_description(kind, settings["epochs"], seed, count, info)
    embed = _classifier_features if labelled else (lambda m, x: m(x))
    return FeatureExtractor(module, train_images.ndim - 2, kind, description, embed, device=device, info=info)
