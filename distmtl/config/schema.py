"""The configuration schema: every key a run accepts, its type, default and allowed range.

Unknown keys are rejected (``extra="forbid"``) so a typo never silently falls back to a default. The keys of
an architecture or a weighting method are declared by that plug-in (:mod:`distmtl.config.plugins`): this
module names no plug-in.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    Field,
    SerializeAsAny,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from distmtl.config.plugins import PluginKind, Settings


class AugmentConfig(Settings):
    """Geometric augmentation of training samples, with a per-task policy.

    A task's policy says what augmentation means for its target: ``invariant`` (the target does
    not change: class labels), ``transform`` (the target is transformed with the image: boxes,
    masks) or ``forbid`` (samples carrying this target are never augmented: e.g. coordinates in a
    shape space that orientation or elongation would invalidate). Unlisted tasks get their
    kind's default: ``forbid`` for regression, ``transform`` for detection and segmentation,
    ``invariant`` otherwise.
    """

    hflip: float = Field(0.0, ge=0, le=1, description="Probability of a horizontal flip.")
    rotation: float = Field(0.0, ge=0, le=180, description="Maximum rotation in degrees.")
    shear: float = Field(0.0, ge=0, lt=90, description="Maximum shear in degrees.")
    translate: float = Field(0.0, ge=0, le=0.5, description="Maximum shift as a fraction of the image size.")
    policy: dict[str, Literal["invariant", "transform", "forbid"]] = Field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return any((self.hflip, self.rotation, self.shear, self.translate))


class DataPart(Settings):
    """One source of a combined data set."""

    source: str
    root: str | None = None
    num_samples: int | None = Field(None, gt=0)
    tasks: list[str] | None = Field(None, description="The part's targets to keep (default: all).")


class DataConfig(Settings):
    """Where samples come from, how they are split, and the train-only input noise and augmentation."""

    source: str = "synthetic"
    root: str | None = Field(None, description="Directory (or HDF5 file) a file-based source reads.")
    parts: list[DataPart] = Field(default_factory=list, description="The sources of source 'combined'.")
    num_samples: int | None = Field(
        None, gt=0,
        description="Samples the generator makes (default 2000); for file sources a random subset (default all).",
    )
    image_size: int = Field(32, ge=16, le=224)
    seed: int = 0
    cv_folds: int = Field(5, ge=3, description="Folds of grouped cross-validation.")
    cv_fold: int | None = Field(None, ge=0, description="Train on this fold's split instead of a random one.")
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    val_fraction: float = Field(0.15, gt=0, lt=1)
    test_fraction: float = Field(0.15, gt=0, lt=1)
    target_fraction: dict[str, float] = Field(
        default_factory=dict,
        description="Per task, the fraction of samples that carry its target; the rest are masked out.",
    )
    noise_level: float = Field(0.0, ge=0, le=1, description="Salt-and-pepper pixel fraction, training batches only.")
    batch_size: int = Field(64, gt=0)
    loader_workers: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _fractions(self) -> DataConfig:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"val_fraction + test_fraction must be < 1 (got {self.val_fraction} + {self.test_fraction})"
            )
        for task, frac in self.target_fraction.items():
            if not 0 < frac <= 1:
                raise ValueError(f"target_fraction.{task} must be in (0, 1] (got {frac})")
        if self.cv_fold is not None and self.cv_fold >= self.cv_folds:
            raise ValueError(f"cv_fold must be < cv_folds (got {self.cv_fold} of {self.cv_folds})")
        if (self.source == "combined") != bool(self.parts):
            raise ValueError("parts must be given exactly when source is 'combined'")
        return self


#: The architectures: ``model.architecture`` names one; each declares the ``model`` keys it takes.
ARCHITECTURE = PluginKind("architecture", "model", "architecture")
#: The loss weighting methods: ``weighting.method`` names one; each declares the ``weighting`` keys it takes.
WEIGHTING = PluginKind("weighting method", "weighting", "method")


@ARCHITECTURE.bind
class ModelConfig(Settings):
    """Encoder, architecture and the searched capacity/regularisation knobs; the architecture's own settings are
    keys of this section too (see :mod:`distmtl.config.plugins`)."""

    encoder: str = "small_cnn"
    architecture: str = Field(
        description="The architecture; a config that names none gets the one registered as default."
    )
    channels: list[int] = Field(default_factory=lambda: [32, 64, 128], min_length=1)
    bottleneck: int = Field(128, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    weights: str | None = Field(None, description="Local state-dict file for the ResNet encoders (no download).")

    @model_validator(mode="after")
    def _positive_channels(self) -> ModelConfig:
        if any(c <= 0 for c in self.channels):
            raise ValueError(f"channels must all be positive (got {self.channels})")
        return self


@WEIGHTING.bind
class WeightingConfig(Settings):
    """How per-task losses become the update: static weights (λ) and a method, whose own settings are keys of this
    section too (see :mod:`distmtl.config.plugins`)."""

    method: str = Field(description="The method; a config that names none gets the one registered as default.")
    weights: dict[str, float] = Field(default_factory=dict, description="Static per-task weight; missing tasks get 1.")

    @model_validator(mode="after")
    def _non_negative(self) -> WeightingConfig:
        for task, w in self.weights.items():
            if w < 0:
                raise ValueError(f"weights.{task} must be >= 0 (got {w})")
        return self


class OptimConfig(Settings):
    """Optimizer, learning-rate schedule and schedule length."""

    optimizer: Literal["adam", "adamw"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    epochs: int = Field(10, gt=0)
    schedule: Literal["constant", "cosine"] = Field(
        "cosine", description="Learning rate over the run: constant, or cosine decay to zero at the last step."
    )
    warmup_epochs: float = Field(
        0.0, ge=0, description="Linear warm-up from zero over this many epochs (may be a fraction)."
    )

    @model_validator(mode="after")
    def _warmup_within_run(self) -> OptimConfig:
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs must be < epochs (got {self.warmup_epochs} of {self.epochs})")
        return self


class TrainConfig(Settings):
    """Engine behaviour: seed, best-epoch selection, device and precision, checkpoint retention, failure policy."""

    seed: int = 0
    selection_metric: str = "val/loss"
    selection_mode: Literal["min", "max"] | None = Field(None, description="None: the metric's natural direction.")
    baseline: str | None = Field(None, description="Single-task baseline file (`distmtl baseline --single-task`): "
                                                   "every report then holds val/delta_m and test/delta_m.")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"
    channels_last: bool = False
    affinity_every: int = Field(0, ge=0, description="Measure task affinity (lookahead and gradient cosine, "
                                                     "distmtl.engine.affinity) every N training steps; 0: never.")
    keep_checkpoints: int | None = Field(None, gt=0, description="Checkpoints kept per run; None keeps all.")
    max_failures: int = Field(
        2, ge=0,
        description="Worker-group restarts per run after a worker dies; each resumes from the latest checkpoint.",
    )


class Config(Settings):
    """A complete, validated run configuration."""

    tasks: list[str] = Field(min_length=1)
    data: DataConfig = Field(default_factory=DataConfig)
    model: SerializeAsAny[ModelConfig] = Field(default_factory=ARCHITECTURE.default)
    weighting: SerializeAsAny[WeightingConfig] = Field(default_factory=WEIGHTING.default)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @field_validator("model", "weighting", mode="wrap")
    @classmethod
    def _plugin_settings(cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Settings:
        return PLUGIN_KINDS[info.field_name].validate(value, handler)

    @model_validator(mode="after")
    def _task_references(self) -> Config:
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks must not repeat a name (got {self.tasks})")
        for section, keys in (("weighting.weights", self.weighting.weights),
                              ("data.target_fraction", self.data.target_fraction),
                              ("data.augment.policy", self.data.augment.policy)):
            for task in keys:
                if task not in self.tasks:
                    raise ValueError(f"{section} names task '{task}', which is not in tasks {self.tasks}")
        return self


#: The config sections whose keys depend on the plug-in they name.
PLUGIN_KINDS = {kind.section: kind for kind in (ARCHITECTURE, WEIGHTING)}
