"""Distributed training through torchrun: DistributedDataParallel with NCCL (CUDA) or gloo (CPU)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from spikeyolo.errors import UserError

__all__ = ["DistInfo", "init_distributed", "cleanup_distributed", "rank_batch_size", "select_device"]


@dataclass
class DistInfo:
    rank: int = -1          # -1: not distributed
    local_rank: int = -1
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank in (-1, 0)


def rank_batch_size(total: int, world_size: int, key: str = "trainer.batch_size") -> int:
    """Each process's share of a batch given over all processes (the reference's ``batch``: 40 on 4 GPUs is 10 a
    GPU), so one command trains the same recipe on 1 or N GPUs; a total the processes cannot share is refused."""
    if total < 1 or total % world_size:
        raise UserError(f"{key}={total} is the batch over all {world_size} processes and must be a positive "
                        f"multiple of {world_size} (each process takes {key} / {world_size} images)")
    return total // world_size


def select_device(spec: str | int, local_rank: int = -1, key: str = "device") -> torch.device:
    """'auto' | 'cpu' | 'cuda' | '0' | '0,1' -> a torch device (the local rank's GPU under torchrun).

    ``key`` is the config key the spec came from, named in the error (``trainer.device`` in training).
    """
    spec = str(spec).strip().lower()
    if spec == "cpu" or (spec == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"{key}={spec} asks for CUDA but no GPU is available (use {key}=cpu or {key}=auto)")
    if local_rank >= 0:
        return torch.device("cuda", local_rank)
    if spec in ("auto", "cuda"):
        return torch.device("cuda", 0)
    return torch.device("cuda", int(spec.split(",")[0]))


def init_distributed(device_spec: str) -> DistInfo:
    """Initialise the process group when launched by torchrun (WORLD_SIZE > 1)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    use_cuda = str(device_spec).lower() != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size)


def cleanup_distributed(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
