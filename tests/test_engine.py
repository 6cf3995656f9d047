"""The engine in a plain process (and, with two gloo ranks, under torch.distributed) — no Ray."""

import json
import math
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torchvision.ops import box_iou

from distmtl.data.batch_loader import to_tensors
from distmtl.data.sample_set import MultiTaskDataset
from distmtl.data.sources import build_samples
from distmtl.data.splits import split_by_group
from distmtl.data.synthetic import class_names
from distmtl.engine import DistContext, LocalReporter, train
from distmtl.engine.checkpoint import load_checkpoint
from distmtl.engine.trainer import TIMINGS
from distmtl.errors import DistmtlError
from distmtl.models import build_model
from distmtl.tasks import build_tasks

from conftest import interrupted_run, small_config


def test_reports_every_epoch_with_per_task_metrics_and_test_at_the_end(tmp_path):
    config = small_config(**{"optim.epochs": 3, "weighting.method": "dwa", "weighting.weights": {"shape": 0.5}})
    reporter = LocalReporter(tmp_path)
    final = train(config, reporter)
    assert [r["epoch"] for r in reporter.history] == [0, 1, 2]
    for report in reporter.history:
        for key in ("train/loss", "val/loss", "val/fine/accuracy", "val/colour/accuracy", "val/shape/r2",
                    "val/shape/med", "weight/shape", "train/images_per_s"):
            assert key in report and not math.isnan(report[key])
    assert not any(k.startswith("test/") for r in reporter.history[:-1] for k in r)
    assert final is not reporter.history[-1] and final == reporter.history[-1]
    assert {"test/fine/accuracy", "test/shape/mse", "test/shape/r2"} <= set(final)
    losses = [r["val/loss"] for r in reporter.history]
    assert final["best_epoch"] == int(np.argmin(losses)) and final["best/val/loss"] == min(losses)
    assert reporter.history[0]["weight/shape"] == 0.5  # static λ; DWA factors are 1 for two epochs


def test_checkpoint_holds_the_whole_training_state(tmp_path):
    config = small_config(**{"weighting.method": "dwa"})
    reporter = LocalReporter(tmp_path)
    train(config, reporter)
    assert len(reporter.checkpoints) == 2
    state = load_checkpoint(reporter.checkpoints[-1])
    assert state.epoch == 1 and state.sampler == {"epoch": 2, "batches_done": 0}
    assert state.global_step == 2 * math.ceil(168 / 32)  # 168 training samples, batch 32, two epochs
    assert int(state.weighting["epochs_seen"]) == 2 and state.weighting["history"].shape == (2, 3)
    assert state.optimizer["state"]  # Adam moments were saved
    assert state.config["tasks"] == ["fine", "colour", "shape"]
    assert state.best.epoch in (0, 1) and state.best.state.keys() == state.model.keys()
    assert not list(reporter.output_dir.glob("*.partial"))  # every copy was completed and renamed


