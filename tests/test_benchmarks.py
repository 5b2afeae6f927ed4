"""Every benchmark script runs once in --tiny mode (toy data, tiny models, seconds): it
exits 0, writes its JSON with sane numbers into a temporary folder (never
benchmarks/results, which holds the real measurements), and table.py renders it.

The scripts run with one thread (steady on a busy machine) and share a bytecode cache
(PYTHONPYCACHEPREFIX), so that torch is compiled once, not in every process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"


@pytest.fixture(scope="session")
def env(tmp_path_factory) -> dict[str, str]:
    cache = tmp_path_factory.mktemp("pycache")
    environ = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPYCACHEPREFIX": str(cache)}
    environ.pop("PYTHONDONTWRITEBYTECODE", None)
    return environ


def run_tiny(tmp_path: Path, env: dict, script: str, *args: str) -> subprocess.CompletedProcess:
    """`python benchmarks/<script> --tiny --out tmp_path/out`, run from tmp_path."""
    argv = [sys.executable, str(BENCHMARKS / script), "--tiny", "--out", "out", *args]
    return subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True)


def result(tmp_path: Path, done: subprocess.CompletedProcess) -> dict:
    """The one JSON a finished tiny run wrote, once table.py has rendered it."""
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    out = tmp_path / "out"
    (path,) = out.glob("*.json")
    table = subprocess.run(
        [sys.executable, str(BENCHMARKS / "table.py"), "--results", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert len([line for line in table.stdout.splitlines() if line.startswith("|")]) > 2
    return json.loads(path.read_text())


def test_table_renders_the_committed_results():
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "table.py")], capture_output=True, text=True, check=True
    )
    assert "| LR grid: train + evaluate" in done.stdout


def test_lr_grid(tmp_path, env):
    r = result(tmp_path, run_tiny(tmp_path, env, "lr_grid.py"))
    assert len(r["runs"]) == 4  # one per family: l2 and linf, adv and rand
    assert all(row["seconds"] > 0 for row in r["runs"])
    assert r["total_s"] == pytest.approx(sum(row["seconds"] for row in r["runs"]))


def test_pgd_vs_torchattacks(tmp_path, env):
    done = run_tiny(tmp_path, env, "pgd_vs_torchattacks.py")
    if done.returncode != 0 and "cannot install torchattacks" in done.stderr:
        pytest.skip("torchattacks is not installed and PyPI cannot be reached")
    r = result(tmp_path, done)
    assert r["identical"] and r["max_abs_diff_same_start"] == 0
    assert r["advland_s"] > 0 and r["torchattacks_s"] > 0 and r["throughput_ratio"] > 0


def test_hessian_backends(tmp_path, env):
    r = result(tmp_path, run_tiny(tmp_path, env, "hessian_backends.py"))
    assert [row["parameters"] for row in r["rows"]][:2] == [785, 785]  # the two LRs, then the CNN
    for row in r["rows"]:
        assert row["exact_top3"] == sorted(row["exact_top3"], reverse=True)
        assert row["exact_s"] > 0 and row["lanczos20_rel_err"] < 1e-2
        assert 0 < row["hvp_ratio_lanczos_over_pyhessian"] < 10


def test_deep_scale(tmp_path, env):
    r = result(tmp_path, run_tiny(tmp_path, env, "deep_scale.py"))
    assert [row["model"] for row in r["rows"]] == ["cnn", "resnet18"]
    assert all(row["pgd_train_step_ms"] > row["forward_input_grad_ms"] > 0 for row in r["rows"])
    assert {(row["dtype"], row["method"]) for row in r["hvp"]} == {
        (d, m)
        for d in ("float64", "float32")
        for m in ("forward_over_reverse", "reverse_over_reverse")
    }


def test_regime_candidates(tmp_path, env):
    r = result(tmp_path, run_tiny(tmp_path, env, "regime_candidates.py"))
    peak = r["peak"]
    assert peak["gflops"] > 0 and peak["flops"] == 2 * 512**3  # the tiny matmul, 2 n^3
    rows = {row["name"]: row for row in r["rows"]}
    assert set(rows) == {"cnn-w2", "mlp-w32", "mlp-w64"}
    for row in rows.values():
        assert 0 < row["fraction_of_peak"] < 1.5
        assert row["gflops"] == pytest.approx(row["step_flops"] / row["step_ms"] / 1e6)
        assert row["step_flops"] > row["forward_flops"] > 0  # 5 attack steps and a backward
        assert list(row["epoch_s"]) == ["16", "32", "64"]
        assert all(s > 0 for s in row["epoch_s"].values())
    small, large = rows["mlp-w32"], rows["mlp-w64"]
    assert large["step_flops"] > small["step_flops"] and large["parameters"] > small["parameters"]
    # the step of the 784-W-W-10 MLP costs ~12 forwards: 5 forwards + 5 input gradients, then
    # a forward and a weight backward (no input gradient of the first layer)
    assert 10 < small["step_over_forward_flops"] < 14
    assert small["parameters"] == 784 * 32 + 32 + 32 * 32 + 32 + 32 * 10 + 10
    reach = [name for name, row in rows.items() if row["fraction_of_peak"] >= 0.3]
    assert r["choice"]["reach_bar"] == reach
    assert r["choice"]["best"] == max(rows, key=lambda name: rows[name]["fraction_of_peak"])


def test_landscape_batching(tmp_path, env):
    r = result(tmp_path, run_tiny(tmp_path, env, "landscape_batching.py"))
    assert {(row["grid"], row["mode"]) for row in r["rows"]} == {
        (grid, mode)
        for grid in ("1D, 5 points", "2D, 3x3 points")
        for mode in ("fixed attack", "PGD re-run")
    }
    for row in r["rows"]:
        assert row["batched_s"] > 0 and row["loop_s"] > 0 and row["ratio"] > 0
        assert row["max_abs_diff"] < 1e-4  # both sides compute the same table


def test_memory(tmp_path, env):
    r = result(tmp_path, run_tiny(tmp_path, env, "memory.py"))
    assert [row["stage"] for row in r["rows"]] == ["train", "evaluate"]
    assert all(row["peak_rss_mb"] > 100 for row in r["rows"])  # torch alone is more
    assert r["pipeline_peak_rss_mb"] == max(row["peak_rss_mb"] for row in r["rows"])


def test_resnet_epoch(tmp_path, env):
    r = result(tmp_path, run_tiny(tmp_path, env, "resnet_epoch.py"))  # the offline profile
    assert r["data"] == "random stand-ins" and r["setting"].startswith("width 4, batch 16")
    assert 0 < r["s_per_batch"] < r["s_per_epoch"]
    assert r["training_hours_all_runs"] > 0 and r["runs"] > 0


@pytest.mark.slow
def test_stage_overhead(tmp_path, env):
    r = result(tmp_path, run_tiny(tmp_path, env, "stage_overhead.py"))
    for case in (r["as_is"], r["bytecode_cache"]):
        assert case["stage_wall_s"] > case["stage_main_s"] > 0 and case["stage_warm_wall_s"] > 0
        imports = case["imports"]
        assert imports["total_s"] > imports["packages_s"]["torch"] > 0 and imports["modules"] > 100
        assert imports["top_cumulative_s"] and case["torch_import_s"] > 0
        assert case["first_sgd_step"]["first_s"] > 0 and case["first_sgd_step"]["second_s"] > 0
        assert case["dvc_noop_repro_s"]["1"] > 0


def test_flatness_cost(tmp_path, env):
    r = result(tmp_path, run_tiny(tmp_path, env, "flatness_cost.py"))
    (row,) = r["rows"]
    assert set(row["measure_s"]) == {"adaptive_hessian", "average", "worst", "robust_flatness"}
    assert all(s > 0 for s in row["measure_s"].values()) and row["suite_s"] > 0
    assert row["hvps"]["pyhessian_top1_plain"] >= 2
