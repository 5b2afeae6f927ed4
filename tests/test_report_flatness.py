"""The flatness section on synthetic frames: verdicts follow the data as constructed,
and what was not measured says so."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from advland.core.config import Run
from advland.measure.aggregate import summarize
from advland.report import flatness as fl
from advland.report.data import Inputs, collect_flatness

CNN_EPS = [0.0, 8 / 255, 16 / 255, 25.5 / 255]
LR_EPS = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
GRID = {"rho_plain": [0.01, 0.02, 0.05], "rho_adaptive": [0.1]}
PARAMS = {
    "flatness": {
        "fashion_mnist": {"cnn": {"average": GRID}},
        "mnist2": {"lr": {"average": GRID}},
    },
    "train": {"fashion_mnist": {"cnn": {"model": {"width": None}}}},
}


def runs() -> list[Run]:
    """PGD and noise CNN runs on Fashion-MNIST with an AWP run, PGD logistic regression."""
    out = [
        {"dataset": "fashion_mnist", "model": "cnn", "norm": "linf", "noise": n, "eps": e}
        for n in ("adv", "rand")
        for e in CNN_EPS
    ]
    out.append(out[3] | {"tag": "awp"})
    out += [
        {"dataset": "mnist2", "model": "lr", "norm": "l2", "noise": "adv", "eps": e} for e in LR_EPS
    ]
    return [Run(**r) for r in out]


def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-seed rows as collect_seeds gives them, flatness rows as collect_flatness does).

    A latent sharpness grows with eps (twice as fast for PGD, less with AWP); the robust
    gap at the common eps follows it with some noise. avg_plain at the middle rho (_2)
    is the latent, at the other rhos it falls; adaptive_trace is constant; rflat_worst
    is measured under the robust target only, anti-correlated; adaptive_lambda1 only on
    three LR runs; no worst-case measure at all."""
    rng = np.random.default_rng(0)
    per_seed, flat = [], []
    for run in runs():
        for seed in (0, 1):
            latent = 1 + run.eps * (2 if run.noise == "adv" else 1) * (0.7 if run.tag else 1)
            latent += 0.01 * seed
            fields = {"run_id": run.run_id, "family": run.family, "dataset": run.dataset,
                      "model": run.model, "norm": run.norm, "noise": run.noise,
                      "eps": run.eps, "tag": run.tag or "", "seed": seed}  # fmt: skip
            per_seed.append(
                fields | {"lambda1": latent, "robust_gap": 5 * latent, "robust_test_acc": 1.0}
            )
            row = {"run_id": run.run_id, "seed": seed, "eval_eps": 0.5 if run.norm == "l2" else 8 / 255,
                   "robust_gap": 3 * latent + rng.normal(0, 0.002), "robust_test_loss": latent,
                   "robust_train_loss": 0.1, "robust_train_acc": 90.0, "robust_test_acc": 80.0}  # fmt: skip
            for t in fl.TARGETS:
                row |= {f"{t}_avg_plain_1": -latent, f"{t}_avg_plain_2": latent}
                row |= {f"{t}_avg_plain_3": 1 / latent, f"{t}_adaptive_trace": 2.0}
            row["robust_rflat_worst"] = -latent
            if run.model == "lr" and run.eps < 0.5:
                row["robust_adaptive_lambda1"] = latent
            flat.append(row)
    return pd.DataFrame(per_seed), pd.DataFrame(flat)


def inputs(params=PARAMS) -> Inputs:
    return Inputs(*(Path("unused"),) * 2, {}, params, *(Path("unused"),) * 2)


def section(per_seed, flat, params=PARAMS) -> str:
    mean = per_seed.groupby("run_id", as_index=False).first()
    return fl.study(mean, per_seed, flat, inputs(params)).section.markdown(Path("."))


def test_the_middle_rho_represents_a_measure():
    per_seed, flat = frames()
    rows, mean, rhos = fl.measured(per_seed, flat, PARAMS)
    assert rhos["mnist2", "lr", "avg_plain"] == 0.02 and rhos["mnist2", "lr", "avg_adaptive"] == 0.1
    assert rows.robust_avg_plain.equals(rows.robust_avg_plain_2)
    assert rows.own_avg_adaptive.isna().all()  # its grid is given, but nothing measured
    assert rows.own_robust_gap.equals(per_seed.robust_gap)  # the run's own eps (evaluate)
    assert len(mean) == 15 and mean.capacity.eq("default").all()
    assert set(rows.remedy) == {"none", "awp"}
    no_grid = fl.measured(per_seed, flat, {})[0]
    assert no_grid.robust_avg_plain.isna().all() and no_grid.robust_adaptive_trace.eq(2).all()


