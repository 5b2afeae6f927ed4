"""params.yaml schema: every malformed case is an error that names the key, and every
unknown name (dataset, model, norm, noise, attack, optimizer) lists the allowed ones."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from advland.core.config import Params, Run, load_params, parse_params
from advland.core.errors import ParamsError
from advland.pipeline.settings import validate_all
from advland.studies.toy import ToyConfig

REPO = Path(__file__).resolve().parents[1]
L2 = {"dataset": "mnist2", "model": "lr", "norm": "l2", "noise": "adv", "eps": 0.5}


@pytest.fixture
def raw() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def add_run(key: str, **fields):
    return lambda p: p["runs"].__setitem__(key, L2 | fields)


def test_repo_params_are_valid(raw):
    params = parse_params(raw)
    models = [r.model for r in params.runs.values()]
    assert (models.count("lr"), models.count("cnn"), params.seeds) == (36, 9, [0])
    assert {r.norm for r in params.runs.values()} == {"l2", "linf"}


@pytest.mark.parametrize(
    "edit, expected",
    [
        (
            lambda p: p["prepare"].__setitem__("datasets", ["mnist3"]),
            r"prepare\.datasets\.0.*'mnist2'",
        ),
        (
            lambda p: p["train"]["mnist2"]["lr"].__setitem__("epochs", "many"),
            r"train\.mnist2\.lr\.epochs.*integer",
        ),
        (
            lambda p: p["train"]["mnist2"]["lr"]["optimizer"].__setitem__("lr", -0.1),
            r"train\.mnist2\.lr\.optimizer\.lr.*greater than 0",
        ),
        (add_run("mnist2-lr-l2-adv--0.5", eps=-0.5), r"eps: .*must be a finite number >= 0"),
        (add_run("x", eps="8/0x"), r"eps: .*not a number.*\(got '8/0x'\)"),
        (add_run("mnist3-lr-l2-adv-0p5", dataset="mnist3"), r"runs\..*dataset.*'mnist2'"),
        (add_run("mnist2-lr-l3-adv-0p5", norm="l3"), r"unknown norm 'l3'; allowed: l2, linf"),
        (
            add_run("mnist2-vit-l2-adv-0p5", model="vit"),
            r"unknown model 'vit'; allowed: lr, resnet18",
        ),
        (
            add_run("mnist2-lr-l2-gauss-0.5", noise="gauss"),
            r"unknown perturbation 'gauss'; allowed: adv, rand",
        ),
        (
            lambda p: p["attack"]["mnist2"]["l2"]["train"].__setitem__("name", "cw"),
            r"unknown attack 'cw'; allowed: pgd, fgsm",
        ),
        (
            lambda p: p["train"]["mnist2"]["lr"]["optimizer"].__setitem__("name", "adamw"),
            r"unknown optimizer 'adamw'; allowed: sgd",
        ),
        (
            lambda p: p["attack"]["mnist2"].__setitem__("l1", p["attack"]["mnist2"]["l2"]),
            r"unknown norm 'l1'; allowed: l2, linf",
        ),
        (
            lambda p: p["train"]["mnist2"].__setitem__("vit", p["train"]["mnist2"]["lr"]),
            r"unknown model 'vit'; allowed: lr, resnet18",
        ),
        (
            add_run("mnist2-lr-l2-adv-0p50"),
            r"runs\.mnist2-lr-l2-adv-0p50: its fields make the id 'mnist2-lr-l2-adv-0p5'",
        ),
        (add_run("mnist2-lr-l2-adv-0p5-Bad", tag="Bad"), r"runs\..*tag.*lower-case"),
        (
            add_run("mnist2-lr-l2-adv-0p5-foo", tag="foo"),
            r"runs\.mnist2-lr-l2-adv-0p5-foo\.tag: .*unknown tag 'foo'; allowed: awp, esgd, "
            r"warmup_lin, warmup_cos",
        ),
        (add_run("cifar2-lr-l2-adv-0p5", dataset="cifar2"), r"needs train\.cifar2\.lr"),
        (lambda p: p.__setitem__("extra", 1), r"extra.*not permitted"),
        (
            lambda p: p["attack"]["mnist2"]["l2"]["train"].__setitem__("step_size", 0.1),
            r"exactly one of step_size",
        ),
        (
            lambda p: p["landscape"]["mnist2"]["lr"].__setitem__("points_1d", 40),
            r"landscape\.mnist2\.lr\.points_1d.*odd",
        ),
        (
            lambda p: p["landscape"]["mnist2"]["lr"].pop("points_2d"),
            r"landscape\.mnist2\.lr\.points_2d: Field required",
        ),
        (lambda p: p["hessian"].pop("mnist2"), r"needs hessian\.mnist2\.lr"),
        (
            lambda p: p["hessian"]["fashion_mnist"]["cnn"].__setitem__("spectrum_k", 51),
            r"hessian\.fashion_mnist\.cnn: .*spectrum_k \(51\) is more than lanczos_iters \(50\)",
        ),
        (
            lambda p: p["hessian"]["mnist2"]["lr"].__setitem__("spectrum_k", "most"),
            r"hessian\.mnist2\.lr\.spectrum_k",
        ),
        (
            lambda p: p["landscape"]["mnist2"]["lr"].__setitem__("eigen_points_1d", 20),
            r"landscape\.mnist2\.lr\.eigen_points_1d.*odd",
        ),
        (
            lambda p: p["landscape"]["mnist2"]["lr"].__setitem__("eigen_points_2d", 2),
            r"landscape\.mnist2\.lr\.eigen_points_2d.*0 \(none\) or at least 3",
        ),
        (
            lambda p: p["evaluate"]["mnist2"].__setitem__("resnet", {"batch_size": 1}),
            r"unknown model 'resnet'",
        ),
        (lambda p: p.pop("seeds"), r"seeds: Field required"),
        (lambda p: p.__setitem__("seeds", [0, 0]), r"seeds: a seed is listed twice"),
        (
            lambda p: (
                p["train"].__setitem__("mnist", {"lr": p["train"]["mnist2"]["lr"]}),
                p["runs"].__setitem__("mnist-lr-l2-adv-0p5", L2 | {"dataset": "mnist"}),
            ),
            r"model 'lr' is binary; use it with mnist2 or cifar2",
        ),
    ],
)
def test_bad_params_name_the_key(raw, edit, expected):
    bad = copy.deepcopy(raw)
    edit(bad)
    with pytest.raises(ParamsError, match=expected):
        parse_params(bad)


def test_yaml_scientific_floats_read_as_numbers(tmp_path):
    text = (REPO / "params.yaml").read_text().replace("weight_decay: 0.0", "weight_decay: 1e-06")
    (tmp_path / "params.yaml").write_text(text)
    raw = yaml.safe_load(text)
    assert raw["train"]["mnist2"]["lr"]["optimizer"]["weight_decay"] == "1e-06"  # YAML 1.1
    params = load_params(tmp_path / "params.yaml")
    assert params.train["mnist2"]["lr"].optimizer.weight_decay == 1e-06


@pytest.mark.parametrize(
    "fields, run_id",
    [
        ({}, "mnist2-lr-l2-adv-0p5"),
        ({"norm": "linf", "noise": "rand", "eps": "8/255"}, "mnist2-lr-linf-rand-8_255"),
        ({"norm": "linf", "eps": "76.5/255", "tag": "awp"}, "mnist2-lr-linf-adv-76p5_255-awp"),
        ({"norm": "linf", "eps": 0.3}, "mnist2-lr-linf-adv-76p5_255"),
        ({"dataset": "cifar10", "model": "resnet18", "eps": 0}, "cifar10-resnet18-l2-adv-0"),
    ],
)
def test_run_ids_are_built_from_the_fields(fields, run_id):
    assert Run(**(L2 | fields)).run_id == run_id


def test_linf_eps_in_255ths_and_family():
    run = Run(**(L2 | {"norm": "linf", "eps": "76.5/255", "tag": "awp"}))
    assert run.eps == pytest.approx(0.3) and run.family == "mnist2-lr-linf-adv-awp"


def test_cli_prints_entries_that_parse_back(capsys):
    from advland.pipeline.cli import main

    assert main(["runs", "mnist2", "lr", "linf", "adv,rand", "0,8/255", "--tag", "awp"]) == 0
    entries = yaml.safe_load(capsys.readouterr().out)
    assert list(entries) == [
        "mnist2-lr-linf-adv-0-awp",
        "mnist2-lr-linf-adv-8_255-awp",
        "mnist2-lr-linf-rand-0-awp",
        "mnist2-lr-linf-rand-8_255-awp",
    ]
    assert all(Run(**fields).run_id == key for key, fields in entries.items())
    assert main(["runs", "mnist2", "lr", "l3", "adv", "0.1"]) == 2
    assert "norm: Value error, unknown norm 'l3'; allowed: l2, linf" in capsys.readouterr().err


TAGGED = [
    ("awp", {"awp": {"gamma": 0.0}}, r"train\.awp\.gamma: a run tagged 'awp' needs awp\.gamma > 0"),
    ("esgd", {"epochs": 4}, r"train\.optimizer\.name: a run tagged 'esgd' needs .*entropy_sgd"),
    ("warmup_lin", {"eps_schedule": {"kind": "cosine"}}, r"train\.eps_schedule\.kind: .*linear"),
    ("warmup_cos", None, r"train\.eps_schedule\.kind: a run tagged 'warmup_cos' needs .*cosine"),
]


@pytest.mark.parametrize("tag, train, expected", TAGGED)
def test_a_tag_needs_its_setting(raw, tag, train, expected):
    """A run tagged awp trains with AWP: a tag whose setting is off names the key, in one line."""
    key = f"mnist2-lr-l2-adv-0p5-{tag}"
    raw["runs"][key] = L2 | {"tag": tag} | ({"train": train} if train else {})
    with pytest.raises(ParamsError, match=rf"runs\.{key}\.{expected}") as err:
        parse_params(raw)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda p: p["companion"]["toy"].__setitem__("points", 3), r"companion\.toy\.points: .*5"),
        (lambda p: p["companion"].__setitem__("toys", {}), r"companion\.toys: Extra inputs"),
        (
            lambda p: p["companion"]["linear"].__setitem__("mnist", {}),
            r"companion\.linear\.mnist: Input should be 'mnist2' or 'cifar2'",
        ),
        (
            lambda p: p["companion"]["linear"]["mnist2"]["collapse"].pop("w_tol"),
            r"companion\.linear\.mnist2\.collapse\.w_tol: Field required",
        ),
        (
            lambda p: p["companion"]["linear"]["mnist2"]["smoothness"]["points"]["l2"].update(
                run="fashion_mnist-cnn-linf-adv-8_255"
            ),
            r"companion\.linear\.mnist2\.smoothness\.points\.l2\.run: .* is not an lr run on mnist2",
        ),
        (
            lambda p: p["prepare"].__setitem__("datasets", ["fashion_mnist"]),
            r"mnist2",
        ),
        (lambda p: p["finetune"].__setitem__("n_test", 0), r"finetune\.n_test: .*greater than 0"),
        (lambda p: p["finetune"].__setitem__("source", "nope"), r"finetune\.source: 'nope' is not"),
    ],
)
def test_each_study_checks_its_own_section(raw, edit, expected):
    """Core's Params sees the studies' sections as mappings; validate_all checks them with
    each study's own schema, and its errors name the file and the key."""
    bad = copy.deepcopy(raw)
    edit(bad)
    with pytest.raises(ParamsError, match=r"params\.yaml: .*" + expected):
        validate_all(bad)


def test_core_imports_no_study():
    """Editing a study's settings re-runs only that study's stages: core does not import it."""
    code = "import sys, advland.core.config; print(sorted(sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    studies = {
        "advland.studies.collapse",
        "advland.studies.smoothness",
        "advland.studies.toy",
        "advland.studies.finetune",
    }
    assert not studies & set(done.stdout.strip("[]\n").replace("'", "").split(", "))


def test_validate_all_gives_every_section_with_its_defaults(raw):
    settings = validate_all(raw)
    assert (
        settings["companion"]["toy"]
        == ToyConfig.model_validate(raw["companion"]["toy"]).model_dump()
    )
    assert settings["finetune"]["attacks"]["pgd"]["norm"] == "linf"  # a default filled in
    assert list(settings) == list(Params.model_fields)
