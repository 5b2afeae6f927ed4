"""stAdv, SSIM and the adversarial fine-tuning study (advland.studies.finetune)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO
from skimage.metrics import structural_similarity
from torch import nn

from advland.core.attacks import (
    FLOW_EPS,
    fgsm,
    flow_smoothness,
    flow_warp,
    margin_loss,
    stadv,
)
from advland.core.errors import ParamsError
from advland.core.io import load_checkpoint, save_checkpoint
from advland.core.models import build_model, load_model
from advland.core.perturb import ATTACKS
from advland.core.sections import AttackConfig
from advland.data import Dataset
from advland.measure.aggregate import summarize
from advland.measure.evaluate import accuracy
from advland.pipeline.settings import validate_all
from advland.report.data import Inputs
from advland.report.finetune import ordered, study, tracks_ssim
from advland.studies.finetune import (
    FinetuneAttack,
    FinetuneConfig,
    evaluate_seeds,
    finetune_seeds,
    ssim_loss,
)


def test_zero_flow_is_the_identity():
    x = torch.rand(3, 2, 5, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = flow_warp(x, torch.zeros(3, 2, 5, 7, dtype=torch.float64))
    assert torch.allclose(out, x, atol=1e-12)


def test_an_integer_flow_moves_pixels_and_the_border_is_repeated():
    x = torch.arange(12.0, dtype=torch.float64).view(1, 1, 3, 4)
    flow = torch.zeros(1, 2, 3, 4, dtype=torch.float64)
    flow[:, 0] = 1.0  # du = 1: every pixel takes its right neighbour's value
    out = flow_warp(x, flow)[0, 0]
    expected = torch.cat([x[0, 0, :, 1:], x[0, 0, :, 3:]], dim=1)  # last column repeated
    assert torch.allclose(out, expected, atol=1e-12)
    flow[:, 0], flow[:, 1] = 0.0, 0.5  # half a pixel down: the mean of two rows
    assert torch.allclose(flow_warp(x, flow)[0, 0, 0], (x[0, 0, 0] + x[0, 0, 1]) / 2)


def test_flow_smoothness_equals_a_hand_computation_on_3x3():
    flow = torch.zeros(1, 2, 3, 3, dtype=torch.float64)
    flow[0, 0, 1, 1] = 1.0  # du at the centre
    flow[0, 1, 1, 2] = 2.0  # dv at the middle of the right column
    e = FLOW_EPS
    # 12 unordered 4-neighbour pairs: centre-right (du 1, dv 2), centre with the 3 others
    # (du 1), right-middle with top-right and bottom-right (dv 2), 6 pairs equal (0);
    # each unordered pair counts twice (p -> q and q -> p).
    hand = 2 * (math.sqrt(5 + e) + 3 * math.sqrt(1 + e) + 2 * math.sqrt(4 + e) + 6 * math.sqrt(e))
    assert flow_smoothness(flow).item() == pytest.approx(hand, rel=1e-12)


def test_margin_loss_is_true_minus_best_other_logit_clamped_at_minus_kappa():
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]])
    y = torch.tensor([0, 0])
    assert margin_loss(logits, y).tolist() == [1.0, 0.0]
    assert margin_loss(logits, y, kappa=2.0).tolist() == [1.0, -2.0]


def bars(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """12x12 images with a vertical bar in column 5 (class 0) or column 6 (class 1): a
    one-pixel flow turns one class into the other."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=gen)
    x = 0.1 * torch.rand(n, 1, 12, 12, generator=gen)
    x[torch.arange(n), 0, :, 5 + y] = 0.9
    return x, y


@pytest.fixture(scope="module")
def bar_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(144, 2))
    x, y = bars(256, 0)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(100):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval()


def test_stadv_lowers_a_trained_nets_accuracy(bar_net):
    x, y = bars(128, 1)
    assert accuracy(bar_net, x, y) == 100.0
    x_adv = stadv(bar_net, x, y, tau=0.05, steps=30, lr=0.1)
    assert accuracy(bar_net, x_adv, y) < 50.0  # from 100%: most cross the boundary
    # a flow only moves pixel values: none leaves [min x, max x]
    assert x_adv.min() >= x.min() - 1e-6 and x_adv.max() <= x.max() + 1e-6


def test_stadv_tau_and_kappa_act(bar_net):
    x, y = bars(64, 2)

    def run(tau: float, kappa: float) -> tuple[float, float]:
        x_adv = stadv(bar_net, x, y, tau=tau, steps=30, lr=0.1, kappa=kappa)
        margin = margin_loss(bar_net(x_adv), y, kappa=100.0).mean().item()
        return margin, (x_adv - x).abs().sum().item()

    free, smooth = run(0.0, 0.0), run(5.0, 0.0)
    assert smooth[1] < 0.5 * free[1]  # a large tau keeps the flow (and the change) small
    # with a flow penalty, kappa = 0 stops near the boundary; kappa = 5 goes past it
    assert run(0.05, 5.0)[0] < run(0.05, 0.0)[0] - 1.0


