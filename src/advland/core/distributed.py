"""Data-parallel training under torchrun: NCCL on GPU, gloo on CPU.

Every rank draws the same permutation; each takes an equal slice of every global
batch, and DistributedDataParallel averages the gradients, so a step equals the
single-process step on the whole global batch (up to float summation order, and
except BatchNorm statistics, which stay per rank). Only rank 0 writes outputs.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def init_from_env() -> None:
    """Join the process group when started by torchrun (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def local_slice(idx: torch.Tensor) -> torch.Tensor:
    """This rank's contiguous share of a global batch of indices."""
    return idx.tensor_split(world_size())[rank()]


def wrap(model: nn.Module) -> nn.Module:
    if world_size() == 1:
        return model
    device_ids = [torch.cuda.current_device()] if torch.cuda.is_available() else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def sum_over_ranks(value: float) -> float:
    if world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return t.item()
