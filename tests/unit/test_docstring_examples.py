"""The examples in the docstrings of the package and the benchmarks run, and give what they show."""
from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import benchmarks
import pipeline


def _modules() -> list[str]:
    names = []
    for package in (pipeline, benchmarks):
        for module in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}."):
            if not module.name.endswith("__main__"):  # running it would start the command line
                names.append(module.name)
    return names


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name: str) -> None:
    failed, _ = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS, report=True)
    assert failed == 0, f"{failed} docstring example(s) of {name} failed (printed above)"


def test_the_examples_are_found() -> None:
    finder = doctest.DocTestFinder()
    examples = sum(len(test.examples) for name in _modules() for test in finder.find(importlib.import_module(name)))
    assert examples >= 30
