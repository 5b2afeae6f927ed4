"""Would torch.compile pay off for L2 PGD on logistic regression? Eager vs compiled
advland.attacks.linear_steps, at the training and the evaluation settings.

    python benchmarks/linear_pgd_compile.py

Every DVC stage is a fresh process, so it would compile again. For each setting:
- median seconds of one pgd call (random start included), eager and with
  linear_steps compiled by inductor, in one process;
- the compile overhead a stage process pays: the first compiled call minus the first
  eager call, each in a fresh process, with inductor's on-disk cache off (cold) and
  filled (warm);
- the break-even: batches needed to win back the warm overhead, against the batches
  a stage sees (train: epochs x ceil(n_train / batch); evaluate: one pass over train
  and test). Model: models/mnist2-lr-l2-adv-1.pt.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from unittest.mock import patch

import torch
from common import ROOT, load_params, median_time, save

from advland import attacks
from advland.data import load_prepared
from advland.train import load_trained

RUN = "mnist2-lr-l2-adv-1"


def settings(params, data) -> dict[str, tuple]:
    """name -> (PGD config, batch size, batches per stage)."""
    attack = params.attack["mnist2"]["l2"]
    train_batch, eval_batch = params.train["lr"].batch_size, params.evaluate.batch_size
    return {
        "train": (
            attack.train,
            train_batch,
            params.train["lr"].epochs * math.ceil(len(data.x_train) / train_batch),
        ),
        "evaluate": (
            attack.eval,
            eval_batch,
            sum(math.ceil(len(x) / eval_batch) for x in (data.x_train, data.x_test)),
        ),
    }


def attack_fn(name: str):
    """(one pgd call at the setting, (batch size, steps, batches per stage))."""
    params = load_params()
    data = load_prepared(ROOT / "data" / "prepared" / "mnist2.npz")
    model, _ = load_trained(ROOT / "models" / f"{RUN}.pt", data)
    cfg, batch, batches = settings(params, data)[name]
    x, y = data.x_train[:batch], data.y_train[:batch]
    gen = torch.Generator().manual_seed(0)

    def attack_once():
        return attacks.pgd(model, x, y, "l2", 1.0, cfg.steps, cfg.step(1.0), generator=gen)

    return attack_once, (batch, cfg.steps, batches)


def first_call(name: str, compiled: bool, caches: bool = True) -> float:
    """Seconds of the first pgd call in a fresh process."""
    env = os.environ | {"TORCHINDUCTOR_FORCE_DISABLE_CACHES": "0" if caches else "1"}
    out = subprocess.run(
        [sys.executable, __file__, "--first-call", name, str(int(compiled))],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    rows = []
    for name in ("train", "evaluate"):
        attack_once, (batch, steps, batches) = attack_fn(name)
        eager_s = median_time(attack_once, repeats=50, warmup=5)
        with patch("advland.attacks.linear_steps", torch.compile(attacks.linear_steps)):
            compiled_s = median_time(attack_once, repeats=50, warmup=5)
        eager_first = first_call(name, compiled=False)
        cold = first_call(name, compiled=True, caches=False) - eager_first
        first_call(name, compiled=True)  # fills inductor's on-disk cache
        warm = first_call(name, compiled=True) - eager_first
        saved = eager_s - compiled_s
        rows.append(
            {
                "setting": f"{name}: batch {batch}, {steps} steps",
                "eager_s": eager_s,
                "compiled_s": compiled_s,
                "compile_cold_s": cold,
                "compile_warm_s": warm,
                "break_even_batches": math.ceil(warm / saved) if saved > 0 else None,
                "batches_per_stage": batches,
            }
        )
        print(rows[-1], flush=True)
    save("linear_pgd_compile", {"run": RUN, "rows": rows})


if __name__ == "__main__":
    if sys.argv[1:2] == ["--first-call"]:
        fn, _ = attack_fn(sys.argv[2])
        if sys.argv[3] == "1":
            attacks.linear_steps = torch.compile(attacks.linear_steps)
        t0 = time.perf_counter()
        fn()
        print(time.perf_counter() - t0)
    else:
        main()
