"""The machine line every benchmark prints: CPU model, cores, torch version, device, threads."""

from __future__ import annotations

import os
import platform

import torch


def describe(device: torch.device) -> str:
    """One line naming where the figures were measured."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    accelerator = f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    return (f"machine: {cpu}, {os.cpu_count()} cores, torch {torch.__version__}, device {device}{accelerator}, "
            f"{torch.get_num_threads()} torch threads")


def pick_device(choice: str) -> torch.device:
    """``cpu`` or ``cuda``; exits with a one-line error when CUDA is asked for and absent."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda, but no CUDA device is visible")
    return torch.device(choice)
