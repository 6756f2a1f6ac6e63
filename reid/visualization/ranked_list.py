"""Ranked-list pictures: one row per query, the query then its top-k gallery images, framed by what they are.

Frames: green a true match (same identity, another camera), red a wrong identity, grey a same-camera
item of the query's identity ("junk": excluded from scoring, and the image itself is greyed), none when
the label is unknown; the query is framed blue. The rank and distance (4 decimals: the distances of a
top-10 often differ in the third) are written under each gallery image. A legend strip at the top says
what each frame colour means, so the PNG reads on its own.

Layout (all in pixels, ``cell = (height, width)`` of an image): a margin ``PAD`` around everything; the
legend strip ``LEGEND_HEIGHT`` high; per row a title strip ``TITLE_HEIGHT`` high, then the cells, then
a label strip ``LABEL_HEIGHT`` high, then ``PAD``; a cell is the image with a ``FRAME``-wide border;
cells are ``PAD`` apart and the gallery starts ``QUERY_GAP`` further right. :func:`cell_box` gives the
outer box of any frame, so a test (or a caller adding marks) knows where each one is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

from reid.data.image_dataset import read_image

STATUSES = ("match", "wrong", "junk", "unknown")
FRAME_COLOURS: dict[str, tuple[int, int, int] | None] = {
    "match": (0, 190, 0),
    "wrong": (220, 0, 0),
    "junk": (150, 150, 150),
    "unknown": None,
}
QUERY_COLOUR = (30, 90, 220)
BACKGROUND = (255, 255, 255)
TEXT_COLOUR = (0, 0, 0)

PAD = 4
FRAME = 4
TITLE_HEIGHT = 16
LABEL_HEIGHT = 14
QUERY_GAP = 12
FONT_SIZE = 11
LEGEND_HEIGHT = 18
LEGEND = (
    ("query", QUERY_COLOUR),
    ("true match (other camera)", FRAME_COLOURS["match"]),
    ("wrong identity", FRAME_COLOURS["wrong"]),
    ("same identity and camera, or junk: not scored", FRAME_COLOURS["junk"]),
)
"""The frame colours the legend strip explains, in its order."""


@dataclass(frozen=True)
class RankedRow:
    """One query and its ranked gallery: ``gallery[i]`` at ``distances[i]`` is ``status[i]``
    (``"match" | "wrong" | "junk" | "unknown"``), best first."""

    query: Path
    gallery: Sequence[Path]
    distances: Sequence[float]
    status: Sequence[str]
    title: str

    def __post_init__(self) -> None:
        if not (len(self.gallery) == len(self.distances) == len(self.status)):
            raise ValueError(
                f"RankedRow {self.title!r}: expected as many distances and statuses as gallery images, got "
                f"{len(self.gallery)} images, {len(self.distances)} distances, {len(self.status)} statuses"
            )
        unknown = sorted({s for s in self.status if s not in STATUSES})
        if unknown:
            raise ValueError(f"RankedRow {self.title!r}: status {unknown}; expected one of {list(STATUSES)}")


def _row_height(cell: tuple[int, int]) -> int:
    return TITLE_HEIGHT + cell[0] + 2 * FRAME + LABEL_HEIGHT + PAD


def cell_box(row: int, col: int, cell: tuple[int, int] = (128, 64)) -> tuple[int, int, int, int]:
    """Outer box ``(x0, y0, x1, y1)`` (``x1``, ``y1`` exclusive) of the frame of ``col`` in ``row``: column 0
    is the query, column ``k`` the gallery image at rank ``k``. The image lies ``FRAME`` pixels inside."""
    if row < 0 or col < 0:
        raise ValueError(f"cell_box: row and col must be >= 0, got {row}, {col}")
    height, width = cell
    x0 = PAD + col * (width + 2 * FRAME + PAD) + (QUERY_GAP if col > 0 else 0)
    y0 = PAD + LEGEND_HEIGHT + row * _row_height(cell) + TITLE_HEIGHT
    return x0, y0, x0 + width + 2 * FRAME, y0 + height + 2 * FRAME


def picture_size(num_rows: int, num_gallery: int, cell: tuple[int, int] = (128, 64)) -> tuple[int, int]:
    """``(width, height)`` of a picture of ``num_rows`` rows showing up to ``num_gallery`` gallery images."""
    right = cell_box(0, num_gallery, cell)[2]
    return max(right + PAD, legend_width()), PAD + LEGEND_HEIGHT + num_rows * _row_height(cell)


def _legend_entries() -> list[tuple[int, str, tuple[int, int, int] | None]]:
    """``(x, text, colour)`` of each legend entry: a swatch of ``FONT_SIZE`` pixels, then its text."""
    entries, x = [], PAD
    font = _font()
    for text, colour in LEGEND:
        entries.append((x, text, colour))
        x += FONT_SIZE + 4 + int(font.getlength(text)) + 12
    return entries


def legend_width() -> int:
    """The width the legend strip needs (a picture is at least this wide)."""
    x, text, _ = _legend_entries()[-1]
    return x + FONT_SIZE + 4 + int(_font().getlength(text)) + PAD


def _draw_legend(draw: ImageDraw.ImageDraw) -> None:
    for x, text, colour in _legend_entries():
        draw.rectangle((x, PAD + 2, x + FONT_SIZE, PAD + 2 + FONT_SIZE), fill=colour, outline=TEXT_COLOUR)
        draw.text((x + FONT_SIZE + 4, PAD + 1), text, fill=TEXT_COLOUR, font=_font())


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=FONT_SIZE)


def _cell_image(path: Path, cell: tuple[int, int], grey: bool) -> Image.Image:
    image = read_image(str(path)).resize((cell[1], cell[0]), Image.Resampling.BILINEAR)
    if grey:  # junk: shown, but visibly not part of the scored list
        image = Image.blend(
            ImageOps.grayscale(image).convert("RGB"), Image.new("RGB", image.size, BACKGROUND), 0.5
        )
    return image


def _draw_cell(
    canvas: Image.Image,
    draw: ImageDraw.ImageDraw,
    box: tuple[int, int, int, int],
    image: Image.Image,
    colour: tuple[int, int, int] | None,
    label: str,
) -> None:
    x0, y0, x1, y1 = box
    if colour is not None:
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=colour)
    canvas.paste(image, (x0 + FRAME, y0 + FRAME))
    draw.text((x0, y1 + 1), label, fill=TEXT_COLOUR, font=_font())


def render_ranked_lists(rows: Sequence[RankedRow], cell: tuple[int, int] = (128, 64)) -> Image.Image:
    """One row per query (module docstring for colours and layout); ``cell = (height, width)``."""
    if not rows:
        raise ValueError("render_ranked_lists: no rows to draw")
    if len(cell) != 2 or min(cell) < 1:
        raise ValueError(f"render_ranked_lists: cell must be (height, width) >= 1, got {cell}")
    cell = (int(cell[0]), int(cell[1]))
    canvas = Image.new("RGB", picture_size(len(rows), max(len(r.gallery) for r in rows), cell), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    _draw_legend(draw)
    for r, row in enumerate(rows):
        title_y = cell_box(r, 0, cell)[1] - TITLE_HEIGHT + 2
        draw.text((PAD, title_y), row.title, fill=TEXT_COLOUR, font=_font())
        _draw_cell(
            canvas, draw, cell_box(r, 0, cell), _cell_image(row.query, cell, False), QUERY_COLOUR, "query"
        )
        for k, (path, distance, status) in enumerate(zip(row.gallery, row.distances, row.status), start=1):
            image = _cell_image(path, cell, grey=status == "junk")
            _draw_cell(
                canvas, draw, cell_box(r, k, cell), image, FRAME_COLOURS[status], f"{k}: {distance:.4f}"
            )
    return canvas
