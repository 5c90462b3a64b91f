"""Config dataclasses as flags: types from annotations, choices, defaults in help, None defaults, checks."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

import pytest

from llmenv.agents.config import add_config_flags, check_config, config_from_args, option, parse_params
from llmenv.errors import ConfigError


@dataclass
class Example:
    """A config with one field of every kind a learner uses."""

    name: str = option("a", "A string.")
    mode: str = option("fast", "A closed set.", choices=("fast", "slow"))
    count: int = option(2, "A positive count.", check=lambda n: n >= 1, expects=">= 1")
    rate: float = option(0.5, "A float.")
    limit: int | None = option(None, "None means no limit.")
    flag: bool = option(False, "A switch.")
    params: dict[str, Any] = option({}, "Key=value pairs")

    def __post_init__(self) -> None:
        check_config(self)


def parse(*argv: str) -> Example:
    parser = argparse.ArgumentParser()
    add_config_flags(parser, Example)
    return config_from_args(Example, parser.parse_args(list(argv)))


def test_defaults_round_trip_and_each_kind_parses():
    assert parse() == Example()
    got = parse(
        "--name",
        "b",
        "--mode",
        "slow",
        "--count",
        "3",
        "--rate",
        "1e-3",
        "--limit",
        "7",
        "--flag",
        "--param",
        "digits=2",
        "--param",
        'ops="+-"',
        "--param",
        "label=plain",
    )
    assert got == Example("b", "slow", 3, 1e-3, 7, True, {"digits": 2, "ops": "+-", "label": "plain"})
    assert parse("--limit", "none").limit is None and parse("--no-flag").flag is False


def test_choices_and_checks_fail_with_the_value_and_what_was_expected(capsys):
    with pytest.raises(SystemExit):
        parse("--mode", "medium")
    assert "invalid choice: 'medium'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"mode='x' \(expected one of 'fast', 'slow'\); count=0 \(expected >= 1\)"):
        Example(count=0, mode="x")
    with pytest.raises(ConfigError, match="--param expects key=value"):
        parse_params(["digits"])


def test_default_factories_are_not_shared_between_instances():
    a, b = Example(), Example()
    a.params["x"] = 1
    assert b.params == {}


def test_to_flags_rebuilds_the_config():
    config = Example(name="b", mode="slow", limit=None, flag=True, params={"digits": 2, "ops": "+-"})
    parser = argparse.ArgumentParser()
    add_config_flags(parser, Example)
    from llmenv.agents.config import to_flags

    flags = to_flags(config)
    assert "--count" not in flags  # defaults are left out
    assert config_from_args(Example, parser.parse_args(flags)) == config
    assert config_from_args(Example, parser.parse_args(to_flags(Example(limit=3, flag=False)))).limit == 3
