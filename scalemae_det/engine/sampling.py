"""Which samples each rank trains on, and with which augmentation randomness.

Step k of an epoch trains on positions [k*G, (k+1)*G) of one seeded permutation, G being the
global batch (ranks x batch); rank r takes its own slice of that. A sample's augmentation draws
from RNGs seeded by (seed, epoch, index). Together these make an epoch's data a pure function
of the seed: independent of worker processes, of the number of ranks (for a given global
batch), and of where a run was interrupted and resumed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


def derived_seed(*values: int) -> int:
    """A 32-bit seed that depends on every value (all >= 0), with no visible pattern between
    neighbours."""
    return int(np.random.SeedSequence(list(values)).generate_state(1, np.uint32)[0])


class TrainSampler(Sampler):
    """Yields (index, sample seed) keys for one rank; `set_epoch(epoch, start_step)` resumes
    mid-epoch.

    The incomplete last global batch is dropped so that every rank runs the same number of steps,
    and so are the steps past the last multiple of `step_multiple` (gradient accumulation).
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        step_multiple: int = 1,
    ):
        self.size, self.batch_size, self.rank, self.world_size, self.seed = (
            size,
            batch_size,
            rank,
            world_size,
            seed,
        )
        self.steps_per_epoch = size // (batch_size * world_size) // step_multiple * step_multiple
        self.epoch, self.start_step = 0, 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch, "start_step": self.start_step}

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.batch_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(derived_seed(self.seed, self.epoch))
        order = torch.randperm(self.size, generator=g).tolist()
        global_batch = self.batch_size * self.world_size
        for step in range(self.start_step, self.steps_per_epoch):
            first = step * global_batch + self.rank * self.batch_size
            for index in order[first : first + self.batch_size]:
                yield index, derived_seed(self.seed, self.epoch, index)


def eval_indices(size: int, rank: int, world_size: int) -> list[int]:
    """Rank's share of the evaluation set: every image exactly once over all ranks (no padding)."""
    return list(range(rank, size, world_size))


@contextmanager
def seeded_rngs(seed: int) -> Iterator[None]:
    """Seed torch's, numpy's and Python's global RNGs for the block, then put the caller's states
    back."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class SeededSamples(Dataset):
    """`dataset[(index, seed)]`: the sample built with every global RNG seeded by `seed`."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        with seeded_rngs(seed):
            return self.dataset[index]
