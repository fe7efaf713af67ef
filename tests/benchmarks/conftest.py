"""Fixtures of the benchmark-script tests: the scripts are files, not a package, so they are loaded by path."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load_script(path: Path) -> ModuleType:
    """Import the script at ``path`` as a module named after its file (registered in ``sys.modules``, so
    that the scripts' own ``from bench_features import ...`` find it)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def bench_script() -> Callable[[str], ModuleType]:
    """``bench_script("bench_features")``: that script of ``benchmarks/`` (``quality/run_quality`` for a subfolder)."""
    return lambda name: load_script(BENCHMARKS / f"{name}.py")
