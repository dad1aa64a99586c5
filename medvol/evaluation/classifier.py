"""The one classifier recipe of the evaluation (feature extractor, utility arms, recognisability, real-vs-synthetic
filter): a `ResNetClassifier`, AdamW, cosine learning rate, a fixed number of epochs (no early stopping, no epoch picked
on test data), seeded initialisation, order and augmentation.

Images are float32 tensors `[N, 1, *size]` in [-1, 1].
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from monai.utils import convert_to_tensor
from torch import nn
from tqdm.auto import tqdm

from medvol.defaults import CLASSIFIER_EPOCHS as DEFAULT_EPOCHS
from medvol.defaults import CLASSIFIER_MIN_STEPS as DEFAULT_MIN_STEPS
from medvol.devices import default_device
from medvol.errors import MedvolInputError
from medvol.networks.classifiers import ResNetClassifier, stem_stride_for
from medvol.transforms.augment import classical_augmentation

DEFAULT_CHANNELS = (16, 32, 64)
# MedNIST 64^2 (1800 training images): every utility arm's test accuracy is at its final level (+-0.2 points) by
# epoch 5 of 10 for 3 seeds; the 5 arms x 3 seeds plus the feature network take about 11 min of one CPU core.
# DEFAULT_EPOCHS (10) and DEFAULT_MIN_STEPS come from medvol.defaults, where `medvol evaluate --help` reads them.
DEFAULT_BATCH_SIZE = 32
DEFAULT_LR = 5e-3
DEFAULT_WEIGHT_DECAY = 1e-4
SCHEDULES = ("cosine", "step", "constant")


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


class _Augmentation:
    """Classical augmentation (`classical_augmentation`) of the samples `augment` selects, drawn anew each time a
    sample is seen, seeded. The batch-norm passes draw from their own copy, reseeded each time, so that recording a
    monitor curve leaves the training draws (and the final network) unchanged.

    Args:
        images: the training images.
        augment: True for every sample, False for none, or a boolean mask.
        seed: seed of the draws.
    """

    def __init__(self, images: torch.Tensor, augment: bool | Sequence[bool] | np.ndarray, seed: int) -> None:
        self.mask = torch.as_tensor(np.broadcast_to(np.asarray(augment, dtype=bool), (images.shape[0],)).copy())
        self.seed = int(seed)
        self.transform = self.norm_transform = None
        if bool(self.mask.any()):
            self.transform = classical_augmentation(images.ndim - 2, tuple(images.shape[2:]))
            self.transform.set_random_state(seed=self.seed % 2**32)
            self.norm_transform = copy.deepcopy(self.transform)

    def __call__(self, batch: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return batch if self.transform is None else _augment_batch(batch, self.mask[index], self.transform)

    def recompute_batch_norm(self, classifier: nn.Module, images: torch.Tensor) -> None:
        """`recompute_batch_norm` over `images`, augmented as in training."""
        if self.transform is None:
            recompute_batch_norm(classifier, images)
            return
        self.norm_transform.set_random_state(seed=(self.seed + 1) % 2**32)
        recompute_batch_norm(classifier, images,
                             transform_batch=lambda batch, index: _augment_batch(batch, self.mask[index],
                                                                                 self.norm_transform))


def _step_budget(count: int, batch_size: int, epochs: int | None, steps: int | None) -> tuple[int, int, int]:
    """`(steps per epoch, epochs, total optimiser steps)` of the recipe for `count` images."""
    steps_per_epoch = math.ceil(count / batch_size)
    if steps is not None:
        if int(steps) < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        epochs = math.ceil(int(steps) / steps_per_epoch)
    epochs = recipe_epochs(count, epochs, batch_size)
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    return steps_per_epoch, epochs, steps_per_epoch * epochs if steps is None else int(steps)


def _loss_function(labels: np.ndarray, num_classes: int, class_weighted: bool, device: torch.device) -> nn.Module:
    """Cross-entropy, weighted by inverse class frequency when `class_weighted`."""
    frequency = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = None
    if class_weighted:
        weights = np.where(frequency > 0, labels.size / (num_classes * np.maximum(frequency, 1)), 0.0)
    return nn.CrossEntropyLoss(
        weight=None if weights is None else torch.as_tensor(weights, dtype=torch.float32, device=device)
    )


def _train_epoch(classifier: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.Module, images: torch.Tensor,
                 labels: torch.Tensor, augmentation: _Augmentation, order: torch.Tensor, steps_per_epoch: int,
                 step: int, total_steps: int, lr: float, schedule: str) -> tuple[dict[str, float], int]:
    """One pass in the batches of `order`, stopping at `total_steps`: `({loss, train_accuracy, lr}, step)`."""
    device = next(classifier.parameters()).device
    classifier.train()
    loss_sum, correct, seen = 0.0, 0, 0
    for index in torch.tensor_split(order, steps_per_epoch):
        if step == total_steps:
            break
        batch = augmentation(images[index], index)
        target = labels[index].to(device)
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
    return {"loss": loss_sum / seen, "train_accuracy": correct / seen, "lr": optimizer.param_groups[0]["lr"]}, step


def train_classifier(
    images: torch.Tensor,
    labels: Any,
    num_classes: int,
    *,
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
    steps_per_epoch, epochs, total_steps = _step_budget(count, batch_size, epochs, steps)
    augmentation = _Augmentation(images, augment, seed)
    device = default_device(device)
    monitor_images = check_images(monitor[0], "monitor images") if monitor is not None else None
    monitor_labels = check_labels(monitor[1], monitor_images.shape[0], num_classes) if monitor is not None else None
    loss_fn = _loss_function(labels, num_classes, class_weighted, device)
    labels_t = torch.as_tensor(labels)
    order_generator = torch.Generator().manual_seed(int(seed))
    history: list[dict[str, float]] = []
    with seeded(int(seed), device), cpu_threads(threads, device):
        classifier = ResNetClassifier(
            images.ndim - 2, num_classes, channels=channels, stem_stride=stem_stride_for(images.shape[2:], channels)
        ).to(device)
        if initial is not None:
            classifier.load_state_dict(initial.state_dict())
        optimizer = torch.optim.AdamW(classifier.parameters(), lr=lr, weight_decay=weight_decay)
        step = 0
        for epoch in tqdm(range(epochs), desc=description, leave=False, disable=not progress, unit="epoch"):
            order = torch.randperm(count, generator=order_generator)
            record, step = _train_epoch(classifier, optimizer, loss_fn, images, labels_t, augmentation, order,
                                        steps_per_epoch, step, total_steps, lr, schedule)
            record = {"epoch": epoch + 1, **record}
            if monitor_images is not None:
                augmentation.recompute_batch_norm(classifier, images)
                predicted = predict_probabilities(classifier, monitor_images, device=device).argmax(1)
                record["monitor_accuracy"] = float(np.mean(predicted == monitor_labels))
            history.append(record)
        if monitor_images is None:
            augmentation.recompute_batch_norm(classifier, images)
    classifier.eval()
    classifier.history = history
    return classifier
