"""Strict mappings: the one loader behind every schema of the project.

params.yaml (basic.pipeline.config), launch specs (basic.pipeline.launch), download and checkpoint
manifests (basic.full) and the benchmark map (basic.eval.benchmarks) are YAML mappings read into frozen
dataclasses. `build(cls, data, where)` refuses an unknown key (naming its key path and the closest valid
name: "profiles.mini.pretrain.learnig_rate: unknown key; did you mean learning_rate?"), a missing key and
a value of the wrong type; `check_keys` does the key part for mappings that are not dataclasses. Each
caller passes its own error class, so its users catch what they already catch.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, fields
from typing import Any


class SchemaError(ValueError):
    """A mapping that does not fit its schema; the message names the key path."""


def _join(where: str, key: object) -> str:
    return f"{where}.{key}" if where else str(key)


def suggestion(name: str, options: Iterable[str]) -> str:
    """'; did you mean X?' for the closest of `options` to `name`, or ''."""
    close = difflib.get_close_matches(str(name), list(options), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def check_keys(
    data: Any,
    allowed: Iterable[str],
    where: str,
    required: Iterable[str] = (),
    error: type[Exception] = SchemaError,
) -> Mapping:
    """`data` if it is a mapping with only `allowed` keys and every `required` one, else `error`."""
    if not isinstance(data, Mapping):
        raise error(f"{where or 'top level'}: expected a mapping, got {data!r}")
    allowed = list(allowed)
    for key in data:
        if key not in allowed:
            raise error(
                f"{_join(where, key)}: unknown key{suggestion(key, allowed)} (allowed: {', '.join(sorted(allowed))})"
            )
    for key in required:
        if key not in data:
            raise error(f"{_join(where, key)}: missing")
    return data


def type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def check_type(value: Any, tp: Any, path: str, error: type[Exception] = SchemaError) -> Any:
    """`value` as type `tp` (scalars, unions, list, tuple, dict, Mapping, Any), or `error` naming `path`.
    An int is accepted (and converted) where a float is expected; a bool is never an int."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return check_type(value, option, path, error)
            except error:
                pass
        raise error(f"{path}: expected {' or '.join(map(type_name, args))}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise error(f"{path}: expected a list, got {value!r}")
        checked = [
            check_type(v, args[0] if args else Any, f"{path}[{i}]", error) for i, v in enumerate(value)
        ]
        return checked if origin is list else tuple(checked)
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise error(f"{path}: expected a mapping, got {value!r}")
        key_type, value_type = args or (Any, Any)
        return {
            check_type(k, key_type, f"{path} key", error): check_type(v, value_type, _join(path, k), error)
            for k, v in value.items()
        }
    if tp is type(None):
        if value is not None:
            raise error(f"{path}: expected nothing (null), got {value!r}")
        return None
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float) and isinstance(value, bool) or not isinstance(value, tp):
        raise error(f"{path}: expected {type_name(tp)}, got {value!r}")
    return value


def build(cls: type, data: Any, where: str, error: type[Exception] = SchemaError, **given: Any) -> Any:
    """A `cls` dataclass from mapping `data`: unknown keys (with the closest valid name), missing keys and
    wrong types are `error`s naming the key path under `where`. `given` fields are set by the caller."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls) if f.name not in given]
    required = [
        f.name
        for f in fields(cls)
        if f.name not in given and f.default is MISSING and f.default_factory is MISSING
    ]
    check_keys(data, names, where, required, error)
    values = dict(given)
    for name in names:
        if name in data:
            values[name] = check_type(data[name], hints[name], _join(where, name), error)
    return cls(**values)
