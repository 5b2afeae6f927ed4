"""Data-parallel training under torchrun (2 CPU processes, gloo) equals one process
with the same global batch; and an interrupted training resumes to the same result."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torchvision.datasets as tv
import yaml
from conftest import REPO, make_idx_dataset

from advland.core.io import load_checkpoint
from advland.data import prepare
from advland.pipeline.profiles import resolve_profile

RUN = "mnist2-lr-l2-adv-0p5"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A directory the train stage can run in: params.yaml and data/prepared/mnist2."""
    raw = tmp_path / "raw"
    make_idx_dataset(raw, tv.MNIST, monkeypatch, n_train=640, n_test=100)  # 128 zeros and ones
    out = tmp_path / "data" / "prepared"
    prepare("mnist2", out / "mnist2.npz", out / "mnist2.json", raw, tmp_path, ["raw"])
    params = resolve_profile("tiny", REPO)
    params["runs"] = {RUN: {"dataset": "mnist2", "model": "lr", "norm": "l2", "noise": "adv",
                            "eps": 0.5}}  # fmt: skip
    params["companion"]["linear"] = {}  # its smoothness points name runs not listed here
    params["finetune"] = None
    lr = params["train"]["mnist2"]["lr"]
    lr |= {"epochs": 3, "batch_size": 32, "data": {"n_train": None}}
    lr["optimizer"]["lr"] = 0.05
    # PGD without a random start: the perturbation is a function of the weights alone
    params["attack"]["mnist2"]["l2"]["train"] |= {"steps": 5, "random_start": False}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


def train(workdir, *launcher):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    args = ["--params", "params.yaml", "--run-id", RUN, "--data", "data/prepared/mnist2.npz",
            "--models", f"models/{RUN}", "--log-csv", "log.csv", "--metrics", "metrics.json",
            "--resume", "models/.resume"]  # fmt: skip
    cmd = [*launcher, str(REPO / "stages" / "train.py"), *args]
    done = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return load_checkpoint(workdir / "models" / RUN / "seed0.pt")


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_equals_single_process(workdir):
    single = train(workdir, sys.executable)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    ddp = train(workdir, *torchrun)
    for key, value in single["state_dict"].items():
        torch.testing.assert_close(ddp["state_dict"][key], value, rtol=1e-4, atol=1e-5)
    assert ddp["final_train_loss"] == pytest.approx(single["final_train_loss"], rel=1e-4)
    assert single["state_dict"]["linear.weight"].abs().sum() > 0  # it did train


def test_resume_after_interruption_equals_uninterrupted(workdir, monkeypatch):
    from conftest import lr_run, train_config

    import advland.train as train_mod
    from advland.core.sections import AttackConfig, NoiseConfig, NormAttack
    from advland.data import load_prepared

    data = load_prepared(workdir / "data" / "prepared" / "mnist2.npz")
    cfg = train_config(epochs=4, batch_size=32, optimizer={"lr": 0.05}, checkpoint_every=1)
    attack = NormAttack(
        train=AttackConfig(steps=5, rel_step_size=2.5),
        eval=AttackConfig(steps=5, rel_step_size=2.5),
    )
    spec = lr_run("l2", "rand", 0.5)  # random noise: the RNG state must resume too
    args = (spec, data, cfg, attack, NoiseConfig(distribution="uniform"), [0])

    def train(name):
        return train_mod.train_seeds(
            *args, workdir / name, workdir / f"{name}.csv", workdir / f"resume_{name}"
        )

    full = train("a")
    original = train_mod.learning_rate

    def crash_in_epoch_3(cfg, progress):
        if progress >= 0.5 + 1e-9:
            raise KeyboardInterrupt("killed")
        return original(cfg, progress)

    monkeypatch.setattr(train_mod, "learning_rate", crash_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train("b")
    assert not (workdir / "b").exists()  # nothing half-written is taken for an output
    assert len(list((workdir / "resume_b").glob("*.pt"))) == 1
    monkeypatch.setattr(train_mod, "learning_rate", original)
    resumed = train("b")
    assert resumed == full
    a, b = load_checkpoint(workdir / "a" / "seed0.pt"), load_checkpoint(workdir / "b" / "seed0.pt")
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=0, atol=0)
    assert (workdir / "a.csv").read_text() == (workdir / "b.csv").read_text()
    assert list((workdir / "resume_b").glob("*.pt")) == []
