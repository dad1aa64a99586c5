"""Mixed precision for the medvol trainers: precision choice, autocast, gradient scalers, an fp32 gradient penalty.

``Precision.AUTO`` resolves to bfloat16 on a CUDA device that supports it, float16 on older CUDA devices (which then
need a :class:`torch.amp.GradScaler`, one per optimiser: generator and critic losses have different magnitudes, so
sharing one scale would let one network's overflow skip the other's steps), bfloat16 on a CPU with native bfloat16
instructions (x86: AVX512-BF16 or AMX; other CPUs: oneDNN's bfloat16 check), and float32 on every other CPU.
:func:`resolve_precision` returns the choice with its reason; the trainers log both once and record them in
``plan.json``. An explicit ``bf16`` runs on any CPU, emulated where there are no native instructions (measured 30x
slower than fp32 on an AVX2-only CPU, see docs/benchmarks.md).

The gradient penalty of WGAN-GP differentiates the critic with respect to its input (``autograd.grad`` with
``create_graph=True``). Under float16/bfloat16 autocast that input gradient loses precision (bfloat16 keeps 8 bits of
mantissa) and, in float16, can underflow before any loss scaling applies. The trainers therefore never run an
objective inside autocast: networks are called through :class:`AutocastModule`, which autocasts only their forward
and returns float32; in the critic step a call whose input requires grad (only the penalty's interpolates do: real
images and detached fakes do not) runs entirely in float32, so the penalty, its ``autograd.grad`` and its double
backward are computed in full precision. The objective's code does not change.
"""

from __future__ import annotations

import contextlib
import platform
from enum import Enum

import torch
from torch import nn

__all__ = [
    "Precision",
    "resolve_precision",
    "autocast",
    "make_grad_scaler",
    "forget_unfinished_step",
    "configure_cudnn",
    "AutocastModule",
    "cpu_supports_bf16",
    "cpu_bf16_support",
]


class Precision(str, Enum):
    """Arithmetic precision of the forward passes (parameters and optimiser state stay float32)."""

    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


_X86 = ("x86_64", "amd64", "i386", "i686", "x86")


def _onednn_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _x86_bf16_instructions() -> list[str]:
    flags = (("AVX512-BF16", "_is_avx512_bf16_supported"), ("AMX", "_is_amx_tile_supported"))
    return [name for name, probe in flags if getattr(torch.cpu, probe, lambda: False)()]


