"""Command line: ``python -m reid.data.synthetic --root data/synthetic --train-ids 100 --test-ids 100``.

With ``--luperson``, a LUPerson-like unlabelled tree for pretraining instead:
``python -m reid.data.synthetic --luperson --root data/synthetic_luperson --images 2000 --scenes 400``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

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
    parser.add_argument("--cameras", type=int, default=defaults.num_cameras)
    parser.add_argument("--images-per-id", type=int, default=defaults.images_per_id)
    parser.add_argument("--distractors", type=int, default=defaults.num_distractors)
    parser.add_argument("--junk", type=int, default=defaults.num_junk)
    parser.add_argument("--max-queries-per-id", type=int, default=defaults.max_queries_per_id)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--force", action="store_true", help="regenerate even if a matching tree exists")
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
    if args.luperson:
        spec = LUPersonSpec(args.images, args.scenes, args.identities, args.seed)
        complete, generate = is_complete_luperson_tree(root, spec), generate_luperson_tree
    else:
        spec = SyntheticSpec(
            args.train_ids, args.test_ids, args.cameras, args.images_per_id, args.distractors, args.junk,
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
