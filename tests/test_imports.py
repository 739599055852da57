"""Import directions (STYLE.md): data flows extract -> pipeline -> store -> train -> eval; nothing imports upward.
The sample corpus (``sample/``) stands apart: it imports no job, and no job imports it (only the demo does)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BASE = {"mcn.errors", "mcn.configs", "mcn.options", "mcn.storage", "mcn.__version__"}
ALLOWED = {
    "extract": BASE | {"mcn.extract"},
    "pipeline": BASE | {"mcn.pipeline", "mcn.extract", "mcn.store"},
    "train": BASE | {"mcn.train", "mcn.store"},
    "eval": BASE | {"mcn.eval", "mcn.train", "mcn.store", "mcn.extract"},
    "sample": BASE | {"mcn.sample"},
}
LIBRARY_OF = {
    "mcn/store.py": BASE - {"mcn.options"} | {"mcn.store_rows", "mcn.shard_reader"},
    "mcn/shard_reader.py": {"mcn.storage", "mcn.store_rows", "mcn.parquet_pages"},
    "mcn/store_rows.py": set(),
    "mcn/parquet_pages.py": set(),
    "mcn/storage.py": {"mcn.errors"},
    "mcn/errors.py": set(),
    "mcn/configs.py": {"mcn.errors", "mcn.storage"},
    "mcn/options.py": {"mcn.errors", "mcn.configs"},
}


def mcn_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "mcn":
            names = [f"mcn.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            if name == "mcn" or name.startswith("mcn."):
                parts = name.split(".")
                found.add(".".join(parts[:2]))
    return found


def test_each_code_folder_is_a_flat_package():
    for folder in ALLOWED:
        assert (ROOT / folder / "__init__.py").exists(), f"{folder}/ is not a package"
        nested = [p for p in (ROOT / folder).iterdir() if p.is_dir() and p.name != "__pycache__"]
        assert not nested, f"{folder}/ must stay flat (pyproject lists no subpackages): {nested}"


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_no_upward_imports(folder):
    for path in sorted((ROOT / folder).glob("*.py")):
        # `python -m mcn.<folder>` entry points may hand over to the CLI dispatcher
        allowed = ALLOWED[folder] | ({"mcn.cli"} if path.name == "__main__.py" else set())
        bad = mcn_imports(path) - allowed
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}; allowed: {sorted(ALLOWED[folder])}"


@pytest.mark.parametrize("module", sorted(LIBRARY_OF))
def test_shared_modules_stay_at_the_bottom(module):
    bad = mcn_imports(ROOT / module) - LIBRARY_OF[module]
    assert not bad, f"{module} imports {sorted(bad)}"


def test_installed_namespace_maps_the_folders():
    import mcn.eval
    import mcn.extract
    import mcn.pipeline
    import mcn.sample
    import mcn.train

    for package, folder in [
        (mcn.extract, "extract"),
        (mcn.pipeline, "pipeline"),
        (mcn.train, "train"),
        (mcn.eval, "eval"),
        (mcn.sample, "sample"),
    ]:
        assert Path(package.__file__).resolve().parent == ROOT / folder


def test_no_top_level_train_or_eval_package_is_installed(tmp_path):
    code = "import importlib.util as u; print([n for n in ('train', 'eval', 'extract', 'pipeline', 'sample') if u.find_spec(n)])"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
