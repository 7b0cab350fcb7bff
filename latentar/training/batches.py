"""The order of training batches: a function of (seed, epoch) only, so a resumed run sees the
same batches in the same order as an uninterrupted one."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from latentar.data.subsets import dataset_size


class ShuffledBatches:
    """Endless micro-batches of dataset indices for one process.

    Epoch e shuffles the dataset with a generator seeded by (seed, e) and cuts it into
    global batches of ``batch_size · num_processes``; process r takes slice r of each.
    An incomplete last global batch is dropped (drop_last).
    """

    def __init__(self, dataset: Dataset, batch_size: int, *, seed: int, num_processes: int = 1,
                 process_index: int = 0, num_workers: int = 0):
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.num_processes, self.process_index = num_processes, process_index
        self.loader_options: dict[str, Any] = dict(num_workers=num_workers)
        self.per_epoch = dataset_size(dataset) // (batch_size * num_processes)  # batches per process per epoch
        if self.per_epoch == 0:
            raise ValueError(f"the training set has {dataset_size(dataset)} items, fewer than one batch of "
                             f"{batch_size} per process × {num_processes} processes")

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """This process's batches of epoch ``epoch`` (lists of dataset indices)."""
        order = torch.randperm(dataset_size(self.dataset), generator=self._generator(epoch)).tolist()
        size = self.batch_size
        first = [(i * self.num_processes + self.process_index) * size for i in range(self.per_epoch)]
        return [order[j:j + size] for j in first]

    def iterate(self, start: int = 0):
        """Yield batches forever, beginning with micro-batch number ``start`` (0 = the first)."""
        epoch, skip = divmod(start, self.per_epoch)
        while True:
            loader = DataLoader(self.dataset, batch_sampler=self.epoch_batches(epoch)[skip:],
                                generator=self._generator(epoch), **self.loader_options)
            yield from loader
            epoch, skip = epoch + 1, 0

    def _generator(self, epoch: int) -> torch.Generator:
        # Its own generator: building loaders never draws from the global RNG (dropout's).
        return torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % 2**63)
