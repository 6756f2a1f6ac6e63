import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reid.data.image_dataset import ImageDataset, ImageReadError, read_image
from reid.data.records import Record, ReIDDataset
from reid.data.reid_datamodule import EvaluationTarget, ReIDDataModule
from reid.data.transforms import ReIDTransforms


def _write(path: Path, value: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((32, 16, 3), value, dtype=np.uint8)).save(path)
    return str(path)


def _dataset(root: Path) -> ReIDDataset:
    train = [Record(_write(root / f"t{p}_{i}.png", 10 * p + i), p, i % 2) for p in range(4) for i in range(4)]
    query = [Record(_write(root / f"q{p}.png", 100 + p), 10 + p, 0) for p in range(3)]
    gallery = [Record(_write(root / f"g{p}.png", 150 + p), 10 + p, 1) for p in range(3)]
    return ReIDDataset("toy", train, query, gallery)


def test_train_batches_follow_pk_and_the_batch_contract(tmp_path):
    dm = ReIDDataModule(
        lambda: _dataset(tmp_path), image_size=(16, 8), batch_size=4, num_instances=2, num_workers=0
    )
    assert dm.info.num_classes == 4 and dm.info.num_cameras == 2
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"image", "pid", "camid", "viewid", "index"}
    assert batch["image"].shape == (4, 3, 16, 8)
    assert sorted(torch.bincount(batch["pid"]).tolist())[-2:] == [2, 2]


def test_val_loader_is_query_then_gallery(tmp_path):
    dm = ReIDDataModule(
        lambda: _dataset(tmp_path),
        image_size=(16, 8),
        batch_size=4,
        num_instances=2,
        num_workers=0,
        test_batch_size=100,
    )
    batch = next(iter(dm.val_dataloader()))
    assert dm.num_query == 3
    assert batch["index"].tolist() == list(range(6))
    assert batch["camid"].tolist() == [0, 0, 0, 1, 1, 1]
    # test transform is deterministic: normalised constant images
    expected = (100 / 255 - 0.5) / 0.5
    assert torch.allclose(batch["image"][0], torch.full((3, 16, 8), expected), atol=1e-6)


def test_cross_domain_uses_train_of_one_and_test_of_other(tmp_path):
    source = _dataset(tmp_path / "a")
    target = ReIDDataset("other", [], source.query[:2], source.gallery[:1])
    dm = ReIDDataModule(
        lambda: source,
        test_datasets={"other": lambda: target},
        image_size=(16, 8),
        batch_size=4,
        num_instances=2,
        num_workers=0,
    )
    assert dm.num_query == 2 and len(dm.val_dataloader().dataset) == 3
    assert len(dm.train_dataloader().dataset) == 16
    assert dm.evaluation_targets == [EvaluationTarget("other", 2, ())]


def _target(root: Path, name: str, size: int, camera: int) -> ReIDDataset:
    """A test-only domain of ``size`` queries and ``size + 1`` gallery images, its cameras from ``camera``."""
    query = [Record(_write(root / f"{name}_q{i}.png", 40 + i), 20 + i, camera) for i in range(size)]
    gallery = [Record(_write(root / f"{name}_g{i}.png", 80 + i), 20 + i, camera + 1) for i in range(size + 1)]
    return ReIDDataset(name, [], query, gallery)


def _multi(tmp_path: Path, **kwargs) -> ReIDDataModule:
    targets = {"first": _target(tmp_path, "first", 2, 0), "second": _target(tmp_path, "second", 3, 4)}
    return ReIDDataModule(
        lambda: _dataset(tmp_path / "train"),
        test_datasets={name: (lambda data=data: data) for name, data in targets.items()},
        image_size=(16, 8),
        batch_size=4,
        num_instances=2,
        num_workers=0,
        test_batch_size=100,
        **kwargs,
    )


