"""reid: person and vehicle re-identification with Lightning + Hydra."""

__version__ = "0.1.0"
