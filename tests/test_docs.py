"""Docstring examples run as doctests, and the README's Python examples run as written."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import llmenv

README = Path(__file__).resolve().parents[1] / "README.md"


def _modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(llmenv.__path__, "llmenv."):
        if info.name.endswith(("__main__", ".cli")):
            continue
        names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_the_two_setup_commands_and_ci_uses_the_test_one():
    text = README.read_text()
    assert "bash .ci/setup.sh && .venv/bin/llmenv demo" in text
    test_command = 'bash .ci/setup.sh && .venv/bin/pytest -m "slow or not slow"'
    assert test_command in text
    ci = " ".join((README.parent / ".ci" / "run").read_text().replace("\\\n", " ").split())
    assert ci.index("bash .ci/setup.sh &&") < ci.index('.venv/bin/pytest -m "slow or not slow"')
    for check in (".venv/bin/ruff check .", ".venv/bin/ruff format --check .", ".venv/bin/mypy"):
        assert ci.index(check) < ci.index(".venv/bin/pytest"), f"CI must run {check} before the tests"


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(_python_blocks())))
def test_readme_python_examples_run(index):
    exec(compile(_python_blocks()[index], f"README.md block {index}", "exec"), {})  # noqa: S102 - our own docs
