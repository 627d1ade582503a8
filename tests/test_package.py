"""Package-level promises: one version, a sorted public surface, typing marker."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import pytest

import cuemsg

# Python 3.11+ reads TOML itself; on 3.10 this module's version check is skipped.
tomllib = pytest.importorskip("tomllib", reason="tomllib is standard from Python 3.11")

ROOT = Path(__file__).resolve().parents[1]


def test_version_has_one_source() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert cuemsg.__version__ == project["version"] == version("cuemsg")


def test_all_is_sorted_and_complete() -> None:
    assert cuemsg.__all__ == sorted(cuemsg.__all__)
    for name in cuemsg.__all__:
        assert hasattr(cuemsg, name), name
    public = {n for n in vars(cuemsg) if not n.startswith("_") and n[0].isupper()}
    assert public <= set(cuemsg.__all__), public - set(cuemsg.__all__)


def test_package_is_typed() -> None:
    assert (ROOT / "cuemsg" / "py.typed").exists()
