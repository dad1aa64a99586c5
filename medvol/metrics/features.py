"""The evaluation's feature space and its one classifier recipe.

- `train_classifier`: the classifier recipe used everywhere in the evaluation (feature extractor, utility arms,
  recognisability, real-vs-synthetic filter): a `ResNetClassifier`, AdamW, cosine learning rate, a fixed number of
  epochs (no early stopping, no epoch picked on test data), seeded initialisation, order and augmentation.
- `build_feature_extractor`: a user checkpoint (TorchScript, `torch.export` program or medvol classifier), or a
  classifier trained on the labelled real training split, or an autoencoder's encoder when the data has no labels;
  trained networks are cached in the output folder and reused when the data and settings are unchanged.

Images are float32 tensors `[N, 1, *size]` in [-1, 1]; features come back as float64 numpy arrays `[N, F]`.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import warnings
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.utils import convert_to_tensor
from torch import nn
from tqdm.auto import tqdm

from medvol.errors import MedvolInputError
from medvol.networks.autoencoders import ConvAutoencoder
from medvol.networks.classifiers import ResNetClassifier, stem_stride_for
from medvol.transforms.augment import classical_augmentation

DEFAULT_CHANNELS = (16, 32, 64)
# MedNIST 64^2 (1800 training images): every utility arm's test accuracy is at its final level (+-0.2 points) by
# epoch 5 of 10 for 3 seeds; the 5 arms x 3 seeds plus the feature network take about 11 min of one CPU core.
DEFAULT_EPOCHS = 10
DEFAULT_BATCH_SIZE = 32
DEFAULT_LR = 5e-3
DEFAULT_WEIGHT_DECAY = 1e-4
DEFAULT_AUTOENCODER_EPOCHS = 15
# With few training images 10 epochs are a few dozen steps: the default trains at least this many steps, so that a
# classifier of a low-data regime converges instead of stopping early (explicit epochs are honoured as given)
DEFAULT_MIN_STEPS = 500
AUTOENCODER_CHANNELS = (16, 32, 64)
SCHEDULES = ("cosine", "step", "constant")
CLASSIFIER_FORMAT = "medvol-classifier"
AUTOENCODER_FORMAT = "medvol-autoencoder"
CACHE_WEIGHTS = "feature_extractor.pt"
CACHE_INFO = "feature_extractor.json"
CACHE_VERSION = 1


def default_device(device: str | torch.device | None = None) -> torch.device:
    """`device`, or CUDA when available, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run a block under `torch.manual_seed(seed)` without touching the caller's global random state."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def cpu_threads(threads: int | None, device: torch.device) -> Iterator[None]:
    """Run a block with `threads` CPU threads (None or a GPU device: unchanged), restoring the setting afterwards."""
    previous = torch.get_num_threads()
    change = threads is not None and device.type == "cpu" and threads != previous
    if change:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if change:
            torch.set_num_threads(previous)


def check_images(images: torch.Tensor, name: str = "images") -> torch.Tensor:
    """`images` as a plain float32 tensor `[N, 1, *size]` with 2 or 3 spatial axes (MONAI metadata dropped)."""
    images = convert_to_tensor(images, track_meta=False)
    if images.ndim not in (4, 5) or images.shape[1] != 1:
        raise ValueError(f"{name} must be a tensor [N, 1, x, y] or [N, 1, x, y, z], got shape {tuple(images.shape)}")
    return images.float()


def check_labels(labels: Any, count: int, num_classes: int, name: str = "labels") -> np.ndarray:
    """`labels` as an int64 array of `count` class indices in [0, num_classes); a user error otherwise."""
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if labels.shape[0] != count:
        raise ValueError(f"{name}: {labels.shape[0]} labels for {count} images")
    if count and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)][0]
        problem = "unlabelled samples (label -1)" if bad < 0 else f"label {bad}, but only {num_classes} classes"
        raise MedvolInputError(None, f"{name} contain {problem}: a classifier needs a class for every sample")
    return labels


def _augment_batch(batch: torch.Tensor, mask: torch.Tensor, transform: Callable) -> torch.Tensor:
    if not bool(mask.any()):
        return batch
    out = batch.clone()
    # per-sample MONAI transforms of small images: 1.6 ms on one thread, 9.8 ms on two (64^2, shared 2-core machine)
    with cpu_threads(1, torch.device("cpu")):
        for i in torch.nonzero(mask).flatten().tolist():
            sample = transform({"image": batch[i].cpu()})["image"]
            out[i] = convert_to_tensor(sample, track_meta=False).to(batch.device)
    return out


