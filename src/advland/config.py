"""Typed schema of the pipeline's parameters.

The library never reads params.yaml: a stage reads it and hands the plain dict to
`parse_params`, which returns validated, typed settings or raises `ParamsError`
naming the key, the value and what is allowed.

A run id names one trained model: `{dataset}-{model}-{norm}-{noise}-{eps}`, e.g.
`mnist2-lr-l2-adv-0.2` or `mnist2-lr-linf-rand-8_255` (Linf eps in units of
1/255 are written `K_255`, which reads as K/255).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

Dataset = Literal["mnist2", "cifar2", "mnist", "fashion_mnist", "cifar10", "svhn"]
ModelName = Literal["lr", "resnet18"]
Norm = Literal["l2", "linf"]
NoiseKind = Literal["adv", "rand"]

DATASETS: tuple[str, ...] = get_args(Dataset)
BINARY_DATASETS = ("mnist2", "cifar2")
MODELS: tuple[str, ...] = get_args(ModelName)
NORMS: tuple[str, ...] = get_args(Norm)
NOISES: tuple[str, ...] = get_args(NoiseKind)


class ParamsError(ValueError):
    """A malformed parameter; the message names the key and what is allowed."""


@dataclass(frozen=True)
class RunSpec:
    """One trained model of the grid."""

    dataset: str
    model: str
    norm: str
    noise: str
    eps: float

    @property
    def run_id(self) -> str:
        return f"{self.dataset}-{self.model}-{self.norm}-{self.noise}-{format_eps(self.eps, self.norm)}"

    @property
    def family(self) -> str:
        """The curve this run belongs to in the figures: dataset-model-norm-noise."""
        return f"{self.dataset}-{self.model}-{self.norm}-{self.noise}"

    def with_noise(self, noise: str) -> RunSpec:
        return RunSpec(self.dataset, self.model, self.norm, noise, self.eps)

    @classmethod
    def parse(cls, run_id: str) -> RunSpec:
        parts = run_id.split("-", 4)
        if len(parts) != 5:
            raise ParamsError(
                f"runs: {run_id!r} is not a run id; expected "
                "{dataset}-{model}-{norm}-{noise}-{eps}, e.g. mnist2-lr-l2-adv-0.2"
            )
        dataset, model, norm, noise, eps = parts
        for key, value, allowed in [
            ("dataset", dataset, DATASETS),
            ("model", model, MODELS),
            ("norm", norm, NORMS),
            ("noise", noise, NOISES),
        ]:
            if value not in allowed:
                raise ParamsError(
                    f"runs: {run_id!r}: unknown {key} {value!r}; allowed: {', '.join(allowed)}"
                )
        return cls(dataset, model, norm, noise, parse_eps(eps, run_id))


def parse_eps(token: str, run_id: str = "") -> float:
    """'0.2' -> 0.2, '8_255' -> 8/255. Negative or malformed values are errors."""
    where = f"runs: {run_id!r}: " if run_id else "eps: "
    try:
        num, _, den = token.partition("_")
        eps = float(num) / (float(den) if den else 1.0)
    except ValueError:
        raise ParamsError(f"{where}eps {token!r} is not a number (write 0.2 or 8_255)") from None
    if not eps >= 0 or eps == float("inf"):
        raise ParamsError(f"{where}eps must be a finite number >= 0, got {token!r}")
    return eps


def format_eps(eps: float, norm: str) -> str:
    """Inverse of parse_eps: Linf values on the 1/255 grid are written K_255."""
    if norm == "linf" and eps > 0:
        k = round(eps * 255, 4)
        return f"{k:g}_255"
    return f"{eps:g}"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PGDConfig(Strict):
    """PGD settings; the step is `step_size`, or `rel_step_size * eps / steps`."""

    steps: PositiveInt
    step_size: PositiveFloat | None = None
    rel_step_size: PositiveFloat | None = None
    random_start: bool = True

    @model_validator(mode="after")
    def _one_step_rule(self) -> PGDConfig:
        if (self.step_size is None) == (self.rel_step_size is None):
            raise ValueError("give exactly one of step_size or rel_step_size")
        return self

    def step(self, eps: float) -> float:
        if self.step_size is not None:
            return self.step_size
        return self.rel_step_size * eps / self.steps


class NormAttack(Strict):
    train: PGDConfig
    eval: PGDConfig


class PrepareConfig(Strict):
    datasets: list[Dataset] = Field(min_length=1)
    sources: list[Literal["raw", "download", "offline"]] = Field(min_length=1)
    download_timeout_s: PositiveFloat = 20.0


class TrainConfig(Strict):
    epochs: PositiveInt
    batch_size: PositiveInt
    lr: PositiveFloat
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.0
    weight_decay: NonNegativeFloat = 0.0
    schedule: Literal["constant", "cosine", "piecewise"] = "constant"
    milestones: list[Annotated[float, Field(gt=0, lt=1)]] = []  # fractions of training
    width: PositiveInt = 64  # ResNet stem width; unused by lr
    augment: bool = False  # random crop 4 + horizontal flip
    n_train: PositiveInt | None = None  # train on the first n examples (smoke runs)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = False  # bf16 autocast
    channels_last: bool = False
    compile: bool = False  # torch.compile the forward
    select_best: bool = False  # keep the epoch with the best PGD test accuracy
    select_n: PositiveInt = 1000  # on the first n test images
    select_every: PositiveInt = 1
    checkpoint_every: NonNegativeInt = 0  # resume checkpoints every n epochs (0: none)


class NoiseConfig(Strict):
    distribution: Literal["uniform", "gaussian"] = "uniform"


class EvaluateConfig(Strict):
    batch_size: PositiveInt = 4096
    n_train: PositiveInt | None = None
    n_test: PositiveInt | None = None


class HessianConfig(Strict):
    top_k: PositiveInt = 3
    backend: Literal["auto", "exact", "lanczos"] = "auto"  # auto: exact up to 5000 parameters
    lanczos_iters: PositiveInt = 40
    pyhessian: bool = False
    n_samples: PositiveInt | None = None
    trace_samples: PositiveInt = 50


class LandscapeConfig(Strict):
    alpha: PositiveFloat = 1.0
    points_1d: Annotated[int, Field(ge=3)] = 41
    points_2d: Annotated[int, Field(ge=3)] = 21
    direction_seed: int = 0
    include_bias: bool = False
    attack: Literal["rerun", "fixed"] = "rerun"
    pgd: PGDConfig = PGDConfig(steps=20, rel_step_size=2.5)
    n_train: PositiveInt | None = 1000
    n_test: PositiveInt | None = 1000

    @field_validator("points_1d")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError("must be odd, so that alpha = 0 is on the grid")
        return v


class Params(Strict):
    seed: int
    prepare: PrepareConfig
    runs: list[str] = Field(min_length=1)
    train: dict[str, TrainConfig]  # per model, optionally per model@dataset
    attack: dict[Dataset, dict[Norm, NormAttack]]
    noise: NoiseConfig
    evaluate: EvaluateConfig
    hessian: HessianConfig
    landscape: LandscapeConfig

    def train_for(self, spec: RunSpec) -> TrainConfig:
        """train.<model>@<dataset> if given, else train.<model>."""
        return self.train.get(f"{spec.model}@{spec.dataset}") or self.train[spec.model]

    def run(self, run_id: str) -> RunSpec:
        """The RunSpec of a run id listed in `runs`."""
        if run_id not in self.runs:
            raise ParamsError(f"runs: {run_id!r} is not listed in runs")
        return RunSpec.parse(run_id)

    def specs(self) -> list[RunSpec]:
        return [RunSpec.parse(r) for r in self.runs]


def _loc(loc: tuple) -> str:
    return ".".join(str(p) for p in loc)


def _got(error: dict) -> str:
    """' (got <value>)' for a short offending value; nothing for a missing key."""
    if error["type"] == "missing":
        return ""
    text = repr(error.get("input"))
    return f" (got {text if len(text) <= 80 else text[:77] + '...'})"


def parse_params(raw: dict, source: str = "params.yaml") -> Params:
    """Validate a params dict; every error names the key, the value and what is allowed."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping at the top level")
    try:
        params = Params.model_validate(raw)
    except ValidationError as err:
        lines = [f"  {_loc(e['loc']) or '(top level)'}: {e['msg']}{_got(e)}" for e in err.errors()]
        raise ParamsError(f"{source}: invalid parameters\n" + "\n".join(lines)) from None
    for key in params.train:
        model, _, dataset = key.partition("@")
        if model not in MODELS or (dataset and dataset not in DATASETS):
            raise ParamsError(
                f"{source}: train.{key}: expected a model ({', '.join(MODELS)}), "
                f"optionally @dataset ({', '.join(DATASETS)})"
            )
    try:
        specs = [RunSpec.parse(r) for r in params.runs]
    except ParamsError as err:
        raise ParamsError(f"{source}: {err}") from None
    for spec in specs:
        if spec.model == "lr" and spec.dataset not in BINARY_DATASETS:
            raise ParamsError(
                f"{source}: runs: {spec.run_id!r}: model 'lr' is binary; use it with "
                f"{' or '.join(BINARY_DATASETS)}, or use resnet18"
            )
        if spec.model not in params.train and f"{spec.model}@{spec.dataset}" not in params.train:
            raise ParamsError(f"{source}: runs: {spec.run_id!r} needs train.{spec.model}")
        if spec.norm not in params.attack.get(spec.dataset, {}):
            raise ParamsError(
                f"{source}: runs: {spec.run_id!r} needs attack.{spec.dataset}.{spec.norm}"
            )
        if spec.dataset not in params.prepare.datasets:
            raise ParamsError(
                f"{source}: runs: {spec.run_id!r} uses dataset {spec.dataset!r}, "
                f"which prepare.datasets does not list ({', '.join(params.prepare.datasets)})"
            )
    canonical = [s.run_id for s in specs]
    for given, canon in zip(params.runs, canonical, strict=True):
        if given != canon:
            raise ParamsError(f"{source}: runs: write {given!r} as {canon!r}")
    if len(set(canonical)) != len(canonical):
        raise ParamsError(f"{source}: runs: a run id is listed twice")
    return params
