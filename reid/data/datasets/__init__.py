"""Dataset parsers: one module per dataset, each with one ``load_<name>(root, ...) -> ReIDDataset``.

Parsers read names and list files only (no image is decoded), accept the dataset folder or its
parent holding the official folder name, check id ranges, and raise
:class:`~reid.data.datasets.errors.DatasetLayoutError` (missing folders/files, empty splits) or
:class:`~reid.data.datasets.errors.DatasetFormatError` (bad names, lines, out-of-range ids).
Each loader registers itself by name (:func:`~reid.data.datasets.registry.register_dataset`): the configs
find it as ``data/dataset=<name>``, the tools by its file-name format. A new dataset is one file.
"""

from reid.data.datasets.cuhk03_np import load_cuhk03_np
from reid.data.datasets.dukemtmc import load_dukemtmc
from reid.data.datasets.errors import DatasetError, DatasetFormatError, DatasetLayoutError
from reid.data.datasets.folder import load_folder
from reid.data.datasets.luperson import load_luperson
from reid.data.datasets.market1501 import load_market1501
from reid.data.datasets.msmt17 import load_msmt17
from reid.data.datasets.occluded_duke import load_occluded_duke
from reid.data.datasets.registry import RegisteredDataset, register_dataset, registered_datasets
from reid.data.datasets.vehicleid import load_vehicleid
from reid.data.datasets.veri776 import load_veri776

__all__ = [
    "DatasetError",
    "DatasetFormatError",
    "DatasetLayoutError",
    "RegisteredDataset",
    "load_cuhk03_np",
    "load_dukemtmc",
    "load_folder",
    "load_luperson",
    "load_market1501",
    "load_msmt17",
    "load_occluded_duke",
    "load_vehicleid",
    "load_veri776",
    "register_dataset",
    "registered_datasets",
]
