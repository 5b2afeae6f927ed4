"""The report on fixtures of metrics, with no training: verdicts follow the data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from advland.report import build_report, claim1, claim2, claim3, linear_fit, spearman

REPO = Path(__file__).resolve().parents[1]


def family(norm, noise, eps, lam, model="lr", dataset="mnist2", gap=None):
    rows = []
    for e, l in zip(eps, lam, strict=True):
        rows.append(
            {
                "family": f"{dataset}-{model}-{norm}-{noise}",
                "dataset": dataset,
                "model": model,
                "norm": norm,
                "noise": noise,
                "eps": e,
                "lambda1": l,
                "robust_gap": gap(e) if gap else 0.0,
            }
        )
    return rows


EPS = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]


def test_claim1_flips_with_the_data():
    rising = pd.DataFrame(family("l2", "adv", EPS, [1, 2, 3, 4, 5, 6]))
    falling = pd.DataFrame(family("l2", "adv", EPS, [6, 5, 4, 3, 2, 1]))
    (v_up,), (v_down,) = claim1(rising), claim1(falling)
    assert (
        v_up.reproduced
        and v_up.numbers["rho"] == pytest.approx(1)
        and v_up.numbers["r2"] == pytest.approx(1)
    )
    assert not v_down.reproduced and v_down.word == "not reproduced"


def test_claim2_flips_with_the_data():
    adv = family("l2", "adv", EPS, [1, 2, 3, 4, 5, 6])
    flat = family("l2", "rand", EPS, [1, 1, 1, 1, 1, 1])
    steep = family("l2", "rand", EPS, [1, 3, 5, 7, 9, 11])
    (ok,) = claim2(pd.DataFrame(adv + flat))
    (bad,) = claim2(pd.DataFrame(adv + steep))
    assert ok.reproduced and ok.numbers["top"] == pytest.approx(6)
    assert not bad.reproduced


def test_claim3_needs_both_sharpness_and_gap_to_rise():
    up = family(
        "linf",
        "adv",
        [0, 4 / 255, 8 / 255, 12 / 255],
        [1, 2, 3, 4],
        "resnet18",
        "cifar10",
        gap=lambda e: 5 + 100 * e,
    )
    flat_gap = family(
        "linf",
        "adv",
        [0, 4 / 255, 8 / 255, 12 / 255],
        [1, 2, 3, 4],
        "resnet18",
        "svhn",
        gap=lambda e: 5 - 100 * e,
    )
    verdicts = {v.subject: v.reproduced for v in claim3(pd.DataFrame(up + flat_gap))}
    assert verdicts == {"cifar10-resnet18-linf": True, "svhn-resnet18-linf": False}


def test_statistics():
    assert spearman([1, 2, 3, 4], [10, 20, 15, 40]) == pytest.approx(0.8)
    slope, intercept, r2 = linear_fit([0, 1, 2], [1, 3, 5])
    assert (slope, intercept, r2) == pytest.approx((2, 1, 1))


def write_metrics(root: Path, run_id: str, eps: float, lam: float, noise: str):
    for stage, metrics in {
        "train": {"final_train_loss": 0.1, "weight_norm": 4.0, "seconds": 1.0},
        "evaluate": {
            "eps": eps,
            "robust_train_acc": 99.0 - eps,
            "robust_test_acc": 99.5 - eps,
            "robust_gap": 0.5,
            "noise_train_acc": 99.8,
            "noise_test_acc": 99.9,
            "noise_gap": 0.1,
            "clean_train_acc": 99.9,
            "clean_test_acc": 99.9,
            "seconds": 2.0,
        },
        "hessian": {
            "lambda1": lam,
            "lambda2": lam / 2,
            "lambda3": lam / 3,
            "trace": 3 * lam,
            "scaled_lambda1": 16 * lam,
            "scaled_lambda2": 8 * lam,
            "scaled_lambda3": 5 * lam,
            "theory_gap_fixed": 1e-15,
            "seconds": 3.0,
        },
        "landscape": {"curvature_1d": lam, "rise_1d": lam, "centre_loss": 0.1, "seconds": 4.0},
    }.items():
        (root / stage).mkdir(parents=True, exist_ok=True)
        (root / stage / f"{run_id}.json").write_text(json.dumps(metrics))
    curves = root.parent / "curves"
    curves.mkdir(exist_ok=True)
    a = np.linspace(-1, 1, 5)
    pd.DataFrame({"alpha": a, "train_obj_loss": 0.1 + lam * a**2}).to_csv(
        curves / f"{run_id}.csv", index=False
    )


def test_report_from_fixture_metrics(tmp_path):
    runs = []
    for noise, lams in (("adv", [1, 2, 3, 4, 5, 6]), ("rand", [1, 1.1, 1.0, 1.2, 1.1, 1.2])):
        for e, lam in zip(EPS, lams, strict=True):
            run_id = f"mnist2-lr-l2-{noise}-{e:g}"
            runs.append(run_id)
            write_metrics(tmp_path / "metrics", run_id, e, lam, noise)
    params = yaml.safe_load((REPO / "params.yaml").read_text()) | {"runs": runs}
    data_info = {
        "mnist2": {
            "source": "offline:test",
            "counts": {"train": {"total": 12665}, "test": {"total": 2115}},
            "classes": ["0", "1"],
        }
    }
    paper = yaml.safe_load((REPO / "reports" / "paper_values.yaml").read_text())
    verdicts = build_report(
        runs, tmp_path / "metrics", tmp_path / "curves", params, data_info, paper, tmp_path / "out"
    )
    assert (
        verdicts["claim1"]["mnist2-lr-l2-adv"]["reproduced"]
        and verdicts["claim1"]["mnist2-lr-l2-adv"]["rho"] == 1
    )
    assert verdicts["claim2"]["mnist2-lr-l2"] == {"reproduced": True, "top": pytest.approx(5.0)}
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Table 1: MNIST2" in md and "99.49" in md and "| reproduced" in md
    assert "12665" in md and "offline:test" in md
    html = (tmp_path / "out" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3
    tidy = pd.read_csv(tmp_path / "out" / "tables" / "runs.csv")
    assert len(tidy) == 12 and {"lambda1", "robust_gap", "train_seconds"} <= set(tidy.columns)
