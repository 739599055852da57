"""What every job's typed config shares: dict round trips, typed ``section.key=value`` overrides, saving.

Job configs are frozen, keyword-only dataclasses made of small nested ones. A run starts from a named preset (a
function), then applies overrides: the common flags of its subcommand and any ``--set section.key=value``, each
parsed through the field's type hint (:func:`apply_overrides`). The resolved config is written next to the job's
outputs (:func:`save_config`) and can be read back (:func:`config_from_dict`).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from mcn import storage
from mcn.errors import MCNError
from mcn.storage import StorePath

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_NONE = {"none", "null"}


def config_to_dict(config: Any) -> dict:
    """A JSON-ready dict of a (nested) dataclass config; paths become strings, tuples lists."""

    def convert(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        return value

    return convert(config)


def _union_members(hint: Any) -> tuple[Any, ...]:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return typing.get_args(hint)
    return (hint,)


def _nested_dataclass(hint: Any) -> type | None:
    return next((c for c in _union_members(hint) if dataclasses.is_dataclass(c)), None)


def config_from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """Rebuild a nested dataclass config from :func:`config_to_dict` output (unknown keys are an error)."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = set(data) - names
    if unknown:
        raise MCNError(
            f"unknown config keys for {cls.__name__}: {sorted(unknown)}; known: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        nested = _nested_dataclass(hint)
        if nested is not None and isinstance(value, Mapping):
            value = config_from_dict(nested, value)
        elif typing.get_origin(hint) is tuple and isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as error:  # a missing required field
        raise MCNError(f"{cls.__name__}: {error}") from None


def parse_value(hint: Any, text: str, key: str = "value") -> Any:
    """``text`` as a value of type ``hint`` (str, int, float, bool, None, Literal, tuple, list, dict)."""
    members = _union_members(hint)
    if type(None) in members and text.strip().lower() in _NONE:
        return None
    errors = []
    for member in (m for m in members if m is not type(None)):
        try:
            return _parse_one(member, text.strip())
        except (ValueError, TypeError) as error:
            errors.append(str(error))
    raise MCNError(f"{key}={text!r}: {'; '.join(errors) or 'cannot be parsed'}")


def _parse_one(hint: Any, text: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is str:
        return text
    if hint is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError("expected true or false")
    if hint is int:
        return int(text)
    if hint is float:
        return float(text)
    if origin is typing.Literal:
        for choice in args:
            if str(choice) == text:
                return choice
        raise ValueError(f"expected one of {', '.join(map(str, args))}")
    if origin in (tuple, list):
        parts = [p for p in text.split(",") if p.strip()] if text else []
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(parts) != len(args):
                raise ValueError(f"expected {len(args)} comma-separated values")
            return tuple(_parse_one(a, p.strip()) for a, p in zip(args, parts))
        item = args[0] if args else str
        values = [_parse_one(item, p.strip()) for p in parts]
        return tuple(values) if origin is tuple else values
    if origin is dict or hint is dict:
        value = json.loads(text)
        if not isinstance(value, dict):
            raise ValueError("expected a JSON object")
        return value
    raise TypeError(f"values of type {hint} cannot be given on the command line")


def field_hint(cls: type, path: str) -> Any:
    """The type hint of the field at dotted ``path`` in dataclass ``cls`` (MCNError naming the known keys)."""
    hint: Any = cls
    walked = []
    for part in path.split("."):
        nested = _nested_dataclass(hint)
        if nested is None:
            raise MCNError(f"unknown config key {path!r}: {'.'.join(walked)} has no fields")
        hints = typing.get_type_hints(nested)
        names = [f.name for f in dataclasses.fields(nested) if f.init]
        if part not in names:
            where = ".".join(walked) or nested.__name__
            raise MCNError(f"unknown config key {path!r}; {where} has: {', '.join(names)}")
        hint = hints[part]
        walked.append(part)
    return hint


def apply_overrides(config: T, overrides: Mapping[str, Any]) -> T:
    """``config`` with each dotted key set to its value; string values are parsed through the type hints.

    Every override is applied to one dict and the config is built once, so validation sees the final values
    together (and a preset that needs an output path can be completed here).
    """
    if not overrides:
        return config
    cls = type(config)
    data = config_to_dict(config)
    for path, value in overrides.items():
        hint = field_hint(cls, path)
        if isinstance(value, str):
            value = parse_value(hint, value, path)
        elif dataclasses.is_dataclass(value):
            value = config_to_dict(value)
        *parents, name = path.split(".")
        node = data
        for part in parents:
            if node.get(part) is None:  # an optional section that the preset left out
                node[part] = {}
            node = node[part]
        node[name] = value
    return config_from_dict(cls, data)


def parse_assignments(items: list[str] | None) -> dict[str, str]:
    """``["a.b=1", "c=x"]`` -> ``{"a.b": "1", "c": "x"}`` (the values are parsed later, by type)."""
    parsed = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise MCNError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. --set optim.lr=3e-4")
        parsed[key.strip()] = value
    return parsed


def write_json_atomic(path: StorePath, data: Any) -> None:
    """Write JSON to ``path`` (a local path or any URL :mod:`mcn.storage` resolves) atomically."""
    storage.write_bytes(path, (json.dumps(data, indent=2, sort_keys=False) + "\n").encode())


def save_config(config: Any, path: StorePath) -> None:
    """Write the resolved config as JSON next to a job's outputs."""
    write_json_atomic(path, config_to_dict(config))
