"""The package's layers import one way only:
common <- data <- modeling <- config <- training/evaluation/serving <- entry points.

A module may import its own layer and the layers below it, never one above, at module level
or inside a function. Each sub-package also imports alone, in a fresh interpreter.
"""

import ast
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "agetf")

# Lowest first. agetf itself (UsageError, the version) sits with common.
LAYERS = {
    "agetf": 0, "agetf.common": 0,
    "agetf.data": 1,
    "agetf.modeling": 2,
    # A training run's settings, built on the input's and the model's (TensorFlow-free).
    "agetf.config": 3,
    "agetf.training": 4, "agetf.evaluation": 4, "agetf.serving": 4,
    "agetf.train": 5, "agetf.train_flags": 5, "agetf.predict": 5, "agetf.convert": 5,
    "agetf.data_service": 5,
}
SUBPACKAGES = ["agetf.common", "agetf.data", "agetf.modeling", "agetf.training",
               "agetf.evaluation", "agetf.serving"]


def layer_of(module):
    """The layer of a dotted module name: its longest prefix in LAYERS."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        if name in LAYERS:
            return name, LAYERS[name]
    raise AssertionError(f"{module} belongs to no layer; add it to LAYERS in {__file__}")


def package_modules():
    """(dotted name, path) of every module of the package."""
    for folder, _, names in os.walk(PACKAGE):
        for name in sorted(names):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                yield dotted.removesuffix(".__init__"), path


def imported_modules(path, module):
    """(line, dotted name) of every agetf module `path` imports, at any depth."""
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names] if base else []
            names = names if base.startswith("agetf") else [base]
        else:
            continue
        yield from ((node.lineno, name) for name in names if name.split(".")[0] == "agetf")


def wrong_way_imports():
    wrong = []
    for module, path in package_modules():
        home, level = layer_of(module)
        for line, name in imported_modules(path, module):
            # `from agetf import config` names agetf.config; `from agetf import UsageError`
            # names an attribute of agetf, layer 0.
            target = name if _is_module(name) else name.rpartition(".")[0]
            their_home, their_level = layer_of(target)
            if their_level > level:
                wrong.append(f"{os.path.relpath(path, REPO)}:{line} imports {target} "
                             f"({their_home}, above {home})")
    return wrong


def _is_module(name):
    relative = os.path.join(REPO, *name.split("."))
    return os.path.isdir(relative) or os.path.exists(relative + ".py")


def test_no_module_imports_a_layer_above_its_own():
    assert wrong_way_imports() == []


def test_the_check_finds_a_wrong_way_import(tmp_path, monkeypatch):
    # A data module that imports training must be found, or the check above cannot fail.
    fake = tmp_path / "agetf"
    (fake / "data").mkdir(parents=True)
    (fake / "training").mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "data" / "__init__.py").write_text("")
    (fake / "training" / "__init__.py").write_text("")
    (fake / "data" / "bad.py").write_text("def f():\n    from agetf.training import trainer\n")
    (fake / "training" / "trainer.py").write_text("")
    monkeypatch.setattr(sys.modules[__name__], "REPO", str(tmp_path))
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", str(fake))
    assert wrong_way_imports() == [
        "agetf/data/bad.py:2 imports agetf.training.trainer (agetf.training, above agetf.data)"]


@pytest.mark.parametrize("package", SUBPACKAGES)
def test_each_sub_package_imports_alone(package):
    modules = [module for module, _ in package_modules()
               if module == package or module.startswith(package + ".")]
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    result = subprocess.run([sys.executable, "-c", code, *modules], capture_output=True,
                            text=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO,
                                                         TF_CPP_MIN_LOG_LEVEL="2"),
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def test_the_configs_and_the_head_names_import_no_tensorflow():
    code = ("import sys\n"
            "import agetf.config, agetf.train_flags, agetf.common.head_names\n"
            "import agetf.data.input_config, agetf.modeling.model_config\n"
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
