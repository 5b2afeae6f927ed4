"""The typed blocks of params.yaml that results depend on, one pydantic class per section
or sub-section.

Every class forbids unknown keys and is frozen (`Strict`); named choices are checked
against their registries (attacks, optimizers, norms). `advland.core.config` assembles
them into `Params`, checks what spans sections, and reads the file. The companion
studies' and the fine-tuning study's settings live beside each study (advland.studies.collapse,
smoothness, toy, finetune) and are checked together by advland.pipeline.settings.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from advland.core.datasets import DatasetName
from advland.core.optim import OPTIMIZERS
from advland.core.perturb import ATTACKS

TAG = re.compile(r"^[a-z0-9][a-z0-9_]*$")  # run tags, finetune attack keys


def parse_eps(value: float | int | str) -> float:
    """0.2 -> 0.2, '8/255' -> 8/255. Anything but a finite number >= 0 written without a
    sign (-0, nan, inf, 1e999, 8/0, abc) is an error."""
    allowed = "a finite number >= 0 without a sign, such as 0.2 or 8/255"
    if isinstance(value, bool) or not isinstance(value, float | int | str):
        raise ValueError(f"eps must be {allowed}")
    num, slash, den = value.partition("/") if isinstance(value, str) else (value, "", "")
    try:
        parts = float(num), float(den) if slash else 1.0
    except (ValueError, OverflowError):
        raise ValueError(f"not a number; write {allowed}") from None
    if slash and parts[1] == 0:
        raise ValueError(f"divides by zero; write {allowed}")
    eps = parts[0] / parts[1]
    if not all(math.isfinite(x) and math.copysign(1.0, x) > 0 for x in (*parts, eps)):
        raise ValueError(f"must be {allowed}")
    return eps


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AttackConfig(Strict):
    """An attack from perturb.ATTACKS; PGD's step is `step_size`, or
    `rel_step_size * eps / steps`. stadv: `steps` Adam steps of `step_size` pixels on the
    flow, `tau` the weight of its smoothness loss, `kappa` the margin's confidence."""

    name: str = "pgd"
    steps: PositiveInt
    step_size: PositiveFloat | None = None
    rel_step_size: PositiveFloat | None = None
    random_start: bool = True
    tau: NonNegativeFloat | None = None  # stadv only (Xiao et al.: 0.05)
    kappa: NonNegativeFloat | None = None  # stadv only (default 0)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return ATTACKS.check(v)

    @model_validator(mode="after")
    def _one_step_rule(self) -> AttackConfig:
        if (self.step_size is None) == (self.rel_step_size is None):
            raise ValueError("give exactly one of step_size or rel_step_size")
        stadv = self.name == "stadv"
        if stadv and (self.tau is None or self.step_size is None):
            raise ValueError("stadv needs tau and step_size (its Adam step in pixels)")
        if not stadv and (self.tau is not None or self.kappa is not None):
            raise ValueError(f"tau and kappa are stadv's; attack {self.name!r} does not use them")
        return self

    def step(self, eps: float) -> float:
        if self.step_size is not None:
            return self.step_size
        return self.rel_step_size * eps / self.steps


class NormAttack(Strict):
    train: AttackConfig
    eval: AttackConfig


class PrepareConfig(Strict):
    datasets: list[DatasetName] = Field(min_length=1)
    sources: list[Literal["raw", "download", "offline"]] = Field(min_length=1)
    download_timeout_s: PositiveFloat


class EntropyConfig(Strict):
    """EntropySGD (core.optim.EntropySGD): `inner_steps` SGLD steps of size `inner_lr` and
    thermal noise `noise` per outer step, averaging `alpha`, scope gamma_0 (1 + gamma_1)^t."""

    inner_steps: PositiveInt = 20
    inner_lr: PositiveFloat = 0.1
    noise: NonNegativeFloat = 1e-4
    alpha: Annotated[float, Field(gt=0, le=1)] = 0.75
    gamma0: PositiveFloat = 0.03
    gamma1: NonNegativeFloat = 1e-3


class EpsScheduleConfig(Strict):
    """eps warm-up (Liu et al. 2020) over the first `epochs` epochs, capped at the run's eps:
    linear min(eps, eps_max t / T), cosine min(eps, eps_max (1 - cos(pi t / T)) / 2)."""

    kind: Literal["constant", "linear", "cosine"] = "constant"
    eps_max_ratio: PositiveFloat = 2.0  # eps_max = ratio x the run's eps
    epochs: PositiveInt | None = None  # T (None: all training epochs)


class AWPConfig(Strict):
    """Adversarial weight perturbation (Wu et al. 2020): ||v_l|| = gamma ||w_l|| per layer."""

    gamma: NonNegativeFloat = 0.0  # 0: off
    start_epoch: NonNegativeInt = 0  # AWP from this epoch on (0-based)


