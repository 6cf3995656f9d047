"""One line naming the hardware and software a figure was measured on, for benchmark and recipe tables."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def describe() -> str:
    """CPU model and cores, memory, the visible GPU (if any), and the torch and Python versions."""
    cpuinfo = Path("/proc/cpuinfo")
    models = ([line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
              if cpuinfo.exists() else [])
    cpu = models[0] if models else (platform.processor() or platform.machine())
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30 if hasattr(os, "sysconf") else 0.0
    return (f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB{gpu}; {platform.system()} {platform.release()}; "
            f"torch {torch.__version__}, Python {platform.python_version()}")
