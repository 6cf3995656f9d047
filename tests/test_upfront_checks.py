"""Problems found before Ray starts: one line, exit status 2, nothing started or written.

Covers damaged inputs (a config that is not text, garbage CIFAR-100 files, a damaged checkpoint),
search-space values (bounds outside a key's range, YAML exponent floats), ``data convert`` over an
existing file, an unreachable MLflow store, and resource requests this machine can never hold.
"""

import http.server
import os
import socket
import subprocess
import sys
import threading
import time

import h5py
import numpy as np
import pytest
import torch

from distmtl.cli import main
from distmtl.config import load_config, parse_set_args
from distmtl.errors import ConfigError, DistmtlError
from distmtl.tracking.probe import check_tracking_store
from distmtl.tune.space import Space
from fake_datasets import write_cifar100

from conftest import REPO

QUICK = REPO / "search_spaces" / "quick.yaml"


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("distmtl: error: ") and len(err.splitlines()) == 1, err
    return err


def garbage(path, size=512, seed=0):
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


def test_a_config_of_binary_garbage_is_one_line(tmp_path, capsys):
    config = garbage(tmp_path / "config.yaml")
    assert main(["train", "--config", str(config)]) == 2
    assert f"config file {config} is not UTF-8 text" in one_line_error(capsys)
    assert main(["tune", "--space", str(config), "--dry-run"]) == 2
    assert "search-space file" in one_line_error(capsys)


def test_exponent_floats_without_a_dot_or_sign_are_numbers(tmp_path, capsys):
    (tmp_path / "base.yaml").write_text("tasks: [fine]\noptim: {lr: 1e-3, weight_decay: 1.0e-5}\n")
    assert load_config(tmp_path / "base.yaml").optim.lr == 0.001
    assert parse_set_args(["optim.lr=1.0e6"]) == {"optim.lr": 1e6}
    space = tmp_path / "space.yaml"
    space.write_text("base: base.yaml\nparameters:\n  optim.lr: {type: choice, values: [1.0e-3, 1.0e6]}\n")
    assert Space(space).file.parameters["optim.lr"].values == [0.001, 1e6]
    assert main(["tune", "--space", str(space), "--dry-run"]) == 0
    assert "optim.lr  choice [0.001, 1000000.0]" in capsys.readouterr().out


