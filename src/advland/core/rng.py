"""The random streams: every draw in the project comes from one of them.

`rng(seed, stream)` is a CPU generator seeded with seed + STREAMS[stream].offset, and
`seed_global(seed, stream)` seeds torch's global generator the same way (what draws
from it: weight initialization, EntropySGD's Langevin noise, PyHessian's start
vectors). The offsets are the
reproducibility contract: changing one changes every result that uses its stream.

A run's seed k (params `seeds`) gets the streams k+0 ... k+8, one per use, so that
each stage's draws do not depend on another's. A study's own seed (landscape
`direction_seed`, collapse and smoothness `seed`, the Hessian solvers' `seed`
argument) gets the streams listed under it. Streams with the same offset give the
same numbers from the same seed; each pair of them sits in different generators
(weights vs data order) or different studies, as they always have. Seed k's stream
at offset j equals seed k+j's at offset 0: seeds are meant to be 0, 1, 2, ... and
compared as a whole, not used as independent draws of one another.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class Stream(NamedTuple):
    offset: int
    use: str


STREAMS: dict[str, Stream] = {
    # from a run's seed
    "global": Stream(0, "torch's global generator: weight init, EntropySGD's Langevin noise"),
    "data_order": Stream(0, "train.fit: the order of the examples and the augmentation"),
    "train_noise": Stream(1, "training perturbation: PGD's random start, noise draws"),
    "evaluate": Stream(2, "evaluate: the PGD and noise of the accuracies"),
    "hessian": Stream(3, "hessian: the perturbation drawn once at the final weights"),
    "landscape": Stream(4, "landscape: the objective's perturbation at every point"),
    "select": Stream(5, "train: the PGD of best-epoch selection (select.best)"),
    "flatness": Stream(6, "flatness: the targets' attacks and each measure's draws"),
    "finetune_make": Stream(7, "finetune: the attack that makes the fine-tuning set"),
    "finetune_eval": Stream(8, "finetune_eval: the attacks of the accuracy matrix"),
    # from a study's own seed
    "directions": Stream(0, "landscape: the random directions (direction_seed)"),
    "smoothness": Stream(0, "smoothness: the directions of the Lipschitz ratios (seed)"),
    "lanczos": Stream(0, "hessian.lanczos_ritz: the start vector"),
    "hutchinson": Stream(0, "hessian.hutchinson_trace: the Rademacher vectors"),
}


def stream_seed(seed: int, stream: str) -> int:
    """The integer a stream's generator is seeded with."""
    return seed + STREAMS[stream].offset


def rng(seed: int, stream: str) -> torch.Generator:
    """A fresh CPU generator for `stream` of `seed`."""
    return torch.Generator().manual_seed(stream_seed(seed, stream))


def seed_global(seed: int, stream: str = "global") -> None:
    """Seed torch's global generator with `stream` of `seed`."""
    torch.manual_seed(stream_seed(seed, stream))
