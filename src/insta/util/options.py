"""Type checks of configuration, written once: keyword overrides of the stage dataclasses (train, evaluate,
align) and the readers of config files (experiment, transfer) use the same checks and the same one-line errors."""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from typing import Any, Iterable, Mapping, TypeVar

from ..errors import InstaError

C = TypeVar("C")


def option(default: Any, help: str, group: str | None = None, **meta: Any) -> Any:
    """A dataclass field with its help text and, for the generated CLI (:mod:`insta.commands._config`), its
    ``--help`` group and optional ``choices``, ``minimum`` and ``metavar``; a list or dict default is copied per
    instance."""
    metadata = {"help": help, "group": group, **meta}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def apply_overrides(config: C, overrides: dict[str, Any], what: str) -> C:
    """A copy of ``config`` with each override set (an unknown name is a user error), its types checked and its
    ``validate()`` run; the caller's ``config`` is left as it was."""
    config = dataclasses.replace(config)
    for key, value in overrides.items():
        if not hasattr(config, key):
            raise InstaError(f"unknown {what} option {key!r}")
        setattr(config, key, value)
    check_types(config, what)
    config.validate()
    return config


def check_types(config: Any, what: str) -> None:
    """A one-line error when a field of the dataclass ``config`` holds a value of the wrong type for its
    annotation (``seed: "abc"``, ``bf16: "false"``; an int is fine where a float is expected, a bool never
    counts as a number). A number field given as a string in exponent notation is converted: YAML reads
    ``lr: 1e-6`` (no dot) as the string ``"1e-6"``."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        tp = hints.get(f.name, Any)
        if isinstance(value, str) and value_matches(1.5, tp) and _FLOAT.fullmatch(value.strip()):
            value = float(value)
            setattr(config, f.name, value)
        if not value_matches(value, tp):
            raise InstaError(f"{what} option {f.name!r} must be {describe_type(tp)} (got {value!r})")
        if not_finite(value):
            raise InstaError(f"{what} option {f.name!r} must be a finite number (got {value!r})")


def not_finite(value: Any) -> bool:
    """Whether ``value`` is a float NaN or infinity: no option means anything by those (``--lr nan``,
    ``epochs: .inf``, ``reliability_min: .nan``), so every type check refuses them."""
    return isinstance(value, float) and not math.isfinite(value)


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def value_matches(value: Any, tp: Any) -> bool:
    """Whether ``value`` fits the type annotation ``tp`` (bool, int, float, str, None, unions, lists, tuples,
    dicts; anything else is not checked)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(value_matches(value, a) for a in typing.get_args(tp))
    if tp is Any:
        return True
    if tp is type(None) or tp is None:
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return not args or all(value_matches(v, args[0]) for v in value)
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    return True


def describe_type(tp: Any) -> str:
    """``int``, ``a list of str``, ``float or None`` ... for error messages."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe_type(a) for a in typing.get_args(tp))
    if tp is type(None) or tp is None:
        return "None"
    if origin in (list, tuple) or tp in (list, tuple):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        plural = {str: "strings", int: "integers", float: "numbers", bool: "booleans"}
        return f"a list of {plural.get(args[0], describe_type(args[0]))}" if args else "a list"
    if origin is dict or tp is dict:
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def set_dotted(raw: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Apply command-line overrides to a parsed config mapping in place: ``{"eval.n": 10}`` sets ``raw["eval"]["n"]``
    (creating the section), a plain key sets a top-level one; ``None`` values (options not given) are skipped."""
    for key, val in (overrides or {}).items():
        if val is None:
            continue
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[leaf] = val
    return raw


# ---------------------------------------------------------------- config files (experiment, transfer)


def check_keys(given: Mapping[str, Any], allowed: Iterable[str], where: str, prefix: str = "") -> None:
    """One error line naming every key of ``given`` not in ``allowed`` (with the closest allowed name), e.g.
    ``unknown key(s) in <where>: mixtur (did you mean mixture?)``; ``prefix`` starts the message."""
    allowed = sorted(allowed)
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        import difflib

        hints = []
        for u in unknown:
            close = difflib.get_close_matches(u, allowed, 1)
            hints.append(f"{u} (did you mean {close[0]}?)" if close else u)
        raise InstaError(f"{prefix}unknown key(s) in {where}: {', '.join(hints)}")


def checked(value: Any, tp: Any, name: str, *, minimum: float | None = None, prefix: str = "") -> Any:
    """``value`` when it fits the annotation ``tp`` (see :func:`value_matches`) and is at least ``minimum``; else
    one error line naming it: ``seed must be an integer (got 'abc')``."""
    if not value_matches(value, tp):
        raise InstaError(f"{prefix}{name} must be {describe_type(tp)} (got {value!r})")
    if not_finite(value):
        raise InstaError(f"{prefix}{name} must be a finite number (got {value!r})")
    if minimum is not None and value is not None and value < minimum:
        raise InstaError(f"{prefix}{name} must be at least {minimum} (got {value!r})")
    return value


def checked_get(section: Mapping[str, Any], key: str, default: Any, tp: Any, where: str = "", *,
                minimum: float | None = None, prefix: str = "") -> Any:
    """``section[key]`` (or ``default``) through :func:`checked`, named ``where.key``."""
    return checked(section.get(key, default), tp, f"{where}.{key}" if where else key, minimum=minimum, prefix=prefix)


def checked_mapping(value: Any, name: str, prefix: str = "") -> dict[str, Any]:
    """A config section: ``None`` is empty, anything but a mapping is an error."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InstaError(f"{prefix}'{name}' must be a mapping")
    return value


def read_section(cls: type[C], raw: Any, section: str, *, exclude: Iterable[str] = (), where: str | None = None,
                 prefix: str = "") -> C:
    """The dataclass ``cls`` from a config section, checked now: unknown keys (and ``exclude``, the fields the
    caller sets itself), values of the wrong type (``section.key must be ...``; a number in exponent notation
    that YAML read as a string is the number; a list becomes a tuple where the field is one) or below a field's
    ``metadata["minimum"]``, then the class's own ``validate()``. ``where`` names the section
    in the unknown-key message (default ``section``)."""
    raw = checked_mapping(raw, section, prefix)
    fields = {f.name for f in dataclasses.fields(cls)} - set(exclude)
    check_keys(raw, fields, where or section, prefix)
    hints = typing.get_type_hints(cls)
    minimum = {f.name: f.metadata.get("minimum") for f in dataclasses.fields(cls)}
    values = {}
    for key, value in raw.items():
        tp = hints.get(key, Any)
        if isinstance(value, str) and value_matches(1.5, tp) and _FLOAT.fullmatch(value.strip()):
            value = float(value)
        value = checked(value, tp, f"{section}.{key}", minimum=minimum.get(key), prefix=prefix)
        is_tuple = typing.get_origin(tp) is tuple or any(typing.get_origin(a) is tuple for a in typing.get_args(tp))
        values[key] = tuple(value) if is_tuple and isinstance(value, list) else value
    try:
        obj = cls(**values)
        validate = getattr(obj, "validate", None)
        if callable(validate):
            validate()
    except (InstaError, TypeError) as err:
        raise InstaError(f"{prefix}{section}: {err}") from None
    return obj
