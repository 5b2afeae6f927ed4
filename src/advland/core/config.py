"""The pipeline's parameters as one typed `Params`, and the one place that reads params.yaml.

Stages call `load_params`, which returns validated, typed settings or raises
`ParamsError` naming the key, the value and what is allowed; the rest of the library
gets plain values and never reads params.yaml. The sections' classes are in
`advland.core.sections`; here are the runs, `Params`, and the checks across sections.
The studies' sections (`companion`, `finetune`, `flatness`) stay mappings here: each study reads
its own with its own schema (`Params.section`), and advland.pipeline.settings checks them all.

`runs` maps a run id to its fields: dataset, model, norm, noise (adv: PGD training,
rand: uniform noise), eps (a number, or "K/255") and an optional tag: a remedy from
`TAGS`, which the run's train settings must turn on (a run tagged awp trains with AWP).
The id is built from the fields, `{dataset}-{model}-{norm}-{noise}-{eps}[-{tag}]`
with Linf eps on the 1/255 grid written K_255, e.g. `mnist2-lr-linf-adv-8_255`; a key
that does not match its fields is an error. Every field is part of the id, so the
stage name `train@<id>` pins the whole run, except an optional `train:` mapping: a
partial TrainConfig deep-merged over train.<dataset>.<model> for that run alone
(`Params.train_for`), allowed only with a tag (e.g. mnist2-lr-l2-adv-1-awp with
`train: {awp: {gamma: 0.005}}`); each per-run stage depends on its entry `runs.<id>`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from operator import attrgetter
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import yaml
from pydantic import BaseModel, Field, ValidationError, ValidationInfo, field_validator

from advland.core.datasets import BINARY_DATASETS, DatasetName
from advland.core.errors import ParamsError
from advland.core.models import MODELS
from advland.core.norms import NORMS
from advland.core.perturb import PERTURBATIONS
from advland.core.registry import Registry
from advland.core.sections import (
    TAG,
    EvaluateConfig,
    HessianConfig,
    LandscapeConfig,
    NoiseConfig,
    NormAttack,
    PrepareConfig,
    Strict,
    TrainConfig,
    parse_eps,
)


class TagRule(NamedTuple):
    """What a tag promises: the train setting `key` passes `test` (`wanted`, in words)."""

    key: str
    wanted: str
    test: Callable[[Any], bool]


TAGS: Registry[TagRule] = Registry(
    "tag",
    {
        "awp": TagRule("awp.gamma", "> 0", lambda v: v > 0),
        "esgd": TagRule("optimizer.name", "entropy_sgd", lambda v: v == "entropy_sgd"),
        "warmup_lin": TagRule("eps_schedule.kind", "linear", lambda v: v == "linear"),
        "warmup_cos": TagRule("eps_schedule.kind", "cosine", lambda v: v == "cosine"),
    },
)


def check_tag(tag: str, train: TrainConfig, where: str) -> None:
    """A ParamsError naming the key unless the run's train settings keep its tag's promise."""
    rule = TAGS[tag]
    value = attrgetter(rule.key)(train)
    if not rule.test(value):
        raise ParamsError(
            f"{where}.train.{rule.key}: a run tagged {tag!r} needs {rule.key} {rule.wanted}, "
            f"got {value!r}"
        )


S = TypeVar("S", bound=BaseModel)


class Run(Strict):
    """One trained model: the fields of a `runs` entry (see the module doc)."""

    dataset: DatasetName
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
        return v if v is None else TAGS.check(v)

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


PER_MODEL = ("train", "evaluate", "hessian", "landscape")  # sections keyed dataset, model


class Params(Strict):
    seeds: list[int] = Field(min_length=1)
    prepare: PrepareConfig
    runs: dict[str, Run] = Field(min_length=1)
    train: dict[DatasetName, dict[str, TrainConfig]]  # per dataset, per model
    attack: dict[DatasetName, dict[str, NormAttack]]  # per dataset, per norm
    noise: NoiseConfig
    evaluate: dict[DatasetName, dict[str, EvaluateConfig]]  # per dataset, per model
    hessian: dict[DatasetName, dict[str, HessianConfig]]
    landscape: dict[DatasetName, dict[str, LandscapeConfig]]
    companion: dict  # the companion studies' settings (advland.pipeline.settings)
    finetune: dict | None = None  # the fine-tuning study's settings (advland.studies.finetune)
    flatness: dict | None = None  # per dataset, per model (advland.measure.flatness)

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

    def section(self, path: str, schema: type[S]) -> S:
        """A study's settings: the mapping at the dotted `path` (e.g. companion.toy),
        validated by the study's `schema`; errors name `path.<field>`."""
        name, *keys = path.split(".")
        raw = getattr(self, name)
        for i, key in enumerate(keys):
            if not isinstance(raw, dict) or key not in raw:
                raise ParamsError(f"{'.'.join([name, *keys[: i + 1]])}: missing from params.yaml")
            raw = raw[key]
        if raw is None:
            raise ParamsError(f"{path}: missing from params.yaml")
        try:
            return schema.model_validate(raw)
        except ValidationError as err:
            problems = [
                f"{'.'.join([path, *map(str, e['loc'])])}: {e['msg']}{_got(e)}"
                for e in err.errors()
            ]
            raise ParamsError("; ".join(problems)) from None


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
        train = params.train_for(run)  # the merged overrides validate
        if run.tag:
            check_tag(run.tag, train, where)


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
    except ParamsError as err:
        raise ParamsError(f"{source}: {err}") from None
    return params


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads 1e-06 (as `dvc exp run -S` writes it) as a float, refuses
    a key given twice in one mapping (SafeLoader keeps the last) and reads -0 as -0.0, so
    that its sign is seen (`eps: -0` is refused, not read as 0)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` may be overridden
                continue
            key, line = self.construct_object(key_node, deep=deep), key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: SafeLoader's own error follows
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first at line {first})",
                    key_node.start_mark,
                )
            seen[key] = line
        return super().construct_mapping(node, deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int | float:
        value = super().construct_yaml_int(node)
        return -0.0 if value == 0 and node.value.startswith("-") else value


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error in one line: what and where."""
    if not isinstance(err, yaml.MarkedYAMLError) or err.problem is None:
        return " ".join(str(err).split())
    mark = err.problem_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    return f"{where}{err.problem}"


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params file."""
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(), Loader=_Loader)
    except OSError as err:
        raise ParamsError(f"{path}: cannot read parameters ({err})") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: cannot read parameters ({_yaml_problem(err)})") from None
    return parse_params(raw, source=str(path))
