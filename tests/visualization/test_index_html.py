"""index.html of a pictures folder: every PNG shown by a relative path, with a caption, nothing external."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

from PIL import Image

from reid.visualization.index_html import caption, write_index


class PageParser(HTMLParser):
    """The ``src`` of every ``img``, every ``href``/``src`` of any tag, the caption texts."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []
        self.captions: list[str] = []
        self._in_caption = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img":
            self.images.append(values["src"] or "")
        self.links += [v for k, v in attrs if k in ("href", "src") and v]
        self._in_caption = tag == "figcaption"
        if self._in_caption:
            self.captions.append("")

    def handle_endtag(self, tag: str) -> None:
        self._in_caption = self._in_caption and tag != "figcaption"

    def handle_data(self, data: str) -> None:
        if self._in_caption:
            self.captions[-1] += data


def parse_page(path: Path) -> PageParser:
    parser = PageParser()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def test_index_shows_every_png_once_in_sections(tmp_path):
    folder = tmp_path / "run" / "pictures"
    folder.mkdir(parents=True)
    names = [
        "ranked_test_synthetic_epoch10.png",
        "ranked_test_synthetic_epoch9.png",
        "cmc_test_epoch9.png",
        "map_per_epoch.png",
        "attention_0001_c1s1_01.png",
        "odd name & <x>.png",
    ]
    for name in names:
        Image.new("RGB", (4, 4)).save(folder / name)
    (folder / "notes.txt").write_text("not a picture")
    page = parse_page(write_index(folder))
    assert sorted(page.images) == sorted(names) and len(page.images) == len(names)
    assert all(link in names for link in page.links)  # relative, local, nothing else linked
    assert page.images.index("ranked_test_synthetic_epoch9.png") < page.images.index(
        "ranked_test_synthetic_epoch10.png"
    )
    assert page.images.index("cmc_test_epoch9.png") < page.images.index("ranked_test_synthetic_epoch9.png")
    assert len(page.captions) == len(names) and "epoch 10" in page.captions[page.images.index(names[0])]


def test_captions_say_what_a_picture_shows():
    assert "test evaluation on market after epoch 3" in caption("ranked_test_market_epoch3")
    assert "green a true match" in caption("ranked_val_epoch1")
    assert caption("cmc_val_epoch2").startswith("CMC curve of the val evaluation after epoch 2")
    assert "part token" in caption("attention_img")
    assert caption("something") == "something"


def test_the_page_opens_with_the_runs_metrics_and_config(tmp_path):
    """Before, the page showed pictures only: the numbers were inside the PNGs."""
    import json

    run = tmp_path / "run"
    (run / "pictures").mkdir(parents=True)
    (run / ".hydra").mkdir()
    Image.new("RGB", (4, 4)).save(run / "pictures" / "cmc_test_epoch3.png")
    test = {"market": {"mAP": 41.25, "R1": 60.5, "mINP": 9.75}, "duke": {"mAP": 20.0, "R1": 30.0}}
    (run / "results.json").write_text(json.dumps({"test": test, "tested_weights": {"selection": "last"}}))
    (run / ".hydra" / "overrides.yaml").write_text("- experiment=demo\n- model.optimizer.lr=0.01\n")
    (run / ".hydra" / "hydra.yaml").write_text("hydra:\n  runtime:\n    choices:\n      experiment: demo\n")
    text = write_index(run / "pictures").read_text()
    head = text[: text.index("<img")]  # before the pictures
    expected = [
        "<td>market</td><td>41.25</td><td>60.50</td><td>–</td><td>–</td><td>9.75</td>",
        "<td>duke</td><td>20.00</td>",
        "experiment=demo",
        "python -m reid.run experiment=demo model.optimizer.lr=0.01",
        "weights: last",
    ]
    for fragment in expected:
        assert fragment in head, fragment
