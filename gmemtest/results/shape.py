"""The shape of a JSON document the tool reads back (a cell's record, a baseline, a build
manifest), checked once where it is read: a document of another shape is one line naming the
first place it differs, never an exception deep in a renderer."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gmemtest.errors import GmemtestError


@dataclass(frozen=True)
class ListOf:
    item: Any


@dataclass(frozen=True)
class MapOf:
    """An object with any string keys, each value of one shape."""

    value: Any


@dataclass(frozen=True)
class Maybe:
    """The shape, or null."""

    shape: Any


def check(value: Any, shape: Any, where: str) -> None:
    """Raise a one-line GmemtestError unless ``value`` has ``shape``: a type or a tuple of
    types (a bool is no number), ListOf, MapOf, Maybe, or a dict of exactly these keys."""
    if isinstance(shape, Maybe):
        if value is not None:
            check(value, shape.shape, where)
    elif isinstance(shape, ListOf):
        _is(value, list, where)
        for i, v in enumerate(value):
            check(v, shape.item, f"{where}[{i}]")
    elif isinstance(shape, MapOf):
        _is(value, dict, where)
        for k, v in value.items():
            check(v, shape.value, f"{where}.{k}")
    elif isinstance(shape, dict):
        _is(value, dict, where)
        if set(value) != set(shape):
            extra, missing = sorted(set(value) - set(shape)), sorted(set(shape) - set(value))
            raise GmemtestError(f"{where}: " + "; ".join(
                [*([f"unexpected key(s) {', '.join(extra)}"] if extra else []),
                 *([f"missing key(s) {', '.join(missing)}"] if missing else [])]))
        for k, s in shape.items():
            check(value[k], s, f"{where}.{k}")
    else:
        _is(value, shape, where)


def _is(value: Any, kind: type | tuple[type, ...], where: str) -> None:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join("null" if k is type(None) else _NAMES.get(k, k.__name__)
                            for k in kinds)
        got = _NAMES.get(type(value), type(value).__name__)
        raise GmemtestError(f"{where}: expected {names}, got {got}")


_NAMES = {dict: "an object", list: "a list", str: "a string", int: "a whole number",
          float: "a number", bool: "true or false", type(None): "null"}


def read_json(path: Path, what: str, missing: str, *, name: str | None = None,
              hint: str = "") -> Any:
    """The JSON document at ``path``, parsed (its shape is the caller's to check): one line
    saying ``missing`` when there is no such file, and that it is not ``what`` (with
    ``hint``, what to do) when it cannot be read or parsed. ``name``: how the line names the
    file (default its path)."""
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        raise GmemtestError(missing) from None
    except (OSError, ValueError, RecursionError) as e:
        raise GmemtestError(f"{name or path}: not {what} ({type(e).__name__}: {e}){hint}") \
            from None
