"""Every recipe at its --quick size, through the CLI, into a real SQLite MLflow store: the table's shape, its
cells, and that its numbers are exactly those of the child runs in MLflow."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from distmtl.cli import main
from distmtl.recipes import RECIPES
from distmtl.recipes.task_affinity import SIGNAL_NAMES, digits_sample
from distmtl.recipes.task_groupings import grouping_name, groupings

CRITERIA = ("similarity", "dissimilarity", "variance", "affinity")
SELECTIVE = ["independent", "hard_sharing"] + [f"selective ({c}){retrained}" for c in CRITERIA
                                               for retrained in ("", ", retrained")]
GENERATOR_TASKS = ["fine acc.", "coarse acc.", "shape MAE", "colour acc.", "texture acc."]
SELECTIVE_ONLY = ["lock epoch", "branches"]
#: The generator's 5 tasks in at most 2 branches (within half the parameters of independent networks): 16 groupings.
GROUPINGS = ["independent", "{fine, coarse, shape, colour, texture}", "{fine, coarse, shape, colour} · {texture}",
             "{fine, coarse, colour, texture} · {shape}", "{fine, coarse, colour} · {shape, texture}",
             "{fine} · {coarse, shape, colour, texture}", "{fine, texture} · {coarse, shape, colour}",
             "{fine, shape} · {coarse, colour, texture}", "{fine, shape, texture} · {coarse, colour}",
             "{fine, coarse, shape, texture} · {colour}", "{fine, coarse, shape} · {colour, texture}",
             "{fine, coarse, texture} · {shape, colour}", "{fine, coarse} · {shape, colour, texture}",
             "{fine, colour} · {coarse, shape, texture}", "{fine, colour, texture} · {coarse, shape}",
             "{fine, shape, colour} · {coarse, texture}", "{fine, shape, colour, texture} · {coarse}"]

AFFINITY_RUNS = ["affinity run (hard sharing)", "affinity run (branches)"]
AFFINITY_DIGITS = ["independent",
                   *(grouping_name(g) for g in digits_sample([f"is_{d}" for d in range(10)], quick=True)),
                   *AFFINITY_RUNS, *(f"chosen ({s})" for s in SIGNAL_NAMES)]
RULES = [f"merge: {r}" for r in ("lowest_loss", "highest_loss", "mean")]
#: Cells a quick run may leave empty: no seed's branches locked, or merged, within the quick epochs.
OPTIONAL = {"lock epoch", "progress lost at a merge", "worst progress lost"}

ALONE = {"fine": "fine acc.", "coarse": "coarse acc.", "shape": "shape MAE", "colour": "colour acc.",
         "texture": "texture acc."}
METHODS = ["fixed", "aligned_mtl", "cagrad", "config", "dualproj", "graddrop", "imtl_g", "mgda", "nash_mtl", "pcgrad",
           "upgrad", "dwa", "famo", "gradnorm", "rlw", "uncertainty"]

#: recipe → its rows (data set, variant) and the cells that must be empty (not applicable), as (variant, column).
EXPECTED = {
    "fine_coarse": {
        "rows": [("generator", a) for a in ("independent", "hard_sharing", "reuse_coarse", "reuse_fine",
                                            "shared_reuse_coarse", "shared_reuse_fine")],
        "empty": set(),
    },
    "joint_mapping": {
        "rows": [("generator", v)
                 for v in ("transfer baseline", "joint λ=0.25", "joint λ=1", "joint + reconstruction λ=1")],
        "empty": set(),
    },
    "selective_sharing": {
        "rows": [(d, v) for d in ("generator", "digits") for v in SELECTIVE],
        "empty": {("generator", v, "mean bal. acc. (one-vs-all)") for v in SELECTIVE}
        | {(d, v, c) for d in ("generator", "digits") for v in SELECTIVE[:2]
           for c in SELECTIVE_ONLY + ["ARI vs construction"]}
        | {("digits", v, c) for v in SELECTIVE for c in GENERATOR_TASKS + ["ARI vs construction"]},
    },
    "cross_stitch": {
        "rows": [("generator", v) for v in ("cross-stitch, DWA", "drop bbox", "drop fine", "segmentation only",
                                            "bbox alone (auxiliary encoder)", "fine alone (auxiliary encoder)",
                                            "auxiliary-encoder transfer")],
        "empty": {("generator", "drop bbox", "bbox IoU"), ("generator", "drop fine", "fine acc."),
                  ("generator", "segmentation only", "bbox IoU"), ("generator", "segmentation only", "fine acc."),
                  ("generator", "bbox alone (auxiliary encoder)", "mask mIoU"),
                  ("generator", "bbox alone (auxiliary encoder)", "mask pixel acc."),
                  ("generator", "bbox alone (auxiliary encoder)", "fine acc."),
                  ("generator", "fine alone (auxiliary encoder)", "mask mIoU"),
                  ("generator", "fine alone (auxiliary encoder)", "mask pixel acc."),
                  ("generator", "fine alone (auxiliary encoder)", "bbox IoU"),
                  ("generator", "auxiliary-encoder transfer", "bbox IoU"),
                  ("generator", "auxiliary-encoder transfer", "fine acc.")},
    },
    "weightings": {
        "rows": [("generator", f"single-task {t}") for t in ALONE] + [("generator", m) for m in METHODS],
        "empty": {("generator", f"single-task {t}", c) for t, own in ALONE.items()
                  for c in [*GENERATOR_TASKS, "Δm (%)"] if c != own},
    },
    "task_groupings": {
        "rows": [("generator", v) for v in GROUPINGS],
        "empty": {("generator", "independent", "branches")},
    },
    "task_affinity": {
        "rows": [("generator", v) for v in [*GROUPINGS, *AFFINITY_RUNS]] + [("digits", v) for v in AFFINITY_DIGITS],
        "empty": {(d, v, "branches") for d in ("generator", "digits") for v in ("independent", AFFINITY_RUNS[0])}
        | {("generator", v, "mean bal. acc. (one-vs-all)") for v in [*GROUPINGS, *AFFINITY_RUNS]}
        | {("digits", v, c) for v in AFFINITY_DIGITS for c in GENERATOR_TASKS}
        | {(d, v, "affinity overhead") for d, names in (("generator", GROUPINGS), ("digits", AFFINITY_DIGITS))
           for v in names if v not in AFFINITY_RUNS},
    },
    "merge_rules": {
        "rows": [(d, v) for d in ("generator", "digits") for v in RULES],
        "empty": {("generator", v, "mean bal. acc. (one-vs-all)") for v in RULES}
        | {("digits", v, c) for v in RULES for c in GENERATOR_TASKS + ["ARI vs construction"]},
    },
}
QUICK_SEEDS = 2


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('recipes') / 'mlflow.db'}"


@pytest.mark.recipe
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_quick_recipe_table_is_what_its_child_runs_logged(name, store, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["-q", "recipe", name, "--quick", "--mlflow-uri", store, "--experiment", name]) == 0
    printed = capsys.readouterr().out
    recipe, expected = RECIPES.get(name), EXPECTED[name]

    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r is not parent]
    assert parent.info.status == "FINISHED" and parent.data.tags["distmtl.recipe"] == name
    assert parent.data.tags["distmtl.recipe_command"].startswith("distmtl -q recipe " + name)
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert all(r.info.status == "FINISHED" for r in children)
    assert len(children) == len(expected["rows"]) * QUICK_SEEDS

    artifacts = Path(parent.info.artifact_uri.removeprefix("file://"))
    table = json.loads((artifacts / "table.json").read_text())
    markdown = (artifacts / "table.md").read_text()
    assert markdown.strip() in printed
    assert table["columns"] == [c.header for c in recipe.columns]
    assert [(r["dataset"], r["variant"]) for r in table["rows"]] == expected["rows"]

    for row in table["rows"]:
        mine = sorted((r for r in children if (r.data.tags["distmtl.dataset"], r.data.tags["distmtl.variant"])
                       == (row["dataset"], row["variant"])), key=lambda r: int(r.data.tags["distmtl.seed"]))
        assert [int(r.data.tags["distmtl.seed"]) for r in mine] == list(range(QUICK_SEEDS)) == list(range(row["n"]))
        assert all(r.data.params["data.seed"] == r.data.params["train.seed"] == r.data.tags["distmtl.seed"]
                   for r in mine)
        assert all(int(r.data.metrics["epoch"]) == int(r.data.params["optim.epochs"]) - 1 for r in mine)
        for column, cell in row["cells"].items():
            logged = [r.data.metrics[cell["key"]] for r in mine if cell["key"] in r.data.metrics]
            if (row["dataset"], row["variant"], column) in expected["empty"]:
                assert logged == [] and cell["n"] == 0 and cell["text"] == "", (row["variant"], column)
                continue
            if column == "lock epoch":  # only runs whose branches locked within the quick epochs have one
                assert logged == [r.data.metrics["selective/lock_epoch"] for r in mine
                                  if r.data.metrics["selective/lock_epoch"] >= 0], row["variant"]
            if column in OPTIONAL and not logged:  # nothing locked or merged within the quick epochs
                assert cell["n"] == 0 and cell["text"] == "", row["variant"]
                continue
            assert logged, (row["variant"], column, "no child run logged it")
            ratio_to = next(c.ratio_to for c in recipe.columns if c.header == column)
            if ratio_to:  # each seed's value over the reference variant's of the same seed
                reference = {r.data.tags["distmtl.seed"]: r.data.metrics[cell["key"]] for r in children
                             if r.data.tags["distmtl.variant"] == ratio_to
                             and r.data.tags["distmtl.dataset"] == row["dataset"]}
                logged = [r.data.metrics[cell["key"]] / reference[r.data.tags["distmtl.seed"]] for r in mine]
            assert all(math.isfinite(v) for v in logged) and cell["n"] == len(logged)
            assert cell["mean"] == pytest.approx(sum(logged) / len(logged), rel=1e-9, abs=1e-12)
            assert cell["text"] in markdown
    for comparison in table["paired"]:
        assert comparison["n"] == QUICK_SEEDS and math.isfinite(comparison["mean_difference"])
    if name == "selective_sharing":
        assert_retrained_runs_train_the_grouping_found(children)
    if name == "task_groupings":
        assert_groupings_train_fixed_branches_within_the_budget(children)
    if name == "task_affinity":
        assert_every_signal_is_scored_on_both_data_sets(table, markdown)


def assert_retrained_runs_train_the_grouping_found(children) -> None:
    """Each retrained run starts from the branches its searched run (same data set, criterion and seed) ended with:
    as many branches, none of them merged or split during training."""
    by_cell = {(r.data.tags["distmtl.dataset"], r.data.tags["distmtl.variant"], r.data.tags["distmtl.seed"]): r
               for r in children}
    for (dataset, variant, seed), run in by_cell.items():
        if not variant.endswith(", retrained"):
            continue
        searched = by_cell[(dataset, variant.removesuffix(", retrained"), seed)]
        assert run.data.metrics["selective/branches"] == searched.data.metrics["selective/branches"], (variant, seed)
        assert run.data.metrics["selective/locked"] == 1.0 and run.data.metrics["selective/lock_epoch"] == -1.0


def assert_groupings_train_fixed_branches_within_the_budget(children) -> None:
    """Each grouping trains as many branches as it names, fixed from the start, with at most half the parameters of
    independent networks."""
    (independent,) = {r.data.metrics["params/total"] for r in children
                      if r.data.tags["distmtl.variant"] == "independent"}
    for run in children:
        variant = run.data.tags["distmtl.variant"]
        if variant != "independent":
            assert run.data.metrics["selective/branches"] == variant.count("{"), variant
            assert run.data.metrics["selective/lock_epoch"] == -1.0 and run.data.metrics["selective/locked"] == 1.0
            assert run.data.metrics["params/total"] <= independent / 2, variant


def assert_every_signal_is_scored_on_both_data_sets(table, markdown) -> None:
    """The analysis below the table scores each signal on each data set (ρ and regret finite where defined, the
    choice a partition of the tasks), and the digits runs that train a signal's choice trained it."""
    for dataset, tasks in (("generator", list(ALONE)), ("digits", [f"is_{d}" for d in range(10)])):
        found = table["analysis"]["data"][dataset]
        assert set(found["signals"]) == {*SIGNAL_NAMES, "random grouping (expected)"}
        for signal in SIGNAL_NAMES:
            scores = found["signals"][signal]
            assert scores["regret"]["n"] == QUICK_SEEDS and scores["regret"]["mean"] >= 0
            assert scores["cost"]["mean"] > 0 and scores["exhaustive"]["mean"] > 0
            for chosen in found["chosen"][signal]:
                assert sorted(t for group in chosen for t in group) == sorted(tasks)
    assert "Spearman ρ" in markdown and "generator: which tasks to train together" in markdown


@pytest.mark.parametrize("tasks, count", [(["a"], 1), (["a", "b", "c"], 5), (["a", "b", "c", "d", "e"], 52)])
def test_groupings_are_every_partition_once_fewest_groups_first(tasks, count):
    found = groupings(tasks)
    assert len(found) == count  # the Bell number: every partition of the tasks
    assert len({grouping_name(g) for g in found}) == count
    assert all(sorted(t for group in g for t in group) == tasks for g in found)
    assert [len(g) for g in found] == sorted(len(g) for g in found)
    assert found[0] == [tasks] and found[-1] == [[t] for t in tasks]


def test_recipe_list_names_every_recipe(capsys):
    assert main(["recipe", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in RECIPES)


def test_unknown_recipe_is_one_line_and_exit_2(capsys):
    assert main(["recipe", "nope"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and all(name in error for name in RECIPES)


def test_bad_override_stops_before_any_run(tmp_path, capsys):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["recipe", "fine_coarse", "--quick", "--mlflow-uri", store, "--set", "optim.lrr=0.1"]) == 2
    assert "optim.lrr" in capsys.readouterr().err
    assert not MlflowClient(store).search_experiments(filter_string="name = 'fine_coarse'")
