"""Faults: kill -9 in the middle of a train stage, corrupt inputs, bad params, queued
experiments. Each must end in a correct result or a clear error and no output."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO
from test_pipeline import dvc, make_repo

from advland.core.io import load_checkpoint
from advland.pipeline.profiles import resolve_profile

pytestmark = pytest.mark.slow
RUN = "mnist2-lr-l2-adv-0p5"
TRAIN = f"stages/train/dvc.yaml:train@{RUN}"  # DVC's name: per-run stages have their own file


def entry(eps: float) -> dict:
    return {"dataset": "mnist2", "model": "lr", "norm": "l2", "noise": "adv", "eps": eps}


def tiny_params(tmp_path: Path, **train) -> Path:
    params = resolve_profile("tiny", REPO)
    params["seeds"] = [0]
    params["runs"] = {RUN: entry(0.5), "mnist2-lr-l2-adv-0": entry(0)}  # 0: fine-tuning's
    params["companion"]["linear"] = {}  # its smoothness points name runs not listed here
    params["train"]["mnist2"]["lr"] |= train
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_kill_9_during_train_then_repro_equals_uninterrupted(tmp_path, mnist_wheel):
    params = tiny_params(tmp_path, epochs=12, checkpoint_every=1, data={"n_train": 4000})
    clean = make_repo(tmp_path / "clean", params)
    dvc(clean, "repro", TRAIN)

    repo = make_repo(tmp_path / "killed", params)
    dvc(repo, "repro", "prepare@mnist2")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", TRAIN],
        cwd=repo,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    resume_dir = repo / "models" / ".resume"
    deadline = time.monotonic() + 120
    while not any(resume_dir.glob("*.pt")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert any(resume_dir.glob("*.pt")), "training never reached its first checkpoint"
    assert not (repo / "models" / RUN).exists()  # no output from a killed stage
    out = dvc(repo, "repro", TRAIN).stdout
    assert "Running stage" in out
    a, b = (
        load_checkpoint(clean / "models" / RUN / "seed0.pt"),
        load_checkpoint(repo / "models" / RUN / "seed0.pt"),
    )
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=0, atol=0)
    assert a["final_train_loss"] == b["final_train_loss"]
    assert (clean / "logs" / "train" / f"{RUN}.csv").read_text() == (
        repo / "logs" / "train" / f"{RUN}.csv"
    ).read_text()
    assert not list(repo.rglob("*.tmp"))


def evaluate(repo: Path) -> subprocess.CompletedProcess:
    paths = ["data/prepared/mnist2.npz", f"models/{RUN}", f"metrics/evaluate/{RUN}.json"]
    return run_stage(
        repo, "evaluate.py", run_id=RUN, data=paths[0], models=paths[1], metrics=paths[2]
    )


def run_stage(
    repo: Path, script: str, site: Path | None = None, **args: str
) -> subprocess.CompletedProcess:
    """stages/<script> run directly, with `--name value` for each of `args` (and `site`
    first on the import path)."""
    path = [str(p) for p in (site, REPO / "src") if p]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    named = [w for name, value in args.items() for w in (f"--{name.replace('_', '-')}", value)]
    return subprocess.run(
        [sys.executable, str(REPO / "stages" / script), "--params", "params.yaml", *named],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
    )


def test_corrupt_data_and_checkpoint_give_clear_errors_and_no_output(tmp_path, mnist_wheel):
    repo = make_repo(tmp_path, tiny_params(tmp_path))
    dvc(repo, "repro", TRAIN)
    npz = repo / "data" / "prepared" / "mnist2.npz"
    npz.write_bytes(npz.read_bytes()[:1000])
    done = evaluate(repo)
    assert (
        done.returncode == 2
        and "data/prepared/mnist2.npz: not a valid prepared dataset" in done.stderr
        and "Traceback" not in done.stderr
    )
    assert not (repo / "metrics" / "evaluate" / f"{RUN}.json").exists()
    dvc(repo, "checkout", "--force", "data/prepared/mnist2.npz")
    ckpt = repo / "models" / RUN / "seed0.pt"
    ckpt.unlink()  # a DVC-cached file is a link or read-only copy: replace, don't edit it
    ckpt.write_bytes(b"PK\x03\x04 not a checkpoint")
    done = evaluate(repo)
    assert (
        done.returncode == 2
        and f"models/{RUN}/seed0.pt: corrupt or unsafe checkpoint" in done.stderr
    )
    assert not (repo / "metrics" / "evaluate" / f"{RUN}.json").exists()


def test_bad_params_exit_2_naming_the_key(tmp_path):
    repo = tmp_path
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"]["mnist2"]["lr"]["epochs"] = -3
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    run = "mnist2-lr-l2-adv-0"
    done = run_stage(
        repo, "train.py", run_id=run, data="data.npz", models=f"models/{run}", log_csv="l.csv",
        metrics="m.json", resume="models/.resume",
    )  # fmt: skip
    assert done.returncode == 2
    assert "train.mnist2.lr.epochs: Input should be greater than 0 (got -3)" in done.stderr
    assert not (repo / "models").exists()


def test_a_bug_keeps_its_traceback(tmp_path):
    """Only the project's own errors become one line; any other exception is a bug."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    run = {"run_id": "mnist2-lr-l2-adv-0", "data": "d.npz", "models": "m", "metrics": "j.json"}
    done = run_stage(tmp_path, "evaluate.py", **run)
    assert done.returncode == 2 and "error: d.npz: not a valid prepared dataset" in done.stderr
    assert "Traceback" not in done.stderr
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import advland.data\n"
        "def broken(path):\n    raise KeyError('a bug')\n"
        "advland.data.load_prepared = broken\n"
    )
    done = run_stage(tmp_path, "evaluate.py", site=site, **run)
    assert (
        done.returncode == 1 and "Traceback" in done.stderr and "KeyError: 'a bug'" in done.stderr
    )


