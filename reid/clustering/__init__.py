"""Pseudo labels for unsupervised re-ID: k-reciprocal Jaccard distances and DBSCAN (Cluster Contrast)."""

from reid.clustering.dbscan import ClusteringConfig, PseudoLabels, cluster_centroids, cluster_features, dbscan
from reid.clustering.jaccard import jaccard_graph

__all__ = [
    "ClusteringConfig",
    "PseudoLabels",
    "cluster_centroids",
    "cluster_features",
    "dbscan",
    "jaccard_graph",
]
