"""Process-group set-up from torchrun's environment; helpers that also work in a single process."""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def init_distributed() -> DistInfo:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK), or run alone.

    NCCL on CUDA, gloo on CPU; the device comes from LOCAL_RANK.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        # DDP imports torch._dynamo; imported once a group exists, it keeps references to that group
        # for good, and shutdown could no longer stop the group's threads.
        importlib.import_module("torch._dynamo")
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None,
                                **_store_of_this_restart(rank, world_size))
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, device=device)


def _store_of_this_restart(rank: int, world_size: int) -> dict[str, Any]:
    """`init_process_group` arguments that give each torchrun restart (`--max-restarts`) its own store keys.

    torchrun's agent serves one store for the whole job. After it restarts the workers, the keys still
    hold the addresses the killed workers published, and gloo or NCCL would connect to those (and fail
    or hang). Older torch prefixed the keys by TORCHELASTIC_RESTART_COUNT itself; torch 2.14 does not.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return {}
    # as long as init_process_group waits on a store it makes itself (TCPStore alone waits 5 minutes)
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size, is_master=False,
                          timeout=dist.default_pg_timeout)
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return {"store": dist.PrefixStore(f"/worker/attempt_{restart}", store), "rank": rank, "world_size": world_size}


def shutdown() -> None:
    """Leave the process group; its gloo/NCCL threads stop here, before the interpreter finalizes.

    They stop only when the group's last reference goes. Were they still running at exit, a gloo
    thread releasing the tensors of a finished collective would need the GIL during finalization
    and abort the process ("terminate called without an active exception") after a successful run.
    """
    if dist.is_initialized():
        dist.destroy_process_group()


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any) -> Any:
    """Rank 0's `obj` on every rank."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum over ranks of a few numbers, in one collective."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor.tolist()
