"""PGD throughput and agreement: advland.attacks.pgd against torchattacks.PGD (Linf)
on the same small CNN and batch, from the same start.

    python benchmarks/pgd_vs_torchattacks.py

Both start from the same point (no random start, and with one shared random start
passed to both as the clean input's neighbour), so their outputs must agree.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from common import median_time, save

from advland.attacks import pgd

DEPS = Path(__file__).resolve().parent / ".deps"


def torchattacks():
    if not (DEPS / "torchattacks").is_dir():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-deps",
                "--target",
                str(DEPS),
                "-r",
                str(Path(__file__).with_name("requirements.txt")),
            ],
            check=True,
        )
    sys.path.insert(0, str(DEPS))
    import torchattacks as ta

    return ta


def small_cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(32 * 8 * 8, 10),
    ).eval()


def main() -> None:
    ta = torchattacks()
    model = small_cnn()
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(256, 3, 32, 32, generator=g), torch.randint(0, 10, (256,), generator=g)
    eps, alpha, steps = 8 / 255, 2 / 255, 10
    theirs = ta.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=False)
    ours_out = pgd(model, x, y, "linf", eps, steps, alpha, random_start=False)
    theirs_out = theirs(x, y)
    # the same random start for both: start torchattacks from our start point, ours too
    start = (x + eps * (2 * torch.rand(x.shape, generator=g) - 1)).clamp(0, 1)
    ours_rs = pgd(model, start, y, "linf", eps, steps, alpha, random_start=False)
    theirs_rs = theirs(start, y)
    t_ours = median_time(lambda: pgd(model, x, y, "linf", eps, steps, alpha, random_start=False))
    t_theirs = median_time(lambda: theirs(x, y))
    save(
        "pgd_vs_torchattacks",
        {
            "setting": f"small CNN (2 conv), batch 256x3x32x32, Linf eps 8/255, {steps} steps of 2/255",
            "max_abs_diff_no_random_start": (ours_out - theirs_out).abs().max().item(),
            "max_abs_diff_same_start": (ours_rs - theirs_rs).abs().max().item(),
            "identical": bool(
                torch.equal(ours_out, theirs_out) and torch.equal(ours_rs, theirs_rs)
            ),
            "advland_s": t_ours,
            "torchattacks_s": t_theirs,
            "throughput_ratio": t_theirs / t_ours,
        },
    )


if __name__ == "__main__":
    main()
