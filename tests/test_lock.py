"""The locked install: requirements/*.txt pin what pyproject.toml asks for, with hashes.

scripts/lock.sh writes the lockfiles; scripts/venv.sh, the Dockerfile and so CI install
from them with `pip install --require-hashes`. These tests fail as soon as pyproject.toml
and a lockfile disagree (a dependency added without `scripts/lock.sh`), a pin lacks a hash,
two lockfiles pin one package differently, a 0.x dependency has no upper bound, or the
environment running the tests is not the locked one.
"""

from __future__ import annotations

import re
import sys
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCKS = ROOT / "requirements"
# Which lockfile installs which part of pyproject.toml (scripts/venv.sh's sets).
SETS: dict[str, tuple[str, ...]] = {"runtime": (), "fast": ("fast",), "test": ("test",)}


@dataclass(frozen=True)
class Pin:
    name: str
    version: Version
    marker: Marker | None
    hashes: tuple[str, ...]

    def applies(self) -> bool:
        return self.marker is None or self.marker.evaluate()


_PIN = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)(?: ; (?P<marker>.+?))?$"
)


def _pins(name: str) -> dict[str, Pin]:
    """Every package a lockfile pins, by canonical name, with its hashes."""
    text = (LOCKS / f"{name}.txt").read_text(encoding="utf-8")
    # One requirement spans its continuation lines ("\" at the end of a line).
    logical = re.sub(r"\s*\\\n\s*", " ", text)
    pins: dict[str, Pin] = {}
    for line in logical.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        head, *options = line.split(" --hash=")
        match = _PIN.match(head.strip())
        assert match, f"{name}.txt: not an exact pin: {line[:120]!r}"
        marker = match["marker"]
        pin = Pin(
            name=canonicalize_name(match["name"]),
            version=Version(match["version"]),
            marker=Marker(marker) if marker else None,
            hashes=tuple(h.strip() for h in options),
        )
        assert pin.name not in pins, f"{name}.txt pins {pin.name} twice"
        pins[pin.name] = pin
    return pins


def _pyproject() -> dict[str, Any]:
    loaded: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return loaded


def _requirements(extras: tuple[str, ...]) -> list[Requirement]:
    project = _pyproject()["project"]
    found = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        found += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return found


@pytest.mark.parametrize("lock", [*SETS, "tools"])
def test_every_pin_is_exact_and_carries_sha256_hashes(lock: str) -> None:
    pins = _pins(lock)
    assert pins, f"{lock}.txt pins nothing"
    for pin in pins.values():
        assert pin.hashes, f"{lock}.txt: {pin.name} has no --hash"
        for digest in pin.hashes:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), (lock, pin.name, digest)


@pytest.mark.parametrize("lock", SETS)
def test_each_lockfile_satisfies_what_pyproject_asks_for(lock: str) -> None:
    """Adding a dependency to pyproject.toml without running scripts/lock.sh fails here."""
    pins = _pins(lock)
    for requirement in _requirements(SETS[lock]):
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is in pyproject.toml but not in {lock}.txt"
        assert requirement.specifier.contains(pins[name].version, prereleases=True), (
            f"{lock}.txt pins {name}=={pins[name].version}, outside {requirement}: "
            "run scripts/lock.sh"
        )


def test_lockfiles_agree_on_every_shared_package() -> None:
    """runtime, fast and test install the same version of what they share (one venv serves)."""
    test = _pins("test")
    for lock in ("runtime", "fast"):
        for name, pin in _pins(lock).items():
            assert name in test, f"{lock}.txt pins {name}, test.txt does not"
            assert pin.version == test[name].version, (lock, name, pin.version)


def test_tools_lock_holds_pip_and_the_build_backend() -> None:
    tools = _pins("tools")
    assert "pip" in tools
    for text in _pyproject()["build-system"]["requires"]:
        requirement = Requirement(text)
        pin = tools[canonicalize_name(requirement.name)]
        assert requirement.specifier.contains(pin.version), (requirement, pin.version)


def test_every_0x_dependency_has_an_upper_bound() -> None:
    """For 0.x a minor release may break the API: pyproject.toml caps each such dependency."""
    test = _pins("test")
    project = _pyproject()["project"]
    every = [*project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        every += extra
    unbounded = []
    for text in every:
        requirement = Requirement(text)
        pin = test.get(canonicalize_name(requirement.name))
        if pin is None or pin.version.major != 0:
            continue
        if not any(spec.operator in ("<", "<=", "==", "~=") for spec in requirement.specifier):
            unbounded.append(text)
    assert not unbounded, f"0.x dependencies without an upper bound: {unbounded}"


def test_the_environment_running_the_tests_is_the_locked_one() -> None:
    """scripts/test.sh installs requirements/test.txt: every applicable pin is what runs here."""
    wrong = []
    for pin in _pins("test").values():
        if not pin.applies():
            continue
        try:
            installed = Version(metadata.version(pin.name))
        except metadata.PackageNotFoundError:
            wrong.append(f"{pin.name} (not installed)")
            continue
        if installed != pin.version:
            wrong.append(f"{pin.name} {installed} (locked {pin.version})")
    assert not wrong, f"not the locked environment ({sys.prefix}): {wrong}"


def test_installs_go_through_the_lockfiles_with_hashes() -> None:
    """venv.sh (so run.sh, test.sh and CI) and the Dockerfile install only from requirements/."""
    venv = (ROOT / "scripts" / "venv.sh").read_text()
    assert 'install -q --require-hashes -r "$tools"' in venv
    assert 'install -q --require-hashes -r "$lock"' in venv
    assert 'lock="$root/requirements/$set_name.txt"' in venv
    assert "--no-deps --no-build-isolation" in venv
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install --require-hashes -r requirements/tools.txt" in dockerfile
    assert 'pip install --require-hashes -r "requirements/${LOCK}.txt"' in dockerfile
    assert re.search(r"^ARG LOCK=runtime$", dockerfile, re.M)
    assert "pip install --no-deps --no-build-isolation ." in dockerfile
    # No other install line that could fetch something unpinned.
    installs = re.findall(r"pip install[^\n&]*", dockerfile)
    assert len(installs) == 3, installs
    assert "requirements" not in (ROOT / ".dockerignore").read_text()
    assert "scripts/venv.sh test" in (ROOT / "scripts" / "test.sh").read_text()
