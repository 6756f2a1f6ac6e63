"""Per-camera centring of the features clustered for pseudo labels (an option, not in Cluster Contrast).

A model that has not seen a domain embeds each camera's images around a camera-specific mean (its
colour cast, exposure, background), and DBSCAN then groups images by camera rather than by person. The
camera-based batch normalisation of Zhuang et al. ("Rethinking the Distribution Gap of Person
Re-identification with Camera-based Batch Normalization", ECCV 2020, Sec. 3.2) removes that shift
inside the network by standardising each camera's activations on its own statistics; applied to the
final embedding only, for clustering only, it is

    f'_i = normalize(f_i - mu_{c(i)}),    mu_c = mean_{j : c(j) = c} f_j

with ``c(i)`` the camera of image ``i``. The labels come from ``f'``; the cluster memory and the training
keep the network's own features ``f`` (``reid.tasks.cluster_contrast``). Camera ids are part of every
re-id dataset's file names, so this uses no identity label.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def center_per_camera(features: Tensor, camids: Tensor) -> Tensor:
    """``[N, D]`` features -> each camera's mean subtracted, then L2-normalised (module docstring)."""
    if camids.shape != (features.shape[0],):
        raise ValueError(
            f"center_per_camera: expected one camera id per feature ({features.shape[0]}), got shape "
            f"{tuple(camids.shape)}"
        )
    cameras, index = torch.unique(camids, return_inverse=True)
    sums = torch.zeros(len(cameras), features.shape[1], dtype=features.dtype).index_add_(0, index, features)
    counts = torch.bincount(index, minlength=len(cameras)).to(features.dtype)
    return F.normalize(features - (sums / counts[:, None])[index], dim=1)


def features_to_cluster(features: Tensor, camids: Tensor | None, camera_centering: bool) -> Tensor:
    """What a clustering groups: ``features`` as they are, or centred per camera when
    ``model.clustering.camera_centering`` is set (which needs the images' ``camids``)."""
    if not camera_centering:
        return features
    if camids is None:
        raise ValueError("model.clustering.camera_centering=true needs the training images' camera ids")
    return center_per_camera(features, camids)
