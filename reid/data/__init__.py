"""Datasets, transforms, samplers and datamodules."""
