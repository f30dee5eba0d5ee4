"""Build typed dataclass configs from plain dicts, failing at once with the key, the value and
what is allowed. Field metadata may carry `choices`, `ge`, `gt`, `le`, `lt`; on a list field they
apply to each element."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar, Union

from robopol.errors import ConfigError

T = TypeVar("T")


def field(default: Any = dataclasses.MISSING, *, choices: tuple[Any, ...] | None = None,
          ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None,
          default_factory: Any = dataclasses.MISSING, doc: str = "") -> Any:
    meta = {k: v for k, v in dict(choices=choices, ge=ge, gt=gt, le=le, lt=lt, doc=doc).items() if v not in (None, "")}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def build(cls: type[T], data: Any, path: str = "") -> T:
    """Recursively construct `cls` from `data`, rejecting unknown keys and wrong types or ranges."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"'{_join(path, unknown[0])}'"
        raise ConfigError(f"unknown config key {where}; allowed keys under '{path or '<root>'}': {', '.join(sorted(fields))}")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _check(_coerce(hints[name], data[name], _join(path, name)), f.metadata, _join(path, name))
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except TypeError as exc:  # a required field was left out
        raise ConfigError(f"{path or 'config'}: {exc}") from None


def to_dict(obj: Any) -> Any:
    """Plain (JSON-ready) dict of a config dataclass."""
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


def _variant(tp: type, value: Any, path: str) -> type:
    """A base config with `variants()` (name -> subclass) is resolved by its discriminator key."""
    variants = getattr(tp, "variants", None)
    if variants is None or not isinstance(value, dict):
        return tp
    key = tp.discriminator
    options = variants()
    chosen = value.get(key)
    if chosen not in options:
        raise ConfigError(f"{_join(path, key)}: {chosen!r} is not allowed; choose one of: {', '.join(sorted(options))}")
    return options[chosen]


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, path)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if dataclasses.is_dataclass(tp):
        return build(_variant(tp, value, path), value, path)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        item = args[0] if args else Any
        return [_coerce(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{path}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{path}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{path}: expected a string, got {value!r}")
    raise ConfigError(f"{path}: cannot read a value of type {_type_name(tp)} from {value!r}")


def _check(value: Any, meta: typing.Mapping[str, Any], path: str) -> Any:
    if isinstance(value, list):
        return [_check(v, meta, f"{path}[{i}]") for i, v in enumerate(value)]
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{path}: {value!r} is not allowed; choose one of: {', '.join(map(str, choices))}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        for key, ok, word in (("ge", value >= meta.get("ge", value), ">="), ("gt", "gt" not in meta or value > meta["gt"], ">"),
                              ("le", value <= meta.get("le", value), "<="), ("lt", "lt" not in meta or value < meta["lt"], "<")):
            if key in meta and not ok:
                raise ConfigError(f"{path}: {value!r} is out of range; must be {word} {meta[key]}")
    return value
