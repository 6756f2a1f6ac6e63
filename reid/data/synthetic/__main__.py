"""Command line: ``python -m reid.data.synthetic --root data/synthetic --train-ids 100 --test-ids 100``.

With ``--luperson``, a LUPerson-like unlabelled tree for pretraining instead:
``python -m reid.data.synthetic --luperson --root data/synthetic_luperson --images 2000 --scenes 400``.
With ``--duke``, the second labelled domain, a DukeMTMC-reID tree (8 cameras, no junk):
``python -m reid.data.synthetic --duke --root data/synthetic_duke``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from reid.data.synthetic.duke_tree import DukeSpec, generate_duke_tree, is_complete_duke_tree
from reid.data.synthetic.layout import SyntheticSpec
from reid.data.synthetic.luperson_tree import LUPersonSpec, generate_luperson_tree, is_complete_luperson_tree
from reid.data.synthetic.tree import generate_market_tree, is_complete_tree, remove_synthetic_tree


def main(argv: Sequence[str] | None = None) -> None:
    defaults = SyntheticSpec(num_train_ids=120, num_test_ids=100)
    lup = LUPersonSpec()
    parser = argparse.ArgumentParser(
        prog="python -m reid.data.synthetic",
        description="Render a synthetic Market-1501 tree (or, with --luperson, a LUPerson-like one).",
    )
    parser.add_argument(
        "--root",
        required=True,
        help="folder to hold bounding_box_train/query/... (scene folders with --luperson)",
    )
    parser.add_argument("--train-ids", type=int, default=defaults.num_train_ids)
    parser.add_argument("--test-ids", type=int, default=defaults.num_test_ids)
    parser.add_argument(
        "--cameras",
        type=int,
        default=None,
        help=f"default {defaults.num_cameras} ({DukeSpec(1, 1).num_cameras} with --duke)",
    )
    parser.add_argument("--images-per-id", type=int, default=defaults.images_per_id)
    parser.add_argument("--distractors", type=int, default=defaults.num_distractors)
    parser.add_argument(
        "--junk", type=int, default=None, help=f"default {defaults.num_junk}; not with --duke (no junk class)"
    )
    parser.add_argument("--max-queries-per-id", type=int, default=defaults.max_queries_per_id)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--force", action="store_true", help="regenerate even if a matching tree exists")
    parser.add_argument(
        "--duke",
        action="store_true",
        help="write the second domain, a DukeMTMC-reID tree, instead of Market-1501",
    )
    group = parser.add_argument_group("LUPerson-like unlabelled tree (for self-supervised pretraining)")
    group.add_argument(
        "--luperson",
        action="store_true",
        help="write scene folders of unlabelled crops instead of Market-1501",
    )
    group.add_argument("--images", type=int, default=lup.num_images, help="with --luperson: number of crops")
    group.add_argument("--scenes", type=int, default=lup.num_scenes, help="with --luperson: number of scenes")
    group.add_argument(
        "--identities",
        type=int,
        default=lup.num_identities,
        help="with --luperson: size of the identity pool",
    )
    args = parser.parse_args(argv)
    root = Path(args.root).expanduser()
    spec: LUPersonSpec | DukeSpec | SyntheticSpec
    generate: Callable[..., Path]
    if args.luperson:
        spec = LUPersonSpec(args.images, args.scenes, args.identities, args.seed)
        complete, generate = is_complete_luperson_tree(root, spec), generate_luperson_tree
    elif args.duke:
        if args.junk is not None:
            parser.error(
                "--junk: DukeMTMC-reID has no junk class; its distractors (--distractors) are identities"
            )
        cameras = DukeSpec(1, 1).num_cameras if args.cameras is None else args.cameras
        spec = DukeSpec(
            args.train_ids, args.test_ids, cameras, args.images_per_id, args.distractors,
            args.max_queries_per_id, args.seed,
        )  # fmt: skip
        complete, generate = is_complete_duke_tree(root, spec), generate_duke_tree
    else:
        cameras = defaults.num_cameras if args.cameras is None else args.cameras
        junk = defaults.num_junk if args.junk is None else args.junk
        spec = SyntheticSpec(
            args.train_ids, args.test_ids, cameras, args.images_per_id, args.distractors, junk,
            args.max_queries_per_id, args.seed,
        )  # fmt: skip
        complete, generate = is_complete_tree(root, spec), generate_market_tree
    if complete and not args.force:
        print(f"{args.root} already holds this synthetic tree; use --force to regenerate")
        return
    start = time.perf_counter()
    if args.force:
        remove_synthetic_tree(root)
    written = generate(args.root, **spec.as_dict())
    print(f"wrote {written} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
