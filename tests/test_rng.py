"""The random streams keep today's offsets: every committed metric depends on them."""

from __future__ import annotations

import pytest
import torch

from advland.core.rng import STREAMS, rng, seed_global

OFFSETS = {  # the contract (core/rng.py): a changed offset changes results
    "global": 0,
    "data_order": 0,
    "train_noise": 1,
    "evaluate": 2,
    "hessian": 3,
    "landscape": 4,
    "select": 5,
    "flatness": 6,
    "finetune_make": 7,
    "finetune_eval": 8,
    "directions": 0,
    "smoothness": 0,
    "lanczos": 0,
    "hutchinson": 0,
}


def first_draws(gen: torch.Generator | None) -> torch.Tensor:
    return torch.rand(4, generator=gen)


def test_every_stream_is_pinned():
    assert {name: s.offset for name, s in STREAMS.items()} == OFFSETS


@pytest.mark.parametrize("stream", OFFSETS)
def test_a_stream_draws_as_the_seed_plus_its_offset(stream):
    expected = first_draws(torch.Generator().manual_seed(3 + OFFSETS[stream]))
    assert torch.equal(first_draws(rng(3, stream)), expected)
    seed_global(3, stream)
    assert torch.equal(first_draws(None), expected)


def test_two_streams_of_one_seed_differ():
    assert not torch.equal(first_draws(rng(3, "evaluate")), first_draws(rng(3, "hessian")))
    assert not torch.equal(first_draws(rng(3, "data_order")), first_draws(rng(3, "train_noise")))
