"""The whole params.yaml checked at once: core's sections (advland.core.config), then
every study's own section with the study's own schema.

Each study keeps its settings beside its code (collapse, smoothness, toy, finetune),
so that editing one study's schema re-runs that study's stages only; core sees their
sections as plain mappings. `validate_all` is the full check, for a stage that checks
params.yaml before any other runs, and for the report, which lists every setting.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ValidationError

from advland.core.config import Params, load_params, parse_params
from advland.core.datasets import BinaryName
from advland.core.errors import ParamsError
from advland.core.io import write_text
from advland.core.sections import Strict
from advland.measure.flatness import flatness_settings
from advland.studies.collapse import collapse_config
from advland.studies.finetune import finetune_config
from advland.studies.smoothness import smoothness_config
from advland.studies.toy import toy_config

# Where each study's settings sit in params.yaml, and the function that reads them
# (validated, with their checks across sections); {dataset}: each key of companion.linear.
STUDIES: dict[str, Callable[..., BaseModel]] = {
    "companion.linear.{dataset}.collapse": collapse_config,
    "companion.linear.{dataset}.smoothness": smoothness_config,
    "companion.toy": toy_config,
    "finetune": finetune_config,
    "flatness": flatness_settings,
}


class LinearStudies(Strict):
    """companion.linear.<dataset>: the linear studies of one binary dataset."""

    collapse: dict
    smoothness: dict


class Companion(Strict):
    """companion: the studies of Liu et al. (2020) and Kanai et al. (2021), `linear` per
    binary dataset (stages collapse@<dataset> and smoothness@<dataset>; {} runs none),
    and the toy surfaces."""

    linear: dict[BinaryName, LinearStudies]
    toy: dict


def _check_companion(params: Params) -> Companion:
    """The companion section's layout; each of its datasets is prepared."""
    try:
        companion = Companion.model_validate(params.companion)
    except ValidationError as err:
        e = err.errors()[0]
        where = ".".join(["companion", *(str(p) for p in e["loc"] if p != "[key]")])
        raise ParamsError(f"{where}: {e['msg']}") from None
    for dataset in companion.linear:
        if dataset not in params.prepare.datasets:
            raise ParamsError(
                f"companion.linear.{dataset}: dataset {dataset!r} is not in prepare.datasets"
            )
    return companion


def all_settings(params: Params) -> dict:
    """Every study's section of core-checked `params`, validated; returns the whole of
    params as one mapping, each section as its schema gives it (defaults filled in)."""
    companion = _check_companion(params)
    out = params.model_dump() | {"companion": {"linear": {d: {} for d in companion.linear}}}
    for path, read in STUDIES.items():
        if getattr(params, path.split(".")[0]) is None:  # an optional section left out
            continue
        datasets = params.companion["linear"] if "{dataset}" in path else [None]
        for dataset in datasets:
            keys = path.format(dataset=dataset).split(".")
            settings = read(params, dataset) if dataset else read(params)
            node = out
            for key in keys[:-1]:
                node = node.setdefault(key, {})
            node[keys[-1]] = settings.model_dump()
    return out


def validate_all(raw: dict, source: str = "params.yaml") -> dict:
    """The full check of a params mapping: core's sections, then every study's; errors
    are ParamsError naming the file and the key. Returns all_settings."""
    return _with_source(parse_params(raw, source), source)


def load_all(path: str | Path = "params.yaml") -> dict:
    """Read a params file and check all of it (validate_all)."""
    return _with_source(load_params(path), str(path))


STAMP = "params checked by stages/validate.py\n"  # fixed bytes: every stage depends on them


def check(path: Path, stamp: Path) -> None:
    """Check the whole params file at `path` (load_all), then write `stamp`, whose bytes
    never change: the validate stage's output, which every other stage depends on."""
    load_all(path)
    write_text(stamp, STAMP)


def _with_source(params: Params, source: str) -> dict:
    try:
        return all_settings(params)
    except ParamsError as err:
        raise ParamsError(f"{source}: {err}") from None
