"""`python -m reid.tools.search`: a trained run ranks a gallery folder or features file for query images.

The reference is built from the features ``reid.tools.extract`` writes (tested against the run's own
evaluation in test_extract.py): every query x gallery euclidean distance at once (``torch.cdist``; the
tiny ViT's ``eval.metric``), each row sorted stably, and the statuses of the scoring protocol
(``reid.evaluation.rank``) written out here from the file names: a negative identity or the query's
identity in its camera is junk, the query's identity in another camera a match, anything else wrong.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reid.inference.name_labels import label_from_name
from reid.tools.extract import main as extract
from reid.tools.search import main as search
from reid.visualization.ranked_list import picture_size

TOP_K = 5


@pytest.fixture(scope="module")
def run_dir(trained_run) -> Path:
    return trained_run("vit")


def extract_query_and_gallery(run_dir: Path, tiny_data_dir: Path, out: Path) -> dict[str, Path]:
    """Query and gallery folders of the tiny tree and their features written by reid.tools.extract."""
    root = tiny_data_dir / "synthetic_tiny"
    found = {"query": next(root.glob("**/query")), "gallery": next(root.glob("**/bounding_box_test"))}
    for name in ("query", "gallery"):
        extract([str(run_dir), str(found[name]), str(out / f"{name}.npy"), "--no-progress"])
        found[f"{name}_features"] = out / f"{name}.npy"
    return found


@pytest.fixture(scope="module")
def extracted(run_dir: Path, tiny_data_dir: Path, tmp_path_factory) -> dict[str, Path]:
    return extract_query_and_gallery(run_dir, tiny_data_dir, tmp_path_factory.mktemp("search"))


def _paths(features: Path) -> list[str]:
    with features.with_suffix(".csv").open() as handle:
        return [row["path"] for row in csv.DictReader(handle)]


def _status(query: str, item: str) -> str:
    q, g = label_from_name(query), label_from_name(item)
    if g.pid < 0 or (g.pid == q.pid and g.camid == q.camid):
        return "junk"
    return "match" if g.pid == q.pid else "wrong"


def reference(extracted: dict[str, Path]) -> list[tuple[str, list[str], list[float]]]:
    query = torch.from_numpy(np.load(extracted["query_features"])).double()
    gallery = torch.from_numpy(np.load(extracted["gallery_features"])).double()
    order = torch.sort(torch.cdist(query, gallery), dim=1, stable=True)
    q_paths, g_paths = _paths(extracted["query_features"]), _paths(extracted["gallery_features"])
    return [
        (q_paths[i], [g_paths[j] for j in order.indices[i, :TOP_K]], order.values[i, :TOP_K].tolist())
        for i in range(len(q_paths))
    ]


def _check(results, expected) -> None:
    assert [r.query for r in results] == [query for query, _, _ in expected]
    for result, (query, paths, distances) in zip(results, expected, strict=True):
        assert result.paths == paths
        np.testing.assert_allclose(result.distances, distances, atol=1e-5)
        assert result.status == [_status(query, path) for path in paths]


def test_a_gallery_folder_is_ranked_as_the_extracted_features(run_dir, extracted, tmp_path, capsys) -> None:
    """Exact search over a folder: the brute-force ranking of the extracted features, the protocol's
    statuses (the tiny tree has matches, same-camera junk and wrong identities in the top 5), the printed
    lists and a picture of the first 3 queries."""
    picture = tmp_path / "ranked.png"
    results = search(
        [str(run_dir), "--query", str(extracted["query"]), "--gallery", str(extracted["gallery"]),
         "--top-k", str(TOP_K), "--picture", str(picture), "--picture-rows", "3", "--no-progress"]
    )  # fmt: skip
    expected = reference(extracted)
    _check(results, expected)
    assert {"match", "wrong", "junk"} <= {s for r in results for s in r.status}
    with Image.open(picture) as image:
        assert image.size == picture_size(3, TOP_K)
    printed = capsys.readouterr().out
    first = results[0]
    label = label_from_name(first.query)
    camera = int(Path(first.query).name.split("_c")[1][0])  # Market names: <pid>_c<camera>s<seq>_...
    assert f"query 1/{len(results)}: {first.query}  id {label.pid} cam {camera}" in printed  # as named
    assert f"    1  {first.distances[0]:.4f}  {first.paths[0]}  " in printed
    assert f"ranked lists -> {picture} (the first 3 of {len(results)} queries)" in printed


def test_features_file_and_faiss_indexes_give_the_same_ranking(run_dir, extracted, tmp_path) -> None:
    """The gallery as extract's features file, exact or through a FAISS ``flat`` index or an IVF one that
    scans all its cells (``build-index``): each the same ranking as the folder."""
    expected = reference(extracted)
    gallery = str(extracted["gallery_features"])
    common = [str(run_dir), "--query", str(extracted["query"]), "--gallery", gallery, "--top-k", str(TOP_K)]
    _check(search([*common, "--no-progress"]), expected)
    for kind, extra in [("flat", []), ("ivf", ["--nlist", "4", "--nprobe", "4"])]:
        index = tmp_path / f"{kind}.faiss"
        built = search(["build-index", gallery, "--out", str(index), "--kind", kind, *extra])
        assert built.num_rows == len(_paths(extracted["gallery_features"]))
        _check(search([*common, "--index", str(index), "--no-progress"]), expected)


def test_a_cluster_contrast_run_ranks_as_its_extracted_features(trained_run, tiny_data_dir, tmp_path) -> None:
    """A Cluster Contrast run (no classifier, no SIE; the tiny ResNet: the one-step USL ViT's features
    nearly coincide, top-5 gaps ~1e-6, below float32 distance error): a gallery folder and its features
    file each give the brute-force ranking of the run's extracted features, with the protocol's statuses."""
    usl_run = trained_run("usl_cnn")
    found = extract_query_and_gallery(usl_run, tiny_data_dir, tmp_path)
    expected = reference(found)
    common = [str(usl_run), "--query", str(found["query"]), "--top-k", str(TOP_K), "--no-progress"]
    for gallery in (found["gallery"], found["gallery_features"]):
        _check(search([*common, "--gallery", str(gallery)]), expected)


def test_bad_arguments_name_the_flag_or_file(run_dir, extracted, tmp_path) -> None:
    common = [str(run_dir), "--query", str(extracted["query"]), "--no-progress"]
    with pytest.raises(ValueError, match="--index needs --gallery to be the features file"):
        search([*common, "--gallery", str(extracted["gallery"]), "--index", str(tmp_path / "x.faiss")])
    with pytest.raises(ValueError, match="--kind hnsw: --nlist is not one of its parameters"):
        search(["build-index", str(extracted["gallery_features"]), "--out", "x.faiss", "--kind", "hnsw",
                "--nlist", "4"])  # fmt: skip
    for suffix in (".npy", ".csv", ".json"):
        shutil.copy(extracted["gallery_features"].with_suffix(suffix), tmp_path / f"g{suffix}")
    meta = json.loads((tmp_path / "g.json").read_text())
    (tmp_path / "g.json").write_text(json.dumps({**meta, "metric": "cosine"}))
    with pytest.raises(ValueError, match="metric='cosine', the run ranks with metric='euclidean'"):
        search([*common, "--gallery", str(tmp_path / "g.npy")])
    (tmp_path / "g.csv").write_text("row,path,pid,camid,name_format\n0,a.jpg,,,\n")
    with pytest.raises(ValueError, match=r"g\.csv: 1 images for the \d+ feature rows"):
        search([*common, "--gallery", str(tmp_path / "g.npy")])


def _copy_run_with_other_weights(run_dir: Path, out: Path) -> Path:
    """A copy of ``run_dir`` whose checkpoint differs in one weight: same architecture, width, metric and
    checkpoint name (``last.ckpt``), another model."""
    from reid.training.checkpoint_io import AtomicCheckpointIO

    copy = out / "other_run"
    shutil.copytree(run_dir, copy)
    io = AtomicCheckpointIO()
    checkpoint = io.load_checkpoint(copy / "checkpoints" / "last.ckpt")
    name = next(k for k in checkpoint["state_dict"] if k.endswith("norm.weight"))
    checkpoint["state_dict"][name] = checkpoint["state_dict"][name] * 1.01
    io.save_checkpoint(checkpoint, copy / "checkpoints" / "last.ckpt")
    return copy


def test_a_gallery_extracted_by_another_run_is_refused_naming_both_fingerprints(
    run_dir, extracted, tmp_path
) -> None:
    """Before, only the checkpoint's file name was compared, and every run's is last.ckpt: the search
    ranked cross-model distances and exited 0."""
    other = _copy_run_with_other_weights(run_dir, tmp_path)
    theirs = json.loads(extracted["gallery_features"].with_suffix(".json").read_text())
    common = [
        "--query",
        str(extracted["query"]),
        "--gallery",
        str(extracted["gallery_features"]),
        "--no-progress",
    ]
    with pytest.raises(ValueError, match="made by another model") as error:
        search([str(other), *common])
    message = str(error.value)
    assert theirs["fingerprint"] in message and "weights_sha256" in message and str(other) in message
    assert len(search([str(run_dir), *common])) > 0  # the run that made it searches it


def test_search_embeds_queries_in_the_galleries_camera_mode(trained_run, tiny_data_dir, tmp_path) -> None:
    """An SIE gallery extracted with --camids-from-names and queries embedded camera-free: before, no
    warning (each query found its own image at rank 1 only 18.9% of the time on the demo). Now refused;
    with --camids-from-names the queries take the gallery's mode, and the gallery's own images, searched
    as queries, each find themselves at distance 0."""
    sie_run = trained_run("transreid")
    gallery_dir = next((tiny_data_dir / "synthetic_tiny").glob("**/bounding_box_test"))
    features = tmp_path / "gallery.npy"
    extract([str(sie_run), str(gallery_dir), str(features), "--camids-from-names", "--no-progress"])
    common = [str(sie_run), "--query", str(gallery_dir), "--gallery", str(features), "--no-progress"]
    with pytest.raises(
        ValueError, match="SIE mode 'camera ids.*queries are embedded in 'camera-free.*with --camids"
    ):
        search(common)
    results = search([*common, "--camids-from-names", "--top-k", "1"])
    assert all(r.paths[0] == r.query for r in results)  # (float32 distance to itself: below 1e-3)
    free = search([str(sie_run), "--query", str(gallery_dir), "--gallery", str(gallery_dir), "--top-k", "1",
                   "--camids-from-names", "--no-progress"])  # fmt: skip
    assert [r.paths for r in free] == [r.paths for r in results]


def test_search_embeds_queries_in_the_galleries_precision(run_dir, tiny_data_dir, tmp_path, monkeypatch):
    """A gallery extracted with ``--precision 16-mixed``: the queries are embedded in 16-mixed too (unless
    ``--precision`` says otherwise); a gallery folder is embedded in the flag's precision (float32 by
    default)."""
    import reid.api as api_module  # search embeds through reid.api.embed

    gallery_dir = next((tiny_data_dir / "synthetic_tiny").glob("**/bounding_box_test"))
    query_dir = next((tiny_data_dir / "synthetic_tiny").glob("**/query"))
    features = tmp_path / "gallery.npy"
    extract([str(run_dir), str(gallery_dir), str(features), "--precision", "16-mixed", "--no-progress"])
    used: list[str] = []
    real = api_module.extract_features

    def recording(*args, **kwargs):
        used.append(kwargs["precision"])
        return real(*args, **kwargs)

    monkeypatch.setattr(api_module, "extract_features", recording)
    common = [str(run_dir), "--query", str(query_dir), "--no-progress", "--top-k", "1"]
    search([*common, "--gallery", str(features)])
    search([*common, "--gallery", str(features), "--precision", "32-true"])
    search([*common, "--gallery", str(gallery_dir)])
    search([*common, "--gallery", str(gallery_dir), "--precision", "bf16-mixed"])
    assert used == ["16-mixed", "32-true", "32-true", "32-true", "bf16-mixed", "bf16-mixed"]


@pytest.mark.parametrize(
    ("name", "data", "said"),
    [
        ("query.npy", b"\x93NUMPY\x01\x00v\x00{'descr': '<f4'}", r"a NumPy array \(\.npy\)"),
        ("query.zip", b"PK\x03\x04\x14\x00\x00\x00", "a zip archive"),
        ("query.bin", bytes(range(256)), "a binary file"),
    ],
)
def test_inputs_that_are_not_images_say_what_was_expected(
    run_dir, extracted, tmp_path, name, data, said
) -> None:
    (tmp_path / name).write_bytes(data)
    with pytest.raises(
        ValueError, match=f"{name}: this is {said}, not an image or a list of image paths; expected a folder"
    ):
        search([str(run_dir), "--query", str(tmp_path / name), "--gallery", str(extracted["gallery"])])
    with pytest.raises(ValueError, match=said):
        extract([str(run_dir), str(tmp_path / name), str(tmp_path / "f.npy")])


def test_the_index_holds_absolute_paths_and_search_works_from_another_folder(
    run_dir, tiny_data_dir, tmp_path, monkeypatch
) -> None:
    """Relative inputs: the index stores absolute paths and the folder they were relative to, so a search
    with --picture from another folder reads the images."""
    root = tiny_data_dir / "synthetic_tiny"
    monkeypatch.chdir(root)
    gallery = next(Path(".").glob("**/bounding_box_test"))
    query = next(Path(".").glob("**/query"))
    extract([str(run_dir), str(gallery), str(tmp_path / "g.npy"), "--no-progress"])
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in _paths(tmp_path / "g.npy"))
    assert json.loads((tmp_path / "g.json").read_text())["root"] == str(root)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    results = search([str(run_dir), "--query", str(root / query), "--gallery", str(tmp_path / "g.npy"),
                      "--picture", "ranked.png", "--no-progress"])  # fmt: skip
    assert results and (elsewhere / "ranked.png").is_file()


def test_search_prints_the_protocols_metrics_and_reranks_or_expands_when_asked(run_dir, extracted, capsys):
    """Labelled names (the tiny tree's Market format): the printed mAP / R1 / mINP are the evaluation's
    (reid.evaluation.evaluate on the extracted features), with --rerank the re-ranked ones, and the
    ranking then follows the re-ranked distances (k-reciprocal re-ranking in plain torch,
    tests/evaluation/test_rerank.py, is the reference of that pipeline)."""
    from reid.evaluation import EvalConfig, RerankConfig
    from reid.evaluation.distances import pairwise_distance
    from reid.evaluation.pipeline import evaluate
    from reid.evaluation.rerank import rerank_distance_chunks

    query = torch.from_numpy(np.load(extracted["query_features"]))
    gallery = torch.from_numpy(np.load(extracted["gallery_features"]))
    labels = [[label_from_name(p) for p in _paths(extracted[f"{s}_features"])] for s in ("query", "gallery")]
    pids = [torch.tensor([lab.pid for lab in side]) for side in labels]
    cams = [torch.tensor([lab.camid for lab in side]) for side in labels]
    gallery_file = str(extracted["gallery_features"])
    common = [str(run_dir), "--query", str(extracted["query"]), "--gallery", gallery_file,
              "--top-k", str(TOP_K), "--no-progress"]  # fmt: skip
    for flags, config in (([], EvalConfig()), (["--rerank"], EvalConfig(rerank=RerankConfig()))):
        results = search([*common, *flags])
        expected = evaluate(query, gallery, pids[0], pids[1], cams[0], cams[1], config)
        printed = capsys.readouterr().out
        line = next(line for line in printed.splitlines() if line.startswith("metrics ("))
        assert f"mAP {100 * expected.mAP:.2f}" in line and f"mINP {100 * expected.mINP:.2f}" in line
        if flags:
            assert line.startswith("metrics (re-ranking;")
            dist = torch.cat(
                [d for _, d in rerank_distance_chunks(query, gallery, RerankConfig(), "euclidean", 4096)]
            )
        else:
            dist = pairwise_distance(query, gallery, "euclidean")
        first = torch.sort(dist[0], stable=True).indices[:TOP_K].tolist()
        assert results[0].paths == [_paths(extracted["gallery_features"])[j] for j in first]
    with pytest.raises(ValueError, match="leave out --index"):
        search([*common, "--rerank", "--index", "x.faiss"])


def test_build_index_advises_the_number_of_cells_for_the_gallery(extracted, tmp_path, capsys) -> None:
    """Before, the README's --nlist 1024 on a 1,049-image gallery got only faiss's warning."""
    from reid.search.faiss_index import advised_nlist, nlist_advice

    assert advised_nlist(1_049) == 26 and advised_nlist(1_000_000) == 4000 and advised_nlist(10) == 1
    assert nlist_advice(1_000_000, 4096) is None
    assert "use --nlist 26" in nlist_advice(1_049, 1024) and "--kind flat" in nlist_advice(1_049, 1024)
    rows = len(_paths(extracted["gallery_features"]))
    search(["build-index", str(extracted["gallery_features"]), "--out", str(tmp_path / "g.faiss"),
            "--kind", "ivf", "--nlist", str(rows)])  # fmt: skip
    assert f"note: --nlist {rows} for {rows} gallery rows" in capsys.readouterr().out
