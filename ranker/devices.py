"""The one place that picks a torch device: ``auto`` is CUDA when present, else the CPU.

:func:`device_name` answers without importing torch where it can (no torch installed, a CPU-only torch build, no
NVIDIA driver on the machine): a serving process picks ONNX Runtime on the CPU for its encoders and must not load
torch to learn that there is no GPU (DESIGN.md, "Processes and defaults").
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

NVIDIA_DRIVER_FILES = ("/proc/driver/nvidia/version", "/dev/nvidiactl")


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU; anything else (``cpu``, ``cuda:1``) is passed to torch."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def device_name(device: str = "auto") -> str:
    """What :func:`resolve_device` would pick, as a string (``cpu``, ``cuda``, ``cuda:1``), importing torch only when
    a CUDA device may be there (then torch is what would run on it)."""
    if device != "auto":
        return device
    if "torch" not in sys.modules and not cuda_possible():
        return "cpu"
    return str(resolve_device("auto"))


def cuda_possible() -> bool:
    """False when torch cannot reach a GPU here: torch not installed, a CPU-only build (``+cpu``), or no NVIDIA driver."""
    if importlib.util.find_spec("torch") is None:
        return False
    try:
        if importlib.metadata.version("torch").endswith("+cpu"):
            return False
    except importlib.metadata.PackageNotFoundError:
        pass
    return any(os.path.exists(path) for path in NVIDIA_DRIVER_FILES)
