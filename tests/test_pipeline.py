"""The real DVC pipeline, in temporary git repos: prepare on synthetic files, and the
tiny profile end to end on real MNIST2 (report and metrics must hold numbers)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import torchvision.datasets as tv
import yaml
from conftest import REPO, make_idx_dataset

from advland.pipeline.profiles import render, resolve_profile

pytestmark = pytest.mark.slow


def make_repo(tmp_path: Path, params: Path) -> Path:
    """A git + DVC repo holding this project's pipeline, with the given params file."""
    repo = tmp_path / "repo"
    repo.mkdir(parents=True)
    for item in ("dvc.yaml", "stages", "src", "reports/paper_values.yaml", ".dvcignore"):
        src = REPO / item
        dst = repo / item
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy(src, dst)
    shutil.copy(params, repo / "params.yaml")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    dvc(repo, "init", "-q")
    dvc(repo, "config", "core.analytics", "false")
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "pipeline"], cwd=repo, check=True)
    return repo


def profile_file(tmp_path: Path, name: str) -> Path:
    """The params.yaml that `advland profile <name>` writes, as tmp_path/<name>.yaml."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(render(name, resolve_profile(name, REPO)))
    return path


def dvc(repo: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env or {})}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # `python` = this venv
    done = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, f"dvc {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


def test_dvc_prepare_on_synthetic_mnist(tmp_path, monkeypatch):
    params = resolve_profile("tiny", REPO)
    params["prepare"] |= {"datasets": ["mnist2"], "sources": ["raw"]}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    repo = make_repo(tmp_path, tmp_path / "params.yaml")
    make_idx_dataset(repo / "data" / "raw", tv.MNIST, monkeypatch)
    # The stage runs in a subprocess: hand it the synthetic files' md5 table.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        f"import torchvision.datasets as tv\ntv.MNIST.resources = {tv.MNIST.resources!r}\n"
    )
    env = {"PYTHONPATH": str(site)}
    dvc(repo, "repro", "prepare@mnist2", env=env)
    info = json.loads((repo / "data" / "prepared" / "mnist2.json").read_text())
    assert (
        info["counts"]["train"] == {"total": 60, "per_class": [30, 30]} and info["source"] == "raw"
    )
    again = dvc(repo, "repro", "prepare@mnist2", env=env)
    assert "didn't change" in again.stdout or "up to date" in again.stdout
    assert "Running stage" not in again.stdout


def test_dvc_repro_tiny_profile_end_to_end(tmp_path, mnist_wheel):
    """Two seeds per run: per-seed metrics, their mean and CI, and CIs in the report."""
    repo = make_repo(tmp_path, profile_file(tmp_path, "tiny"))
    dvc(repo, "repro")
    runs = yaml.safe_load((repo / "params.yaml").read_text())["runs"]
    for run_id in runs:
        assert sorted(p.name for p in (repo / "models" / run_id).iterdir()) == [
            "seed0.pt",
            "seed1.pt",
        ]
        for stage in ("train", "evaluate", "hessian", "landscape", "flatness"):
            metrics = json.loads((repo / "metrics" / stage / f"{run_id}.json").read_text())
            assert metrics["n_seeds"] == 2 and set(metrics["seeds"]) == {"0", "1"}
            assert all(isinstance(v, (int, float)) for v in metrics["mean"].values()), stage
            assert set(metrics["ci95"]) == set(metrics["mean"])
    tidy = pd.read_csv(repo / "reports" / "tables" / "runs.csv")
    assert (
        len(tidy) == len(runs)
        and tidy.robust_test_acc.between(0, 100).all()
        and (tidy.lambda1 > 0).all()
        and (tidy.lambda1_ci95 >= 0).all()
    )
    report = (repo / "reports" / "report.md").read_text()
    assert "Table 1: MNIST2" in report and "12665" in report and "Summary" in report
    assert " ± " in report and "of 2" in report
    assert (repo / "reports" / "report.html").read_text().count("data:image/png;base64,") >= 3
    verdicts = json.loads((repo / "metrics" / "summary.json").read_text())
    assert list(verdicts["claim1"]) == ["mnist2-lr-l2-adv"]
    assert verdicts["claim1"]["mnist2-lr-l2-adv"]["n_seeds"] == 2
    shown = dvc(repo, "metrics", "show", "--json").stdout
    assert "robust_test_acc" in shown and "lambda1" in shown
    again = dvc(repo, "repro")
    assert "Running stage" not in again.stdout


def test_dvc_repro_smoke_profile_deep_nets(tmp_path, mnist_wheel):
    """ResNet18 and the 4-conv CNN through every stage on a few hundred real MNIST
    images, on the CPU: Lanczos with residuals, the failed-run check, Claims 3 and 2."""
    repo = make_repo(tmp_path, profile_file(tmp_path, "smoke"))
    dvc(repo, "repro")
    verdicts = json.loads((repo / "metrics" / "summary.json").read_text())
    tidy = pd.read_csv(repo / "reports" / "tables" / "runs.csv")
    assert verdicts["failed_models"] == 0, tidy.run_id.tolist()
    assert len(tidy) == 7 and set(tidy.model) == {"resnet18", "cnn"}
    assert tidy.lambda1.notna().all() and tidy.lanczos_hvps.notna().all()
    assert (tidy.max_rel_residual >= 0).all() and tidy.trace.notna().all()
    assert tidy.robust_test_acc.between(0, 100).all() and tidy.clean_test_acc.between(0, 100).all()
    assert set(verdicts["claim3"]) == {"mnist-resnet18-linf", "mnist-cnn-linf"}
    assert list(verdicts["claim2"]) == ["mnist-cnn-linf"]
    report = (repo / "reports" / "report.md").read_text()
    assert "Fig. 4 analogue" in report and "cnn: the training objective of each epoch" in report
    assert "Every one of the 7 trained models trained (none failed)." in report
    run = "mnist-resnet18-linf-adv-16_255"
    ckpt = torch.load(repo / "models" / run / "seed0.pt", weights_only=True)
    assert 1 <= ckpt["best_epoch"] <= 4 and "last_state_dict" in ckpt
