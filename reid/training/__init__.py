"""Training infrastructure shared by every task: atomic checkpoints and exact mid-epoch resume."""

from reid.training.checkpoint_io import AtomicCheckpointIO, CheckpointLoadError
from reid.training.resumable import TrainPosition, item_seed, train_position

__all__ = ["AtomicCheckpointIO", "CheckpointLoadError", "TrainPosition", "item_seed", "train_position"]
