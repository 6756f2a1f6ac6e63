"""Cross-cutting training behaviour: the EMA teacher update and the pretraining kNN monitor."""

from reid.callbacks.ema_teacher import ema_update_
from reid.callbacks.knn_monitor import KNNMonitor

__all__ = ["KNNMonitor", "ema_update_"]
