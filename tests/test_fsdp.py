"""Sharded training of the Transformer prior: each block sharded with FSDP2 (``fully_shard``, what
``recipes/accelerate-fsdp.yaml`` asks Accelerate for on GPUs) across two CPU processes (gloo)
ends with the weights of one unsharded process trained on the same batches."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from prior_cases import tiny_prior

STEPS, BATCH = 2, 8  # each of the two processes takes half of every batch


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [(torch.randint(0, 6, (BATCH, 1, 4, 4), generator=g), torch.randint(0, 3, (BATCH,), generator=g))
            for _ in range(STEPS)]


def prior():
    return tiny_prior("transformer", (1, 4, 4), 6, num_classes=3, num_layers=3).train()


def train(model, rank: int = 0, world: int = 1) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)  # linear in the gradients: float noise stays small
    share = BATCH // world
    for x, labels in batches():
        part = slice(rank * share, (rank + 1) * share)
        model.loss(x[part], labels[part]).backward()  # FSDP averages the gradients of the processes
        optimizer.step()
        optimizer.zero_grad()


def sharded_worker(rank: int, port: int, out: str) -> None:
    """One of two spawned processes: shard every block and the rest, train, save the full weights."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.fsdp import fully_shard

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo")
    model = prior()
    for block in model.blocks:
        fully_shard(block)
    fully_shard(model)
    weight = model.blocks[0].mlp.expand.weight  # a DTensor: this process holds half of its rows
    shards = [tuple(weight.to_local().shape), tuple(weight.shape)]
    train(model, rank, world=2)
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if rank == 0:
        torch.save(state, Path(out) / "weights.pt")
        (Path(out) / "shards.json").write_text(json.dumps(shards))
    torch.distributed.barrier()  # neither process tears the group down while the other still uses it
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_fsdp_sharded_training_matches_one_process(tmp_path, free_port):
    torch.multiprocessing.start_processes(sharded_worker, args=(free_port, str(tmp_path)), nprocs=2,
                                          start_method="spawn")
    local, full = json.loads((tmp_path / "shards.json").read_text())
    assert local[0] * 2 == full[0], f"the block's weight {full} is not split in two: {local}"
    sharded = torch.load(tmp_path / "weights.pt", weights_only=True)
    single = prior()
    train(single)
    for name, value in single.state_dict().items():
        assert torch.allclose(sharded[name], value, atol=1e-6), f"{name} differs after sharded training"
