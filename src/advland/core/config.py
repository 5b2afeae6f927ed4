"""Typed schema of the pipeline's parameters, and the one place that reads params.yaml.

Stages call `load_params`, which returns validated, typed settings or raises
`ParamsError` naming the key, the value and what is allowed; the rest of the library
gets plain values and never reads params.yaml.

`runs` maps a run id to its fields: dataset, model, norm, noise (adv: PGD training,
rand: uniform noise), eps (a number, or "K/255") and an optional tag (a variant such as
a remedy). The id is built from the fields, `{dataset}-{model}-{norm}-{noise}-{eps}[-{tag}]`
with Linf eps on the 1/255 grid written K_255, e.g. `mnist2-lr-linf-adv-8_255`; a key
that does not match its fields is an error. Every field is part of the id, so the
stage name `train@<id>` pins the whole run, except an optional `train:` mapping: a
partial TrainConfig deep-merged over train.<dataset>.<model> for that run alone
(`Params.train_for`), allowed only with a tag (e.g. mnist2-lr-l2-adv-1-awp with
`train: {awp: {gamma: 0.005}}`); dvc.yaml tracks it in each per-run command.
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
    train: dict | None = None  # partial TrainConfig over train.<dataset>.<model> (needs a tag)

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

    def __hash__(self) -> int:  # by the id: the `train` overrides are a (unhashable) dict
        return hash(self.run_id)

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


class CollapseConfig(Strict):
    """Liu et al.'s collapse to w = 0: logistic regression trained at eps = factor x the
    predicted threshold (theory.collapse_eps), then bisection between the largest eps
    that kept w and the smallest that collapsed (||w||_2 <= w_tol)."""

    factors: list[PositiveFloat] = Field(min_length=1)
    bisect: NonNegativeInt
    max_doublings: NonNegativeInt  # grow eps x2 while nothing collapsed
    w_tol: PositiveFloat
    train: TrainConfig
    pgd: AttackConfig  # L2 with the box, which has no closed form (train and evaluate)
    seed: int


class SmoothPoint(Strict):
    """An objective evaluated at a trained run's weights (its first seed)."""

    run: str
    eps: float

    _eps = field_validator("eps", mode="before")(parse_eps)


class SmoothPoints(Strict):
    standard: SmoothPoint
    l2: SmoothPoint
    linf: SmoothPoint


class SmoothnessConfig(Strict):
    """Kanai et al.'s smoothness: ||grad L(w + r u) - grad L(w)|| / r over radii r and
    random unit directions u, per objective (standard, l2, linf) at its trained weights
    and at the same weights with one coordinate moved to +tiny (a sign change)."""

    points: SmoothPoints
    radii: list[PositiveFloat] = Field(min_length=2)
    directions: PositiveInt
    tiny: PositiveFloat
    n_train: PositiveInt | None
    seed: int


class ToyConfig(Strict):
    """Kanai et al.'s toy surfaces: one point (x, y), 2 weights, eps; a grid of
    `points` x `points` weights in [-extent, extent]^2; EntropySGD coupling gamma."""

    x: list[float] = Field(min_length=2, max_length=2)
    y: Literal[0, 1]
    eps: PositiveFloat
    extent: PositiveFloat
    points: Annotated[int, Field(ge=5)]
    gamma: PositiveFloat
    pgd: AttackConfig
    h: PositiveFloat  # the gradient jump is measured between w and its mirror at distance 2h


class LinearCompanion(Strict):
    collapse: CollapseConfig
    smoothness: SmoothnessConfig


class CompanionConfig(Strict):
    """Liu et al. (2020) and Kanai et al. (2021): `linear` per binary dataset (stages
    collapse@<dataset> and smoothness@<dataset>; {} runs none), and the toy surfaces."""

    linear: dict[Literal["mnist2", "cifar2"], LinearCompanion]
    toy: ToyConfig


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

    _odd = field_validator("points_1d")(odd_points)


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
    companion: CompanionConfig
    finetune: FinetuneConfig | None = None

    def run(self, run_id: str) -> Run:
        """The fields of a run id listed in `runs`."""
        if run_id not in self.runs:
            raise ParamsError(f"runs: {run_id!r} is not listed in runs")
        return self.runs[run_id]

    def train_for(self, run: Run) -> TrainConfig:
        """train.<dataset>.<model>, with the run's `train` overrides deep-merged over it."""
        base = self.train[run.dataset][run.model]
        if not run.train:
            return base
        try:
            return TrainConfig.model_validate(deep_merge(base.model_dump(), run.train))
        except ValidationError as err:
            where = f"runs.{run.run_id}.train"
            problems = [f"{where}.{_loc(e['loc'])}: {e['msg']}{_got(e)}" for e in err.errors()]
            raise ParamsError("; ".join(problems)) from None

    def attack_for(self, run: Run) -> NormAttack:
        return self.attack[run.dataset][run.norm]

    def evaluate_for(self, run: Run) -> EvaluateConfig:
        return self.evaluate[run.dataset][run.model]

    def hessian_for(self, run: Run) -> HessianConfig:
        return self.hessian[run.dataset][run.model]

    def landscape_for(self, run: Run) -> LandscapeConfig:
        return self.landscape[run.dataset][run.model]

    def linear_companion(self, dataset: str) -> LinearCompanion:
        if dataset not in self.companion.linear:
            raise ParamsError(f"companion.linear: {dataset!r} is not listed")
        return self.companion.linear[dataset]


def deep_merge(base: dict, over: dict) -> dict:
    """`over` merged into a copy of `base`; mappings merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in over.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = deep_merge(out[key], value) if both else value
    return out


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
        if run.train is not None and not run.tag:
            raise ParamsError(f"{where}.train: a run with train overrides needs a tag")
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
        params.train_for(run)  # the merged overrides validate


def _check_companion(params: Params) -> None:
    """Each companion dataset is prepared; each smoothness point is one of its lr runs."""
    for dataset, linear in params.companion.linear.items():
        where = f"companion.linear.{dataset}"
        if dataset not in params.prepare.datasets:
            raise ParamsError(f"{where}: dataset {dataset!r} is not in prepare.datasets")
        for key, point in linear.smoothness.points:
            run = params.runs.get(point.run)
            if run is None or run.dataset != dataset or run.model != "lr":
                raise ParamsError(
                    f"{where}.smoothness.points.{key}.run: {point.run!r} is not an lr run "
                    f"on {dataset} listed in runs"
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
        _check_companion(params)
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
