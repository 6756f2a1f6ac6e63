"""Pseudo labels for unsupervised re-ID (Cluster Contrast): DBSCAN on the k-reciprocal Jaccard distance
(``JaccardDBSCAN``, the paper's) or Infomap on the cosine kNN graph (``KnnInfomap``, the official
repository's later option). A clustering is a callable ``(features, camids) -> PseudoLabels`` built by
``model.clustering._target_`` (``conf/model/clustering/``)."""

from reid.clustering.camera_centering import center_per_camera, features_to_cluster
from reid.clustering.dbscan import JaccardDBSCAN, dbscan
from reid.clustering.jaccard import jaccard_graph
from reid.clustering.knn_infomap import KnnInfomap, KnnLinks, infomap_modules, knn_links, module_labels
from reid.clustering.pseudo_labels import OUTLIER, Clustering, PseudoLabels, cluster_centroids

__all__ = [
    "OUTLIER",
    "Clustering",
    "JaccardDBSCAN",
    "KnnInfomap",
    "KnnLinks",
    "PseudoLabels",
    "center_per_camera",
    "cluster_centroids",
    "dbscan",
    "features_to_cluster",
    "infomap_modules",
    "jaccard_graph",
    "knn_links",
    "module_labels",
]
