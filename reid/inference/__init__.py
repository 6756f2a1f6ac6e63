"""Inference with trained runs: rebuild a task from its run folder, embed images, export."""

from reid.inference.extraction import Extraction, extract_features
from reid.inference.features import FeatureExtractor
from reid.inference.trained_model import RetrievalTask, TrainedModel, add_run_arguments, load_trained_model

__all__ = [
    "Extraction",
    "FeatureExtractor",
    "RetrievalTask",
    "TrainedModel",
    "add_run_arguments",
    "extract_features",
    "load_trained_model",
]