def test_stadv_is_registered_and_validated():
    cfg = AttackConfig(name="stadv", steps=3, step_size=0.1, tau=0.05)
    x, y = bars(4, 3)
    net = nn.Sequential(nn.Flatten(), nn.Linear(144, 2))
    out = ATTACKS["stadv"](cfg, "linf", 0.0, None)(net, x, y)
    assert torch.equal(out, stadv(net, x, y, 0.05, 3, 0.1))
    with pytest.raises(ValueError, match="stadv needs tau"):
        AttackConfig(name="stadv", steps=3, step_size=0.1)
    with pytest.raises(ValueError, match="tau and kappa are stadv's"):
        AttackConfig(name="pgd", steps=3, step_size=0.1, tau=0.05)
    with pytest.raises(ValueError, match="eps must be 0 for stadv"):
        FinetuneAttack(eps=0.1, attack=cfg)
    with pytest.raises(ValueError, match="eps must be 0 for stadv"):
        FinetuneAttack(eps=0, attack={"name": "fgsm", "steps": 1, "rel_step_size": 1})


def test_ssim_matches_scikit_image():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 28, 28, generator=gen)
    x_adv = (x + 0.05 * torch.randn(4, 1, 28, 28, generator=gen)).clamp(0, 1)
    ours = ssim_loss(x, x_adv)
    for i in range(4):
        ref = structural_similarity(
            x[i, 0].double().numpy(),
            x_adv[i, 0].double().numpy(),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
        )
        assert ours[i].item() == pytest.approx(1 - ref, abs=1e-4)
    assert ssim_loss(x, x).abs().max() < 1e-10
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim_loss(x[..., :10], x[..., :10])


FINETUNE = {
    "source": "fashion_mnist-cnn-linf-adv-0",
    "dataset": "fashion_mnist",
    "n_train": 32,
    "attacks": {
        "fgsm": {"eps": "8/255", "attack": {"name": "fgsm", "steps": 1, "rel_step_size": 1}},
        "stadv": {"attack": {"name": "stadv", "steps": 3, "step_size": 0.1, "tau": 0.05}},
    },
    "train": {
        "epochs": 2,
        "batch_size": 16,
        "optimizer": {
            "name": "sgd",
            "lr": 0.05,
            "momentum": 0.9,
            "weight_decay": 0.0,
            "schedule": "constant",
        },
        "hardware": {"device": "cpu"},
    },
    "n_test": 16,
    "batch_size": 16,
    "hessian": {
        "top_k": 3,
        "backend": "lanczos",
        "lanczos_iters": 5,
        "pyhessian": False,
        "trace_samples": 2,
        "n_samples": 16,
        "dtype": "float64",
    },
    "landscape": {
        "alpha": 1.0,
        "points_1d": 3,
        "points_2d": 3,
        "direction_seed": 0,
        "include_bias": False,
        "n_train": 16,
    },
}


def test_finetune_source_must_be_a_clean_run_of_its_dataset():
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    assert validate_all(base)["finetune"]["source"] == base["finetune"]["source"]
    for source, message in (
        ("nope", "not listed in runs"),
        ("fashion_mnist-cnn-linf-adv-8_255", "must be a clean run"),
        ("mnist2-lr-l2-adv-0", "must be a clean run"),
    ):
        with pytest.raises(ParamsError, match=message):
            validate_all(base | {"finetune": base["finetune"] | {"source": source}})


def test_finetune_and_evaluation_end_to_end(tmp_path, monkeypatch):
    """Two attacks on a width-2 CNN: the saved models, the matrix, 1 - SSIM and the
    landscapes, each checked against a direct computation."""
    monkeypatch.chdir(tmp_path)
    cfg = FinetuneConfig.model_validate(FINETUNE)
    x, y = bars(48, 5)
    data = Dataset(x[:32], y[:32], x[32:], y[32:], 2)
    torch.manual_seed(0)
    clean = build_model("cnn", (1, 12, 12), 2, 2)
    arch = {"model": "cnn", "shape": [1, 12, 12], "n_classes": 2, "width": 2}
    save_checkpoint(
        tmp_path / "clean" / "seed0.pt",
        {"state_dict": clean.state_dict(), "architecture": arch, "weight_norm": 1.0,
         "n_train": 32},
    )  # fmt: skip
    for key in cfg.attacks:
        summary = finetune_seeds(key, data, [0], cfg, tmp_path / "clean", tmp_path / "ft" / key)
        assert summary.seeds["0"].n_train == 32
    ft = load_checkpoint(tmp_path / "ft" / "fgsm" / "seed0.pt")
    assert len(ft["history"]) == 2
    assert not torch.equal(ft["state_dict"]["head.weight"], clean.state_dict()["head.weight"])
    out = evaluate_seeds(
        data, [0], cfg, None, tmp_path / "clean", tmp_path / "ft", tmp_path / "1d.csv",
        tmp_path / "2d.csv", tmp_path / "partial",
    )  # fmt: skip
    m = out.mean
    model, _ = load_model(tmp_path / "ft" / "stadv" / "seed0.pt")
    assert m["acc_stadv_clean"] == accuracy(model, data.x_test, data.y_test)
    loaded, _ = load_model(tmp_path / "clean" / "seed0.pt")
    x_adv = fgsm(loaded, data.x_test, data.y_test, "linf", 8 / 255)
    assert m["ssim_loss_fgsm"] == pytest.approx(ssim_loss(data.x_test, x_adv).mean().item())
    assert {f"lambda1_{k}" for k in ("clean", "fgsm", "stadv")} <= set(m)
    surface = pd.read_csv(tmp_path / "2d.csv")
    assert sorted(surface.model.unique()) == ["clean", "fgsm", "stadv"]
    assert len(surface) == 3 * 9
    centre = surface[(surface.alpha == 0) & (surface.beta == 0)].set_index("model")
    assert centre.train_clean_loss["clean"] == pytest.approx(
        m["centre_loss_clean"], rel=1e-5
    )  # the 2D grid's centre is the model itself