def test_two_queued_experiments_on_two_workers(tmp_path, mnist_wheel):
    repo = make_repo(tmp_path, tiny_params(tmp_path, epochs=1))
    for eps in ("0.25", "0.75"):
        key = f"mnist2-lr-l2-adv-{eps.replace('.', 'p')}"  # ids have no dots
        new_run = (
            f"+runs={{{key}: {{dataset: mnist2, model: lr, norm: l2, noise: adv, eps: {eps}}}}}"
        )
        dvc(repo, "exp", "run", "--queue", "-n", f"eps{eps}", "-S", new_run)
    dvc(repo, "queue", "start", "-j", "2")
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        status = dvc(repo, "queue", "status").stdout
        if "Running" not in status and "Queued" not in status:
            break
        time.sleep(2)
    assert status.count("Success") == 2, status
    shown = dvc(repo, "exp", "show", "--json").stdout
    import json

    exps = json.loads(shown)
    found = {}

    def walk(node):
        if isinstance(node, dict):
            if node.get("name") in ("eps0.25", "eps0.75"):
                metrics = node.get("data", {}).get("metrics", {})
                found[node["name"]] = metrics
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(exps)
    assert set(found) == {"eps0.25", "eps0.75"}
    accs = []
    for name, metrics in found.items():
        eps = name[3:]
        m = metrics[f"metrics/evaluate/mnist2-lr-l2-adv-{eps.replace('.', 'p')}.json"]["data"][
            "mean"
        ]
        assert m["eps"] == float(eps)
        assert f"metrics/evaluate/{RUN}.json" in metrics  # -S added a run, kept the others
        accs.append(m["robust_test_acc"])
    assert accs[0] != accs[1]


def test_an_unchanged_experiment_runs_nothing(tmp_path, mnist_wheel):
    """Outputs are persist: true (DVC leaves them in place; the stages replace them
    atomically). `dvc exp run` of an unchanged workspace still runs no stage."""
    repo = make_repo(tmp_path, tiny_params(tmp_path, epochs=1))
    dvc(repo, "repro")
    done = dvc(repo, "exp", "run", "-n", "again")
    assert "Running stage" not in done.stdout, done.stdout
    assert "didn't change, skipping" in done.stdout
