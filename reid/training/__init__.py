"""Training infrastructure shared by every task: atomic checkpoints and exact mid-epoch resume."""

from reid.data.resumable import TrainPosition, item_seed, train_position
from reid.training.checkpoint_io import AtomicCheckpointIO, CheckpointLoadError

__all__ = ["AtomicCheckpointIO", "CheckpointLoadError", "TrainPosition", "item_seed", "train_position"]
