"""Check that an MLflow tracking store can be reached before anything starts.

``MlflowClient`` retries a dead server for about four minutes, and a SQLite store in a missing
directory fails only when the first trial logs; both are found here in seconds.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from distmtl.errors import DistmtlError

#: Seconds to wait for an MLflow server to answer.
PROBE_TIMEOUT_S = 5.0


def check_tracking_store(uri: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Raise :class:`DistmtlError` if ``uri`` is an HTTP address where no MLflow server answers within
    ``timeout`` seconds, or a SQLite store whose directory does not exist or cannot be written. Other stores
    (Databricks, other databases) are left to MLflow."""
    if uri.startswith(("http://", "https://")):
        _check_server(uri, timeout)
    elif uri.startswith("sqlite:"):
        _check_sqlite(uri)


def health_status(uri: str, timeout: float) -> int | str:
    """The HTTP status of the MLflow server's ``GET /health`` at ``uri``, or why nothing answered (a reason)."""
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(reason, TimeoutError):
            return f"no answer within {timeout:g} s"
        return "ConnectionError" if isinstance(reason, ConnectionError) else type(reason).__name__


def _check_server(uri: str, timeout: float) -> None:
    """MLflow servers answer ``GET /health`` with 200; 401 or 403 is an authenticating proxy in front of one.
    No answer in time, or any other answer, means the runs could not be logged there. This is the one request
    distmtl makes itself, and only to the tracking server the user names."""
    status = health_status(uri, timeout)
    if isinstance(status, str):
        raise DistmtlError(f"MLflow tracking server {uri} cannot be reached ({status}); start it "
                           "(mlflow server ...) or pass another --mlflow-uri")
    if status >= 300 and status not in (401, 403):
        raise DistmtlError(f"MLflow tracking server {uri}: GET /health answered HTTP {status}, so this is not a "
                           "running MLflow server; check the address or pass another --mlflow-uri")


def _check_sqlite(uri: str) -> None:
    from sqlalchemy.engine import make_url

    database = make_url(uri).database
    if not database or database == ":memory:":
        raise DistmtlError(f"MLflow store {uri}: name a database file, e.g. sqlite:///mlflow.db")
    directory = Path(database).expanduser().absolute().parent
    if not directory.is_dir():
        raise DistmtlError(f"MLflow store {uri}: directory {directory} does not exist; create it or pass another "
                           "--mlflow-uri")
    if not os.access(directory, os.W_OK):
        raise DistmtlError(f"MLflow store {uri}: directory {directory} is not writable; pass another --mlflow-uri")
