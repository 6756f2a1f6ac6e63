"""Pseudo labels for unsupervised re-ID: k-reciprocal Jaccard distances and DBSCAN (Cluster Contrast)."""

from reid.clustering.camera_centering import center_per_camera
from reid.clustering.dbscan import ClusteringConfig, PseudoLabels, cluster_centroids, cluster_features, dbscan
from reid.clustering.jaccard import jaccard_graph

__all__ = [
    "ClusteringConfig",
    "PseudoLabels",
    "center_per_camera",
    "cluster_centroids",
    "cluster_features",
    "dbscan",
    "jaccard_graph",
]
