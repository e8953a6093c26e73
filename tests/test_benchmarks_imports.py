"""The benchmark and test scripts name only keras_med objects that exist.

They run outside the test suite (benchmarks/ by hand, minutes to hours), so a renamed function broke
`benchmarks/trust_guards.py` unnoticed for a session (`feature_layer_name`, gone when the model
started naming its own parts). Reading their imports costs nothing; running them would.
"""

import ast
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = sorted((REPO / "benchmarks").glob("*.py")) + sorted((REPO / "tests" / "scripts").glob("*.py"))


def _keras_med_imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every `from keras_med... import name` in the file, at any depth."""
    return [(node.module, alias.name) for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "keras_med"
            for alias in node.names]


def _exists(module_name: str, name: str) -> bool:
    module = importlib.import_module(module_name)
    if hasattr(module, name):
        return True
    try:  # `from keras_med.models import batch_norm`: a submodule
        importlib.import_module(f"{module_name}.{name}")
        return True
    except ModuleNotFoundError:
        return False


def test_there_are_scripts_to_check():
    assert len(SCRIPTS) > 10 and any(_keras_med_imports(path) for path in SCRIPTS)


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_script_imports_exist(path):
    missing = [f"{module}.{name}" for module, name in _keras_med_imports(path) if not _exists(module, name)]
    assert not missing, f"{path.relative_to(REPO)} imports names keras_med no longer has: {missing}"
