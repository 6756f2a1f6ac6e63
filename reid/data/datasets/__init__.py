"""Dataset parsers: one module per dataset, each with one ``load_<name>(root, ...) -> ReIDDataset``.

Parsers read names and list files only (no image is decoded), accept the dataset folder or its
parent holding the official folder name, check id ranges, and raise
:class:`~reid.data.datasets.errors.DatasetLayoutError` (missing folders/files, empty splits) or
:class:`~reid.data.datasets.errors.DatasetFormatError` (bad names, lines, out-of-range ids).
Hydra configs in ``conf/dataset/`` point at these functions with ``_partial_: true``.
"""

from reid.data.datasets.dukemtmc import load_dukemtmc
from reid.data.datasets.errors import DatasetError, DatasetFormatError, DatasetLayoutError
from reid.data.datasets.folder import load_folder
from reid.data.datasets.luperson import load_luperson
from reid.data.datasets.market1501 import load_market1501
from reid.data.datasets.msmt17 import load_msmt17
from reid.data.datasets.occluded_duke import load_occluded_duke
from reid.data.datasets.vehicleid import load_vehicleid
from reid.data.datasets.veri776 import load_veri776

LOADERS = {
    "market1501": load_market1501,
    "dukemtmc": load_dukemtmc,
    "occ_duke": load_occluded_duke,
    "msmt17": load_msmt17,
    "veri776": load_veri776,
    "vehicleid": load_vehicleid,
    "luperson": load_luperson,
    "folder": load_folder,
}
"""Loader of each dataset, keyed by its config name in ``conf/dataset/``."""

__all__ = [
    "LOADERS",
    "DatasetError",
    "DatasetFormatError",
    "DatasetLayoutError",
    "load_dukemtmc",
    "load_folder",
    "load_luperson",
    "load_market1501",
    "load_msmt17",
    "load_occluded_duke",
    "load_vehicleid",
    "load_veri776",
]
