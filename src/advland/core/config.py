"""Typed schema of the pipeline's parameters, and the one place that reads params.yaml.

Stages call `load_params`, which returns validated, typed settings or raises
`ParamsError` naming the key, the value and what is allowed; the rest of the library
gets plain values and never reads params.yaml.

`runs` maps a run id to its fields: dataset, model, norm, noise (adv: PGD training,
rand: uniform noise), eps (a number, or "K/255") and an optional tag (a variant such as
a remedy). The id is built from the fields, `{dataset}-{model}-{norm}-{noise}-{eps}[-{tag}]`
with Linf eps on the 1/255 grid written K_255, e.g. `mnist2-lr-linf-adv-8_255`; a key
that does not match its fields is an error. Every field is part of the id, so the
stage name `train@<id>` pins the whole run.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from advland.core.errors import ParamsError
from advland.core.models import MODELS
from advland.core.norms import NORMS
from advland.core.optim import OPTIMIZERS
from advland.core.perturb import ATTACKS, PERTURBATIONS

Dataset = Literal["mnist2", "cifar2", "mnist", "fashion_mnist", "cifar10", "svhn"]
DATASETS: tuple[str, ...] = get_args(Dataset)
BINARY_DATASETS = ("mnist2", "cifar2")
TAG = re.compile(r"^[a-z0-9][a-z0-9_]*$")


def parse_eps(value: float | int | str) -> float:
    """0.2 -> 0.2, '8/255' -> 8/255. Negative, infinite or malformed values are errors."""
    if isinstance(value, str):
        num, _, den = value.partition("/")
        try:
            eps = float(num) / (float(den) if den else 1.0)
        except ValueError:
            raise ValueError(f"eps {value!r} is not a number (write 0.2 or 8/255)") from None
    else:
        eps = float(value)
    if not 0 <= eps < float("inf"):
        raise ValueError(f"eps must be a finite number >= 0, got {value!r}")
    return eps


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Run(Strict):
    """One trained model: the fields of a `runs` entry (see the module doc)."""

    dataset: Dataset
    model: str
    norm: str
    noise: str
    eps: float
    tag: str | None = None

    _eps = field_validator("eps", mode="before")(parse_eps)

    @field_validator("model", "norm", "noise")
    @classmethod
    def _registered(cls, v: str, info: ValidationInfo) -> str:
        return {"model": MODELS, "norm": NORMS, "noise": PERTURBATIONS}[info.field_name].check(v)

    @field_validator("tag")
    @classmethod
    def _tag(cls, v: str | None) -> str | None:
        if v is not None and not TAG.match(v):
            raise ValueError("a tag is lower-case letters, digits and _ (e.g. awp, warmup_cos)")
        return v

    @property
    def family(self) -> str:
        """The curve this run belongs to in the figures: the id without eps."""
        tag = f"-{self.tag}" if self.tag else ""
        return f"{self.dataset}-{self.model}-{self.norm}-{self.noise}{tag}"

    @property
    def run_id(self) -> str:
        tag = f"-{self.tag}" if self.tag else ""
        eps = NORMS[self.norm].format_eps(self.eps)
        return f"{self.dataset}-{self.model}-{self.norm}-{self.noise}-{eps}{tag}"


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
    datasets: list[Dataset] = Field(min_length=1)
    sources: list[Literal["raw", "download", "offline"]] = Field(min_length=1)
    download_timeout_s: PositiveFloat


class OptimizerConfig(Strict):
    name: str
    lr: PositiveFloat
    momentum: Annotated[float, Field(ge=0, lt=1)]
    weight_decay: NonNegativeFloat
    schedule: Literal["constant", "cosine", "piecewise"]
    milestones: list[Annotated[float, Field(gt=0, lt=1)]] = []  # fractions of training
    warmup: Annotated[float, Field(ge=0, lt=1)] = 0.0  # linear lr warm-up, fraction of training

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return OPTIMIZERS.check(v)


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

    @field_validator("points_1d")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError("must be odd, so that alpha = 0 is on the grid")
        return v


class FinetuneAttack(Strict):
    """One attack of the fine-tuning study: it makes one fine-tuning set and is one column
    of the evaluation matrix. eps is the norm ball's radius (stadv has none: 0)."""

    norm: str = "linf"
    eps: float = 0.0
    attack: AttackConfig

    _eps = field_validator("eps", mode="before")(parse_eps)

    @field_validator("norm")
    @classmethod
    def _norm(cls, v: str) -> str:
        return NORMS.check(v)

    @model_validator(mode="after")
    def _radius(self) -> FinetuneAttack:
        if (self.attack.name == "stadv") != (self.eps == 0):
            raise ValueError("eps must be 0 for stadv (it has no ball) and > 0 for the others")
        return self


class FinetuneLandscape(Strict):
    """Filter-normalized 1D curve and 2D surface of the clean training loss (landscape_run)."""

    alpha: PositiveFloat
    points_1d: Annotated[int, Field(ge=3)]
    points_2d: Annotated[int, Field(ge=3)]
    direction_seed: int
    include_bias: bool
    n_train: PositiveInt

    @field_validator("points_1d")
    @classmethod
    def _odd(cls, v: int) -> int:
        return LandscapeConfig._odd(v)