def test_verdict_criteria():
    rows = pd.DataFrame(
        {
            "model": ["clean", "fgsm", "pgd", "stadv"],
            "lambda1": [1.0, 4.0, 3.0, 2.0],
            "ssim_loss": [np.nan, 0.05, 0.01, 0.003],
        }
    )
    assert ordered(rows)[0] and tracks_ssim(rows) == (True, {"rho": 1.0})
    swapped = rows.assign(lambda1=[1.0, 3.0, 4.0, 2.0])
    assert not ordered(swapped)[0] and tracks_ssim(swapped)[1]["rho"] == pytest.approx(0.5)


def test_report_section_from_fixture_metrics(tmp_path):
    """Two seeds of known values: the verdicts are decided on their mean, each seed is
    judged alone, and the tables and both figures are written."""
    lam = {  # seed -> model -> lambda1
        0: {"clean": 10.0, "fgsm": 14.0, "pgd": 12.0, "stadv": 11.0},
        1: {"clean": 10.0, "fgsm": 8.0, "pgd": 13.0, "stadv": 12.0},
    }
    ssim = {"fgsm": 0.05, "pgd": 0.01, "stadv": 0.003}
    models = ["clean", *ssim]
    seeds = {}
    for s, values in lam.items():
        m = {f"lambda1_{k}": v for k, v in values.items()}
        m |= {f"ssim_loss_{a}": v for a, v in ssim.items()}
        m |= {f"acc_{r}_{c}": 50.0 + s for r in models for c in models}
        keys = ("objective", "trace", "curvature_1d", "rise_1d", "centre_loss")
        m |= {f"{k}_{r}": 1.0 for r in models for k in keys}
        seeds[s] = m
    (tmp_path / "metrics" / "finetune").mkdir(parents=True)
    (tmp_path / "metrics" / "finetune" / "eval.json").write_text(json.dumps(summarize(seeds)))
    rows = [
        {"seed": s, "model": m, "alpha": a, "beta": b, "train_clean_loss": 1 + a * a + b * b}
        for s in (0, 1)
        for m in models
        for a in (-1.0, 0.0, 1.0)
        for b in (-1.0, 0.0, 1.0)
    ]
    (tmp_path / "landscapes" / "finetune").mkdir(parents=True)
    pd.DataFrame(rows).to_csv(tmp_path / "landscapes" / "finetune" / "2d.csv", index=False)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    paper = yaml.safe_load((REPO / "reports" / "paper_values.yaml").read_text())
    (tmp_path / "figures").mkdir()
    inputs = Inputs(
        tmp_path / "landscapes", tmp_path, paper, params, tmp_path / "figures", tmp_path,
        metrics=tmp_path / "metrics",
    )  # fmt: skip
    runs = pd.DataFrame({"run_id": [params["finetune"]["source"]]})
    s = study(runs, pd.DataFrame(), inputs)
    got = {(v.claim, v.subject): v for v in s.verdicts}
    # mean lambda1: clean 10, fgsm 11, pgd 12.5, stadv 11.5
    assert got["finetune_sharper", "fgsm"].numbers["ratio"] == pytest.approx(1.1)
    assert got["finetune_sharper", "fgsm"].seeds_agree == 1  # seed 1: 8 < 10
    assert not got["finetune_order", "fgsm > pgd > stadv"].reproduced
    assert got["finetune_order", "fgsm > pgd > stadv"].seeds_agree == 1  # seed 0 is ordered
    # 1 - SSIM ranks fgsm > pgd > stadv; mean lambda1 ranks pgd > stadv > fgsm: rho = -0.5
    assert got["finetune_ssim", "attacks"].numbers["rho"] == pytest.approx(-0.5)
    md = s.section.markdown(tmp_path)
    assert "| none (clean model) | 50.50 / 92.64† |" in md and "| fgsm | 0.0500 | 0.049 |" in md
    assert (tmp_path / "figures" / "finetune_contours.png").stat().st_size > 0
    assert (tmp_path / "figures" / "finetune_surfaces.png").stat().st_size > 0
    assert study(runs.assign(run_id="other"), pd.DataFrame(), inputs).not_run