class OptimizerConfig(Strict):
    name: str
    lr: PositiveFloat
    momentum: Annotated[float, Field(ge=0, lt=1)]
    weight_decay: NonNegativeFloat
    schedule: Literal["constant", "cosine", "piecewise"]
    milestones: list[Annotated[float, Field(gt=0, lt=1)]] = []  # fractions of training
    warmup: Annotated[float, Field(ge=0, lt=1)] = 0.0  # linear lr warm-up, fraction of training
    entropy: EntropyConfig | None = None  # entropy_sgd's settings (core.optim.EntropySGD)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return OPTIMIZERS.check(v)

    @model_validator(mode="after")
    def _entropy(self) -> OptimizerConfig:
        if (self.name == "entropy_sgd") != (self.entropy is not None):
            raise ValueError("entropy: give it exactly when name is entropy_sgd")
        return self


class ModelConfig(Strict):
    width: PositiveInt | None = None  # ResNet stem width (None: the model's own default)


class DataConfig(Strict):
    n_train: PositiveInt | None = None  # train on the first n examples
    augment: bool = False  # random crop 4 + horizontal flip


class HardwareConfig(Strict):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = False  # bf16 autocast
    channels_last: bool = False
    compile: bool = False  # torch.compile the forward


class SelectConfig(Strict):
    best: bool = False  # keep the epoch with the best PGD accuracy on test images
    n: PositiveInt = 1000  # the first n test images
    every: PositiveInt = 1


class TrainConfig(Strict):
    """Training of one model on one dataset; optional features are off by default."""

    epochs: PositiveInt
    batch_size: PositiveInt
    optimizer: OptimizerConfig
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    hardware: HardwareConfig = HardwareConfig()
    select: SelectConfig = SelectConfig()
    checkpoint_every: NonNegativeInt = 0  # resume checkpoints every n epochs (0: none)
    eps_schedule: EpsScheduleConfig = EpsScheduleConfig()
    awp: AWPConfig = AWPConfig()


class NoiseConfig(Strict):
    distribution: Literal["uniform", "gaussian"]


class EvaluateConfig(Strict):
    batch_size: PositiveInt
    n_train: PositiveInt | None = None
    n_test: PositiveInt | None = None


class HessianConfig(Strict):
    top_k: PositiveInt
    backend: Literal["auto", "exact", "lanczos"]  # auto: exact up to 5000 parameters
    lanczos_iters: PositiveInt
    pyhessian: bool
    trace_samples: PositiveInt
    n_samples: PositiveInt | None = None
    dtype: Literal["float64", "float32"] = "float64"  # float32: 5-10x faster conv HVPs on CPU
    # eigenvalues written to spectra/values per seed (None: top_k; all: every one the
    # backend gives, the whole spectrum for exact); Lanczos gives at most lanczos_iters
    spectrum_k: PositiveInt | Literal["all"] | None = None

    @model_validator(mode="after")
    def _enough_iterations(self) -> HessianConfig:
        k = self.spectrum_k
        if self.backend == "lanczos" and isinstance(k, int) and k > self.lanczos_iters:
            raise ValueError(
                f"spectrum_k ({k}) is more than lanczos_iters ({self.lanczos_iters}): "
                "Lanczos gives at most lanczos_iters Ritz values"
            )
        return self


def odd_points(v: int) -> int:
    """A 1D grid size: odd, so that alpha = 0 is on the grid."""
    if v % 2 == 0:
        raise ValueError("must be odd, so that alpha = 0 is on the grid")
    return v


class LandscapeConfig(Strict):
    alpha: PositiveFloat
    points_1d: Annotated[int, Field(ge=3)]
    points_2d: Annotated[int, Field(ge=3)]
    direction_seed: int
    include_bias: bool
    attack: Literal["rerun", "fixed"]
    pgd: AttackConfig
    n_train: PositiveInt | None
    n_test: PositiveInt | None
    # landscapes along the top Hessian eigenvectors (1D: v1; 2D: v1, v2), each scaled to
    # the norm of the random directions, over [-eigen_alpha, eigen_alpha] (None: alpha);
    # 0 points: none
    eigen_points_1d: NonNegativeInt = 0
    eigen_points_2d: NonNegativeInt = 0
    eigen_alpha: PositiveFloat | None = None

    @field_validator("points_1d", "eigen_points_1d")
    @classmethod
    def _odd(cls, v: int, info: ValidationInfo) -> int:
        return v if v == 0 and info.field_name == "eigen_points_1d" else odd_points(v)

    @field_validator("eigen_points_1d", "eigen_points_2d")
    @classmethod
    def _none_or_three(cls, v: int) -> int:
        if v in (1, 2):
            raise ValueError("must be 0 (none) or at least 3")
        return v
