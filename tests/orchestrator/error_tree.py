"""What the error tests need to know about the code base: its modules and its exception classes."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path
from types import ModuleType
from typing import TypeVar

import agents
import circuit
import orchestrator
import state
from orchestrator import errors

E = TypeVar("E", bound=BaseException)

ROOT = Path(__file__).resolve().parents[2]
# `python -m orchestrator` runs the CLI when imported.
_NOT_IMPORTED = frozenset({"orchestrator.__main__"})
_TREE_LINE = re.compile(
    r"^(?P<indent>[│├└ ─]*?)(?:[├└]── )?(?P<name>[A-Z]\w+)(?:\s{2,}(?P<text>.*))?$"
)


def modules(package: ModuleType) -> list[ModuleType]:
    """Every module of `package`, imported."""
    found = [package]
    for info in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}."):
        if info.name not in _NOT_IMPORTED:
            found.append(importlib.import_module(info.name))
    return found


def exception_classes(package: ModuleType) -> list[type[BaseException]]:
    """Every exception class defined in `package` (public or private), in a stable order."""
    classes: dict[str, type[BaseException]] = {}
    for module in modules(package):
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == module.__name__:
                classes[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [classes[key] for key in sorted(classes)]


def subtree(root: type[E]) -> list[type[E]]:
    """`root` and every class below it (each package's modules imported first)."""
    for package in (orchestrator, agents, circuit, state):
        modules(package)
    seen: list[type[E]] = []
    pending = [root]
    while pending:
        cls = pending.pop()
        if cls not in seen:
            seen.append(cls)
            pending.extend(cls.__subclasses__())
    return seen


def drawn_tree() -> dict[str, tuple[str | None, str]]:
    """The tree drawn in orchestrator/errors.py: class name -> (parent's name, its text)."""
    doc = errors.__doc__ or ""
    drawing = doc.split("```\n")[1]
    tree: dict[str, tuple[str | None, str]] = {}
    stack: list[tuple[int, str]] = []
    for line in drawing.splitlines():
        match = _TREE_LINE.match(line)
        if match is None:
            continue  # a description's second line
        depth = len(match["indent"]) // 4 + (1 if "──" in line else 0)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parent = stack[-1][1] if stack else None
        tree[match["name"]] = (parent, match["text"] or "")
        stack.append((depth, match["name"]))
    return tree


def private_outside_the_tree() -> set[str]:
    """The private classes the docstring says stay outside the tree."""
    doc = errors.__doc__ or ""
    paragraph = doc.split("Outside the tree")[1]
    return set(re.findall(r"`(_[A-Za-z]\w*)`", paragraph))
