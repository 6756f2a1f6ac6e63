"""The ranked-list picture: its size, and that each frame has the colour of its status where
``cell_box`` says it is (pixels read back from the PNG)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from reid.visualization.ranked_list import (
    BACKGROUND,
    FRAME,
    FRAME_COLOURS,
    QUERY_COLOUR,
    RankedRow,
    cell_box,
    picture_size,
    render_ranked_lists,
)


def solid_image(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (20, 40)) -> Path:
    Image.new("RGB", size, colour).save(path)
    return path


@pytest.fixture
def rows(tmp_path: Path) -> list[RankedRow]:
    blue = solid_image(tmp_path / "q.png", (40, 60, 200))
    shades = [solid_image(tmp_path / f"g{i}.png", (200, 120 + 10 * i, 30)) for i in range(4)]
    return [
        RankedRow(blue, shades, [0.1, 0.2, 0.3, 0.4], ["match", "wrong", "junk", "unknown"], "query 0"),
        RankedRow(blue, shades[:2], [0.5, 0.6], ["wrong", "match"], "query 1"),
    ]


def frame_pixels(picture: Image.Image, box: tuple[int, int, int, int]) -> list[tuple[int, int, int]]:
    """Pixels in the middle of each side of the frame band (inside the box, outside the image)."""
    x0, y0, x1, y1 = box
    mid_x, mid_y, half = (x0 + x1) // 2, (y0 + y1) // 2, FRAME // 2
    return [
        picture.getpixel(p)
        for p in ((mid_x, y0 + half), (mid_x, y1 - 1 - half), (x0 + half, mid_y), (x1 - 1 - half, mid_y))
    ]


def test_picture_size_and_frames_follow_the_statuses(rows, tmp_path):
    cell = (48, 24)
    render_ranked_lists(rows, cell).save(tmp_path / "ranked.png")
    picture = Image.open(tmp_path / "ranked.png").convert("RGB")
    assert picture.size == picture_size(num_rows=2, num_gallery=4, cell=cell)
    for r, row in enumerate(rows):
        assert set(frame_pixels(picture, cell_box(r, 0, cell))) == {QUERY_COLOUR}
        for k, status in enumerate(row.status, start=1):
            expected = FRAME_COLOURS[status] or BACKGROUND  # unknown: no frame, the background shows
            assert set(frame_pixels(picture, cell_box(r, k, cell))) == {expected}, (r, k, status)
    # the first row's match is green and its wrong item red, by colour and not only by table lookup
    green = frame_pixels(picture, cell_box(0, 1, cell))[0]
    red = frame_pixels(picture, cell_box(1, 1, cell))[0]
    assert green[1] > 150 and green[0] < 60 and green[2] < 60
    assert red[0] > 150 and red[1] < 60 and red[2] < 60
    # the image sits inside its frame: the query's pixels are its own colour; a junk image is greyed
    x0, y0, x1, y1 = cell_box(0, 0, cell)
    assert picture.getpixel(((x0 + x1) // 2, (y0 + y1) // 2)) == (40, 60, 200)
    x0, y0, x1, y1 = cell_box(0, 3, cell)
    r_, g_, b_ = picture.getpixel(((x0 + x1) // 2, (y0 + y1) // 2))
    assert r_ == g_ == b_
    x0, y0, x1, y1 = cell_box(0, 2, cell)
    assert picture.getpixel(((x0 + x1) // 2, (y0 + y1) // 2)) == (200, 130, 30)
    # row 1 shows two images: where row 0 has its third and fourth, row 1 has background only
    assert set(frame_pixels(picture, cell_box(1, 3, cell))) == {BACKGROUND}


def test_cells_do_not_overlap_and_the_gallery_starts_after_a_gap():
    cell = (128, 64)
    boxes = [cell_box(r, c, cell) for r in range(2) for c in range(4)]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
    assert (
        cell_box(0, 1, cell)[0] - cell_box(0, 0, cell)[2] > cell_box(0, 2, cell)[0] - cell_box(0, 1, cell)[2]
    )
    assert cell_box(0, 0, cell)[2] - cell_box(0, 0, cell)[0] == 64 + 2 * FRAME


def test_bad_rows_are_refused_naming_the_problem(tmp_path):
    image = solid_image(tmp_path / "q.png", (0, 0, 0))
    with pytest.raises(ValueError, match="2 images, 1 distances"):
        RankedRow(image, [image, image], [0.1], ["match", "wrong"], "q")
    with pytest.raises(ValueError, match=r"status \['junky'\]"):
        RankedRow(image, [image], [0.1], ["junky"], "q")
    with pytest.raises(ValueError, match="no rows"):
        render_ranked_lists([])
    with pytest.raises(ValueError, match="row and col"):
        cell_box(-1, 0)
