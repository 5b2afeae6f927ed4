"""The training core and evaluation on a small slice of synthetic MNIST2."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
import torchvision.datasets as tv
from conftest import lr_run, make_idx_dataset, train_config

from advland.core.config import Run
from advland.core.errors import CheckpointError, TrainingDiverged
from advland.core.io import load_checkpoint
from advland.core.models import checkpoint_path, load_model
from advland.core.optim import learning_rate
from advland.core.perturb import make_perturb
from advland.core.sections import AttackConfig, NoiseConfig, NormAttack
from advland.data import load_prepared, prepare
from advland.measure.evaluate import evaluate_run
from advland.train import Hook, fit, plateau_change, train_run, train_seeds

CFG = train_config()
ATTACK = AttackConfig(steps=10, rel_step_size=2.5)
NORM_ATTACK = NormAttack(train=ATTACK, eval=AttackConfig(steps=20, rel_step_size=2.5))
NOISE = NoiseConfig(distribution="uniform")


@pytest.fixture
def mnist2(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    make_idx_dataset(raw, tv.MNIST, monkeypatch, n_train=400, n_test=200)
    prepare("mnist2", tmp_path / "m.npz", tmp_path / "m.json", raw, tmp_path, ["raw"])
    return load_prepared(tmp_path / "m.npz")


def run(tmp_path, data, spec: Run, cfg=CFG, seeds=(0,)):
    """train_seeds then evaluate_run of the first seed; returns (train metrics, evaluation)."""
    summary = train_seeds(
        spec, data, cfg, NORM_ATTACK, NOISE, list(seeds), tmp_path / "model", tmp_path / "log.csv"
    )
    model, _ = load_model(checkpoint_path(tmp_path / "model", seeds[0]))
    metrics = evaluate_run(model, spec, data, NORM_ATTACK.eval, NOISE, seeds[0], 64)
    return summary, metrics


def test_training_loss_decreases(mnist2, tmp_path):
    cfg = train_config(epochs=5, optimizer={"lr": 0.02, "momentum": 0.0, "schedule": "constant"})
    run(tmp_path, mnist2, lr_run("l2", "adv", 1), cfg)
    log = pd.read_csv(tmp_path / "log.csv")
    assert list(log.epoch) == [1, 2, 3, 4, 5] and set(log.seed) == {0}
    assert log.train_loss.iloc[-1] < 0.5 * log.train_loss.iloc[0]


def test_robust_accuracy_is_at_most_clean(mnist2, tmp_path):
    _, m = run(tmp_path, mnist2, lr_run("linf", "adv", 76.5 / 255))
    for split in ("train", "test"):
        assert m[f"robust_{split}_acc"] <= m[f"clean_{split}_acc"]
        assert m[f"cf_robust_{split}_acc"] == pytest.approx(m[f"robust_{split}_acc"])
    assert m["pgd_cf_max_abs_dev"] < 1e-6
    assert m["robust_gap"] == pytest.approx(abs(m["robust_train_acc"] - m["robust_test_acc"]))


def test_same_seed_same_metrics_and_eps0_runs_agree(mnist2, tmp_path):
    a = run(tmp_path / "a", mnist2, lr_run("l2", "adv", 0.5))
    b = run(tmp_path / "b", mnist2, lr_run("l2", "adv", 0.5))
    assert a == b
    adv0 = run(tmp_path / "c", mnist2, lr_run("l2", "adv", 0))
    rand0 = run(tmp_path / "d", mnist2, lr_run("l2", "rand", 0))
    assert adv0 == rand0


def test_seeds_give_per_seed_checkpoints_logs_and_a_mean(mnist2, tmp_path):
    summary, _ = run(tmp_path, mnist2, lr_run("l2", "adv", 0.5), seeds=(0, 1))
    losses = [summary.seeds[s].final_train_loss for s in ("0", "1")]
    assert losses[0] != losses[1]  # the seed changes the data order and the attack's start
    assert summary.mean["final_train_loss"] == pytest.approx(sum(losses) / 2)
    assert summary.ci95["final_train_loss"] > 0 and summary.n_seeds == 2
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["seed0.pt", "seed1.pt"]
    assert set(pd.read_csv(tmp_path / "log.csv").seed) == {0, 1}


def test_checkpoint_holds_state_config_loss_and_norm(mnist2, tmp_path):
    summary, _ = run(tmp_path, mnist2, lr_run("l2", "rand", 0.5))
    ckpt = load_checkpoint(checkpoint_path(tmp_path / "model", 0))
    assert set(ckpt["state_dict"]) == {"linear.weight", "linear.bias"}
    assert ckpt["config"]["run"]["eps"] == 0.5 and ckpt["config"]["train"]["epochs"] == 3
    assert ckpt["architecture"] == {"model": "lr", "shape": [1, 28, 28], "n_classes": 2,
                                    "width": None}  # fmt: skip
    assert ckpt["final_train_loss"] == summary.mean["final_train_loss"] > 0
    assert ckpt["weight_norm"] == pytest.approx(ckpt["state_dict"]["linear.weight"].norm().item())


def test_non_finite_loss_stops_with_run_and_epoch(mnist2):
    model = torch.nn.Linear(784, 1)
    x = mnist2.x_train.flatten(1)
    huge = train_config(optimizer={"lr": 1e38})

    class Flat(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, x):
            return self.inner(x)[:, 0] * float("inf")

    perturb = make_perturb("rand", "l2", 0.0, ATTACK, "uniform", torch.Generator())
    with pytest.raises(TrainingDiverged, match=r"my-run: training loss is (nan|inf) at epoch 1"):
        fit(Flat(), x, mnist2.y_train, huge, perturb, (torch.Generator(),), "my-run")


def test_hooks_run_at_their_points_and_can_change_training(mnist2):
    """A hook that zeroes the gradient after backward freezes the weights; one that
    counts sees every epoch and batch."""

    class Count(Hook):
        def __init__(self):
            self.epochs, self.forwards, self.backwards = [], 0, 0

        def epoch_start(self, epoch):
            self.epochs.append(epoch)

        def before_forward(self, model, x, y):
            self.forwards += 1

        def after_backward(self, model):
            self.backwards += 1

    class Freeze(Hook):
        def after_backward(self, model):
            for p in model.parameters():
                p.grad.zero_()

    perturb = make_perturb("rand", "l2", 0.0, ATTACK, "uniform", torch.Generator())
    cfg = train_config(epochs=2, optimizer={"momentum": 0.0})
    x, y = mnist2.x_train, mnist2.y_train
    count, model = Count(), lr_model()
    fit(model, x, y, cfg, perturb, (torch.Generator(),), hooks=[count])
    batches = math.ceil(len(x) / cfg.batch_size)
    assert count.epochs == [0, 1] and count.forwards == count.backwards == 2 * batches
    assert model.w.abs().sum() > 0
    frozen = lr_model()
    fit(frozen, x, y, cfg, perturb, (torch.Generator(),), hooks=[Freeze()])
    assert frozen.w.abs().sum() == 0 and frozen.b == 0


def test_failed_training_is_detected_and_named(mnist2):
    """Frozen at w = 0 (a constant class) and gradient ascent (a diverging run) both get
    the status "failed" with their reasons; the same run trained normally is "ok"."""

    class Freeze(Hook):
        def after_backward(self, model):
            for p in model.parameters():
                p.grad.zero_()

    class Ascend(Hook):
        def after_backward(self, model):
            for p in model.parameters():
                p.grad.neg_()

    spec, cfg = lr_run("l2", "adv", 0.5), train_config(epochs=2)
    outcomes = {
        name: train_run(spec, mnist2, cfg, NORM_ATTACK, NOISE, 0, hooks=hooks)[1]
        for name, hooks in (("ok", []), ("frozen", [Freeze()]), ("ascent", [Ascend()]))
    }
    ok, frozen, ascent = outcomes["ok"], outcomes["frozen"], outcomes["ascent"]
    assert ok["status"] == "ok" and "failure" not in ok and ok["clean_train_acc_final"] > 90
    assert frozen["status"] == "failed" and frozen["final_train_loss"] == pytest.approx(math.log(2))
    assert "near chance (50%)" in frozen["failure"] and "did not fall below" in frozen["failure"]
    assert ascent["status"] == "failed" and "did not fall below 0.95 log 2" in ascent["failure"]
    assert ascent["clean_train_acc_final"] <= 50 and "near chance" in ascent["failure"]


def test_plateau_change_is_the_relative_fall_over_the_last_fifth():
    rows = [{"train_loss": v} for v in (4.0, 2.0, 1.5, 1.2, 1.1, 1.0, 1.0, 1.0, 1.0, 0.8)]
    assert plateau_change(rows) == pytest.approx((1.0 - 0.8) / 0.8)  # 10 epochs: k = 2
    assert math.isnan(plateau_change(rows[:1]))


def lr_model():
    from advland.core.models import build_model

    return build_model("lr", (1, 28, 28), 2)


def test_learning_rate_schedules():
    cosine = train_config(optimizer={"schedule": "cosine"}).optimizer
    assert learning_rate(cosine, 0.5) == pytest.approx(0.05)
    piecewise = train_config(optimizer={"schedule": "piecewise", "milestones": [0.5, 0.75]})
    assert [learning_rate(piecewise.optimizer, p) for p in (0.1, 0.6, 0.9)] == pytest.approx(
        [0.1, 0.01, 0.001]
    )
    warm = train_config(optimizer={"schedule": "constant", "warmup": 0.2}).optimizer
    assert [learning_rate(warm, p) for p in (0.0, 0.05, 0.2, 0.9)] == pytest.approx(
        [0.0, 0.025, 0.1, 0.1]
    )


def test_tampered_checkpoint_is_refused(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "payload": Evil()}, path, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="corrupt or unsafe"):
        load_checkpoint(path)


def test_truncated_checkpoint_gives_clear_error(mnist2, tmp_path):
    run(tmp_path, mnist2, lr_run("l2", "rand", 0))
    path = checkpoint_path(tmp_path / "model", 0)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=str(path)):
        load_model(path)


def test_checkpoint_of_another_architecture_gives_clear_error(mnist2, tmp_path):
    run(tmp_path, mnist2, lr_run("l2", "rand", 0))
    path = checkpoint_path(tmp_path / "model", 0)
    payload = load_checkpoint(path)
    payload["architecture"]["shape"] = [1, 10, 10]
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="does not fit this model"):
        load_model(path)


def tiny_cifar():
    from advland.data import Dataset

    g = torch.Generator().manual_seed(0)
    return Dataset(
        torch.rand(64, 3, 16, 16, generator=g),
        torch.randint(0, 10, (64,), generator=g),
        torch.rand(32, 3, 16, 16, generator=g),
        torch.randint(0, 10, (32,), generator=g),
        10,
    )


NET_ATTACK = NormAttack(
    train=AttackConfig(steps=2, step_size=2 / 255), eval=AttackConfig(steps=2, step_size=2 / 255)
)
NET_RUN = Run(dataset="cifar10", model="resnet18", norm="linf", noise="adv", eps=8 / 255)


def test_resnet_with_bf16_autocast_and_channels_last_trains_on_cpu(tmp_path):
    """The GPU options run on the CPU too: bf16 autocast, channels_last, best checkpoint."""
    data = tiny_cifar()
    cfg = train_config(
        epochs=2,
        optimizer={"lr": 0.05},
        model={"width": 4},
        data={"augment": True},
        hardware={"device": "cpu", "amp": True, "channels_last": True},
        select={"best": True, "n": 16},
    )
    payload, summary, _ = train_run(NET_RUN, data, cfg, NET_ATTACK, NOISE, 0)
    assert math.isfinite(summary["final_train_loss"]) and summary["best_epoch"] in (1, 2)
    assert set(payload["last_state_dict"]) == set(payload["state_dict"])
    train_seeds(NET_RUN, data, cfg, NET_ATTACK, NOISE, [0], tmp_path / "m", tmp_path / "l.csv")
    model, _ = load_model(checkpoint_path(tmp_path / "m", 0))
    assert model(data.x_test[:4]).shape == (4, 10)


@pytest.mark.slow
def test_compiled_forward_trains_like_eager():
    """hardware.compile (torch.compile; inductor generates C++ on the CPU) reaches eager's
    weights, to float tolerance, through PGD steps and SGD steps."""
    data = tiny_cifar()
    states = []
    for compiled in (False, True):
        cfg = train_config(
            epochs=1, optimizer={"lr": 0.05, "momentum": 0.0, "schedule": "constant"},
            model={"width": 2}, hardware={"device": "cpu", "compile": compiled},
        )  # fmt: skip
        payload, _, _ = train_run(NET_RUN, data, cfg, NET_ATTACK, NOISE, 0)
        states.append(payload["state_dict"])
    eager, compiled = states
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # it did compile
    for name, value in eager.items():
        torch.testing.assert_close(compiled[name], value, rtol=1e-4, atol=1e-5)
