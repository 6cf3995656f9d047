"""Each kind of bad input gives one line naming the key or file, exit status 2, and starts nothing."""

import pickle
import subprocess
import sys
import textwrap

import pytest

from distmtl.cli import main
from distmtl.config import apply_overrides, load_config, parse_set_args
from distmtl.config.plugins import PluginKind, Settings
from distmtl.engine import check_config
from distmtl.errors import ConfigError
from distmtl.registry import Registry
from distmtl.tune.space import Space

from conftest import REPO, small_config

GOOD = """
tasks: [fine, shape]
data: {num_samples: 100}
optim: {lr: 0.001, epochs: 2}
"""


def write(tmp_path, text, name="config.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_a_good_file_loads_with_defaults_and_overrides(tmp_path):
    config = load_config(write(tmp_path, GOOD), parse_set_args(["optim.lr=3e-4", "model.channels=[8, 8]"]))
    assert config.optim.lr == 3e-4 and config.model.channels == [8, 8]
    assert config.data.num_samples == 100 and config.model.architecture == "hard_sharing"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("tasks: [fine\noptim: {lr: 1}", "malformed YAML"),
        (GOOD + "optim: {lrr: 0.1}", "unknown key 'optim.lrr' (did you mean 'optim.lr'?)"),
        (GOOD + "trian: {}", "unknown key 'trian'"),
        ("tasks: [fine]\noptim: {epochs: many}", "optim.epochs: Input should be a valid integer"),
        ("tasks: [fine]\noptim: {lr: -0.1}", "optim.lr: Input should be greater than 0"),
        ("tasks: [fine]\ndata: {val_fraction: 0.6, test_fraction: 0.5}", "val_fraction + test_fraction must be < 1"),
        ("tasks: [fine]\nweighting: {weights: {shape: 1.0}}", "weighting.weights names task 'shape'"),
        ("data: {num_samples: 10}", "missing required key 'tasks'"),
        ("- just\n- a list", "must hold a YAML mapping"),
    ],
)
def test_bad_config_files(tmp_path, text, expected):
    with pytest.raises(ConfigError, match=None) as info:
        load_config(write(tmp_path, text))
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"data.source": "imagenet"}, "unknown source 'imagenet'"),
        ({"tasks": ["fine", "smell"]}, "has no target ['smell']"),
        ({"model.architecture": "pyramid"}, "unknown architecture 'pyramid'"),
        ({"model.encoder": "vgg99"}, "unknown encoder 'vgg99'"),
        ({"weighting.method": "magic"}, "unknown weighting method 'magic'"),
        ({"train.selection_metric": "val/fine/auc"}, "'val/fine/auc' is not reported"),
    ],
)
def test_names_nothing_answers_to(overrides, expected):
    with pytest.raises(ConfigError) as info:
        check_config(small_config(**overrides))
    assert expected in str(info.value)


def test_set_arguments_must_be_key_value():
    with pytest.raises(ConfigError, match="--set expects key=value"):
        parse_set_args(["optim.lr"])
    with pytest.raises(ConfigError, match="holds a value, not a section"):
        apply_overrides({"optim": 3}, {"optim.lr": 1})


SPACE = """
base: {base}
metric: val/loss
parameters:
  optim.weight_decay: {param}
"""


@pytest.mark.parametrize(
    "param, expected",
    [
        ("{type: loguniform, low: 1.0e-2, high: 1.0e-4}", "low must be < high"),
        ("{type: loguniform, low: 0.0, high: 1.0}", "loguniform needs low > 0"),
        ("{type: normal, low: 0, high: 1}", "parameters.optim.weight_decay.type"),
        ("{type: choice}", "a choice needs a non-empty 'values' list"),
        ("{type: uniform, low: -1.0, high: -0.5}", "optim.weight_decay: Input should be greater than or equal to 0"),
    ],
)
def test_bad_search_spaces(tmp_path, param, expected):
    base = write(tmp_path, GOOD, "base.yaml")
    space = write(tmp_path, SPACE.format(base=base.name, param=param), "space.yaml")
    with pytest.raises(ConfigError) as info:
        Space(space)
    assert expected in str(info.value)


