"""Synthetic people rendered into a real Market-1501 tree, for the demo and for tests.

Procedural identities (clothing colours and patterns, bags, hats, body shape, skin and hair)
are seen by cameras with their own style (colour cast, exposure, blur, noise, background and
preferred viewpoint), with per-image jitter of the detection box. The result is written in the
Market-1501 layout and read back by the Market-1501 parser::

    dataset = load_synthetic("data/synthetic", num_train_ids=120, num_test_ids=100)

or from the shell: ``python -m reid.data.synthetic --root data/synthetic --train-ids 100``.
Generation is seeded: the same arguments give byte-identical files.

For self-supervised pretraining, ``load_synthetic_luperson`` writes a LUPerson-like unlabelled tree
instead (``luperson_tree.py``): hundreds of scenes, each with its own background and camera style,
showing people from an identity pool disjoint from the Market tree's, read by the LUPerson parser
(``python -m reid.data.synthetic --luperson --root data/synthetic_luperson``).

A second labelled domain for cross-domain experiments, ``load_synthetic_duke`` (``duke_tree.py``),
writes a DukeMTMC-reID tree: a winter campus seen by eight cameras of another style, people
disjoint from the Market tree's, read by the DukeMTMC parser
(``python -m reid.data.synthetic --duke --root data/synthetic_duke``).
"""

from reid.data.synthetic.duke_tree import DukeSpec, generate_duke_tree, load_synthetic_duke
from reid.data.synthetic.layout import SyntheticSpec
from reid.data.synthetic.luperson_tree import LUPersonSpec, generate_luperson_tree, load_synthetic_luperson
from reid.data.synthetic.tree import (
    MARKER_NAME,
    existing_trees_only,
    generate_market_tree,
    is_complete_tree,
    load_synthetic,
)

__all__ = [
    "MARKER_NAME",
    "DukeSpec",
    "LUPersonSpec",
    "SyntheticSpec",
    "existing_trees_only",
    "generate_duke_tree",
    "generate_luperson_tree",
    "generate_market_tree",
    "is_complete_tree",
    "load_synthetic",
    "load_synthetic_duke",
    "load_synthetic_luperson",
]