class FinetuneConfig(Strict):
    """Xu, Yap & Prabhu (2019): the clean model `source` (a run with eps 0 on `dataset`)
    fine-tuned on its first n_train training images plus one adversarial copy of each,
    per attack; then accuracy under every attack, 1 - SSIM, sharpness and landscapes."""

    source: str
    dataset: Dataset
    n_train: PositiveInt | None
    attacks: dict[str, FinetuneAttack] = Field(min_length=1)
    train: TrainConfig
    n_test: PositiveInt  # the evaluation matrix and 1 - SSIM: first n test images
    batch_size: PositiveInt
    hessian: HessianConfig
    landscape: FinetuneLandscape

    @field_validator("attacks")
    @classmethod
    def _keys(cls, v: dict) -> dict:
        for key in v:
            if not TAG.match(key) or key == "clean":
                raise ValueError(f"{key!r}: a key is lower-case letters, digits and _, not clean")
        return v


PER_MODEL = ("train", "evaluate", "hessian", "landscape")  # sections keyed dataset, model


class Params(Strict):
    seeds: list[int] = Field(min_length=1)
    prepare: PrepareConfig
    runs: dict[str, Run] = Field(min_length=1)
    train: dict[Dataset, dict[str, TrainConfig]]  # per dataset, per model
    attack: dict[Dataset, dict[str, NormAttack]]  # per dataset, per norm
    noise: NoiseConfig
    evaluate: dict[Dataset, dict[str, EvaluateConfig]]  # per dataset, per model
    hessian: dict[Dataset, dict[str, HessianConfig]]
    landscape: dict[Dataset, dict[str, LandscapeConfig]]
    finetune: FinetuneConfig | None = None

    def run(self, run_id: str) -> Run:
        """The fields of a run id listed in `runs`."""
        if run_id not in self.runs:
            raise ParamsError(f"runs: {run_id!r} is not listed in runs")
        return self.runs[run_id]

    def train_for(self, run: Run) -> TrainConfig:
        return self.train[run.dataset][run.model]

    def attack_for(self, run: Run) -> NormAttack:
        return self.attack[run.dataset][run.norm]

    def evaluate_for(self, run: Run) -> EvaluateConfig:
        return self.evaluate[run.dataset][run.model]

    def hessian_for(self, run: Run) -> HessianConfig:
        return self.hessian[run.dataset][run.model]

    def landscape_for(self, run: Run) -> LandscapeConfig:
        return self.landscape[run.dataset][run.model]


def _loc(loc: tuple) -> str:
    return ".".join(str(p) for p in loc)


def _got(error: dict) -> str:
    """' (got <value>)' for a short offending value; nothing for a missing key."""
    if error["type"] == "missing":
        return ""
    text = repr(error.get("input"))
    return f" (got {text if len(text) <= 80 else text[:77] + '...'})"


def parse_run(fields: dict) -> Run:
    """One run entry's fields, validated; errors name the field and what is allowed."""
    try:
        return Run.model_validate(fields)
    except ValidationError as err:
        problems = [f"{_loc(e['loc'])}: {e['msg']}{_got(e)}" for e in err.errors()]
        raise ParamsError("; ".join(problems)) from None


def _check_runs(params: Params) -> None:
    """What one run entry alone cannot check: its id, and the settings it needs."""
    for key, run in params.runs.items():
        where = f"runs.{key}"
        if key != run.run_id:
            raise ParamsError(
                f"{where}: its fields make the id {run.run_id!r}; use that as the key"
            )
        if run.model == "lr" and run.dataset not in BINARY_DATASETS:
            raise ParamsError(
                f"{where}: model 'lr' is binary; use it with {' or '.join(BINARY_DATASETS)}"
            )
        for section in PER_MODEL:
            if run.model not in getattr(params, section).get(run.dataset, {}):
                raise ParamsError(f"{where}: needs {section}.{run.dataset}.{run.model}")
        if run.norm not in params.attack.get(run.dataset, {}):
            raise ParamsError(f"{where}: needs attack.{run.dataset}.{run.norm}")
        if run.dataset not in params.prepare.datasets:
            raise ParamsError(
                f"{where}: uses dataset {run.dataset!r}, which prepare.datasets does not list "
                f"({', '.join(params.prepare.datasets)})"
            )


def _check_finetune(params: Params) -> None:
    ft = params.finetune
    if ft is None:
        return
    run = params.run(ft.source) if ft.source in params.runs else None
    if run is None:
        raise ParamsError(f"finetune.source: {ft.source!r} is not listed in runs")
    if run.dataset != ft.dataset or run.eps != 0:
        raise ParamsError(
            f"finetune.source: {ft.source!r} must be a clean run (eps 0) on finetune.dataset "
            f"{ft.dataset!r}"
        )


def parse_params(raw: dict, source: str = "params.yaml") -> Params:
    """Validate a params dict; every error names the key, the value and what is allowed."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping at the top level")
    try:
        params = Params.model_validate(raw)
    except ValidationError as err:
        lines = [f"  {_loc(e['loc']) or '(top level)'}: {e['msg']}{_got(e)}" for e in err.errors()]
        raise ParamsError(f"{source}: invalid parameters\n" + "\n".join(lines)) from None
    try:
        for section in PER_MODEL:
            for models in getattr(params, section).values():
                for model in models:
                    MODELS.check(model)
        for norms in params.attack.values():
            for norm in norms:
                NORMS.check(norm)
        if len(set(params.seeds)) != len(params.seeds):
            raise ParamsError(f"seeds: a seed is listed twice ({params.seeds})")
        _check_runs(params)
        _check_finetune(params)
    except ParamsError as err:
        raise ParamsError(f"{source}: {err}") from None
    return params


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads 1e-06 (as `dvc exp run -S` writes it) as a float."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params file."""
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(), Loader=_Loader)
    except (OSError, yaml.YAMLError) as err:
        raise ParamsError(f"{path}: cannot read parameters ({err})") from None
    return parse_params(raw, source=str(path))