def test_resumed_run_matches_an_uninterrupted_one(tmp_path):
    config = small_config(**{"optim.epochs": 3, "weighting.method": "dwa", "model.dropout": 0.3,
                             "data.noise_level": 0.1})
    straight = train(config, LocalReporter())
    first = interrupted_run(config, tmp_path / "a", epochs=2)
    resumed_reporter = LocalReporter(resume_from=first.checkpoints[-1])
    resumed = train(config, resumed_reporter)
    assert [r["epoch"] for r in resumed_reporter.history] == [2]
    for key, value in straight.items():
        if key not in TIMINGS:
            assert resumed[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key


@pytest.mark.slow
def test_selection_mode_overrides_the_metrics_direction():
    """val/loss improves downwards; with ``selection_mode: max`` the best epoch is the one of highest validation
    loss instead, and the test metrics are that epoch's (here the first: a one-epoch run's test metrics, which a
    constant learning rate makes comparable)."""
    constant = {"optim.schedule": "constant"}
    reporters = {mode: LocalReporter() for mode in (None, "max")}
    final = {mode: train(small_config(**{**constant, "optim.epochs": 3, "train.selection_mode": mode}), reporter)
             for mode, reporter in reporters.items()}
    losses = [r["val/loss"] for r in reporters["max"].history]
    assert losses == [r["val/loss"] for r in reporters[None].history]  # selection does not change training
    assert losses[0] == max(losses) and losses[0] != min(losses)
    assert final[None]["best_epoch"] == int(np.argmin(losses)) != 0 and final[None]["best/val/loss"] == min(losses)
    assert final["max"]["best_epoch"] == 0 and final["max"]["best/val/loss"] == losses[0]
    first_epoch = train(small_config(**{**constant, "optim.epochs": 1}), LocalReporter())
    tested = [k for k in first_epoch if k.startswith("test/")]
    assert tested and all(final["max"][k] == pytest.approx(first_epoch[k], rel=1e-6) for k in tested)
    assert any(final[None][k] != pytest.approx(first_epoch[k], rel=1e-6) for k in tested)


def test_validation_sees_clean_images_even_with_heavy_training_noise(tmp_path):
    """The reported validation metrics equal a noise-free evaluation of the saved model."""
    config = small_config(**{"optim.epochs": 1, "data.noise_level": 0.9})
    reporter = LocalReporter(tmp_path)
    train(config, reporter)
    state = load_checkpoint(reporter.checkpoints[-1])
    samples = build_samples(config.data, config.tasks)
    _, val_idx, _ = split_by_group(samples.groups, config.data.val_fraction, config.data.test_fraction,
                                   config.data.seed)
    tasks = build_tasks(config.tasks, samples.specs)
    model = build_model(config.model, tasks, 3)
    model.load_state_dict(state.model)
    model.eval()
    batch = torch.utils.data.default_collate([MultiTaskDataset(samples, val_idx)[i] for i in range(len(val_idx))])
    with torch.no_grad():
        out = model(batch["image"])
    state = tasks["colour"].metric_state(out["colour"], batch["targets"]["colour"], batch["has_target"]["colour"])
    assert tasks["colour"].metrics(state)["accuracy"] == pytest.approx(reporter.history[0]["val/colour/accuracy"])


def test_targets_with_fraction_are_masked_and_training_still_runs():
    config = small_config(**{"data.target_fraction": {"shape": 0.2}})
    samples = build_samples(config.data, config.tasks)
    kept = samples.has_target["shape"].float().mean().item()
    assert 0.1 < kept < 0.3 and samples.has_target["fine"].all()
    final = train(config, LocalReporter())
    assert not math.isnan(final["test/shape/mse"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, port: int, config_dict: dict, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    from distmtl.config import config_from_dict

    reporter = LocalReporter()
    final = train(config_from_dict(config_dict), reporter, DistContext.current(torch.device("cpu")))
    results[rank] = {"final": final, "weights": [r["weight/shape"] for r in reporter.history]}
    dist.destroy_process_group()


@pytest.mark.subprocess
def test_two_ddp_ranks_agree_on_metrics_and_weights():
    """Under DDP every rank all-reduces the same epoch sums, so reports (and DWA weights) are identical."""
    config = small_config(**{"optim.epochs": 3, "weighting.method": "dwa"})
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_ddp_worker, args=(_free_port(), config.model_dump(), results), nprocs=2, join=True)
        a, b = results[0], results[1]
    assert a["weights"] == b["weights"] and a["weights"][2] != 1.0
    for key in ("val/loss", "val/fine/accuracy", "test/shape/r2", "train/loss", "best_epoch"):
        assert a["final"][key] == b["final"][key]


def test_trains_from_an_hdf5_store_with_loader_workers_and_augmentation(tmp_path):
    from distmtl.data.hdf5_store import write_store
    from distmtl.data.synthetic import generate

    path = write_store(generate(240, 16, seed=0), tmp_path / "s.h5", source="synthetic", chunk=32)
    config = small_config(**{"data.source": "hdf5", "data.root": str(path), "data.loader_workers": 2,
                             "data.augment": {"hflip": 0.5, "rotation": 10}, "tasks": ["fine", "colour"]})
    reporter = LocalReporter()
    final = train(config, reporter)
    assert len(reporter.history) == 2 and not math.isnan(final["test/colour/accuracy"])


def _losses_of_saved_model(config, checkpoint, indices: np.ndarray) -> dict[str, float]:
    """Per-task mean loss of a checkpoint's model on the samples at ``indices`` (one clean batch)."""
    samples = build_samples(config.data, config.tasks)
    tasks = build_tasks(config.tasks, samples.specs)
    model = build_model(config.model, tasks, samples.image_shape[0])
    model.load_state_dict(load_checkpoint(checkpoint).model)
    batch = torch.utils.data.default_collate([MultiTaskDataset(samples, indices)[i] for i in range(len(indices))])
    with torch.no_grad():
        out = model.eval()(batch["image"])
    terms = {t: task.masked_loss_terms(out[t], batch["targets"][t], batch["has_target"][t])
             for t, task in tasks.items()}
    return {t: (total / count).item() for t, (total, count) in terms.items()}


def test_a_cv_fold_trains_on_its_split(tmp_path):
    """Fold 1 of 3 trains on its own split: the reported validation and test losses are the saved model's on
    folds 2 and 1, and the optimizer took one step per batch of the remaining (training) fold."""
    from distmtl.data.splits import cv_split
    from distmtl.launch.cross_validation import fold_configs

    folds = fold_configs(small_config(**{"optim.epochs": 1}), 3)
    assert [(c.data.cv_folds, c.data.cv_fold) for c in folds] == [(3, 0), (3, 1), (3, 2)]
    reporter = LocalReporter(tmp_path)
    final = train(folds[1], reporter)
    samples = build_samples(folds[1].data, folds[1].tasks)
    train_idx, val_idx, test_idx = cv_split(samples.groups, 3, 1, folds[1].data.seed)
    checkpoint = reporter.checkpoints[-1]
    for split, indices in (("val", val_idx), ("test", test_idx)):
        losses = _losses_of_saved_model(folds[1], checkpoint, indices)
        assert all(final[f"{split}/{t}/loss"] == pytest.approx(v, rel=1e-4) for t, v in losses.items()), split
    data = folds[1].data
    _, random_val, _ = split_by_group(samples.groups, data.val_fraction, data.test_fraction, data.seed)
    other = _losses_of_saved_model(folds[1], checkpoint, random_val)
    assert final["val/shape/loss"] != pytest.approx(other["shape"], rel=1e-4)  # the comparison tells splits apart
    steps = {s["step"].item() for s in load_checkpoint(checkpoint).optimizer["state"].values()}
    assert steps == {math.ceil(len(train_idx) / folds[1].data.batch_size)}


def test_cv_summary_is_mean_and_sample_std():
    from distmtl.launch.cross_validation import summarize

    summary = summarize([{"test/a/accuracy": 0.5, "val/loss": 1.0}, {"test/a/accuracy": 0.7}, {"test/a/accuracy": 0.9}])
    assert summary == pytest.approx({"cv/test/a/accuracy": 0.7, "cv/test/a/accuracy/std": 0.2})


def test_unused_parameters_are_detected_for_ddp():
    from distmtl.engine.trainer import _has_unused_parameters

    dense_only = build_model(small_config(**{"tasks": ["mask"]}).model, build_tasks(["mask"], build_samples(
        small_config().data, ["mask"]).specs), 3)
    assert _has_unused_parameters(dense_only, (3, 16, 16), torch.device("cpu"))  # the bottleneck feeds no head
    both = build_model(small_config().model, build_tasks(["fine", "mask"], build_samples(
        small_config().data, ["fine", "mask"]).specs), 3)
    assert not _has_unused_parameters(both, (3, 16, 16), torch.device("cpu"))
    assert all(p.grad is None for p in both.parameters())


def test_a_checkpoint_of_another_model_or_a_damaged_one_is_refused_clearly(tmp_path):
    first = LocalReporter(tmp_path / "a")
    train(small_config(**{"optim.epochs": 1}), first)
    other = small_config(**{"tasks": ["fine", "colour"], "model.architecture": "independent", "optim.epochs": 2})
    with pytest.raises(DistmtlError, match=r"tasks: checkpoint \['fine', 'colour', 'shape'\], config \['fine', "
                                           r"'colour'\]; model.architecture: checkpoint hard_sharing, "
                                           r"config independent"):
        train(other, LocalReporter(resume_from=first.checkpoints[-1]))
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DistmtlError, match="cannot read .*: the file is damaged"):
        load_checkpoint(damaged)


def test_segmentation_and_detection_tasks_draw_a_few_test_images_with_their_predictions(tmp_path):
    """At the end: up to four test images, each with its true and predicted mask / box (the IoU beside them),
    as JSON and PNG; not at earlier epochs."""
    reporter = LocalReporter(tmp_path)
    train(small_config(tasks=["mask", "bbox", "fine"], **{"model.architecture": "cross_stitch"}), reporter)
    artifacts = reporter.checkpoints[-1] / "artifacts"
    assert {"segmentation_examples@mask_epoch001.png", "detection_examples@bbox_epoch001.png"} <= {
        p.name for p in artifacts.iterdir()}
    assert not list(reporter.checkpoints[0].glob("artifacts/*examples*"))
    mask = json.loads((artifacts / "segmentation_examples@mask_epoch001.json").read_text())
    images = np.array(mask["images"])
    assert images.shape == (4, 3, 16, 16) and images.max() > 1  # bytes, not [0, 1] floats
    assert np.array(mask["true"]).shape == np.array(mask["predicted"]).shape == (4, 16, 16)
    assert set(np.unique(mask["true"])) == {0, 1} and mask["classes"] == 2
    bbox = json.loads((artifacts / "detection_examples@bbox_epoch001.json").read_text())
    iou = box_iou(torch.tensor(bbox["predicted"]), torch.tensor(bbox["true"])).diagonal()
    assert iou.tolist() == pytest.approx(bbox["iou"]) and len(bbox["images"]) == 4


def test_the_last_checkpoint_draws_a_confusion_matrix_and_predicted_vs_true_at_the_best_epoch(tmp_path):
    """Each classification task's confusion matrix (whose diagonal gives the reported test accuracy) and each
    regression task's predictions against the truth, as JSON and PNG with the last epoch's records."""
    reporter = LocalReporter(tmp_path)
    final = train(small_config(), reporter)
    artifacts = reporter.checkpoints[-1] / "artifacts"
    names = {p.name for p in artifacts.iterdir()}
    assert {"confusion_matrix@fine_epoch001.png", "confusion_matrix@colour_epoch001.png",
            "predicted_vs_true@shape_epoch001.png"} <= names
    assert not list(reporter.checkpoints[0].glob("artifacts/confusion_matrix*"))  # drawn once, at the end
    for task in ("fine", "colour"):
        record = json.loads((artifacts / f"confusion_matrix@{task}_epoch001.json").read_text())
        matrix = np.array(record["matrix"])
        assert np.trace(matrix) / matrix.sum() == pytest.approx(final[f"test/{task}/accuracy"])
        assert record["class_names"] == class_names()[task] and len(record["class_names"]) == len(matrix)
    shape = json.loads((artifacts / "predicted_vs_true@shape_epoch001.json").read_text())
    assert np.array(shape["predicted"]).shape == np.array(shape["true"]).shape and len(shape["true"][0]) == 4


def test_a_batch_fetched_at_once_equals_the_samples_collated_one_by_one():
    """The engine's loaders read an in-memory batch in one indexing per array; it must hold exactly what collating
    the samples one at a time gives."""
    samples = build_samples(small_config().data, ["fine", "colour", "shape"])
    dataset = MultiTaskDataset(samples, np.arange(5, 45))
    positions = [3, 0, 17, 39, 8]
    one_by_one = torch.utils.data.default_collate([dataset[i] for i in positions])
    batch = to_tensors(dataset.read_batch(positions))
    assert torch.equal(batch["image"], one_by_one["image"]) and batch["image"].dtype == torch.float32
    for field in ("targets", "has_target"):
        assert batch[field].keys() == one_by_one[field].keys()
        for task, value in one_by_one[field].items():
            assert torch.equal(batch[field][task], value) and batch[field][task].dtype == value.dtype
    plain = next(iter(torch.utils.data.DataLoader(dataset, batch_size=5)))  # the default collate_fn still works
    assert torch.equal(plain["image"], torch.stack([dataset[i]["image"] for i in range(5)]))


@pytest.mark.parametrize("architecture", ["hard_sharing", "selective_sharing"])
def test_bf16_autocast_with_channels_last_trains_on_the_cpu(architecture):
    """The GPU speed switches (``train.precision: bf16``, ``train.channels_last``) run on any device, Selective
    Sharing's gradient capture included, and the run reports finite losses."""
    config = small_config(**{"model.architecture": architecture, "train.precision": "bf16",
                             "train.channels_last": True, "optim.epochs": 1})
    final = train(config, LocalReporter())
    assert math.isfinite(final["train/loss"]) and math.isfinite(final["val/loss"])


def test_the_first_report_says_where_the_workers_start_up_went_and_later_ones_do_not():
    """startup/<phase>_s: data, model, DDP wrap, loaders and the first optimizer step, once per process."""
    reporter = LocalReporter()
    train(small_config(), reporter)
    first, second = reporter.history
    phases = {k for k in first if k.startswith("startup/")}
    assert phases == {f"startup/{p}_s" for p in ("data", "model", "ddp", "loaders", "first_step")}
    assert all(first[k] >= 0.0 for k in phases)
    assert first["startup/first_step_s"] <= first["epoch_time_s"]  # the first step is part of the first epoch
    assert not any(k.startswith("startup/") for k in second)
