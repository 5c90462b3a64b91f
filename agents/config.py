"""Config dataclasses as command lines: documented fields, checked choices, one flag per field.

A learner's config is a dataclass whose fields are declared with `option(default, help, ...)`;
the help text and the allowed choices live in the field's metadata, written once. `add_config_flags`
turns the fields into argparse flags (typed from the annotation, `choices=` for closed sets,
defaults shown in `--help`, `None` defaults accepted), `config_from_args` builds the config back,
and `check_config` validates ranges and choices, raising `ConfigError` with every bad value named.
This module reads dataclass fields; it knows nothing about any particular learner.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Callable, Collection, Sequence
from typing import Any, TypeVar

from llmenv.errors import ConfigError

_Config = TypeVar("_Config")


def option(
    default: Any,
    help: str,  # noqa: A002 - the argparse name
    *,
    choices: Collection[Any] | None = None,
    check: Callable[[Any], bool] | None = None,
    expects: str = "",
    flag: bool = True,
) -> Any:
    """A config field: its default, one-line help, allowed `choices`, and a range `check` described by `expects`."""
    metadata: dict[str, Any] = {
        "help": help,
        "choices": tuple(choices) if choices else None,
        "check": check,
        "expects": expects,
    }
    metadata["flag"] = flag
    if isinstance(default, (dict, list)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def at_least(bound: float) -> dict[str, Any]:
    """`option(..., **at_least(1))`: the value must be >= bound."""
    return {"check": lambda value: value >= bound, "expects": f">= {bound}"}


def above(bound: float) -> dict[str, Any]:
    """`option(..., **above(0))`: the value must be > bound."""
    return {"check": lambda value: value > bound, "expects": f"> {bound}"}


def check_config(config: Any) -> None:
    """Raise ConfigError naming every field whose value is outside its choices or fails its check."""
    problems = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        choices, check = f.metadata.get("choices"), f.metadata.get("check")
        if choices and value not in choices:
            problems.append(f"{f.name}={value!r} (expected one of {', '.join(map(repr, choices))})")
        elif check is not None and value is not None and not check(value):
            problems.append(f"{f.name}={value!r} (expected {f.metadata.get('expects') or 'a valid value'})")
    if problems:
        raise ConfigError(f"invalid {type(config).__name__}: " + "; ".join(problems))


def _flag_type(annotation: Any) -> tuple[type, bool]:
    """The scalar type argparse should parse for a field annotation, and whether None is allowed."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return (args[0] if len(args) == 1 else str), len(args) < len(typing.get_args(annotation))
    return (annotation if isinstance(annotation, type) else str), False


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse_or_none(text: str) -> Any:
        return None if text.lower() == "none" else parse(text)

    parse_or_none.__name__ = getattr(parse, "__name__", "value")
    return parse_or_none


def parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    """`key=value` pairs as a dict; values are JSON when they parse, else strings."""
    params: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--param expects key=value (e.g. --param digits=2), got {pair!r}")
        key, raw = pair.split("=", 1)
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    return params


def _field_default(f: dataclasses.Field[Any]) -> Any:
    """The field's default, or a fresh value from its factory; `option` always gives one or the other."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise TypeError(f"config field {f.name!r} has no default; declare it with option(default, help)")


def add_config_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """One `--flag` per field of `cls` (dict fields are repeatable `--param KEY=VALUE`), help from `option`."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.metadata.get("flag", True):
            continue
        help_text = f.metadata.get("help") or ""
        default = _field_default(f)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, dict):
            parser.add_argument(
                "--param",
                dest=f.name,
                action="append",
                default=[],
                metavar="KEY=VALUE",
                help=f"{help_text} (repeatable, e.g. --param digits=1)",
            )
            continue
        scalar, nullable = _flag_type(hints[f.name])
        if scalar is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
            continue
        parse: Callable[[str], Any] = scalar
        if nullable:
            parse = _optional(scalar)
        choices = f.metadata.get("choices")
        parser.add_argument(
            flag,
            type=parse,
            default=default,
            choices=choices,
            metavar=None if choices else scalar.__name__.upper(),
            help=f"{help_text} (default: %(default)s)",
        )


def config_from_args(cls: type[_Config], args: argparse.Namespace, **overrides: Any) -> _Config:
    """Build `cls` from parsed flags (`--param` pairs become the dict field); `overrides` win."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if not f.metadata.get("flag", True) or not hasattr(args, f.name):
            continue
        value = getattr(args, f.name)
        is_dict = f.default is dataclasses.MISSING and isinstance(_field_default(f), dict)
        values[f.name] = parse_params(value) if is_dict else value
    values.update(overrides)
    return cls(**values)


def to_flags(config: Any) -> list[str]:
    """The flags that rebuild `config` through `add_config_flags` (fields left at their default are omitted)."""
    flags: list[str] = []
    for f in dataclasses.fields(config):
        if not f.metadata.get("flag", True):
            continue
        value = getattr(config, f.name)
        default = _field_default(f)
        if value == default:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, dict):
            flags += [item for key, v in value.items() for item in ("--param", f"{key}={json.dumps(v)}")]
        elif isinstance(value, bool):
            flags.append(flag if value else "--no-" + f.name.replace("_", "-"))
        else:
            flags += [flag, "none" if value is None else str(value)]
    return flags
