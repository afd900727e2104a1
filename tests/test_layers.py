"""The engine's layers (fasp/__init__.py) hold: each package imports only from the layers below it."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "fasp"
ORDER = ["errors", "options", "files", "datapath", "session", "server", "cli"]


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fasp.") and not node.level:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("fasp."))
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import (the engine imports absolutely, so layers show)")
    return found


MODULES = sorted(p for p in ROOT.rglob("*.py") if p.name != "__main__.py" and p.parent != ROOT or p.name == "errors.py")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_only_from_layers_below(path: Path) -> None:
    own = "errors" if path.name == "errors.py" and path.parent == ROOT else path.relative_to(ROOT).parts[0]
    below = set(ORDER[: ORDER.index(own)])
    for module in _imports(path):
        layer = module.split(".")[1]
        assert layer == own or layer in below, f"{path.relative_to(ROOT.parent)} imports {module} (layer {layer!r})"


def test_every_module_is_in_a_layer() -> None:
    loose = [p.name for p in ROOT.glob("*.py") if p.name not in ("__init__.py", "__main__.py", "errors.py")]
    assert not loose, f"modules outside a layer: {loose}"
