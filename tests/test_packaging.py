"""What a published package carries: one version, a licence, types, its metadata."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tomllib

import supervisor
from tests.conftest import ROOT

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_version_is_written_once() -> None:
    assert PROJECT["project"]["dynamic"] == ["version"]
    assert "version" not in PROJECT["project"]
    assert PROJECT["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "supervisor.__version__"}
    assert importlib.metadata.version("memwarden") == supervisor.__version__
    r = subprocess.run([sys.executable, "-m", "supervisor", "--version"], capture_output=True,
                       text=True, timeout=30)
    assert r.stdout.strip() == f"memwarden {supervisor.__version__}"


def test_every_package_is_typed_and_ships_its_marker() -> None:
    found = PROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    assert set(found) == {"supervisor*", "workers*", "snapshots*"}  # with their sub-packages
    packages = [name.rstrip("*") for name in found]
    data = PROJECT["tool"]["setuptools"]["package-data"]
    for package in packages:
        assert (ROOT / package / "py.typed").is_file(), package
        assert "py.typed" in data[package], package


def test_the_metadata_a_registry_shows() -> None:
    project = PROJECT["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    classifiers = set(project["classifiers"])
    assert {"Operating System :: POSIX :: Linux", "Topic :: System :: Monitoring",
            "Programming Language :: Python :: 3.11", "Typing :: Typed"} <= classifiers
    assert {"Homepage", "Source", "Issues", "Documentation"} <= set(project["urls"])
    deps = {d.split(">")[0].split("=")[0] for d in project["dependencies"]}
    assert {"prometheus-client", "psutil", "anyio", "msgspec", "objgraph"} == deps
    metadata = importlib.metadata.metadata("memwarden")
    assert metadata["License-Expression"] == "MIT"
    assert "Operating System :: POSIX :: Linux" in metadata.get_all("Classifier")
