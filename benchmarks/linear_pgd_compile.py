"""Would a fused kernel pay off for L2 PGD on logistic regression? Eager
advland.attacks.linear_steps against torch.compile of it and against a hand-written
C loop, at the training and the evaluation settings.

    python benchmarks/linear_pgd_compile.py

Every DVC stage is a fresh process, so it would compile again. For each setting:
- median seconds of one pgd call (random start included), with linear_steps eager,
  compiled by inductor and with its loop in C, taking turns, in one process;
- the compile overhead a stage process pays: the first compiled call minus the first
  eager call, each in a fresh process, with inductor's on-disk cache off (cold) and
  filled (warm);
- the break-even: batches needed to win back the warm overhead, against the batches
  a stage sees (train: epochs x ceil(n_train / batch); evaluate: one pass over train
  and test). Model: models/mnist2-lr-l2-adv-1.pt.
The C loop (C_LOOP, built with the system's cc and CFLAGS) takes each
row through all its steps while the row sits in L1 cache, on one core (OpenMP
threads beside torch's own fight over the two cores and ran 4x slower): a floor for
what a fused kernel could do here. Its output is checked against eager
from the same random start, and the seconds it would save per L2 run are set against
the naive comparison of benchmarks/results/lr_grid.json.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest.mock import patch

import torch
from common import RESULTS, ROOT, last_line_of, load_params, median_times, save

from advland import attacks
from advland.data import load_prepared
from advland.train import load_trained

RUN = "mnist2-lr-l2-adv-1"
CFLAGS = ("-O3", "-march=native", "-shared", "-fPIC")
C_LOOP = r"""
#include <math.h>
/* v <- clamp(ad + eps v / max(||v||, eps), lo, hi), `steps` times, row by row. */
void l2_steps(float *v, const float *ad, const float *lo, const float *hi,
              long rows, long n, long steps, float eps) {
    for (long r = 0; r < rows; r++) {
        float *vr = v + r * n;
        const float *a = ad + r * n, *l = lo + r * n, *h = hi + r * n;
        for (long s = 0; s < steps; s++) {
            float part[16] = {0}, sq = 0;
            long j = 0;
            for (; j + 16 <= n; j += 16)
                for (int k = 0; k < 16; k++) part[k] += vr[j + k] * vr[j + k];
            for (; j < n; j++) sq += vr[j] * vr[j];
            for (int k = 0; k < 16; k++) sq += part[k];
            float norm = sqrtf(sq), scale = eps / (norm > eps ? norm : eps);
            for (j = 0; j < n; j++) {  /* ?: rather than fminf/fmaxf, which do not vectorize */
                float t = a[j] + scale * vr[j];
                t = t < l[j] ? l[j] : t;
                vr[j] = t > h[j] ? h[j] : t;
            }
        }
    }
}
"""


def build_c_loop() -> ctypes.CDLL:
    """Compile C_LOOP into a temporary shared library."""
    if shutil.which("cc") is None:
        sys.exit("benchmarks/linear_pgd_compile.py: the C loop needs a C compiler, `cc`, on PATH")
    folder = Path(tempfile.mkdtemp())
    (folder / "loop.c").write_text(C_LOOP)
    subprocess.run(["cc", *CFLAGS, "loop.c", "-o", "loop.so"], cwd=folder, check=True)
    return ctypes.CDLL(str(folder / "loop.so"))


def c_linear_steps(lib: ctypes.CDLL):
    """attacks.linear_steps for L2 with a box, its loop in C."""

    def linear_steps(x_adv, x, direction, norm, eps, steps, step_size, box):
        x_flat, a_d = x.flatten(1), (direction.flatten(1) * step_size).contiguous()
        v = (x_adv.flatten(1) - x_flat).add_(a_d)
        lo, hi = ((bound - x_flat + a_d).contiguous() for bound in box)
        pointers = (ctypes.c_void_p(t.data_ptr()) for t in (v, a_d, lo, hi))
        lib.l2_steps(*pointers, *map(ctypes.c_long, (*v.shape, steps - 1)), ctypes.c_float(eps))
        return attacks.clamp_box(attacks.project_(v.view_as(x), norm, eps).add_(x), box)

    return linear_steps


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

    def attack_once(generator=gen):
        return attacks.pgd(model, x, y, "l2", 1.0, cfg.steps, cfg.step(1.0), generator=generator)

    return attack_once, (batch, cfg.steps, batches)


def first_call(name: str, compiled: bool, caches: bool = True) -> float:
    """Seconds of the first pgd call in a fresh process."""
    env = os.environ | {"TORCHINDUCTOR_FORCE_DISABLE_CACHES": "0" if caches else "1"}
    return float(last_line_of(__file__, "--first-call", name, str(int(compiled)), env=env))


def with_linear_steps(linear_steps, attack_once):
    """attack_once with attacks.linear_steps set to linear_steps."""

    def run():
        attacks.linear_steps = linear_steps
        return attack_once()

    return run


def main() -> None:
    rows = []
    c_loop = c_linear_steps(build_c_loop())
    for name in ("train", "evaluate"):
        attack_once, (batch, steps, batches) = attack_fn(name)
        variants = {
            "eager": attacks.linear_steps,
            "compiled": torch.compile(attacks.linear_steps),
            "c_loop": c_loop,
        }
        with patch("advland.attacks.linear_steps"):  # each variant sets it; restored after
            runs = {k: with_linear_steps(f, attack_once) for k, f in variants.items()}
            eager_s, compiled_s, c_s = median_times(runs, repeats=50, warmup=5).values()
        eager_out = attack_once(torch.Generator().manual_seed(1))
        with patch("advland.attacks.linear_steps", c_loop):
            c_diff = (attack_once(torch.Generator().manual_seed(1)) - eager_out).abs().max().item()
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
                "c_loop_s": c_s,
                "c_loop_max_abs_diff": c_diff,
            }
        )
        print(rows[-1], flush=True)
    save("linear_pgd_compile", {"run": RUN, "rows": rows, "with_c_loop": naive_ratio_with(rows)})


def naive_ratio_with(rows: list[dict]) -> dict | None:
    """The naive comparison (lr_grid.json) had its L2 run used the C loop: our seconds
    less what the loop saves over the stage's batches (one L2 run: one train stage and
    one evaluate stage)."""
    path = RESULTS / "lr_grid.json"
    comparison = json.loads(path.read_text()).get("naive_comparison") if path.is_file() else None
    if comparison is None:
        return None
    saved = sum((r["eager_s"] - r["c_loop_s"]) * r["batches_per_stage"] for r in rows)
    ours = comparison["ours_s"] - saved
    naive = comparison["naive_s"]
    return {"saved_s": saved, "ours_s": ours, "naive_s": naive, "ratio": naive / ours}


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
