"""The process group's threads are gone after shutdown, so a finished run cannot abort at exit."""
from __future__ import annotations

import sys

from conftest import ROOT, free_port, run

WORKER = f"""
import os, sys
sys.path.insert(0, {str(ROOT)!r})
import torch
from utils.distributed import gather_objects, init_distributed, shutdown


def train_and_gather(rank: int) -> None:
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(3, 2))
    model(torch.ones(2, 3)).sum().backward()
    assert gather_objects(rank) == [0, 1]


info = init_distributed()
train_and_gather(info.rank)
shutdown()
names = [open(f"/proc/self/task/{{task}}/comm").read().strip() for task in os.listdir("/proc/self/task")]
print(f"rank {{info.rank}} gloo threads after shutdown: {{[n for n in names if 'gloo' in n]}}")
"""


def test_shutdown_stops_the_gloo_threads_of_a_group_ddp_used(tmp_path):
    # Left running, a gloo thread freeing a collective's tensors during interpreter finalization
    # aborted a finished run now and then; the deterministic symptom is threads that outlive shutdown.
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    result = run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                  "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(script)])
    for rank in (0, 1):
        assert f"rank {rank} gloo threads after shutdown: []" in result.stdout, result.stdout
