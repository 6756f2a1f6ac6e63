"""The library's dependencies point one way: each package imports only packages of lower layers, and nothing
below the entry points (``reid.run``, ``reid.tools``) imports them (issue 32, item 1). Run by ``make lint``.

Every import of every module counts, function-level ones included (read with ``ast``, nothing is run).
"""

from __future__ import annotations

import ast
from collections import defaultdict

from reid.config import CONFIG_DIR

PACKAGE = CONFIG_DIR.parent / "reid"
LAYERS: list[set[str]] = [
    {"reid.config", "reid.config_checks", "reid.config_schema", "reid.distributed", "reid.results"},
    {"reid.data", "reid.models", "reid.optim"},
    {"reid.losses", "reid.evaluation"},
    {"reid.training", "reid.clustering", "reid.visualization"},
    {"reid.tasks"},
    {"reid.callbacks", "reid.inference"},
    {"reid.search", "reid.dataset_options", "reid.config_store", "reid.api"},
    {"reid.run", "reid.tools"},  # the entry points: the command lines
]
"""Lowest first. A package may import its own layer's and lower layers' packages."""
ENTRY_POINTS = LAYERS[-1]


def unit(module: str) -> str:
    """The package a module belongs to for the contract: ``reid.<first part>``."""
    return ".".join(module.split(".")[:2])


def imports() -> dict[str, dict[str, list[str]]]:
    """unit -> imported unit -> the ``file:line`` of each such import."""
    found: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                if name.startswith("reid.") and unit(name) != unit(module):
                    found[unit(module)][unit(name)].append(
                        f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
                    )
    return found


def layer_of(package: str) -> int:
    for index, layer in enumerate(LAYERS):
        if package in layer:
            return index
    raise AssertionError(f"{package} is in no layer of tests/test_dependencies.py: place it")


def test_every_package_has_a_layer():
    packages = {
        unit(".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts)) for p in PACKAGE.rglob("*.py")
    }
    for package in packages - {"reid.__init__", "reid.__main__"}:
        layer_of(package)


def test_nothing_below_the_entry_points_imports_them():
    """Before: reid.inference imported reid.run (the CLI's resolvers and warning filters came with
    `from reid.inference import ...`), and reid.search imported reid.tools.extract."""
    wrong = [
        f"{where}: {package} imports {target}"
        for package, targets in imports().items()
        if package not in ENTRY_POINTS
        for target, places in targets.items()
        if target in ENTRY_POINTS
        for where in places
    ]
    assert not wrong, "\n".join(wrong)


def test_imports_point_down_the_layers():
    """Before: reid.data imported reid.training (the resumable loaders), reid.tasks imported
    reid.callbacks (the EMA update and the kNN helpers)."""
    wrong = [
        f"{where}: {package} (layer {layer_of(package)}) imports {target} (layer {layer_of(target)})"
        for package, targets in imports().items()
        for target, places in targets.items()
        if layer_of(target) > layer_of(package)
        for where in places
    ]
    assert not wrong, "\n".join(wrong)
