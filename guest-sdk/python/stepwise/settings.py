"""Settings JSON into a dataclass, with errors that name the field.

Supported annotations: ``str``, ``int``, ``float``, ``bool``, ``Any``,
``list[T]``, ``dict[str, T]``, ``Optional[T]`` (``T | None``) and nested
dataclasses. A field with a default may be left out; a field the dataclass
does not have is an error (a typo in the settings should not pass silently).
"""

import dataclasses
import sys
import types
import typing
from typing import Any, Type, TypeVar

from .errors import PermanentError

T = TypeVar("T")


def parse(cls: Type[T], value: Any, what: str = "settings") -> T:
    """``value`` (parsed JSON) as ``cls``; raises :class:`PermanentError`
    saying ``invalid settings at `tables[0].name`: expected a string, got 3``."""
    return _convert(cls, value, [], what)


def _where(path: list, what: str) -> str:
    if not path:
        return f"invalid {what}"
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return f"invalid {what} at `{text}`"


def _fail(path: list, what: str, message: str):
    raise PermanentError(f"{_where(path, what)}: {message}")


_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def _convert(tp: Any, value: Any, path: list, what: str) -> Any:
    if tp is Any or tp is object:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or (sys.version_info >= (3, 10) and origin is types.UnionType):
        if value is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return _convert(rest[0], value, path, what)
        for option in rest:
            try:
                return _convert(option, value, path, what)
            except PermanentError:
                pass
        _fail(path, what, f"{value!r} fits none of {', '.join(map(_name, rest))}")
    if origin in (list, typing.List):
        if not isinstance(value, list):
            _fail(path, what, f"expected a list, got {_show(value)}")
        item = args[0] if args else Any
        return [_convert(item, v, path + [i], what) for i, v in enumerate(value)]
    if origin in (dict, typing.Dict):
        if not isinstance(value, dict):
            _fail(path, what, f"expected an object, got {_show(value)}")
        item = args[1] if len(args) == 2 else Any
        return {k: _convert(item, v, path + [k], what) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return _dataclass(tp, value, path, what)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp in (str, bool):
        if type(value) is tp:
            return value
    else:
        _fail(path, what, f"the step's settings type uses {tp!r}, which the SDK cannot parse")
    _fail(path, what, f"expected {_NAMES[tp]}, got {_show(value)}")


def _dataclass(cls: Any, value: Any, path: list, what: str) -> Any:
    if not isinstance(value, dict):
        _fail(path, what, f"expected an object, got {_show(value)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(value) - set(fields))
    if unknown:
        known = ", ".join(f"`{n}`" for n in fields) or "none"
        _fail(path, what, f"unknown field `{unknown[0]}`; the fields are {known}")
    kwargs = {}
    for name, f in fields.items():
        if name in value:
            kwargs[name] = _convert(hints.get(name, Any), value[name], path + [name], what)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            _fail(path, what, f"missing field `{name}`")
    return cls(**kwargs)


def _name(tp: Any) -> str:
    return _NAMES.get(tp, getattr(tp, "__name__", str(tp)))


def _show(value: Any) -> str:
    kind = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"the number {value}"
    return kind.get(type(value), type(value).__name__)
