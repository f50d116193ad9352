"""The package's metadata and its source agree: one version, a real readme."""

from __future__ import annotations

import tomllib
from importlib.metadata import metadata, version
from pathlib import Path

import actormesh

LIB = Path(__file__).resolve().parents[2] / "libs" / "actormesh"


def test_the_installed_version_is_the_one_in_the_source() -> None:
    assert version("actormesh") == actormesh.__version__


def test_pyproject_takes_the_version_from_the_source_alone() -> None:
    project = tomllib.loads((LIB / "pyproject.toml").read_text())
    assert "version" not in project["project"]
    assert project["project"]["dynamic"] == ["version"]
    dynamic = project["tool"]["setuptools"]["dynamic"]["version"]
    assert dynamic == {"attr": "actormesh._version.VERSION"}


def test_the_package_readme_is_a_readme() -> None:
    text = (LIB / "README.md").read_text()
    assert "pip install actormesh" in text
    assert "class Counter(Actor)" in text
    summary = metadata("actormesh")["Summary"]
    assert summary and "JetStream" in summary