def cpu_bf16_support() -> tuple[bool, str]:
    """Whether this CPU runs bfloat16 natively, and what that verdict rests on (for the console and plan.json).

    oneDNN's own check (``torch.ops.mkldnn._is_mkldnn_bf16_supported``) can answer yes on x86 CPUs that have AVX512
    but no bfloat16 instructions, where oneDNN emulates bfloat16; on x86 the AVX512-BF16 or AMX instructions are
    therefore required as well.
    """
    if not _onednn_bf16():
        return False, "this CPU has no native bfloat16 kernels (oneDNN), so bf16 would be emulated and much slower"
    if platform.machine().lower() not in _X86:
        return True, f"this {platform.machine()} CPU has native bfloat16 kernels (oneDNN)"
    found = _x86_bf16_instructions()
    if found:
        return True, f"this CPU has native bfloat16 instructions: {' and '.join(found)}"
    return False, "this CPU has no AVX512-BF16 or AMX instructions, so bf16 would be emulated and much slower"


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bfloat16 instructions (see :func:`cpu_bf16_support`)."""
    return cpu_bf16_support()[0]


def resolve_precision(precision: str | Precision, device: str | torch.device) -> tuple[Precision, str]:
    """Turn ``auto`` into a concrete precision for ``device``, validate the others, and say why.

    Args:
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16``.
        device: the training device.

    Returns:
        ``(precision, reason)``: the concrete :class:`Precision` (never ``AUTO``) and one sentence saying why it was
        chosen (e.g. ``"auto: this CPU has native bfloat16 instructions: AVX512-BF16 and AMX"``).
    """
    precision = Precision(precision)
    device = torch.device(device)
    if precision != Precision.AUTO:
        reason = "requested"
        if precision == Precision.BF16 and device.type == "cpu" and not cpu_supports_bf16():
            reason += "; " + cpu_bf16_support()[1]
        return precision, reason
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision.BF16, "auto: the CUDA device supports bfloat16"
        return Precision.FP16, "auto: the CUDA device has no bfloat16 support; float16 with gradient scaling"
    if device.type == "cpu":
        native, why = cpu_bf16_support()
        return (Precision.BF16 if native else Precision.FP32), f"auto: {why}"
    return Precision.FP32, f"auto: no mixed precision on {device.type} devices"


_AUTOCAST_DTYPES = {Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}


def autocast(precision: Precision, device: str | torch.device) -> contextlib.AbstractContextManager:
    """The autocast context for ``precision`` on ``device`` (a no-op context for float32)."""
    device = torch.device(device)
    if precision not in _AUTOCAST_DTYPES:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_AUTOCAST_DTYPES[precision])


def make_grad_scaler(precision: Precision, device: str | torch.device) -> torch.amp.GradScaler | None:
    """A fresh gradient scaler when ``precision`` is float16, else None (bfloat16 has float32's range)."""
    if precision != Precision.FP16:
        return None
    return torch.amp.GradScaler(torch.device(device).type)


def forget_unfinished_step(scaler: torch.amp.GradScaler | None) -> None:
    """Reset a gradient scaler's per-optimiser record of a step that failed before ``scaler.update()`` (an
    out-of-memory error inside ``scaler.step``): otherwise the scaler still believes that optimiser's gradients are
    unscaled, and the repeated step would skip unscaling and apply gradients multiplied by the loss scale. The scale
    itself is kept."""
    if scaler is not None:
        scaler._per_optimizer_states.clear()  # a defaultdict: each optimiser starts again from a fresh "ready" record


def configure_cudnn(device: str | torch.device, benchmark: bool) -> bool:
    """On a CUDA device with `benchmark`, let cuDNN time its convolution algorithms and keep the fastest
    (``cudnn.benchmark = True``, ``cudnn.deterministic = False``), overriding what ``monai.utils.set_determinism``
    set; otherwise leave the flags as they are. Returns whether it changed them.

    The trade-off: autotuned 3D convolutions are faster, but the chosen algorithms (and so the float rounding) may
    differ between runs, so a resumed run is no longer bitwise the uninterrupted one (docs/benchmarks.md, "Determinism
    on a GPU"). The trainers' default is False.
    """
    if not benchmark or torch.device(device).type != "cuda":
        return False
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.deterministic = False
    return True


class AutocastModule(nn.Module):
    """Run a network's forward under autocast and hand back float32 outputs; optionally float32 for penalty calls.

    The trainers call networks through this wrapper and run the objectives' own arithmetic (losses, the gradient
    penalty's ``autograd.grad``) outside autocast, in float32: autograd records the autocast state when a backward
    (or ``autograd.grad``) starts, so a penalty differentiated inside an autocast region would run its backward
    convolutions in half precision even when its forward did not.

    With ``fp32_when_input_requires_grad`` (the critic in the critic step) a call whose input requires grad, which
    in that step only the gradient penalty's interpolates do, runs entirely in float32 with autocast disabled.

    The wrapper owns no parameters: checkpoints and optimisers keep using the wrapped module.

    Args:
        module: ``module(x, labels=None)`` (a generator, critic or autoencoder).
        precision: the autocast precision (``fp32`` makes this a pass-through that only casts outputs).
        fp32_when_input_requires_grad: see above.
    """

    def __init__(self, module: nn.Module, precision: Precision, fp32_when_input_requires_grad: bool = False):
        super().__init__()
        self.module = module
        self.precision = Precision(precision)
        self.fp32_when_input_requires_grad = fp32_when_input_requires_grad

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        args = (x,) if labels is None else (x, labels)
        if self.fp32_when_input_requires_grad and x.requires_grad:
            with torch.autocast(device_type=x.device.type, enabled=False):
                return _float_outputs(self.module(x.float(), *args[1:]))
        with autocast(self.precision, x.device):
            output = self.module(*args)
        return _float_outputs(output)


def _float_outputs(output):
    if isinstance(output, torch.Tensor):
        return output.float() if output.is_floating_point() else output
    if isinstance(output, (tuple, list)):
        return type(output)(_float_outputs(o) for o in output)
    return output