def _learning_rate_factor(schedule: str, step: int, total: int) -> float:
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * step / max(total, 1)))
    if schedule == "step":
        return 0.1 ** (int(step >= 0.5 * total) + int(step >= 0.75 * total))
    return 1.0


@torch.no_grad()
def recompute_batch_norm(
    module: nn.Module,
    images: torch.Tensor,
    batch_size: int = 128,
    transform_batch: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> None:
    """Replace the running statistics of every batch-norm layer by their average over `images` (one pass in batches;
    "precise BN"). After a short training the running averages still lag the weights, which costs test accuracy.

    Args:
        module: network to update in place.
        images: the training images.
        batch_size: most images per forward pass (batches of near-equal size in a fixed random order).
        transform_batch: `(batch, indices) -> batch`, the augmentation of training, so that the statistics are those of
            the data the network was trained on.
    """
    layers = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not layers:
        return
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average over the batches of this pass
    device = next(module.parameters()).device
    was_training = module.training
    module.train()
    # batches in a random order: in a class-sorted order the mean of the within-batch variances would miss the
    # variance between classes
    order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(0))
    for index in torch.tensor_split(order, math.ceil(images.shape[0] / batch_size)):
        batch = images[index] if transform_batch is None else transform_batch(images[index], index)
        module(batch.to(device))
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum
    module.train(was_training)


@torch.inference_mode()
def predict_probabilities(
    classifier: nn.Module, images: torch.Tensor, batch_size: int = 128, device: str | torch.device | None = None
) -> np.ndarray:
    """Softmax class probabilities `[N, num_classes]` (float64) of `classifier` in evaluation mode."""
    images = check_images(images)
    device = default_device(device) if device is not None else next(classifier.parameters()).device
    was_training = classifier.training
    classifier.eval().to(device)
    outputs = [
        torch.softmax(classifier(images[i : i + batch_size].to(device)).double(), dim=1).cpu()
        for i in range(0, images.shape[0], batch_size)
    ]
    classifier.train(was_training)
    if not outputs:
        return np.zeros((0, getattr(classifier, "num_classes", 0)), dtype=np.float64)
    return torch.cat(outputs).numpy()


def recipe_epochs(count: int, epochs: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE) -> int:
    """Epochs of the classifier recipe for `count` training images: `epochs` when given, else `DEFAULT_EPOCHS` and at
    least `DEFAULT_MIN_STEPS` optimiser steps (180 images: 84 epochs; 1800 images: 10)."""
    if epochs is not None:
        return int(epochs)
    return max(DEFAULT_EPOCHS, math.ceil(DEFAULT_MIN_STEPS / max(1, math.ceil(count / batch_size))))


def recipe_steps(count: int, epochs: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE) -> int:
    """Optimiser steps of the classifier recipe for `count` training images: `recipe_epochs` times the batches per
    epoch (180 images: 504; 1800 images: 570)."""
    return recipe_epochs(count, epochs, batch_size) * math.ceil(count / batch_size)


