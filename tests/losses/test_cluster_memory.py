"""ClusterNCE and the cluster memory update (``reid.losses.cluster_memory``).

How we know the official behaviour: damo-cv/TransReID-SSL ``cluster-contrast-reid/clustercontrast/
models/cm.py`` (identical in alibaba/cluster-contrast-reid and CASIA-IVA-Lab/PASS-reID), read with
``fetch`` + ``git show``: ``ClusterMemory.forward`` normalises the inputs, takes ``inputs @ features.T /
temp`` and the cross-entropy with the pseudo labels; the backward of ``CM`` / ``CM_Hard`` forms the input
gradient from the memory *before* updating it, then ``CM`` updates every instance in batch order
(``f = m f + (1 - m) x; f /= ||f||``) and ``CM_Hard`` updates each cluster once with its instance of
least similarity (``np.argmin`` of ``x . f``). ``official_*`` below transcribe those loops.
"""

from __future__ import annotations

import collections
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reid.losses.cluster_memory import ClusterMemory


def official_cm(memory: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor, m: float) -> torch.Tensor:
    features = memory.clone()
    for x, y in zip(inputs, targets, strict=True):
        features[y] = m * features[y] + (1.0 - m) * x
        features[y] /= features[y].norm()
    return features


def official_cm_hard(
    memory: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor, m: float
) -> torch.Tensor:
    features = memory.clone()
    batch_centers = collections.defaultdict(list)
    for instance, index in zip(inputs, targets.tolist(), strict=True):
        batch_centers[index].append(instance)
    for index, members in batch_centers.items():
        distances = [float(f.unsqueeze(0).mm(features[index].unsqueeze(0).t())[0][0]) for f in members]
        hardest = members[int(np.argmin(np.array(distances)))]
        features[index] = features[index] * m + (1 - m) * hardest
        features[index] /= features[index].norm()
    return features


def _memory(update: str, centroids: torch.Tensor, momentum: float = 0.2) -> ClusterMemory:
    memory = ClusterMemory(temperature=0.05, momentum=momentum, update=update)
    memory.reset(centroids)
    return memory


def test_cluster_nce_value_by_hand():
    memory = _memory("hard", torch.tensor([[1.0, 0.0], [0.0, 2.0]]))  # reset normalises: [0, 1]
    memory.eval()  # no update
    query = torch.tensor([[3.0, 4.0]])  # -> [0.6, 0.8]
    loss = memory(query, torch.tensor([1]))
    logits = [0.6 / 0.05, 0.8 / 0.05]  # 12, 16
    expected = -(16 - math.log(math.exp(12) + math.exp(16)))
    assert loss.item() == pytest.approx(expected, rel=1e-5)  # float32 logits
    assert torch.equal(memory.features, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert logits[1] > logits[0]


def test_hard_update_by_hand_takes_the_least_similar_instance():
    memory = _memory("hard", torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    queries = torch.tensor([[0.8, 0.6], [0.6, 0.8], [0.0, 1.0]])  # cluster 0: similarities 0.8 and 0.6
    memory(queries, torch.tensor([0, 0, 1]))
    c0 = torch.tensor([0.2 + 0.8 * 0.6, 0.8 * 0.8])  # 0.2 [1, 0] + 0.8 [0.6, 0.8] = [0.68, 0.64]
    c0 = c0 / math.sqrt(0.68**2 + 0.64**2)
    assert torch.allclose(memory.features[0], c0, atol=1e-6)
    assert torch.allclose(memory.features[1], torch.tensor([0.0, 1.0]))  # 0.2 c + 0.8 c


def test_all_update_by_hand_is_sequential_not_a_mean():
    memory = _memory("all", torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    queries = torch.tensor([[0.6, 0.8], [0.8, 0.6]])
    memory(queries, torch.tensor([0, 0]))
    first = torch.tensor([0.68, 0.64]) / math.sqrt(0.68**2 + 0.64**2)
    second = 0.2 * first + 0.8 * torch.tensor([0.8, 0.6])
    assert torch.allclose(memory.features[0], second / second.norm(), atol=1e-6)
    mean = 0.2 * torch.tensor([1.0, 0.0]) + 0.8 * torch.tensor([0.7, 0.7])
    assert not torch.allclose(memory.features[0], mean / mean.norm(), atol=1e-3)


@pytest.mark.parametrize(("update", "official"), [("hard", official_cm_hard), ("all", official_cm)])
def test_update_equals_the_official_loops(update, official):
    torch.manual_seed(0)
    centroids = torch.randn(5, 8)
    features, labels = torch.randn(12, 8), torch.tensor([0, 1, 1, 4, 4, 4, 2, 0, 1, 3, 3, 4])
    memory = _memory(update, centroids, momentum=0.1)
    start = memory.features.clone()
    memory(features, labels)
    assert torch.allclose(
        memory.features, official(start, F.normalize(features, dim=1), labels, 0.1), atol=1e-6
    )


def test_gradient_comes_from_the_memory_before_the_update():
    torch.manual_seed(1)
    memory = _memory("hard", torch.randn(3, 4))
    old = memory.features.clone()
    features = torch.randn(6, 4, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    memory(features, labels).backward()
    reference = features.detach().clone().requires_grad_(True)
    F.cross_entropy(F.normalize(reference, dim=1) @ old.t() / 0.05, labels).backward()
    assert torch.allclose(features.grad, reference.grad, atol=1e-6)
    assert not torch.allclose(memory.features, old)  # updated after the loss was formed


def test_bad_input_is_refused_by_name():
    with pytest.raises(ValueError, match="model.memory.update"):
        ClusterMemory(update="mean")
    with pytest.raises(ValueError, match="model.memory.momentum"):
        ClusterMemory(momentum=1.0)
    with pytest.raises(RuntimeError, match="empty"):
        ClusterMemory()(torch.randn(2, 3), torch.tensor([0, 0]))
    memory = _memory("hard", torch.randn(2, 3))
    with pytest.raises(ValueError, match="outliers"):
        memory(torch.randn(2, 3), torch.tensor([0, -1]))
