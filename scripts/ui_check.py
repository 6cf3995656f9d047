"""Browser check of the MLflow UI on a real sweep: the pages a user opens, rendered by headless Chromium.

Runs a tiny `distmtl tune` sweep into a fresh SQLite store (or takes an existing store with ``--store``),
starts `distmtl ui` on a free port, renders five pages with Debian's ``chromium`` (``--dump-dom`` and
``--screenshot`` in one go) and checks on the rendered DOM that

- the experiment's page shows its description (which names the space file) and a runs table of one row,
  the sweep's parent run, counting its trials as matching runs nested under it (MLflow collapses child
  runs under their parent);
- the parent run's page lists every trial under "Child runs", and its best score;
- the best trial's page names the sweep as its parent run and lists every metric the run holds;
- the best trial's and the parent's artifact pages list every logged file and render an image preview.

The run ids and the expected names come from the store through MLflow's client; every "found" value is
read from the rendered page. Screenshots and the DOMs go to ``--out``.

    python scripts/ui_check.py [--out DIR] [--store sqlite:///path/mlflow.db] [--chromium PATH]

Exit status: 0 when every check passes, 1 when one fails, 2 on bad input. Without Chromium (as in CI) it
prints ``SKIPPED: ...`` and exits 0, its JSON line saying ``"skipped": true``. Prints a table of the checks
(with the machine) and, last, one JSON line: ``{"ok": true, "passed": k, "checks": n, ...}``.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from tabulate import tabulate

from distmtl.machine import describe

REPO = Path(__file__).resolve().parents[1]
SPACE = REPO / "search_spaces" / "quick.yaml"
#: The tiny sweep: two trials of two epochs on 300 generated images (about two minutes on 2 cores).
SWEEP_ARGS = ["--num-samples", "2", "--set", "optim.epochs=2", "--set", "data.num_samples=300"]
EXPERIMENT = "ui-check"
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
_RUN_LINK = re.compile(r"#/experiments/[^/]+/runs/([0-9a-f]{32})$")


class RenderedPage(HTMLParser):
    """What the checks read from a rendered DOM: its text outside elements styled ``display: none`` (MLflow
    keeps a collapsed folder's files in the DOM that way), links (with the ``data-testid`` blocks around
    them), table rows' ``row-id``, the artifact tree's file names and images' ``alt``/``src``."""

    def __init__(self, dom: str) -> None:
        super().__init__(convert_charrefs=True)
        self.text_parts: list[str] = []
        self.links: list[tuple[str, str, tuple[str, ...]]] = []  # href, text, enclosing data-testids
        self.row_ids: list[str] = []
        self.images: list[tuple[str, str]] = []
        self.tree_nodes: list[str] = []  # names shown in the artifact tree
        self._stack: list[tuple[str, str | None, bool]] = []  # open tags: data-testid, whether it hides its content
        self._skip = 0  # inside <script> or <style>, or a hidden element
        self._link: list | None = None
        self.feed(dom)
        self.text = re.sub(r"\s+", " ", " ".join(self.text_parts))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "img":
            self.images.append((found.get("alt") or "", found.get("src") or ""))
        if "row-id" in found and "ag-row" in (found.get("class") or ""):
            self.row_ids.append(found["row-id"] or "")
        if tag in _VOID:
            return
        hides = tag in ("script", "style") or "display: none" in (found.get("style") or "")
        self._skip += hides
        if found.get("data-testid") == "artifact-tree-node" and not self._skip:
            self.tree_nodes.append(found.get("artifact-name") or "")
        if tag == "a" and found.get("href") and not self._skip:
            self._link = [found["href"], "", tuple(t for _, t, _ in self._stack if t)]
        self._stack.append((tag, found.get("data-testid"), hides))

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID:
            return
        if tag == "a" and self._link is not None:
            self.links.append((self._link[0], self._link[1].strip(), self._link[2]))
            self._link = None
        while self._stack:  # close up to the matching tag (the DOM Chromium serialises is well formed)
            closed, _, hid = self._stack.pop()
            self._skip -= hid
            if closed == tag:
                break

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        self.text_parts.append(data)
        if self._link is not None:
            self._link[1] += data

    def linked_runs(self, testid: str) -> set[str]:
        """Ids of the runs linked inside the block ``data-testid=testid`` (e.g. ``key-value-Child runs``)."""
        return {m.group(1) for href, _, blocks in self.links if testid in blocks
                for m in [_RUN_LINK.search(href)] if m}

    def matching_runs(self) -> int | None:
        """The runs table's "N matching runs" count."""
        found = re.search(r"(\d+) matching runs?", self.text)
        return int(found.group(1)) if found else None

    def section(self, start: str, end: str) -> str:
        """The visible text from ``start`` (a regex) up to ``end`` (a regex), or '' when ``start`` is absent."""
        found = re.search(f"{start}(.*?)(?:{end}|$)", self.text)
        return found.group(1) if found else ""


