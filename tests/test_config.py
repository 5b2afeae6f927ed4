"""params.yaml schema: every malformed case is an error that names the key."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import yaml

from advland.config import ParamsError, RunSpec, format_eps, parse_params

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stages"))
from common import load_params  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def raw() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_repo_params_are_valid(raw):
    params = parse_params(raw)
    assert len(params.runs) == 28
    assert {s.norm for s in params.specs()} == {"l2", "linf"}


@pytest.mark.parametrize(
    "edit, expected",
    [
        (
            lambda p: p["prepare"].__setitem__("datasets", ["mnist3"]),
            r"prepare\.datasets\.0.*'mnist2'",
        ),
        (lambda p: p["train"]["lr"].__setitem__("epochs", "many"), r"train\.lr\.epochs.*integer"),
        (lambda p: p["train"]["lr"].__setitem__("lr", -0.1), r"train\.lr\.lr.*greater than 0"),
        (lambda p: p["runs"].append("mnist2-lr-l2-adv--0.5"), r"eps must be a finite number >= 0"),
        (
            lambda p: p["runs"].append("mnist3-lr-l2-adv-0.5"),
            r"unknown dataset 'mnist3'; allowed: mnist2",
        ),
        (
            lambda p: p["runs"].append("mnist2-lr-l3-adv-0.5"),
            r"unknown norm 'l3'; allowed: l2, linf",
        ),
        (
            lambda p: p["runs"].append("mnist2-lr-l2-adv-0.50"),
            r"write 'mnist2-lr-l2-adv-0.50' as 'mnist2-lr-l2-adv-0.5'",
        ),
        (lambda p: p["runs"].append("mnist2-lr-l2-adv-0.2"), r"listed twice"),
        (lambda p: p["runs"].append("cifar2-lr-l2-adv-0.2"), r"needs attack\.cifar2\.l2"),
        (lambda p: p.__setitem__("extra", 1), r"extra.*not permitted"),
        (
            lambda p: p["attack"]["mnist2"]["l2"]["train"].__setitem__("step_size", 0.1),
            r"exactly one of step_size",
        ),
        (lambda p: p["landscape"].__setitem__("points_1d", 40), r"landscape\.points_1d.*odd"),
        (lambda p: p.pop("seed"), r"seed: Field required"),
        (
            lambda p: p["runs"].append("mnist-lr-l2-adv-0.2"),
            r"model 'lr' is binary; use it with mnist2 or cifar2",
        ),
    ],
)
def test_bad_params_name_the_key(raw, edit, expected):
    bad = copy.deepcopy(raw)
    edit(bad)
    with pytest.raises(ParamsError, match=expected):
        parse_params(bad)


def test_yaml_scientific_floats_read_as_numbers(tmp_path, raw):
    text = (REPO / "params.yaml").read_text().replace("weight_decay: 0.0", "weight_decay: 1e-06")
    (tmp_path / "params.yaml").write_text(text)
    assert (
        yaml.safe_load(text)["train"]["lr"]["weight_decay"] == "1e-06"
    )  # plain YAML 1.1: a string
    assert load_params(tmp_path / "params.yaml").train["lr"].weight_decay == 1e-06


@pytest.mark.parametrize(
    "run_id",
    [
        "mnist2-lr-l2-adv-0.2",
        "mnist2-lr-linf-rand-8_255",
        "mnist2-lr-linf-adv-25.5_255",
        "cifar10-resnet18-linf-adv-0",
    ],
)
def test_run_id_round_trip(run_id):
    assert RunSpec.parse(run_id).run_id == run_id


def test_linf_eps_in_255ths():
    assert RunSpec.parse("mnist2-lr-linf-adv-76.5_255").eps == pytest.approx(0.3)
    assert format_eps(8 / 255, "linf") == "8_255"
