"""What every family's training loop shares: seeds, torchrun/DDP, checkpoints, progress.

Checkpoints are data: a dict of tensors, numbers, strings, lists and dicts, saved atomically
and loaded with torch.load(weights_only=True). The layout every family uses:

    {"format": "mobilize-checkpoint/1", "family": str, "config": dict (model + training),
     "model": state_dict, "optimizer": state_dict | None, "scheduler": state_dict | None,
     "epoch": int, "step": int, "metrics": dict, "best": dict, "meta": dict}
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CHECKPOINT_FORMAT = "mobilize-checkpoint/1"


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


# -- distributed --------------------------------------------------------------------------
@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistEnv:
    """Under torchrun (RANK/WORLD_SIZE set) join the process group: gloo on CPU, nccl on GPU."""
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and world > 1:
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return DistEnv(rank, world, local, device)


def wrap_ddp(model, env: DistEnv):
    if not env.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    if env.device.startswith("cuda"):
        return DDP(model, device_ids=[env.local_rank])
    return DDP(model)


def unwrap(model):
    return getattr(model, "module", model)


def all_reduce_mean(value: float, env: DistEnv) -> float:
    if not env.distributed:
        return float(value)
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(value)], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item() / env.world_size)


def barrier(env: DistEnv) -> None:
    if env.distributed:
        import torch.distributed as dist

        dist.barrier()


def shutdown(env: DistEnv) -> None:
    if env.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


# -- checkpoints --------------------------------------------------------------------------
def save_checkpoint(path: str | Path, state: dict[str, Any], env: DistEnv | None = None) -> Path | None:
    """Atomic save (write a temp file, then rename) from the main process only."""
    import torch

    if env is not None and not env.is_main:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"format": CHECKPOINT_FORMAT, **state}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(state, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: str | Path) -> dict:
    """Load as data. Raises BadInput with one line when it is not a loadable checkpoint."""
    from ..sources import read_checkpoint

    return read_checkpoint(Path(path))


# -- progress -----------------------------------------------------------------------------
def progress(reporter, iterable, total: int | None, desc: str, env: DistEnv | None = None):
    """A bar (with ETA) on the main process; silent elsewhere and when quiet."""
    if env is not None and not env.is_main:
        from .._ui import SILENT

        return SILENT.bar(iterable, total=total, desc=desc)
    return reporter.bar(iterable, total=total, desc=desc)