@dataclass
class Check:
    page: str
    name: str
    expected: str
    found: str
    ok: bool


@dataclass
class Store:
    """What the store holds for the sweep the pages show (learned through MLflow's client, not the UI)."""

    uri: str
    experiment_id: str
    parent: str
    parent_name: str
    trials: dict[str, str]  # run id -> run name
    best: str
    best_metrics: list[str]
    best_score: list[str]
    parent_files: list[str]
    best_files: list[str]
    description: str
    space_file: str
    previews: dict[str, str] = field(default_factory=dict)  # run id -> an image artifact shown on its page


def read_store(uri: str) -> Store:
    """The latest sweep in ``uri``: its parent run, trials, best trial, metric names and artifact files."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiments = client.search_experiments(order_by=["last_update_time DESC"])
    parents = client.search_runs([e.experiment_id for e in experiments], "tags.`distmtl.sweep_of` LIKE '%'",
                                 order_by=["attributes.start_time DESC"], max_results=1)
    if not parents:
        raise SystemExit(f"ui_check: error: no distmtl sweep in {uri}")
    parent = parents[0]
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    if not children:
        raise SystemExit(f"ui_check: error: the sweep {parent.info.run_name} in {uri} has no trial runs")
    best_trial = parent.data.tags.get("distmtl.best_trial_id")
    best = next((c for c in children if c.data.tags.get("distmtl.trial_id") == best_trial), children[0])

    def files(run_id: str) -> list[str]:
        top = client.list_artifacts(run_id)
        nested = [f for d in top if d.is_dir for f in client.list_artifacts(run_id, d.path)]
        return [f.path for f in top + nested]

    store = Store(uri, parent.info.experiment_id, parent.info.run_id, parent.info.run_name,
                  {c.info.run_id: c.info.run_name for c in children}, best.info.run_id, sorted(best.data.metrics),
                  sorted(k for k in parent.data.metrics if k.startswith("best/")), files(parent.info.run_id),
                  files(best.info.run_id),
                  client.get_experiment(parent.info.experiment_id).tags.get("mlflow.note.content", ""),
                  Path(parent.data.tags.get("distmtl.space", "?")).name)
    for run_id, paths in ((store.parent, store.parent_files), (store.best, store.best_files)):
        images = [p for p in paths if p.endswith(".png")]
        if images:
            store.previews[run_id] = images[0]
    return store


def run_sweep(directory: Path, timeout: float) -> str:
    """Run the tiny sweep into ``directory`` (its SQLite store, artifacts and Ray results); its store's URI."""
    uri = f"sqlite:///{directory / 'mlflow.db'}"
    command = [sys.executable, "-m", "distmtl", "-q", "tune", "--space", str(SPACE), *SWEEP_ARGS,
               "--mlflow-uri", uri, "--storage", str(directory / "ray_results"), "--experiment", EXPERIMENT]
    print("sweep:", " ".join(command[2:]), flush=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(command, cwd=directory, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise SystemExit(f"ui_check: error: the sweep failed (exit {done.returncode}): "
                         f"{(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    return uri


class UiServer:
    """`distmtl ui` on a free port of 127.0.0.1, in its own process group (stopped with it, always)."""

    def __init__(self, uri: str, cwd: Path, log: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        self.process = subprocess.Popen([sys.executable, "-m", "distmtl", "ui", "--mlflow-uri", uri, "--port",
                                         str(self.port)], cwd=cwd, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self._log = log
        threading.Thread(target=self._drain, daemon=True).start()  # the server logs every request: keep reading

    def _drain(self) -> None:
        with self._log.open("w") as out:
            for line in self.process.stdout:
                out.write(line)
                out.flush()
                self.lines.put(line)

    def first_line(self, timeout: float) -> str:
        """What `distmtl ui` prints first: the UI's address, opened at the latest sweep."""
        return self.lines.get(timeout=timeout).strip()

    def wait_healthy(self, timeout: float) -> None:
        """Poll ``GET /health`` until it answers 200, the process exits, or ``timeout`` seconds pass."""
        from distmtl.tracking.probe import health_status

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"ui_check: error: `distmtl ui` exited ({self.process.returncode}); see {self._log}")
            if health_status(self.base, timeout=2.0) == 200:
                return
            time.sleep(0.5)  # the poll interval, not a synchronisation
        raise SystemExit(f"ui_check: error: the UI did not answer /health within {timeout:g} s; see {self._log}")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to the whole group (MLflow's server and job consumers outlive `distmtl ui` otherwise); what
        is left of it after ``timeout`` seconds gets SIGKILL."""
        group = self.process.pid
        try:
            os.killpg(group, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                self.process.poll()
                os.killpg(group, 0)  # raises once no process of the group is left
                time.sleep(0.2)  # the poll interval, not a synchronisation
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=timeout)


def render(chromium: str, url: str, png: Path, profile: Path, size: tuple[int, int], budget_ms: int) -> RenderedPage:
    """Load ``url`` in headless Chromium; save a screenshot to ``png`` and the rendered DOM beside it."""
    # --run-all-compositor-stages-before-draw: animation frames run under virtual time (a folder of the artifact
    # tree opens with an animation, and stays display: none without them)
    command = [chromium, "--headless=new", "--disable-gpu", "--no-sandbox", f"--user-data-dir={profile}",
               "--run-all-compositor-stages-before-draw",
               f"--window-size={size[0]},{size[1]}", f"--virtual-time-budget={budget_ms}", f"--screenshot={png}",
               "--dump-dom", url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    if done.returncode != 0:
        raise SystemExit(f"ui_check: error: chromium failed on {url} (exit {done.returncode})")
    png.with_suffix(".html").write_text(done.stdout)
    return RenderedPage(done.stdout)


def check_pages(store: Store, render_page) -> list[Check]:
    """Render each page (``render_page(name, path, height)``) and check it against what the store holds."""
    checks: list[Check] = []

    def add(page: str, name: str, expected, found, ok: bool) -> None:
        checks.append(Check(page, name, str(expected), str(found), ok))

    eid, n = store.experiment_id, len(store.trials)
    page = render_page("experiment", f"#/experiments/{eid}/runs", 1000)
    add("experiment", "runs table rows", store.parent_name, ", ".join(dict.fromkeys(page.row_ids)) or "none",
        set(page.row_ids) == {store.parent})
    add("experiment", "matching runs (trials nested under the sweep's row)", n + 1, page.matching_runs(),
        page.matching_runs() == n + 1 and not set(page.row_ids) & set(store.trials))

    squeezed = re.sub(r"[\s`]", "", store.description)  # the UI renders it as Markdown (`x` as <code>x</code>)
    rendered = bool(squeezed) and squeezed in re.sub(r"\s", "", page.text)
    add("experiment", f"description (names {store.space_file})", store.description[:50] + "...",
        "shown" if rendered else "not shown", rendered and store.space_file in store.description)

    page = render_page("parent", f"#/experiments/{eid}/runs/{store.parent}", 1600)
    listed = page.linked_runs("key-value-Child runs")
    add("parent", "trials listed under 'Child runs'", n, f"{len(listed & set(store.trials))} of {len(listed)}",
        listed == set(store.trials))
    shown = [k for k in store.best_score if k in page.section(r"Metrics \(\d+\)", r"Parameters \(")]
    add("parent", "best score in its metrics", ", ".join(store.best_score) or "-", ", ".join(shown) or "none",
        bool(store.best_score) and shown == store.best_score)

    page = render_page("trial", f"#/experiments/{eid}/runs/{store.best}", 2400)
    add("trial", "parent run link", store.parent_name, ", ".join(page.linked_runs("key-value-Parent run")) or "none",
        page.linked_runs("key-value-Parent run") == {store.parent})
    table = page.section(r"Metrics \(\d+\)", r"Parameters \(")
    shown = [k for k in store.best_metrics if re.search(rf"(^| ){re.escape(k)} ", table)]
    add("trial", "metrics listed", len(store.best_metrics), len(shown), shown == store.best_metrics)

    for name, run_id, files in (("trial-artifacts", store.best, store.best_files),
                                ("parent-artifacts", store.parent, store.parent_files)):
        preview = store.previews.get(run_id, "")
        page = render_page(name, f"#/experiments/{eid}/runs/{run_id}/artifacts/{preview}", 1200)
        names = [Path(f).name for f in files]
        shown = [f for f in names if f in page.tree_nodes]
        add(name, "files in the artifact tree", len(names), len(shown), shown == names)
        rendered = any(alt == preview and src.startswith(("blob:", "data:", "http")) for alt, src in page.images)
        add(name, "image preview rendered", preview or "-", "yes" if rendered else "no", bool(preview) and rendered)
    return checks


def machine_line(chromium: str | None) -> str:
    import mlflow

    browser = (subprocess.run([chromium, "--version"], capture_output=True, text=True).stdout.strip()
               if chromium else "no chromium")
    return f"machine: {describe()}; mlflow {mlflow.__version__}; {browser}"


def markdown(checks: list[Check]) -> str:
    rows = [[c.page, c.name, c.expected, html.escape(c.found), "yes" if c.ok else "NO"] for c in checks]
    return tabulate(rows, ["page", "check", "expected", "found (rendered page)", "ok"], tablefmt="github",
                    disable_numparse=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "distmtl-ui-check"), metavar="DIR",
                        help="where screenshots (and the rendered DOMs) go (default: %(default)s)")
    parser.add_argument("--store", default=None, metavar="URI",
                        help="check the latest sweep of this SQLite store instead of running a new sweep")
    parser.add_argument("--chromium", default=None, metavar="PATH",
                        help="the browser (default: chromium or chromium-browser on PATH)")
    parser.add_argument("--budget-ms", type=int, default=15000, metavar="MS",
                        help="Chromium's virtual-time budget per page (default %(default)s)")
    parser.add_argument("--sweep-timeout", type=float, default=900, metavar="S")
    parser.add_argument("--ui-timeout", type=float, default=180, metavar="S", help="wait for the UI's /health")
    args = parser.parse_args(argv)
    if args.store and not args.store.startswith("sqlite:///"):
        parser.error("--store takes a SQLite store, sqlite:///path/mlflow.db")
    if args.store and not Path(args.store.removeprefix("sqlite:///")).is_file():
        parser.error(f"--store: no MLflow store at {args.store.removeprefix('sqlite:///')}")
    if args.budget_ms <= 0:
        parser.error("--budget-ms must be > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    chromium = args.chromium or shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None or not Path(chromium).is_file():
        print(f"SKIPPED: no Chromium ({args.chromium or 'chromium/chromium-browser not on PATH'}); install Debian's "
              "`chromium` package to run the browser check")
        print(json.dumps({"skipped": True, "ok": None}))
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(machine_line(chromium), flush=True)
    with tempfile.TemporaryDirectory(prefix="distmtl-ui-check-") as scratch:
        work = Path(scratch)
        started = time.perf_counter()
        uri = args.store or run_sweep(work, args.sweep_timeout)
        sweep_s = time.perf_counter() - started
        store = read_store(uri)
        server = UiServer(uri, work, out / "ui.log")
        try:
            printed = server.first_line(timeout=args.ui_timeout)
            server.wait_healthy(args.ui_timeout)
            shots: list[str] = []

            def render_page(name: str, path: str, height: int) -> RenderedPage:
                png = out / f"{name}.png"
                page = render(chromium, f"{server.base}/{path}", png, work / "chromium-profile", (1600, height),
                              args.budget_ms)
                shots.append(str(png))
                return page

            expected = f"{server.base}/#/experiments/{store.experiment_id}/runs/{store.parent}"
            checks = [Check("console", "`distmtl ui` prints the sweep's URL", expected, printed.split(": ", 1)[-1],
                            expected in printed)]
            checks += check_pages(store, render_page)
        finally:
            server.stop()
    print(f"\nsweep: {len(store.trials)} trials ({'given store' if args.store else f'{sweep_s:.0f} s'}); "
          f"UI {server.base}; screenshots in {out}\n")
    print(markdown(checks))
    passed = sum(c.ok for c in checks)
    print(json.dumps({"skipped": False, "ok": passed == len(checks), "passed": passed, "checks": len(checks),
                      "trials": len(store.trials), "screenshots": shots}))
    return 0 if passed == len(checks) else 1


if __name__ == "__main__":
    sys.exit(main())
