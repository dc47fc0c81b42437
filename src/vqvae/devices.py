"""Devices and numeric precision: one ``device`` argument threaded from the CLI (``--device``) to every
module, tensor and loop, and the autocast context of a training step (``train.precision``).

``auto`` picks CUDA when it is present, then Apple's MPS, else the CPU. The quantizer's nearest-code search
and its EMA statistics always run in fp32, whatever the precision of the nets around it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from vqvae.errors import VQVAEError

__all__ = ["PRECISIONS", "autocast", "available_memory", "grad_scaler", "model_device", "resolve_device"]

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or None), ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` -> a device that exists here; anything
    else, or a device this machine does not have, is refused with a one-line error.

    Args:
        spec: the ``--device`` value (case and surrounding spaces ignored), a ``torch.device``, or None.
    Returns:
        The device; ``auto`` gives CUDA when present, then MPS, else the CPU.
    Raises:
        VQVAEError: ``spec`` names no device kind above, or one that this machine does not have.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    spec = "auto" if spec is None else spec.strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise VQVAEError(f"--device must be auto, cpu, cuda, cuda:N or mps, got {spec!r}") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise VQVAEError(f"--device must be auto, cpu, cuda, cuda:N or mps, got {spec!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise VQVAEError(f"--device {spec}: this machine has no CUDA GPU (torch {torch.__version__}); "
                             "use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise VQVAEError(f"--device {spec}: there are only {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not _mps_available():
        raise VQVAEError(f"--device {spec}: Apple's MPS is not available here; use --device cpu")
    return device


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's parameters (or buffers); the CPU for a model with neither.

    Args:
        model: the module to look at (its first parameter, else its first buffer, decides).
    Returns:
        The device.
    """
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """Mixed precision for the nets of one step: ``fp32`` (nothing), ``bf16`` or ``fp16`` autocast on
    ``device``.

    Args:
        device: the device whose autocast is entered (its type alone matters).
        precision: ``fp32``, ``bf16`` or ``fp16`` (``train.precision``).
    Returns:
        A context manager; inside it the nets run in ``precision``.
    Raises:
        VQVAEError: ``precision`` is none of the three.
    """
    if precision not in PRECISIONS:
        raise VQVAEError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    dtype = PRECISIONS[precision]
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        yield


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """Loss scaling for fp16 on CUDA (small gradients would underflow in fp16); a disabled scaler otherwise.

    Args:
        device: the device the step runs on.
        precision: ``train.precision``; only ``fp16`` on CUDA enables the scaler.
    Returns:
        A ``torch.amp.GradScaler``, enabled or not.
    """
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16" and device.type == "cuda")


def available_memory(device: torch.device) -> int | None:
    """Bytes free for new tensors on ``device``: CUDA's free memory, or the system's available memory for the
    CPU (Linux: MemAvailable); None where it cannot be told.

    Args:
        device: a CUDA device or the CPU; any other kind gives None.
    Returns:
        The free bytes, or None.
    """
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None
