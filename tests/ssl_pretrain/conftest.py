"""Fixtures of the SSL tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ssl_pretrain.tiny import write_images


@pytest.fixture
def image_paths(tmp_path: Path) -> list[Path]:
    """24 random 32x16 images in three sub-folders."""
    return write_images(tmp_path / "images", 24)
