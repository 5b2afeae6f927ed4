"""The flatness stage's library call: its targets, its settings and what each one changes
(the measures themselves: tests/test_flatness_measures.py)."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import REPO, lr_run

from advland.core.config import load_params, parse_params
from advland.core.errors import ParamsError
from advland.core.models import LogisticRegression
from advland.data import Dataset
from advland.measure.flatness import FlatnessConfig, flatness_config, flatness_run
from advland.metrics.flatness import FlatnessSeed

PARAMS = load_params(REPO / "params.yaml")
BASE = PARAMS.model_dump()["flatness"]["mnist2"]["lr"]
SMALL = {  # every measure, small budgets
    "n_train": 64,
    "n_test": 64,
    "adaptive_hessian": {"lanczos_iters": 8, "trace_samples": 4},
    "average": {"rho_plain": [0.01, 0.03], "rho_adaptive": [0.1], "draws": 3},
    "worst": {"m": 32, "steps": 3, "rho": {"l2_plain": [1.0], "linf_adaptive": [0.001]}},
    "robust_flatness": {"xi_avg": 0.5, "draws": 2, "xi_worst": 0.003, "steps": 3},
}


def config(**over) -> FlatnessConfig:
    return FlatnessConfig.model_validate(BASE | SMALL | over)


def toy_lr() -> tuple[LogisticRegression, Dataset]:
    """A logistic regression on two noisy blobs of 28 x 28 images."""
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(128) % 2
    x = (
        0.4
        + 0.2 * (2 * y - 1)[:, None, None, None]
        + 0.1 * torch.randn(128, 1, 28, 28, generator=gen)
    ).clamp(0, 1)
    model = LogisticRegression(784)
    with torch.no_grad():
        model.linear.weight.copy_(0.05 * torch.randn(1, 784, generator=gen) + 0.02)
    return model, Dataset(x[:64], y[:64], x[64:], y[64:], 2)


def measure(run, cfg: FlatnessConfig) -> dict:
    model, data = toy_lr()
    out = flatness_run(model, run, data, PARAMS.attack_for(run), "uniform", cfg, seed=0)
    FlatnessSeed.model_validate(out)  # the stage's schema takes every key
    return out


def of(out: dict, target: str) -> dict:
    return {k.removeprefix(f"{target}_"): v for k, v in out.items() if k.startswith(f"{target}_")}


def test_at_eps_0_the_own_target_is_the_clean_loss():
    out = measure(lr_run("linf", "adv", 0.0), config())
    assert of(out, "own") == of(out, "clean")
    assert of(out, "robust") != of(out, "clean")
    assert {"adaptive_lambda1", "avg_plain_2", "worst_linf_adaptive_1", "rflat_worst"} <= set(
        of(out, "own")
    )


def test_each_measure_draws_alone_and_a_measure_left_out_is_absent():
    run = lr_run("linf", "adv", 8 / 255)
    full = measure(run, config())
    part = measure(run, config(worst=None, adaptive_hessian=None))
    assert not any(k.split("_", 1)[1].startswith(("worst_", "adaptive_")) for k in part if "_" in k)
    assert {k: v for k, v in full.items() if k in part} == part


def test_targets_and_eval_eps_change_what_they_should():
    run = lr_run("linf", "adv", 8 / 255)
    base = measure(run, config())
    only = measure(run, config(targets=["robust"]))
    assert not any(k.startswith(("own_", "clean_")) for k in only)
    further = measure(run, config(eval_eps={"linf": 24 / 255, "l2": 0.4}))
    assert (
        further["eval_eps"] == 24 / 255 and further["robust_test_loss"] > base["robust_test_loss"]
    )
    assert further["robust_train_loss"] > base["robust_train_loss"]
    assert of(further, "own") == of(base, "own") and of(further, "clean") == of(base, "clean")
    assert of(further, "robust") != of(base, "robust")


def test_eta_changes_only_the_adaptive_measures():
    run = lr_run("linf", "adv", 8 / 255)
    a, b = measure(run, config()), measure(run, config(eta=0.5))
    changed = {k for k in a if a[k] != b[k]}
    assert changed and all("adaptive" in k for k in changed)


def test_a_rand_run_keeps_its_noise_draw_fixed_under_weight_perturbations():
    """Robust flatness of a noise objective: no attack to re-run, and no input ascent."""
    out = measure(lr_run("linf", "rand", 8 / 255), config())
    assert of(out, "own") != of(out, "clean")
    assert out["own_rflat_worst"] >= 0 and out["own_rflat_avg"] != out["robust_rflat_avg"]


def test_a_binary_model_refuses_logit_normalization():
    with pytest.raises(ValueError, match="3 classes"):
        measure(lr_run("linf", "adv", 8 / 255), config(logit_norm=True))


def test_settings_errors_name_the_key():
    raw = PARAMS.model_dump()
    bad = copy.deepcopy(raw)
    bad["flatness"]["mnist2"]["lr"]["eval_eps"] = {"l2": 0.4}
    params = parse_params(bad)
    with pytest.raises(
        ParamsError, match=r"flatness\.mnist2\.lr\.eval_eps: no eps for norm 'linf'"
    ):
        flatness_config(params, params.run("mnist2-lr-linf-adv-8_255"))
    bad = copy.deepcopy(raw)
    bad["flatness"]["mnist2"]["lr"]["worst"]["rho"]["l3_plain"] = [1.0]
    params = parse_params(bad)
    with pytest.raises(ParamsError, match=r"flatness\.mnist2\.lr\.worst\.rho\.l3_plain"):
        flatness_config(params, params.run("mnist2-lr-linf-adv-8_255"))
    del bad["flatness"]["mnist2"]
    params = parse_params(bad)
    with pytest.raises(ParamsError, match=r"flatness\.mnist2: missing"):
        flatness_config(params, params.run("mnist2-lr-linf-adv-8_255"))
