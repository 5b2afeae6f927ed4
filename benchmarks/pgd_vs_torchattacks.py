"""PGD throughput and agreement: advland.core.attacks.pgd against torchattacks.PGD (Linf)
on the same small CNN and batch, from the same start.

    python benchmarks/pgd_vs_torchattacks.py
    python benchmarks/pgd_vs_torchattacks.py --tiny     # batch 16, 2 steps, 1 repeat

torchattacks 3.5.1 is installed on first use, without its dependencies (it pins an
old `requests`), into benchmarks/.deps. Both attacks start from the same point (no
random start; then one shared random start passed to both as the input), so their
outputs must agree.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from common import arguments, median_times, out_dir, save

from advland.core.attacks import pgd

DEPS = Path(__file__).resolve().parent / ".deps"


def torchattacks():
    if not (DEPS / "torchattacks").is_dir():
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(DEPS)]
        requirements = Path(__file__).with_name("requirements.txt")
        if subprocess.run([*pip, "-r", str(requirements)]).returncode != 0:
            sys.exit(f"cannot install torchattacks into {DEPS}")
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
    args = arguments(__doc__).parse_args()
    batch, steps, repeats = (16, 2, 1) if args.tiny else (256, 10, 5)
    ta = torchattacks()
    model = small_cnn()
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(batch, 3, 32, 32, generator=g), torch.randint(0, 10, (batch,), generator=g)
    eps, alpha = 8 / 255, 2 / 255
    theirs = ta.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=False)

    def ours(x: torch.Tensor) -> torch.Tensor:
        return pgd(model, x, y, "linf", eps, steps, alpha, random_start=False)

    # the same random start for both: each starts from that point with no random start
    start = (x + eps * (2 * torch.rand(x.shape, generator=g) - 1)).clamp(0, 1)
    pairs = [(ours(x), theirs(x, y)), (ours(start), theirs(start, y))]
    times = median_times({"ours": lambda: ours(x), "theirs": lambda: theirs(x, y)}, repeats)
    save(
        "pgd_vs_torchattacks",
        {
            "setting": f"small CNN (2 conv), batch {batch}x3x32x32, Linf eps 8/255, "
            f"{steps} steps of 2/255",
            "max_abs_diff_no_random_start": (pairs[0][0] - pairs[0][1]).abs().max().item(),
            "max_abs_diff_same_start": (pairs[1][0] - pairs[1][1]).abs().max().item(),
            "identical": all(torch.equal(a, b) for a, b in pairs),
            "advland_s": times["ours"],
            "torchattacks_s": times["theirs"],
            "throughput_ratio": times["theirs"] / times["ours"],
        },
        out_dir(args),
    )


if __name__ == "__main__":
    main()