def test_several_targets_give_one_loader_each_in_order(tmp_path):
    dm = _multi(tmp_path)
    assert dm.evaluation_targets == [EvaluationTarget("first", 2, ()), EvaluationTarget("second", 3, ())]
    assert dm.num_query == 2 and dm.test_data.name == "first"  # the first target
    loaders = dm.val_dataloader()
    assert isinstance(loaders, list) and len(loaders) == 2 and len(dm.test_dataloader()) == 2
    for loader, data in zip(loaders, dm.test_sets.values(), strict=True):
        batch = next(iter(loader))
        assert batch["index"].tolist() == list(range(len(data.query) + len(data.gallery)))
        assert batch["pid"].tolist() == [r.pid for r in [*data.query, *data.gallery]]
    # cameras over every domain: the training data has cameras 0-1, the second target 4-5
    assert dm.info.num_cameras == 6 and dm.info.num_classes == 4


def test_each_target_is_sharded_and_padded_on_its_own_under_ddp(tmp_path):
    """DistributedSampler pads each loader to equal shards; the ranks' indices, de-duplicated as the
    evaluator does (reid.evaluation.evaluator.deduplicate), are each target's 0..N-1 exactly."""
    from types import SimpleNamespace

    from reid.evaluation.evaluator import EvalState, deduplicate

    dm = _multi(tmp_path)
    seen: list[list[int]] = [[], []]
    for rank in range(2):
        dm.trainer = SimpleNamespace(world_size=2, global_rank=rank)
        for k, loader in enumerate(dm.val_dataloader()):
            seen[k] += [i for batch in loader for i in batch["index"].tolist()]
    for indices, data in zip(seen, dm.test_sets.values(), strict=True):
        count = len(data.query) + len(data.gallery)
        assert len(indices) == count + count % 2  # 5 and 7 images: one duplicate each
        index = torch.tensor(indices)
        state = deduplicate(EvalState(index, index[:, None].float(), index, index))
        assert state.indices.tolist() == list(range(count))


def test_every_target_image_header_is_checked_at_setup(tmp_path):
    dm = _multi(tmp_path)
    Path(dm.load_test_datasets["second"]().gallery[-1].path).write_bytes(b"")
    with pytest.raises(ImageReadError, match="second_g3.png"):
        dm.setup()


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        (["dukemtmc"], "list of dataset names is resolved by reid.run"),
        ({"a/b": lambda: None}, "target name 'a/b'"),
        ({"duke": "dukemtmc"}, "data.test_datasets.duke='dukemtmc': expected a dataset loader"),
    ],
)
def test_bad_targets_are_refused_naming_the_key(targets, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ReIDDataModule(lambda: None, test_datasets=targets)


def test_an_empty_target_split_names_the_target(tmp_path):
    source = _dataset(tmp_path)
    empty = ReIDDataset("blank", [], [], source.gallery)
    dm = ReIDDataModule(lambda: source, test_datasets={"duke": lambda: empty}, num_workers=0)
    with pytest.raises(ValueError, match="dataset 'blank' \\(test target 'duke'\\) has an empty query split"):
        dm.setup()


def test_empty_split_is_reported(tmp_path):
    empty = ReIDDataset("emptyset", [], [], [])
    with pytest.raises(ValueError, match="'emptyset' has an empty train split"):
        ReIDDataModule(lambda: empty).setup()


def test_unreadable_image_names_its_path(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(ImageReadError, match="broken.jpg"):
        read_image(str(bad))
    with pytest.raises(ImageReadError, match="not found: .*missing.jpg"):
        ImageDataset([Record(str(tmp_path / "missing.jpg"), 0, 0)], lambda x: x)[0]


def test_train_transform_shapes_and_no_augment_equals_test(tmp_path):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 20, 3), dtype=np.uint8))
    plain = ReIDTransforms("bilinear", "bilinear", flip_prob=0, padding=0, erasing=None)
    train = plain.train((32, 16), (0.5,) * 3, (0.5,) * 3)(image)
    test = plain.test((32, 16), (0.5,) * 3, (0.5,) * 3)(image)
    assert train.shape == (3, 32, 16) and torch.equal(train, test)
    with pytest.raises(ValueError, match="image_size"):
        plain.test((32,), (0.5,) * 3, (0.5,) * 3)
