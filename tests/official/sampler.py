"""The official P x K sampler, transcribed: ``RandomIdentitySampler`` of heshuting555/TransReID
``datasets/sampler.py`` (the same class in TransReID-SSL ``transreid_pytorch/datasets/sampler.py``, PASS
``PASS_transreid/datasets/sampler.py`` and reid-strong-baseline ``data/samplers/triplet_sampler.py``).

``__init__`` estimates the epoch's length as the count of K-chunks (identities with fewer than K images
count as one chunk); ``__iter__`` shuffles each identity's images (resampling a short identity up to K
with replacement), cuts them into K-chunks, then repeatedly samples P distinct identities among those
with chunks left and takes each one's first remaining chunk, until fewer than P identities have any.
"""

from __future__ import annotations

import copy
import random
from collections import defaultdict

import numpy as np


class RandomIdentitySampler:
    def __init__(self, pids: list[int], batch_size: int, num_instances: int) -> None:
        self.num_instances = num_instances
        self.num_pids_per_batch = batch_size // num_instances
        self.index_dic: dict[int, list[int]] = defaultdict(list)
        for index, pid in enumerate(pids):
            self.index_dic[pid].append(index)
        self.pids = list(self.index_dic.keys())
        self.length = 0
        for pid in self.pids:
            num = max(len(self.index_dic[pid]), self.num_instances)
            self.length += num - num % self.num_instances

    def __iter__(self):
        batch_idxs_dict: dict[int, list[list[int]]] = defaultdict(list)
        for pid in self.pids:
            idxs = copy.deepcopy(self.index_dic[pid])
            if len(idxs) < self.num_instances:
                idxs = list(np.random.choice(idxs, size=self.num_instances, replace=True))
            random.shuffle(idxs)
            batch_idxs: list[int] = []
            for idx in idxs:
                batch_idxs.append(int(idx))
                if len(batch_idxs) == self.num_instances:
                    batch_idxs_dict[pid].append(batch_idxs)
                    batch_idxs = []
        avai_pids = copy.deepcopy(self.pids)
        final_idxs: list[int] = []
        while len(avai_pids) >= self.num_pids_per_batch:
            for pid in random.sample(avai_pids, self.num_pids_per_batch):
                final_idxs.extend(batch_idxs_dict[pid].pop(0))
                if len(batch_idxs_dict[pid]) == 0:
                    avai_pids.remove(pid)
        return iter(final_idxs)

    def __len__(self) -> int:
        return self.length
