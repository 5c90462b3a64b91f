"""Constitutions for Constitutional AI: named principles, each a critique request and a revision request.

A constitution file is JSON: `{"name": str, "principles": [{"name", "critique", "revision"[, "criterion"]}]}`.
`critique` is the request put to the model after its first response ("Identify ways in which ...");
`revision` the request after its critique ("Rewrite the response to ..."); `criterion`, optional, is the
yes/no question a judge asks when the constitution is its rubric (by default one made from the critique
request). `load_constitution` reads and checks a file (or the built-in `default`) and says what is wrong
with a bad one. This module holds data only: sampling lives in `llmenv.agents.cai`, judging in
`llmenv.verifiers.judge`.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmenv.errors import ConfigError

__all__ = ["DEFAULT_CONSTITUTION", "Constitution", "Principle", "load_constitution"]

DEFAULT_CONSTITUTION = Path(__file__).with_name("constitutions") / "default.json"
"""The constitution that ships with llmenv (`load_constitution("default")`)."""

FORMAT = '{"name": str, "principles": [{"name": str, "critique": str, "revision": str, "criterion"?: str}, ...]}'


@dataclass(frozen=True)
class Principle:
    """One principle: how to ask for a critique, how to ask for a revision, and the judge's question."""

    name: str
    critique: str
    revision: str
    criterion: str
    """A yes/no question whose "yes" means the response follows the principle."""


@dataclass(frozen=True)
class Constitution:
    """A named, non-empty tuple of principles with distinct names."""

    name: str
    principles: tuple[Principle, ...]

    def draw(self, rng: random.Random) -> Principle:
        """One principle, drawn uniformly with `rng`."""
        return self.principles[rng.randrange(len(self.principles))]


def load_constitution(path: str | Path) -> Constitution:
    """A constitution from a JSON file, or the built-in one for `"default"`; ConfigError saying what is wrong."""
    source = DEFAULT_CONSTITUTION if str(path) == "default" else Path(path).expanduser()
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"constitution {path}: no such file; expected a JSON file {FORMAT}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"constitution {path}: not JSON ({exc.msg} at line {exc.lineno}); expected {FORMAT}"
        ) from None
    return constitution_from_json(data, where=f"constitution {path}")


def constitution_from_json(data: Any, *, where: str = "constitution") -> Constitution:
    """A constitution from its parsed JSON form; ConfigError naming the bad field."""
    if not isinstance(data, dict) or not isinstance(data.get("principles"), list) or not data["principles"]:
        raise ConfigError(f"{where}: expected an object with a non-empty 'principles' list: {FORMAT}")
    principles = []
    for index, item in enumerate(data["principles"]):
        at = f"{where}: principle {index}"
        if not isinstance(item, dict):
            raise ConfigError(f"{at} is a {type(item).__name__}, expected an object: {FORMAT}")
        fields = {}
        for key in ("name", "critique", "revision"):
            value = item.get(key)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{at}: '{key}' must be a non-empty string, got {value!r:.80}")
            fields[key] = value.strip()
        criterion = item.get("criterion")
        if criterion is not None and (not isinstance(criterion, str) or not criterion.strip()):
            raise ConfigError(f"{at}: 'criterion' must be a non-empty string when given, got {criterion!r:.80}")
        default = (
            f'Consider this request about the response: "{fields["critique"]}" Is the response free of such problems?'
        )
        principles.append(Principle(**fields, criterion=(criterion or default).strip()))
    names = [p.name for p in principles]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: principle names must be distinct, got {names}")
    name = data.get("name", "constitution")
    if not isinstance(name, str):
        raise ConfigError(f"{where}: 'name' must be a string, got {name!r:.80}")
    return Constitution(name=name, principles=tuple(principles))
