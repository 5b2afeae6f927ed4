"""The training core and evaluation on a small slice of synthetic MNIST2."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.datasets as tv
from conftest import make_idx_dataset

from advland.config import NoiseConfig, NormAttack, PGDConfig, RunSpec, TrainConfig
from advland.data import load_prepared, prepare
from advland.evaluate import evaluate_run
from advland.io import CheckpointError, load_checkpoint
from advland.train import fit, learning_rate, load_trained, make_perturb, train_run

CFG = TrainConfig(epochs=3, batch_size=16, lr=0.1, momentum=0.9, schedule="cosine")
ATTACK = PGDConfig(steps=10, rel_step_size=2.5)
NORM_ATTACK = NormAttack(train=ATTACK, eval=PGDConfig(steps=20, rel_step_size=2.5))


@pytest.fixture
def mnist2(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    make_idx_dataset(raw, tv.MNIST, monkeypatch, n_train=400, n_test=200)
    prepare("mnist2", tmp_path / "m.npz", tmp_path / "m.json", raw, tmp_path, ["raw"])
    return load_prepared(tmp_path / "m.npz")


def run(tmp_path, data, run_id, cfg=CFG, seed=0):
    spec = RunSpec.parse(run_id)
    summary = train_run(
        spec,
        data,
        cfg,
        NORM_ATTACK,
        NoiseConfig(),
        seed,
        tmp_path / f"{run_id}.pt",
        tmp_path / f"{run_id}.csv",
    )
    model, _ = load_trained(tmp_path / f"{run_id}.pt", data)
    metrics = evaluate_run(
        model, spec, data, PGDConfig(steps=20, rel_step_size=2.5), NoiseConfig(), seed, 64
    )
    return summary, metrics


def test_training_loss_decreases(mnist2, tmp_path):
    import pandas as pd

    run(tmp_path, mnist2, "mnist2-lr-l2-adv-1", TrainConfig(epochs=5, batch_size=16, lr=0.02))
    log = pd.read_csv(tmp_path / "mnist2-lr-l2-adv-1.csv")
    assert list(log.epoch) == [1, 2, 3, 4, 5]
    assert log.train_loss.iloc[-1] < 0.5 * log.train_loss.iloc[0]


def test_robust_accuracy_is_at_most_clean(mnist2, tmp_path):
    _, m = run(tmp_path, mnist2, "mnist2-lr-linf-adv-76.5_255")
    for split in ("train", "test"):
        assert m[f"robust_{split}_acc"] <= m[f"clean_{split}_acc"]
        assert m[f"cf_robust_{split}_acc"] == pytest.approx(m[f"robust_{split}_acc"])
    assert m["pgd_cf_max_abs_dev"] < 1e-6
    assert m["robust_gap"] == pytest.approx(abs(m["robust_train_acc"] - m["robust_test_acc"]))


def test_same_seed_same_metrics_and_eps0_runs_agree(mnist2, tmp_path):
    a = run(tmp_path / "a", mnist2, "mnist2-lr-l2-adv-0.5")
    b = run(tmp_path / "b", mnist2, "mnist2-lr-l2-adv-0.5")
    assert a == b
    adv0, rand0 = (
        run(tmp_path, mnist2, "mnist2-lr-l2-adv-0"),
        run(tmp_path, mnist2, "mnist2-lr-l2-rand-0"),
    )
    assert adv0 == rand0


def test_checkpoint_holds_state_config_loss_and_norm(mnist2, tmp_path):
    summary, _ = run(tmp_path, mnist2, "mnist2-lr-l2-rand-0.5")
    ckpt = load_checkpoint(tmp_path / "mnist2-lr-l2-rand-0.5.pt")
    assert set(ckpt["state_dict"]) == {"linear.weight", "linear.bias"}
    assert ckpt["config"]["run"]["eps"] == 0.5 and ckpt["config"]["train"]["epochs"] == 3
    assert ckpt["final_train_loss"] == summary["final_train_loss"] > 0
    assert ckpt["weight_norm"] == pytest.approx(ckpt["state_dict"]["linear.weight"].norm().item())


def test_non_finite_loss_stops_with_run_and_epoch(mnist2):
    model = torch.nn.Linear(784, 1)
    x = mnist2.x_train.flatten(1)
    huge = TrainConfig(epochs=3, batch_size=16, lr=1e38)

    class Flat(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, x):
            return self.inner(x)[:, 0] * float("inf")

    perturb = make_perturb(
        RunSpec.parse("mnist2-lr-l2-rand-0"), ATTACK, "uniform", torch.Generator()
    )
    with pytest.raises(FloatingPointError, match=r"my-run: training loss is (nan|inf) at epoch 1"):
        fit(Flat(), x, mnist2.y_train, huge, perturb, (torch.Generator(),), "my-run")


def test_learning_rate_schedules():
    assert learning_rate(
        TrainConfig(epochs=1, batch_size=1, lr=0.1, schedule="cosine"), 0.5
    ) == pytest.approx(0.05)
    piecewise = TrainConfig(
        epochs=1, batch_size=1, lr=0.1, schedule="piecewise", milestones=[0.5, 0.75]
    )
    assert [learning_rate(piecewise, p) for p in (0.1, 0.6, 0.9)] == pytest.approx(
        [0.1, 0.01, 0.001]
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
    run(tmp_path, mnist2, "mnist2-lr-l2-rand-0")
    path = tmp_path / "mnist2-lr-l2-rand-0.pt"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=str(path)):
        load_trained(path, mnist2)


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
    train=PGDConfig(steps=2, step_size=2 / 255), eval=PGDConfig(steps=2, step_size=2 / 255)
)
NET_SPEC = RunSpec.parse("cifar10-resnet18-linf-adv-8_255")


def test_resnet_with_bf16_autocast_and_channels_last_trains_on_cpu(tmp_path):
    """The GPU options run on the CPU too: bf16 autocast, channels_last, best checkpoint."""
    data = tiny_cifar()
    cfg = TrainConfig(
        epochs=2,
        batch_size=16,
        lr=0.05,
        width=4,
        augment=True,
        device="cpu",
        amp=True,
        channels_last=True,
        select_best=True,
        select_n=16,
    )
    summary = train_run(
        NET_SPEC, data, cfg, NET_ATTACK, NoiseConfig(), 0, tmp_path / "r.pt", tmp_path / "r.csv"
    )
    assert math.isfinite(summary["final_train_loss"]) and summary["best_epoch"] in (1, 2)
    model, ckpt = load_trained(tmp_path / "r.pt", data)
    assert set(ckpt["last_state_dict"]) == set(ckpt["state_dict"])
    assert model(data.x_test[:4]).shape == (4, 10)


@pytest.mark.slow
def test_compiled_forward_trains_like_eager(tmp_path):
    """cfg.compile (torch.compile; inductor generates C++ on the CPU) reaches eager's
    weights, to float tolerance, through PGD steps and SGD steps."""
    data = tiny_cifar()
    cfg = TrainConfig(epochs=1, batch_size=16, lr=0.05, width=2, device="cpu")
    states = []
    for compiled in (False, True):
        path = tmp_path / f"compiled-{compiled}.pt"
        train_run(NET_SPEC, data, cfg.model_copy(update={"compile": compiled}), NET_ATTACK,
                  NoiseConfig(), 0, path, tmp_path / f"compiled-{compiled}.csv")  # fmt: skip
        states.append(load_checkpoint(path)["state_dict"])
    eager, compiled = states
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # it did compile
    for name, value in eager.items():
        torch.testing.assert_close(compiled[name], value, rtol=1e-4, atol=1e-5)