def test_search_space_parameter_must_exist_in_the_config(tmp_path):
    base = write(tmp_path, GOOD, "base.yaml")
    space = write(tmp_path, SPACE.format(base=base.name, param="{type: uniform, low: 0, high: 1}")
                  .replace("optim.weight_decay", "optim.momentum"), "space.yaml")
    with pytest.raises(ConfigError, match="unknown key 'optim.momentum'"):
        Space(space)


def test_search_space_metric_must_be_reported(tmp_path):
    base = write(tmp_path, GOOD, "base.yaml")
    text = SPACE.format(base=base.name, param="{type: uniform, low: 0, high: 1}").replace("val/loss", "val/fine/r2")
    with pytest.raises(ConfigError, match="metric 'val/fine/r2' is not reported"):
        Space(write(tmp_path, text, "space.yaml"))


def test_cli_prints_one_line_and_exits_2_without_starting_anything(tmp_path, capsys):
    bad = write(tmp_path, "tasks: [fine]\noptim: {lr: -1}")
    assert main(["train", "--config", str(bad), "--storage", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("distmtl: error:") and "optim.lr" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "results").exists() and not (tmp_path / "mlflow.db").exists()


def test_cli_rejects_bad_flags(tmp_path, capsys):
    good = write(tmp_path, GOOD)
    for workers in ("0", "4-2", "two"):
        with pytest.raises(SystemExit) as exited:  # argparse: usage line, one error line, status 2
            main(["train", "--config", str(good), "--workers", workers])
        assert exited.value.code == 2 and "argument --workers: " in capsys.readouterr().err
    assert main(["train", "--config", str(good), "--resume", str(tmp_path)]) == 2
    assert "no checkpoint.pt" in capsys.readouterr().err


@pytest.mark.subprocess
def test_console_command_exits_2_with_no_traceback(tmp_path):
    space = write(tmp_path, "base: missing.yaml\nparameters: {optim.lr: {type: uniform, low: 0.1, high: 0.2}}")
    proc = subprocess.run([sys.executable, "-m", "distmtl", "tune", "--space", str(space), "--dry-run"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"distmtl: error: config file not found: {tmp_path / 'missing.yaml'} (check the path)"]


@pytest.mark.parametrize("space", ["default.yaml", "quick.yaml", "demo.yaml"])
def test_shipped_spaces_search_all_six_hyperparameters(space):
    loaded = Space(REPO / "search_spaces" / space)
    assert set(loaded.file.parameters) == {
        "weighting.weights.shape", "optim.weight_decay", "model.dropout", "data.noise_level",
        "model.bottleneck", "weighting.temperature",
    }
    assert loaded.base_config.weighting.method == "dwa"


def test_dry_run_prints_the_resolved_space(capsys):
    assert main(["tune", "--space", str(REPO / "search_spaces" / "default.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "weighting.weights.shape  choice [0.0625, 0.125, 0.25, 0.5, 1.0, 2.0]" in out
    assert "optim.weight_decay       loguniform [1e-06, 0.01]" in out
    assert "metric        val/fine/accuracy (max)" in out


@pytest.mark.parametrize("metric", ["val/loss", "val/loss_unweighted", "val/fine/accuracy"])
def test_a_metric_scaled_by_a_searched_weight_is_refused_in_one_line(metric, tmp_path, capsys):
    """val/loss is Σ λ·L: with λ searched, small λ would win by construction; λ-free metrics are accepted."""
    write(tmp_path, GOOD, "base.yaml")
    space = write(tmp_path, f"base: base.yaml\nmetric: {metric}\nparameters:\n"
                            "  weighting.weights.shape: {type: choice, values: [0.5, 2.0]}\n", "space.yaml")
    rc = main(["tune", "--space", str(space), "--dry-run"])
    err = capsys.readouterr().err.strip()
    if metric != "val/loss":
        assert rc == 0 and not err
        return
    assert rc == 2 and len(err.splitlines()) == 1
    assert all(word in err for word in ("weighting.weights.shape", "'val/loss'", "val/loss_unweighted",
                                        "val/fine/accuracy"))


def test_a_cross_validated_space_scores_trials_by_the_fold_mean(tmp_path):
    base = write(tmp_path, GOOD, "base.yaml")
    text = SPACE.format(base=base.name, param="{type: uniform, low: 0, high: 1}") + "cv: 3\n"
    space = Space(write(tmp_path, text, "space.yaml"))
    assert space.tune_metric == "cv/best/val/loss" and space.scheduler_name == "fifo"
    config = space.trial_config({"optim.weight_decay": 0.5})
    assert config.train.selection_metric == "val/loss" and config.optim.weight_decay == 0.5
    assert "mean over 3-fold cross-validation" in space.describe()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("tasks: [fine]\nmodel: {architecture: independent, selective: {hidden: 8}}",
         "model.selective: a setting of architecture 'selective_sharing', not of 'independent' (this config's "
         "model.architecture); remove it, or set model.architecture to 'selective_sharing'"),
        ("tasks: [fine]\nweighting: {temperature: 2.0}",
         "weighting.temperature: a setting of weighting method 'dwa', not of 'fixed'"),
        ("tasks: [fine, coarse]\nmodel: {fine_task: fine}",
         "model.fine_task: a setting of architecture 'reuse_coarse' / "),
        ("tasks: [fine]\nmodel: {architecture: cross_stitch, cross_stich: {}}",
         "unknown key 'model.cross_stich' (did you mean 'model.cross_stitch'?)"),
        ("tasks: [fine]\nmodel: {architecture: selective_sharing, selective: {critrion: variance}}",
         "unknown key 'model.selective.critrion' (did you mean 'model.selective.criterion'?)"),
        ("tasks: [fine]\nweighting: {method: cagrad, c: -1}",
         "weighting.c: Input should be greater than or equal to 0"),
    ],
)
def test_a_key_of_a_plug_in_the_config_does_not_use_is_one_line(tmp_path, text, expected):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_a_plug_in_kind_builds_each_plug_in_s_section_and_merges_a_shared_one():
    """Plug-ins declare their keys when they register; the section validates as the named plug-in's (the default's
    when it names none), and two declarations of one section field (an architecture's and its controller's) become
    one section with both sets of keys."""
    kind = PluginKind("gizmo", "part", "name")

    @kind.bind
    class Part(Settings):
        name: str
        size: int = 1

    class Knob(Settings):
        knob: float = 0.5

    class Shape(Settings):
        width: int = 3

    class Rule(Settings):
        rule: str = "mean"

    registry = Registry("gizmo", "part.name", kind)
    registry.register("plain", default=True)(object)
    registry.register("knobbed", settings=Knob)(object)
    registry.register("merged",
                      settings=type("A", (Settings,), {"__annotations__": {"inner": Shape}, "inner": Shape()}))(object)
    kind.add("merged", type("B", (Settings,), {"__annotations__": {"inner": Rule}, "inner": Rule()}))
    assert kind.of().name == "plain" and kind.of(size=4).size == 4
    assert kind.of(name="knobbed", knob=0.7).knob == 0.7 and kind.owners("knob") == ["knobbed"]
    merged = kind.of(name="merged", inner={"width": 5, "rule": "max"})
    assert (merged.inner.width, merged.inner.rule) == (5, "max")
    with pytest.raises(ValueError, match="knob"):
        kind.of(knob=0.1)  # a key of 'knobbed', not of the default 'plain'
    with pytest.raises(TypeError, match="takes no settings"):
        Registry("thing", "thing").register("x", settings=Knob)


@pytest.mark.subprocess
def test_a_config_pickles_to_a_fresh_process_with_its_plug_in_sections(tmp_path):
    """Ray ships configs to workers by pickle; the plug-in sections are classes built at run time, so a fresh
    interpreter must rebuild them (with the keys that were set, merged sections included)."""
    config = load_config(REPO / "search_spaces/configs/selective_synthetic.yaml",
                         {"weighting.method": "cagrad", "weighting.c": 0.25})
    path = tmp_path / "config.pkl"
    path.write_bytes(pickle.dumps(config))
    script = textwrap.dedent(f"""
        import pickle, sys
        config = pickle.loads(open({str(path)!r}, "rb").read())
        print(type(config.model).__name__, config.model.selective.criterion, config.weighting.c,
              sorted(config.weighting.model_fields_set))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    assert out[:3] == ["SelectiveSharingModelConfig", config.model.selective.criterion, "0.25"]
    assert pickle.loads(pickle.dumps(config)) == config
