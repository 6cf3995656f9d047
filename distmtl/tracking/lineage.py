"""Lineage of a run: which distmtl (version, git commit, command) trained it, on which data (an MLflow dataset
input)."""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import distmtl

_PACKAGE_ROOT = Path(distmtl.__file__).resolve().parents[1]


@functools.cache
def code_tags() -> dict[str, str]:
    """``distmtl.version`` and, when distmtl runs from a git checkout, MLflow's ``mlflow.source.git.commit``."""
    tags = {"distmtl.version": distmtl.__version__}
    try:
        commit = subprocess.run(["git", "-C", str(_PACKAGE_ROOT), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return tags
    return {**tags, "mlflow.source.git.commit": commit}


def source_tags(command: str | None) -> dict[str, str]:
    """Where a run came from, as MLflow's UI shows it under "Source" (beside the commit of :func:`code_tags`): the
    distmtl command that made it, run locally; and that command as ``distmtl.command``."""
    name = f"distmtl {command}" if command else "distmtl"
    return {"mlflow.source.name": name, "mlflow.source.type": "LOCAL",
            **({"distmtl.command": command} if command else {})}


def dataset_input(data: dict[str, Any]) -> dict[str, Any]:
    """An MLflow dataset record for a run's ``data`` config section: name, where it came from, a digest of
    its content, and its size settings. The generator's images follow from its settings, so their digest is
    that of the settings; an HDF5 file's is a hash of the file's bytes."""
    root = data.get("root")
    settings = {k: data.get(k) for k in ("source", "root", "num_samples", "image_size", "seed")}
    if root and Path(root).is_file():
        digest = _file_digest(str(Path(root).resolve()), *_stamp(Path(root)))
    else:
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
    source = str(Path(root).resolve()) if root else f"distmtl.data.{data.get('source')}(seed={data.get('seed')})"
    return {"name": f"{data.get('source')}" + (f":{Path(root).name}" if root else ""), "digest": digest[:16],
            "source_type": "local" if root else "code", "source": source,
            "profile": json.dumps({"num_samples": data.get("num_samples"), "image_size": data.get("image_size"),
                                   "seed": data.get("seed")})}


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


@functools.cache
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    """SHA-256 of a file's bytes, computed once per file version (size and mtime) in this process."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
