"""Many processes under torchrun: one home for what detection and training share.

``torchrun --nproc-per-node N -m flamcli detect|train …`` sets ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK``; :func:`setup_distributed` reads them and joins the process group (gloo on the
CPU, NCCL for CUDA training), and :func:`gather_in_input_order` brings every rank's detection
results to rank 0 in the order of the inputs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(use_cuda: bool = False, backend: str | None = None) -> Dist:
    """This process's place under torchrun (rank 0 of 1 without it). ``backend`` defaults to
    NCCL with CUDA and gloo otherwise; detection gathers Python objects, so it asks for gloo."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world <= 1:
        return Dist(0, 1, 0, device)
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if use_cuda else "gloo"))
    return Dist(dist.get_rank(), dist.get_world_size(), local, device)


def barrier(d: Dist) -> None:
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()


def gather_in_input_order(results: Sequence[Any], inputs: Sequence[Any], d: Dist,
                          key: Callable[[Any], Any]) -> tuple[list[Any], bool]:
    """Every rank's ``results`` on rank 0, ordered as ``inputs`` (matched by ``key(result)`` ==
    ``key(input)``), and whether any rank had a failed result (``not result.ok``), known on
    every rank. Other ranks get an empty list. Ends the process group."""
    import torch.distributed as dist

    gathered = [None] * d.world if d.main else None
    dist.gather_object(list(results), gathered, dst=0)
    flags = [None] * d.world
    dist.all_gather_object(flags, any(not r.ok for r in results))
    ordered = []
    if d.main:
        by_key = {key(r): r for rank_results in gathered for r in rank_results}
        ordered = [by_key[key(item)] for item in inputs if key(item) in by_key]
    dist.destroy_process_group()
    return ordered, any(flags)
