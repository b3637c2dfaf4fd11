"""Reproducible installs: the hashed locks cover what pyproject.toml asks for, `make` and the
Dockerfile install from them and nothing else, the image's base is pinned, its dependency
layer comes before the code, and it runs as a user of its own."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _locked(lock: str) -> dict[str, str]:
    """name -> version for every pinned line; each pin must carry at least one hash."""
    text = (ROOT / lock).read_text()
    pins = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        m = re.match(r"([A-Za-z0-9_.-]+)==([^\s;\\]+)", block)
        if m:
            assert "--hash=sha256:" in block, f"{lock}: {m.group(1)} has no hash"
            pins[m.group(1).lower().replace("_", "-").replace(".", "-")] = m.group(2)
    return pins


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _norm(name: str) -> str:
    return name.replace(".", "-")


def test_the_runtime_lock_covers_every_dependency():
    locked = _locked("requirements.lock")
    wanted = {_norm(_name(r)) for r in _pyproject()["project"]["dependencies"]}
    assert wanted - set(locked) == set(), "run `make lock`"
    assert {"setuptools", "wheel"} <= set(locked)  # the build backend, pinned too


def test_the_dev_lock_covers_the_dev_extra_and_agrees_with_the_runtime_lock():
    runtime, dev = _locked("requirements.lock"), _locked("requirements-dev.lock")
    wanted = {_norm(_name(r)) for r in _pyproject()["project"]["optional-dependencies"]["dev"]}
    assert wanted - set(dev) == set(), "run `make lock`"
    assert {n: v for n, v in dev.items() if n in runtime} == runtime


@pytest.mark.parametrize("lock", ["requirements.lock", "requirements-dev.lock"])
def test_the_production_extras_are_locked_once_declared(lock):
    """`make lock` adds the extras production runs with (redis: shared counters) to both locks
    when pyproject.toml declares them; a merge that adds one without re-locking fails here."""
    extras = _pyproject()["project"].get("optional-dependencies", {})
    locked = _locked(lock)
    for extra in ("redis",):
        missing = {_norm(_name(r)) for r in extras.get(extra, [])} - set(locked)
        assert missing == set(), f"{lock} lacks the {extra} extra's {missing}: run `make lock`"


def test_make_installs_from_the_lock():
    makefile = (ROOT / "Makefile").read_text()
    stamp = re.search(r"^\$\(STAMP\):(.*)$", makefile, re.M)
    assert stamp and "requirements-dev.lock" in stamp.group(1)
    assert "pip install --quiet --require-hashes -r requirements-dev.lock" in makefile
    assert "--no-deps --no-build-isolation -e ." in makefile
    assert re.search(r"^lock:", makefile, re.M)


def test_the_dockerfile_is_pinned_layered_and_unprivileged():
    lines = [ln.strip() for ln in (ROOT / "Dockerfile").read_text().splitlines()]
    image = next(ln for ln in lines if ln.startswith("ARG PYTHON_IMAGE="))
    assert re.fullmatch(r"ARG PYTHON_IMAGE=python:3\.11\.\d+-slim-\w+@sha256:[0-9a-f]{64}", image)
    assert "FROM ${PYTHON_IMAGE}" in lines

    def first(prefix: str) -> int:
        return next(i for i, ln in enumerate(lines) if ln.startswith(prefix))

    install = first("RUN pip install --require-hashes")
    assert first("COPY requirements.lock") < install < first("COPY app")
    user = first("USER ")
    assert lines[user] not in ("USER root", "USER 0") and user > first("COPY app")
    assert not any(ln.startswith("RUN pip install") and "--require-hashes" not in ln
                   for ln in lines)
