"""Keyword overrides for the dataclass configs of the train and evaluate stages, and their type check."""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any, TypeVar

from .errors import InstaError

C = TypeVar("C")


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
