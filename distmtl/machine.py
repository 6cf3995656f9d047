"""Where a figure was measured: one line naming the hardware and software, for benchmark and recipe tables."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def describe(device: torch.device | None = None) -> str:
    """CPU model and cores, memory, the visible GPU (if any), OS, torch and Python versions; with ``device``,
    also the device the figures ran on and torch's CPU thread count."""
    cpuinfo = Path("/proc/cpuinfo")
    models = ([line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
               if line.startswith("model name")]
              if cpuinfo.exists() else [])
    cpu = models[0] if models else (platform.processor() or platform.machine())
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30 if hasattr(os, "sysconf") else 0.0
    line = (f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB{gpu}; {platform.system()} {platform.release()}; "
            f"torch {torch.__version__}, Python {platform.python_version()}")
    return line if device is None else f"{line}; device {device}, {torch.get_num_threads()} torch threads"


def benchmark_device(choice: str) -> torch.device:
    """A benchmark's ``--device`` (``cpu`` or ``cuda``); exits with a one-line error when CUDA is absent."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda, but no CUDA device is visible")
    return torch.device(choice)