def test_verdicts_come_out_as_constructed():
    per_seed, flat = frames()
    rows, _, _ = fl.measured(per_seed, flat, PARAMS)
    ranks = fl.rank_table(rows)
    verdict = {m: fl.predicts(ranks, m)[0] for m in fl.MEASURES}
    assert verdict["avg_plain"] == "predicts the robust gap"
    assert verdict["adaptive_trace"] == "does not predict the robust gap"  # constant
    assert verdict["rflat_worst"] == "does not predict the robust gap"  # anti-correlated
    assert verdict["adaptive_lambda1"] == "undecided"  # 3 runs measured
    assert verdict["worst_l2_plain"] == "not measured"
    assert fl.predicts(ranks, "avg_plain")[1].startswith(
        "95% CI of τ with the gap: fashion_mnist-cnn-linf: ["
    )
    cnn = ranks[(ranks.dataset == "fashion_mnist") & (ranks.measure == "avg_plain")]
    robust = cnn[cnn.target == "robust"].iloc[0]
    assert robust.runs == 9 and robust.points == 18 and robust.gap > 0.8 and robust.gap_lo > 0
    assert robust.loss == pytest.approx(1.0)  # the robust test loss is the latent itself
    assert robust.g_eps > 0.8 and robust.g_remedy == pytest.approx(1.0)
    assert robust.g_capacity is None  # one width: never varies


def test_claims_under_each_measure_and_target():
    per_seed, flat = frames()
    rows, mean, rhos = fl.measured(per_seed, flat, PARAMS)
    table = fl.claims_table(mean, rows, rhos).set_index(["subject", "measure"])
    own, robust = fl.TARGETS["own"], fl.TARGETS["robust"]
    cnn = table.loc["fashion_mnist-cnn-linf"]
    assert cnn.loc["average-case, plain", own].startswith("reproduced (ρ 1.00, gap ρ 1.00; 2 of 2")
    assert cnn.loc["average-case, plain", "claim"] == "Claim 3"
    assert cnn.loc["average-case, plain", "common eps"] == "8/255"
    assert cnn.loc["adaptive trace of T H T", robust].startswith("not reproduced")
    assert cnn.loc["robust flatness, worst case (Stutz)", robust].startswith("not reproduced")
    assert cnn.loc["robust flatness, worst case (Stutz)", own] == "not measured"
    assert cnn.loc["worst-case L2, plain", fl.TARGETS["clean"]] == "not measured"
    assert cnn.iloc[0]["λ1 (hessian stage, own objective)"].startswith("reproduced")
    lr = table.loc["mnist2-lr-l2-adv"]
    assert lr.loc["average-case, plain", "claim"] == "Claim 1"
    assert lr.loc["average-case, plain", "ρ (middle of grid)"] == 0.02
    assert lr.loc["average-case, plain", own].startswith("reproduced (ρ 1.00; 2 of 2 seeds)")
    assert lr.loc["adaptive λ1 of T H T", robust] == "not measured"  # 3 of 6 runs
    assert "awp" not in " ".join(table.index.get_level_values("subject"))


def test_the_section_renders_verdicts_and_not_measured():
    md = section(*frames())
    assert md.startswith("## Flatness suite") and "15 of 15 runs measured" in md
    assert "| average-case, plain | predicts the robust gap | 95% CI" in md
    assert "| worst-case L2, plain | not measured | no run has it" in md
    assert md.count(f"Criterion: {fl.PREDICTS}.") == len(fl.MEASURES)
    cnn, lr = "| fashion_mnist-cnn-linf |", "| mnist2-lr-l2 | robust flatness, worst case (Stutz) |"
    assert f"{cnn} worst-case Linf, adaptive | every target | 0 | not measured |" in md
    assert f"{lr} clean loss | 0 | not measured |" in md
    assert f"{lr} robust loss (common eps) | 6 | -1.00 [-1.00, -1.00] |" in md
    assert "fashion_mnist-cnn-linf: n/a (τ undefined: a constant) (9 runs)" in md
    assert "n/a (constant)" in md  # adaptive_trace's tau


def test_without_flatness_metrics_the_section_is_one_line():
    per_seed, flat = frames()
    md = section(per_seed, pd.DataFrame())
    assert md.strip().splitlines()[-1] == (
        "Not measured: run the flatness stage (no metrics/flatness/<run_id>.json)."
    )
    assert md.count("\n\n") == 1
    assert section(per_seed.iloc[:0], flat) == md  # every measured seed failed training


def test_collect_flatness_reads_the_files_through_the_schema(tmp_path):
    run, other = runs()[0], runs()[1]
    assert collect_flatness({run.run_id: run}, tmp_path).empty  # no metrics/flatness/
    _, flat = frames()
    seeds = {
        s: {k: v for k, v in m.items() if k not in ("run_id", "seed")}
        for s, m in flat[flat.run_id == run.run_id].set_index("seed").iterrows()
    }
    path = tmp_path / "flatness" / f"{run.run_id}.json"
    path.parent.mkdir()
    seeds = {s: {k: v for k, v in m.items() if pd.notna(v)} for s, m in seeds.items()}
    path.write_text(json.dumps(summarize(seeds) | {"seconds": 1.0}))
    got = collect_flatness({run.run_id: run, other.run_id: other}, tmp_path)
    assert list(got.seed) == [0, 1] and set(got.run_id) == {run.run_id}
    assert got.robust_avg_plain_2.tolist() == pytest.approx([1.0, 1.01])
