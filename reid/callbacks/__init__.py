"""Cross-cutting training behaviour: the pretraining kNN monitor, the state checkpoint (``checkpoint.py``),
the non-finite guard, progress lines and the pictures of each test evaluation (``ranked_list.py``)."""

from reid.callbacks.knn_monitor import KNNMonitor

__all__ = ["KNNMonitor"]