def train_classifier(
    images: torch.Tensor,
    labels: Any,
    num_classes: int,
    seed: int = 0,
    epochs: int | None = None,
    augment: bool | Sequence[bool] | np.ndarray = False,
    device: str | torch.device | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lr: float = DEFAULT_LR,
    weight_decay: float = DEFAULT_WEIGHT_DECAY,
    schedule: str = "cosine",
    class_weighted: bool = True,
    channels: Sequence[int] = DEFAULT_CHANNELS,
    monitor: tuple[torch.Tensor, Any] | None = None,
    progress: bool = False,
    description: str = "classifier",
    threads: int | None = 1,
    steps: int | None = None,
    initial: nn.Module | None = None,
) -> ResNetClassifier:
    """Train a `ResNetClassifier`: the one classifier recipe of the evaluation.

    Recipe: a `ResNetClassifier` of widths `channels` whose stem halves images of 32 or more per axis
    (`stem_stride_for`), AdamW (`lr`, `weight_decay`), mini-batches of at most `batch_size` (near-equal sizes) in a
    seeded random order each epoch, the learning rate annealed per step (cosine to 0 by default), cross-entropy
    weighted by inverse class frequency when `class_weighted` (a no-op on balanced data; keeps a minority class from
    being ignored), a fixed number of `epochs` and the weights of the last epoch, whose batch-norm statistics are then
    recomputed in one pass over the training images, augmented as in training (`recompute_batch_norm`). Seed `s`
    fixes the initialisation, the order and the augmentation draws, so two calls with equal data and seed give equal
    networks (on the CPU), and different training sets with equal seed start from the same initial weights. The
    caller's global random state is left untouched.

    Args:
        images: training images `[N, 1, *size]` in [-1, 1].
        labels: class index per image, in [0, num_classes).
        num_classes: number of classes.
        seed: random seed.
        epochs: passes over the data (default: `recipe_epochs`, 10 epochs and at least 500 steps).
        augment: classical augmentation (`medvol.transforms.augment.classical_augmentation`, drawn anew each time
            a sample is seen): True for every sample, False for none, or a boolean mask of the samples to augment.
        device: torch device (default: CUDA when available).
        batch_size: mini-batch size.
        lr: peak learning rate.
        weight_decay: AdamW weight decay.
        schedule: "cosine" (default), "step" (x0.1 at 50% and 75% of the steps) or "constant".
        class_weighted: weight the loss by inverse class frequency.
        channels: classifier widths (`ResNetClassifier.channels`).
        monitor: optional `(images, labels)` whose accuracy is recorded after every epoch, for training curves only:
            the returned network is always the last epoch's, whatever this data says.
        progress: show a progress bar over the epochs.
        description: label of the progress bar.
        threads: CPU threads while training (None: torch's setting). One by default: these small networks ran 7x
            slower on two OpenMP threads than on one on a shared 2-core machine (64^2, 300 images: 3.1 s against
            0.43 s per epoch), and one thread makes the result independent of the machine's core count.
        steps: train exactly this many optimiser steps instead of `epochs` passes (the last pass stops part-way), so
            that training sets of different sizes get the same budget; the learning rate is annealed over them.
        initial: start from this network's weights (same architecture) instead of a fresh initialisation, e.g. to
            fine-tune a pre-trained classifier; it is not modified.

    Returns:
        the trained classifier, in evaluation mode, with `history` (one dict per epoch: `epoch`, `loss`,
        `train_accuracy` on the (augmented) batches as seen, `lr`, and `monitor_accuracy` when `monitor` is given).
    """
    images = check_images(images)
    count = images.shape[0]
    labels = check_labels(labels, count, num_classes)
    if count < 2:
        raise MedvolInputError(None, f"a classifier needs at least 2 training images, got {count}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    steps_per_epoch = math.ceil(count / batch_size)
    if steps is not None:
        if int(steps) < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        epochs = math.ceil(int(steps) / steps_per_epoch)
    epochs = recipe_epochs(count, epochs, batch_size)
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    total_steps = steps_per_epoch * epochs if steps is None else int(steps)
    augment_mask = torch.as_tensor(np.broadcast_to(np.asarray(augment, dtype=bool), (count,)).copy())
    device = default_device(device)
    spatial_dims = images.ndim - 2
    transform = classical_augmentation(spatial_dims, tuple(images.shape[2:])) if bool(augment_mask.any()) else None
    augment_batch = None
    if transform is not None:
        transform.set_random_state(seed=int(seed) % 2**32)
        # the batch-norm passes draw from their own copy, reseeded each time, so that recording a monitor curve
        # leaves the training draws (and the final network) unchanged
        norm_transform = copy.deepcopy(transform)

        def augment_batch(batch: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
            return _augment_batch(batch, augment_mask[index], transform)

        def augment_norm_batch(batch: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
            return _augment_batch(batch, augment_mask[index], norm_transform)

    def precise_batch_norm() -> None:
        if transform is None:
            recompute_batch_norm(classifier, images)
        else:
            norm_transform.set_random_state(seed=(int(seed) + 1) % 2**32)
            recompute_batch_norm(classifier, images, transform_batch=augment_norm_batch)

    monitor_images = check_images(monitor[0], "monitor images") if monitor is not None else None
    monitor_labels = check_labels(monitor[1], monitor_images.shape[0], num_classes) if monitor is not None else None

    frequency = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = np.where(frequency > 0, count / (num_classes * np.maximum(frequency, 1)), 0.0) if class_weighted else None
    loss_fn = nn.CrossEntropyLoss(
        weight=None if weights is None else torch.as_tensor(weights, dtype=torch.float32, device=device)
    )
    labels_t = torch.as_tensor(labels)
    order_generator = torch.Generator().manual_seed(int(seed))
    history: list[dict[str, float]] = []

    with seeded(int(seed), device), cpu_threads(threads, device):
        classifier = ResNetClassifier(
            spatial_dims, num_classes, channels=channels, stem_stride=stem_stride_for(images.shape[2:], channels)
        ).to(device)
        if initial is not None:
            classifier.load_state_dict(initial.state_dict())
        optimizer = torch.optim.AdamW(classifier.parameters(), lr=lr, weight_decay=weight_decay)
        step = 0
        for epoch in tqdm(range(epochs), desc=description, leave=False, disable=not progress, unit="epoch"):
            classifier.train()
            order = torch.randperm(count, generator=order_generator)
            loss_sum, correct, seen = 0.0, 0, 0
            for index in torch.tensor_split(order, steps_per_epoch):
                if step == total_steps:
                    break
                batch = images[index]
                if augment_batch is not None:
                    batch = augment_batch(batch, index)
                target = labels_t[index].to(device)
                for group in optimizer.param_groups:
                    group["lr"] = lr * _learning_rate_factor(schedule, step, total_steps)
                logits = classifier(batch.to(device))
                loss = loss_fn(logits, target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                loss_sum += float(loss.detach()) * index.numel()
                correct += int((logits.detach().argmax(1) == target).sum())
                seen += index.numel()
            record = {
                "epoch": epoch + 1,
                "loss": loss_sum / seen,
                "train_accuracy": correct / seen,
                "lr": optimizer.param_groups[0]["lr"],
            }
            if monitor_images is not None:
                precise_batch_norm()
                predicted = predict_probabilities(classifier, monitor_images, device=device).argmax(1)
                record["monitor_accuracy"] = float(np.mean(predicted == monitor_labels))
            history.append(record)
        if monitor_images is None:
            precise_batch_norm()
    classifier.eval()
    classifier.history = history
    return classifier


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


def build_feature_extractor(
    train_images: torch.Tensor,
    train_labels: Any,
    num_classes: int,
    out_dir: str | os.PathLike,
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
    spatial_dims = train_images.ndim - 2
    count = train_images.shape[0]
    labels = None if train_labels is None else np.asarray(train_labels, dtype=np.int64).reshape(-1)
    labelled = labels is not None and num_classes >= 2 and labels.shape[0] == count and bool(np.all(labels >= 0))
    kind = "classifier" if labelled else "autoencoder"
    epochs = recipe_epochs(count, epochs) if labelled else int(epochs or DEFAULT_AUTOENCODER_EPOCHS)
    settings = {
        "cache_version": CACHE_VERSION,
        "kind": kind,
        "seed": int(seed),
        "epochs": epochs,
        "num_classes": int(num_classes) if labelled else 0,
        "channels": list(DEFAULT_CHANNELS if labelled else AUTOENCODER_CHANNELS),
        "batch_size": DEFAULT_BATCH_SIZE,
        "lr": DEFAULT_LR,
    }
    key = settings_hash(train_images, labels if labelled else None, settings)
    out_dir = Path(out_dir)
    weights_path, info_path = out_dir / CACHE_WEIGHTS, out_dir / CACHE_INFO
    info: dict[str, Any] | None = None
    module: nn.Module | None = None
    if weights_path.is_file() and info_path.is_file():
        try:
            cached = json.loads(info_path.read_text())
        except (OSError, ValueError):
            cached = {}
        if cached.get("settings_hash") == key:
            try:
                module, _ = load_checkpoint(weights_path)
                info = {**cached, "reused_cache": True}
            except MedvolInputError:
                module = None  # a damaged cache is rebuilt
    if module is None:
        if labelled:
            module = train_classifier(
                train_images, labels, num_classes, seed=seed, epochs=epochs, device=device, progress=progress,
                description="feature classifier",
            )
            last = module.history[-1]
            training = {"training_accuracy": last["train_accuracy"], "training_loss": last["loss"]}
        else:
            module, training = train_autoencoder_encoder(
                train_images, seed=seed, epochs=epochs, device=device, progress=progress
            )
        info = {**settings, "settings_hash": key, "training_images": count, **training}
        save_checkpoint(module, weights_path, {"settings_hash": key})
        out_dir.mkdir(parents=True, exist_ok=True)
        info_path.write_text(json.dumps(info, indent=2) + "\n")
        info["reused_cache"] = False
    if labelled:
        description = (
            f"pooled penultimate layer ({DEFAULT_CHANNELS[-1]} features) of a ResNetClassifier (widths "
            f"{list(DEFAULT_CHANNELS)}) trained for {epochs} epochs on the {count} labelled real training images, seed "
            f"{seed}; training accuracy {info.get('training_accuracy', float('nan')):.3f}"
        )
        embed = _classifier_features
    else:
        description = (
            f"average-pooled encoder output ({AUTOENCODER_CHANNELS[-1]} features) of a convolutional autoencoder "
            f"trained for {epochs} epochs on the {count} real training images (unlabelled), seed {seed}; "
            f"reconstruction MSE {info.get('reconstruction_mse', float('nan')):.4f}"
        )
        embed = lambda m, x: m(x)  # noqa: E731
    return FeatureExtractor(module, spatial_dims, kind, description, embed, device=device, info=info)