@pytest.mark.parametrize("param, expected", [
    ("model.dropout: {type: uniform, low: 0.0, high: 1.5}",
     "parameters.model.dropout.high: model.dropout: Input should be less than 1 (got 1.5)"),
    ("model.bottleneck: {type: randint, low: 0, high: 64}",
     "parameters.model.bottleneck.low: model.bottleneck: Input should be greater than 0 (got 0)"),
    ("model.architecture: {type: choice, values: [hard_sharing, hard_shraing]}",
     "parameters.model.architecture.values[1]: model.architecture: unknown architecture 'hard_shraing'"),
])
def test_search_space_bounds_are_checked_against_the_keys_range_when_loaded(tmp_path, capsys, param, expected):
    (tmp_path / "base.yaml").write_text("tasks: [fine]\n")
    space = tmp_path / "space.yaml"
    space.write_text(f"base: base.yaml\nparameters:\n  {param}\n")
    with pytest.raises(ConfigError, match=expected.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        Space(space)
    assert main(["tune", "--space", str(space), "--dry-run"]) == 2
    assert expected in one_line_error(capsys)


def test_data_convert_refuses_to_replace_a_file_unless_forced(tmp_path, capsys):
    out = tmp_path / "digits.h5"
    out.write_text("an earlier result")
    args = ["data", "convert", "--source", "digits", "--out", str(out), "--image-size", "16", "--num-samples", "50"]
    assert main(args) == 2
    assert f"--out {out} exists; pass --force" in one_line_error(capsys)
    assert out.read_text() == "an earlier result"
    assert main([*args, "--force"]) == 0
    with h5py.File(out) as f:
        assert f["images"].shape[0] == 50


def _cifar_config(tmp_path, root):
    config = tmp_path / "cifar.yaml"
    config.write_text(f"tasks: [fine, coarse]\ndata: {{source: cifar100, root: {root}}}\n")
    return config


def test_a_cifar100_root_of_garbage_files_is_refused_before_ray_starts(tmp_path, capsys):
    directory = write_cifar100(tmp_path / "data")
    for name in ("train", "test", "meta"):
        garbage(directory / name)
    config = _cifar_config(tmp_path, tmp_path / "data")
    storage = tmp_path / "results"
    assert main(["train", "--config", str(config), "--storage", str(storage),
                 "--mlflow-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]) == 2
    assert "as a CIFAR-100 pickle" in one_line_error(capsys)
    assert not storage.exists() and not (tmp_path / "mlflow.db").exists()
    space = tmp_path / "space.yaml"
    space.write_text("base: cifar.yaml\nmetric: val/fine/accuracy\n"
                     "parameters: {optim.lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}}\n")
    assert main(["tune", "--space", str(space), "--dry-run"]) == 2
    assert "as a CIFAR-100 pickle" in one_line_error(capsys)


def test_good_cifar100_files_pass_the_check(tmp_path, capsys):
    write_cifar100(tmp_path / "data")
    (tmp_path / "space.yaml").write_text("base: cifar.yaml\nmetric: val/fine/accuracy\n"
                                         "parameters: {optim.lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}}\n")
    _cifar_config(tmp_path, tmp_path / "data")
    assert main(["tune", "--space", str(tmp_path / "space.yaml"), "--dry-run"]) == 0


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_resume_checkpoint_is_refused_before_ray_starts(tmp_path, capsys, damage):
    checkpoint = tmp_path / "checkpoint_000001"
    checkpoint.mkdir()
    path = checkpoint / "checkpoint.pt"
    if damage == "garbage":
        garbage(path)
    else:
        torch.save({"format_version": 1, "model": {"w": torch.zeros(1000)}}, path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    config = tmp_path / "config.yaml"
    config.write_text("tasks: [fine]\n")
    storage = tmp_path / "results"
    assert main(["train", "--config", str(config), "--resume", str(checkpoint), "--storage", str(storage)]) == 2
    err = one_line_error(capsys)
    assert f"--resume: cannot read {path}" in err and "the file is damaged" in err
    assert not storage.exists()


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):
        self.send_response(self.status if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    servers = []

    def start(status):
        handler = type("Handler", (_Health,), {"status": status})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_mlflow_server_is_probed_with_a_short_timeout(http_server):
    check_tracking_store(http_server(200))
    check_tracking_store(http_server(401))  # an authenticating proxy in front of the server
    with pytest.raises(DistmtlError, match=r"GET /health answered HTTP 404, so this is not a running MLflow server"):
        check_tracking_store(http_server(404))
    with pytest.raises(DistmtlError, match=r"cannot be reached \(ConnectionError\)"):
        check_tracking_store(f"http://127.0.0.1:{_closed_port()}")
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        started = time.perf_counter()
        with pytest.raises(DistmtlError, match=r"cannot be reached \(no answer within 1 s\)"):
            check_tracking_store(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=1)
        assert time.perf_counter() - started < 30  # the client alone would retry for minutes


def test_a_sqlite_store_needs_an_existing_writable_directory(tmp_path):
    check_tracking_store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(DistmtlError, match=f"directory {tmp_path / 'missing'} does not exist"):
        check_tracking_store(f"sqlite:///{tmp_path / 'missing' / 'mlflow.db'}")


def test_tune_with_an_unreachable_mlflow_server_stops_before_ray(tmp_path, capsys):
    storage = tmp_path / "results"
    assert main(["tune", "--space", str(QUICK), "--storage", str(storage),
                 "--mlflow-uri", f"http://127.0.0.1:{_closed_port()}"]) == 2
    assert "MLflow tracking server" in one_line_error(capsys)
    assert not storage.exists()


@pytest.mark.subprocess
@pytest.mark.parametrize("args, expected", [
    (["tune", "--space", str(QUICK), "--gpus-per-worker", "1"], "--gpus-per-worker 1: the Ray cluster has no GPUs"),
    (["tune", "--space", str(QUICK), "--cpus-per-worker", "64"], "--cpus-per-worker 64: no node has that many CPUs"),
    (["train", "--config", str(REPO / "search_spaces" / "configs" / "quick.yaml"), "--workers", "64"],
     "--workers 64: 64 workers of 0.25 CPU never fit this Ray cluster"),
    (["tune", "--space", str(QUICK), "--address", "127.0.0.1:{closed}"],
     "no Ray cluster answers at 127.0.0.1:{closed} (--address): Connection refused"),
])
def test_requests_that_can_never_be_met_are_refused_before_ray_starts(tmp_path, args, expected):
    """As a user runs it: a fresh process with no Ray cluster to join (a private Ray temp dir)."""
    closed = _closed_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_TMPDIR=str(tmp_path), PYTHONPATH=str(REPO))
    storage = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "distmtl", *(a.format(closed=closed) for a in args),
                           "--storage", str(storage), "--mlflow-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and expected.format(closed=closed) in proc.stderr
    assert not (tmp_path / "ray").exists() and not storage.exists()  # no Ray session, no trial
