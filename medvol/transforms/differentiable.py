"""Differentiable augmentation of the critic's inputs, for GANs trained on little data.

The critic of a GAN trained on a few hundred images memorises them, and its feedback to the generator degrades.
DiffAugment (Zhao et al. 2020) and ADA (Karras et al. 2020) augment every image the critic sees, real and generated,
in the critic step, the generator step and the gradient penalty, with transformations that are differentiable, so
the generator receives gradients through them. Because real and generated images pass through the same random
transformations, the generator is not pushed to produce augmented images: the distribution of ``T(G(z))`` equals that
of ``T(x)`` when ``G(z)`` is distributed as ``x``. Samples never pass through them (the trainer applies them only
inside its critic wrapper).

:class:`DifferentiableAugment` draws, per sample and per operation with probability ``p``: a translation (up to 1/8 of
the size per axis), a rotation (up to 10 degrees; about the three axes in 3D), an isotropic scaling (0.9 to 1.1), a
brightness shift, a contrast change and a cutout box (half the size per axis, filled with the background value).
The geometric ones are one ``affine_grid``/``grid_sample`` for 2D and 3D alike, and fill what they uncover with the
background (-1 for medvol's generators).

:class:`CriticAugmentation` holds the probability: fixed, or adapted by the ADA heuristic from the critic's real scores,
``r_t = E[sign(D(real))]`` over the last ``interval`` iterations, ``p += sign(r_t - target) * speed`` (a critic that
scores most real images positive is overfitting). Its state (``p``, the signs so far) goes into checkpoints. The
heuristic reads logits (non-saturating and hinge losses); a Wasserstein critic's scores have no fixed zero, so for
the WGAN families a fixed probability is the safer choice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medvol.errors import MedvolInputError

__all__ = [
    "AUGMENT_OPERATIONS",
    "DifferentiableAugment",
    "CriticAugmentation",
    "AugmentedCritic",
    "parse_critic_augment",
]

AUGMENT_OPERATIONS = ("translation", "rotation", "scale", "brightness", "contrast", "cutout")
MODES = ("off", "fixed", "ada")
DEFAULT_TARGET = 0.6
DEFAULT_SPEED = 0.005
DEFAULT_INTERVAL = 4


class DifferentiableAugment(nn.Module):
    """Random, differentiable augmentation of a batch ``[B, C, *spatial]`` (2D or 3D), each operation applied to
    each sample with probability ``p``.

    Args:
        spatial_dims: 2 or 3.
        operations: which of :data:`AUGMENT_OPERATIONS` to use.
        translation: largest shift, as a fraction of the size along each axis.
        rotation: largest rotation in degrees (about each axis in 3D).
        scale: largest relative zoom in or out.
        brightness: standard deviation of the added intensity (images in [-1, 1]).
        contrast: standard deviation of ``log2`` of the factor applied to deviations from each image's mean.
        cutout: side of the cutout box, as a fraction of the size along each axis.
        background: the value uncovered and cut-out voxels get.
    """

    def __init__(
        self,
        spatial_dims: int,
        *,
        operations: Sequence[str] = AUGMENT_OPERATIONS,
        translation: float = 0.125,
        rotation: float = 10.0,
        scale: float = 0.1,
        brightness: float = 0.2,
        contrast: float = 0.5,
        cutout: float = 0.5,
        background: float = -1.0,
    ):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        unknown = [op for op in operations if op not in AUGMENT_OPERATIONS]
        if unknown or not operations:
            raise ValueError(f"operations must be some of {', '.join(AUGMENT_OPERATIONS)}, got {list(operations)}")
        self.spatial_dims = int(spatial_dims)
        self.operations = tuple(op for op in AUGMENT_OPERATIONS if op in operations)
        self.translation, self.rotation, self.scale = float(translation), float(rotation), float(scale)
        self.brightness, self.contrast, self.cutout = float(brightness), float(contrast), float(cutout)
        self.background = float(background)

    def forward(self, images: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
        """The augmented batch (a new tensor; `images` is not modified).

        Args:
            images: ``[B, C, *spatial]``, ``spatial_dims`` spatial axes.
            p: probability of each operation for each sample.
            generator: CPU generator every random number comes from (None: torch's global one).
        """
        if images.ndim != self.spatial_dims + 2:
            raise ValueError(f"expected [B, C] + {self.spatial_dims} spatial axes, got shape {tuple(images.shape)}")
        if p <= 0:
            return images
        count, dims, device = images.shape[0], self.spatial_dims, images.device

        def uniform(*shape: int) -> torch.Tensor:
            return torch.rand(shape, generator=generator)

        # every parameter is drawn for every p > 0 and operation, so the stream advances alike; decided on the CPU
        chosen = {op: uniform(count) < p for op in AUGMENT_OPERATIONS}
        active = {op: value.to(device) for op, value in chosen.items()}
        shift = (uniform(count, dims) * 2 - 1) * self.translation * 2  # normalised coordinates span 2
        angles = (uniform(count, 3) * 2 - 1) * math.radians(self.rotation)
        zoom = torch.exp((uniform(count) * 2 - 1) * math.log1p(self.scale))
        brightness = torch.randn(count, generator=generator) * self.brightness
        contrast = torch.exp2(torch.randn(count, generator=generator) * self.contrast)
        centre = uniform(count, dims)

        x = images.float()
        geometric = [op for op in ("translation", "rotation", "scale") if op in self.operations]
        moved = torch.zeros(count, dtype=torch.bool)
        for op in geometric:
            moved = moved | chosen[op]
        if bool(moved.any()):
            theta = self._affine(shift, angles, zoom, {op: chosen[op] for op in geometric}, x.shape[2:])
            grid = F.affine_grid(theta.to(device), list(x.shape), align_corners=False)
            warped = F.grid_sample(x - self.background, grid, padding_mode="zeros", align_corners=False)
            x = torch.where(_per_sample(moved.to(device), x), warped + self.background, x)
        if "cutout" in self.operations:
            box = _cutout_mask(centre.to(device), x.shape[2:], self.cutout) & _per_sample(active["cutout"], x)
            x = torch.where(box, torch.full_like(x, self.background), x)
        if "brightness" in self.operations:
            x = x + _per_sample(brightness.to(device) * active["brightness"], x)
        if "contrast" in self.operations:
            mean = x.mean(dim=tuple(range(1, x.ndim)), keepdim=True)
            factor = torch.where(active["contrast"], contrast.to(device), torch.ones_like(contrast.to(device)))
            x = (x - mean) * _per_sample(factor, x) + mean
        return x

    def _affine(
        self, shift: torch.Tensor, angles: torch.Tensor, zoom: torch.Tensor, active: Mapping[str, torch.Tensor], size
    ) -> torch.Tensor:
        """``[B, d, d + 1]`` matrices from output to input normalised coordinates (``affine_grid``'s x, y(, z) order:
        the last spatial axis first); rotations and zooms act on voxel distances (non-square images stay undistorted)."""
        count, dims = shift.shape
        half = torch.tensor([s / 2.0 for s in reversed(tuple(size))])
        rotation = torch.eye(dims).repeat(count, 1, 1)
        if "rotation" in active:
            planes = [(0, 1)] if dims == 2 else [(0, 1), (0, 2), (1, 2)]
            for axis, (i, j) in enumerate(planes):
                angle = torch.where(active["rotation"], angles[:, axis], torch.zeros(count))
                step = torch.eye(dims).repeat(count, 1, 1)
                step[:, i, i], step[:, i, j] = torch.cos(angle), -torch.sin(angle)
                step[:, j, i], step[:, j, j] = torch.sin(angle), torch.cos(angle)
                rotation = step @ rotation
        if "scale" in active:
            rotation = rotation * torch.where(active["scale"], zoom, torch.ones(count))[:, None, None]
        linear = rotation * half[None, :, None] ** -1 * half[None, None, :]  # D^-1 R D in normalised coordinates
        translation = torch.zeros(count, dims)
        if "translation" in active:
            translation = torch.where(active["translation"][:, None], shift, translation)
        return torch.cat([linear, translation[:, :, None]], dim=2)


def _cutout_mask(centre: torch.Tensor, size: Sequence[int], side: float) -> torch.Tensor:
    """``[B, 1, *spatial]`` boolean boxes of `side` (fraction per axis) around `centre` (``[B, d]`` fractions)."""
    count, dims = centre.shape
    device = centre.device
    mask = torch.ones((count, 1) + (1,) * dims, dtype=torch.bool, device=device)
    for axis, length in enumerate(size):
        position = (torch.arange(length, device=device, dtype=torch.float32) + 0.5) / length
        shape = [1] * dims
        shape[axis] = length
        inside = (position.reshape(1, 1, *shape) - centre[:, axis].reshape(count, 1, *([1] * dims))).abs() < side / 2
        mask = mask & inside
    return mask


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.reshape((-1,) + (1,) * (like.ndim - 1))


def parse_critic_augment(value: Any, option: str = "--critic-augment") -> dict[str, Any]:
    """The canonical settings of critic augmentation from a command-line text or a config value.

    Accepted: ``off`` (or False / None), ``fixed:P``, ``ada``, ``ada:target=T,speed=S``, with an optional
    ``ops=translation+cutout`` among the comma-separated keys (``fixed:p=0.5,ops=translation+cutout``), or a
    mapping ``{mode, p, target, speed, ops}``.

    Returns:
        ``{"mode": "off"}``, ``{"mode": "fixed", "p", "ops"}`` or ``{"mode": "ada", "p", "target", "speed", "ops"}``.

    Raises:
        MedvolInputError: an unknown mode, key or operation, or a number out of range.
    """
    if value is None or value is False:
        return {"mode": "off"}
    if isinstance(value, Mapping):
        fields = dict(value)
        mode = str(fields.pop("mode", "fixed"))
    else:
        text = str(value).strip()
        mode, _, rest = text.partition(":")
        fields = {}
        for number, item in enumerate(part for part in rest.split(",") if part.strip()):
            key, sep, given = item.partition("=")
            if not sep:  # fixed:0.5
                key, given = ("p" if mode == "fixed" and number == 0 else key), key
                if key != "p":
                    raise MedvolInputError(option, f"expected KEY=VALUE after {mode}: (e.g. ada:target=0.6), got {item!r}")
            fields[key.strip()] = given.strip()
    mode = mode.strip().lower()
    if mode not in MODES:
        raise MedvolInputError(option, f"expected off, fixed:P or ada[:target=T,speed=S], got {value!r}")
    if mode == "off":
        if fields:
            raise MedvolInputError(option, f"off takes no options, got {fields}")
        return {"mode": "off"}
    allowed = {"p", "ops"} | ({"target", "speed"} if mode == "ada" else set())
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise MedvolInputError(option, f"{mode} does not take {', '.join(unknown)} (it takes {', '.join(sorted(allowed))})")

    def number(key: str, default: float | None, low: float, high: float) -> float:
        if key not in fields:
            if default is None:
                raise MedvolInputError(option, f"{mode} needs a probability, e.g. fixed:0.3")
            return default
        try:
            result = float(fields[key])
        except (TypeError, ValueError):
            raise MedvolInputError(option, f"{key} must be a number, got {fields[key]!r}") from None
        if not (math.isfinite(result) and low <= result <= high):
            raise MedvolInputError(option, f"{key} must be between {low} and {high}, got {result}")
        return result

    ops = fields.get("ops", AUGMENT_OPERATIONS)
    if isinstance(ops, str):
        ops = [op.strip() for op in ops.replace("+", " ").split()]
    ops = list(ops)
    bad = [op for op in ops if op not in AUGMENT_OPERATIONS]
    if bad or not ops:
        raise MedvolInputError(option, f"ops must be some of {'+'.join(AUGMENT_OPERATIONS)}, got {ops}")
    settings: dict[str, Any] = {"mode": mode, "p": number("p", None if mode == "fixed" else 0.0, 0.0, 1.0)}
    if mode == "ada":
        settings["target"] = number("target", DEFAULT_TARGET, -1.0, 1.0)
        settings["speed"] = number("speed", DEFAULT_SPEED, 0.0, 1.0)
    settings["ops"] = [op for op in AUGMENT_OPERATIONS if op in ops]
    return settings


class CriticAugmentation:
    """The augmentation an adversarial trainer applies before every critic call, at a fixed or adaptive probability.

    Args:
        spatial_dims: 2 or 3.
        mode: ``fixed`` (``p`` stays) or ``ada`` (``p`` adapts; starts at ``p``).
        p: the probability of each operation.
        target: ADA's target for ``r_t = E[sign(D(real))]``.
        speed: ADA's step: ``p`` moves by this much every ``interval`` iterations.
        interval: iterations per ``r_t`` (and per adjustment of ``p``).
        ops: operations (:data:`AUGMENT_OPERATIONS`).
        augment_options: further :class:`DifferentiableAugment` arguments (ranges, background).
    """

    def __init__(
        self,
        spatial_dims: int,
        *,
        mode: str = "fixed",
        p: float = 0.0,
        target: float = DEFAULT_TARGET,
        speed: float = DEFAULT_SPEED,
        interval: int = DEFAULT_INTERVAL,
        ops: Sequence[str] = AUGMENT_OPERATIONS,
        **augment_options: Any,
    ):
        if mode not in ("fixed", "ada"):
            raise ValueError(f"mode must be 'fixed' or 'ada', got {mode!r}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        if interval < 1:
            raise ValueError(f"interval must be at least 1, got {interval}")
        self.mode, self.p, self.target, self.speed = mode, float(p), float(target), float(speed)
        self.interval = int(interval)
        self.augment = DifferentiableAugment(spatial_dims, operations=ops, **augment_options)
        self.real_sign: float | None = None  # r_t of the last completed interval
        self._sign_sum = 0.0
        self._sign_count = 0
        self._iterations = 0

    @classmethod
    def from_settings(cls, settings: Any, spatial_dims: int) -> CriticAugmentation | None:
        """From :func:`parse_critic_augment`'s settings (or anything it accepts); None when off."""
        if isinstance(settings, CriticAugmentation):
            return settings
        settings = parse_critic_augment(settings)
        if settings["mode"] == "off":
            return None
        return cls(spatial_dims, **settings)

    def settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {"mode": self.mode, "p": self.p}
        if self.mode == "ada":
            settings.update(target=self.target, speed=self.speed)
        return {**settings, "ops": list(self.augment.operations)}

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.augment(images, self.p, generator)

    def observe(self, sign_sum: float, count: int) -> None:
        """Add the signs of ``count`` real scores (their sum) to the current interval."""
        self._sign_sum += float(sign_sum)
        self._sign_count += int(count)

    def end_iteration(self, world_sum: Any = None) -> dict[str, float]:
        """Close an iteration: every ``interval`` iterations compute ``r_t`` and, in ``ada`` mode, move ``p``.

        Args:
            world_sum: ``f([sign_sum, count]) -> [sum over ranks]`` in a distributed run (every rank then moves ``p``
                alike); None: this process only.

        Returns:
            the scalars to log: ``critic_augment/p`` and, once known, ``critic_augment/real_sign``.
        """
        self._iterations += 1
        if self._iterations % self.interval == 0:
            totals = [self._sign_sum, float(self._sign_count)]
            if world_sum is not None:
                totals = world_sum(totals)
            if totals[1] > 0:
                self.real_sign = totals[0] / totals[1]
                if self.mode == "ada":
                    direction = (self.real_sign > self.target) - (self.real_sign < self.target)
                    self.p = min(1.0, max(0.0, self.p + direction * self.speed))
            self._sign_sum, self._sign_count = 0.0, 0
        logs = {"critic_augment/p": self.p}
        if self.real_sign is not None:
            logs["critic_augment/real_sign"] = self.real_sign
        return logs

    def state_dict(self) -> dict[str, Any]:
        return {
            "settings": self.settings() | {"p": None},
            "p": self.p,
            "real_sign": self.real_sign,
            "sign_sum": self._sign_sum,
            "sign_count": self._sign_count,
            "iterations": self._iterations,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`.

        Raises:
            ValueError: the state belongs to other settings (mode, target, speed, operations).
        """
        mine = self.settings() | {"p": None}
        if dict(state["settings"]) != mine:
            raise ValueError(f"the checkpoint's critic augmentation {dict(state['settings'])} differs from this run's {mine}")
        self.p = float(state["p"])
        self.real_sign = None if state["real_sign"] is None else float(state["real_sign"])
        self._sign_sum, self._sign_count = float(state["sign_sum"]), int(state["sign_count"])
        self._iterations = int(state["iterations"])


class AugmentedCritic(nn.Module):
    """``critic(augment(x), labels)``: what the trainer hands the objectives instead of the critic.

    A module, so the objectives' checks of the critic (batch norm) still see its layers; it owns no parameters.
    The trainer sets ``generator`` (the iteration's augmentation stream) and ``real`` (the real batch whose scores'
    signs ADA counts) before use.

    Args:
        critic: the critic call (the trainer's autocast wrapper).
        augmentation: the :class:`CriticAugmentation`.
    """

    def __init__(self, critic: nn.Module, augmentation: CriticAugmentation):
        super().__init__()
        self.critic = critic
        self.augmentation = augmentation
        self.generator: torch.Generator | None = None
        self.real: torch.Tensor | None = None
        self.signs: list[tuple[torch.Tensor, int]] = []

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        output = self.critic(self.augmentation(x, self.generator), labels)
        if self.real is not None and x is self.real:
            score = output[0] if isinstance(output, (tuple, list)) else output
            self.signs.append((torch.sign(score.detach().float()).sum(), score.numel()))
        return output

    def observe_real_signs(self) -> None:
        """Hand the signs counted since the last call to the augmentation (ADA's statistic) and stop counting."""
        self.real = None
        if self.signs:
            total = float(torch.stack([part for part, _ in self.signs]).sum())
            self.augmentation.observe(total, sum(count for _, count in self.signs))
        self.signs.clear()
