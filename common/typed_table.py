"""Strict, typed tables: check a parsed TOML table against the dataclass fields that declare it.

A configuration key exists only where some frozen dataclass declares it (with its type and
default), so the declaration is the schema: adding a key is one field in one dataclass. Every
key not declared is refused with the nearest valid one suggested, every value is type-checked,
and a nested dataclass field (e.g. a program's servo settings inside an arm config) is
flattened so its keys sit in the same table. Only plain TOML values are handled: str, int,
float, bool, tuples (fixed length or `tuple[X, ...]`) and unions of those.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


class TableError(ValueError):
    """A table has an unknown key, a missing required key, or a value of the wrong type."""


@dataclass(frozen=True)
class Key:
    name: str  # the key as written in the file
    hint: Any  # resolved type annotation of the declaring field
    required: bool  # no default: the file must give it


def declared_keys(*classes: type) -> dict[str, Key]:
    """Keys of the given dataclasses (nested dataclass fields flattened), in declaration order."""
    keys: dict[str, Key] = {}
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if not f.init or f.metadata.get("table") is False:
                continue
            hint = hints[f.name]
            if isinstance(hint, type) and dataclasses.is_dataclass(hint):
                keys.update(declared_keys(hint))
                continue
            no_default = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            keys[f.name] = Key(f.name, hint, no_default)
    return keys


def suggest(word: str, choices: Iterable[str]) -> str:
    """'; did you mean 'x'?' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_table(
    table: Mapping[str, Any], keys: Mapping[str, Key], where: str, partial: bool = False
) -> dict[str, Any]:
    """The table's values checked and coerced (int -> float, list -> tuple); TableError names `where` and the key.

    `partial`: every key is optional (a table of overrides on top of defaults given elsewhere).
    """
    for name in table:
        if name not in keys:
            valid = ", ".join(sorted(keys)) or "none"
            raise TableError(f"{where} unknown key {name!r}{suggest(name, keys)} (valid keys: {valid})")
    missing = [k.name for k in keys.values() if k.required and k.name not in table and not partial]
    if missing:
        raise TableError(f"{where} missing key {missing[0]!r} ({type_name(keys[missing[0]].hint)})")
    return {name: check_value(value, keys[name].hint, f"{where} {name}") for name, value in table.items()}


def check_value(value: Any, hint: Any, where: str) -> Any:
    """`value` as `hint` wants it, or TableError('<where>: expected ..., got ...')."""
    try:
        return _coerce(value, hint)
    except _Mismatch:
        raise TableError(f"{where}: expected {type_name(hint)}, got {_describe(value)}") from None


class _Mismatch(Exception):
    pass


def _coerce(value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _coerce(value, option)
            except _Mismatch:
                continue
        raise _Mismatch
    if hint is Any:
        return value
    if hint is type(None):
        if value is None:
            return None
        raise _Mismatch
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0]) for v in value)
        if len(args) != len(value):
            raise _Mismatch
        return tuple(_coerce(v, a) for v, a in zip(value, args, strict=True))
    raise TypeError(f"typed_table cannot check values of type {hint!r}; declare a plain TOML type")


_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", type(None): "nothing"}


def type_name(hint: Any) -> str:
    """Plain words for a type annotation: 'a number', 'a list of 3 numbers', 'a string or an integer'."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(hint) if a is not type(None))
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_plural(args[0])}"
        return f"a list of {len(args)} {_plural(args[0])}"
    return _NAMES.get(hint, getattr(hint, "__name__", str(hint)))


def _plural(hint: Any) -> str:
    return {str: "strings", int: "integers", float: "numbers", bool: "booleans"}.get(hint, type_name(hint))


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, str):
        return f"the string {value!r:.60}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return f"a list {value!r:.60}"
    return f"{value!r:.60} ({type(value).__name__})"


def build(cls: type, table: Mapping[str, Any], where: str) -> Any:
    """`cls` from a flat table: checked with `check_table`, nested dataclass fields filled from their keys."""
    values = check_table(table, declared_keys(cls), where)
    return _construct(cls, values)


def _construct(cls: type, values: Mapping[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            kwargs[f.name] = _construct(hint, values)
        elif f.name in values:
            kwargs[f.name] = values[f.name]
    return cls(**kwargs)
