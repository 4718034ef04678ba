"""Command-line flags generated from a stage's config dataclass, and ``--config FILE.yaml``: the dataclass
(``TrainConfig``, ``EvalConfig``, ``MixtureConfig``, ``AlignConfig``) is the one source of names, types, defaults
and help. A field ``lora_r: int = 8`` with ``metadata={"help": ...}`` becomes ``--lora-r`` (an integer, default 8);
a bool becomes ``--x/--no-x``. Every generated flag defaults to ``argparse.SUPPRESS``, so :func:`build_config`
knows which were given and applies the precedence flags > file > dataclass defaults.

Field metadata read here: ``help``, ``choices``, ``group`` (the ``--help`` section), ``minimum`` (1 for positive
integers, also checked by :func:`insta.util.options.read_section`), ``metavar``."""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

from ..errors import InstaError

C = TypeVar("C")
#: the namespace attribute naming the fields :func:`add_config_flags` made flags for
FIELDS_ATTR = "_config_fields"

def flag_name(name: str) -> str:
    """``lora_r`` -> ``--lora-r``."""
    return "--" + name.replace("_", "-")


def _base_type(tp: Any) -> Any:
    """``int | None`` -> ``int``; a union of several non-None types stays as it is."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _describe_default(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return " ".join(_describe_default(v) for v in value) or "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, str) and (not value or not value.isprintable()):
        return repr(value)
    return str(value)


def _argparse_type(tp: Any, minimum: float | None) -> Callable[[str], Any] | None:
    from ._common import finite_float, non_negative_int, positive_int

    tp = _base_type(tp)
    if tp is int:
        return positive_int if minimum == 1 else non_negative_int if minimum == 0 else int
    if tp is float:
        return finite_float
    if tp is str:
        return str
    return None


def add_config_flags(parser: argparse.ArgumentParser, cls: type, *, skip: Iterable[str] = (),
                     aliases: Mapping[str, Sequence[str]] | None = None,
                     types_: Mapping[str, Callable[[str], Any]] | None = None,
                     required: Iterable[str] = (), help_: Mapping[str, str] | None = None,
                     groups: dict[str, Any] | None = None) -> None:
    """Add one flag per field of the dataclass ``cls`` (those not in ``skip``) to ``parser``, grouped by the
    fields' ``metadata["group"]``. ``aliases`` adds older flag names (``{"learning_rate": ["--lr"]}``);
    ``types_`` overrides the value parser of a field (``--lora-target-modules a,b``); ``required`` fields must
    be given as flags; ``help_`` replaces a field's help for this command; ``groups`` holds argument groups the
    command already made (by title), to add to."""
    aliases, types_, help_, skip, required = aliases or {}, types_ or {}, help_ or {}, set(skip), set(required)
    hints = typing.get_type_hints(cls)
    groups = {} if groups is None else groups
    generated: list[str] = []
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        meta, tp = f.metadata, hints.get(f.name, Any)
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        text = help_.get(f.name, meta.get("help", ""))
        if default is not None and f.name not in required and "(default" not in text:
            text = f"{text} (default: {_describe_default(default)})".strip()
        target = parser
        group = meta.get("group")
        if group:
            if group not in groups:
                groups[group] = parser.add_argument_group(group)
            target = groups[group]
        names = [flag_name(f.name), *aliases.get(f.name, ())]
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": text}
        base = _base_type(tp)
        if base is bool:
            kw["action"] = argparse.BooleanOptionalAction
            target.add_argument(*names, **kw)
            generated.append(f.name)
            continue
        if f.name in required:
            kw["required"] = True
        if meta.get("choices"):
            kw["choices"] = list(meta["choices"])
        if meta.get("metavar"):
            kw["metavar"] = meta["metavar"]
        if f.name in types_:
            kw["type"] = types_[f.name]
        elif typing.get_origin(base) in (list, tuple) or base in (list, tuple):
            kw["action"] = "append"  # repeatable: --stop A --stop B
            kw["metavar"] = kw.get("metavar") or f.name.upper()
        else:
            conv = _argparse_type(base, meta.get("minimum"))
            if conv is None:
                continue  # a mapping or another type without a flag: only the config file sets it
            kw["type"] = conv
        target.add_argument(*names, **kw)
        generated.append(f.name)
    generated += [n for n in (parser.get_default(FIELDS_ATTR) or ()) if n not in generated]
    parser.set_defaults(**{FIELDS_ATTR: tuple(generated)})  # what given_flags may read


def add_config_file_flag(parser: argparse.ArgumentParser, what: str) -> None:
    """``--config FILE.yaml``: a mapping of the stage's field names; flags given on the command line override it."""
    parser.add_argument("--config", metavar="FILE.yaml", default=None,
                        help=f"YAML/JSON mapping of {what} options (the config's field names); the flags given "
                        "here override it, it overrides the defaults")


def _config_mapping(path: str, what: str) -> dict[str, Any]:
    """A ``--config`` file's mapping (empty for an empty file); a missing or non-mapping file is one line."""
    from pathlib import Path

    from ..util.fileio import load_yaml

    if not Path(path).is_file():
        raise InstaError(f"config file {path!r} does not exist")
    raw = load_yaml(path, "config file")
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(k, str) for k in raw):
        raise InstaError(f"config file {path} must hold a mapping of options ({what}: value)")
    return raw


def read_config_file(path: str, cls: type, ignore: Iterable[str] = ()) -> dict[str, Any]:
    """The checked values of a ``--config`` file for the dataclass ``cls``: unknown keys (with the closest name)
    and values of the wrong type are one error line naming the file; keys in ``ignore`` are dropped."""
    from ..util.options import check_keys, checked, value_matches

    raw = _config_mapping(path, "field")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    raw = {k: v for k, v in raw.items() if k not in set(ignore)}
    check_keys(raw, fields, f"config file {path}")
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        tp = hints.get(key, Any)
        if isinstance(value, str) and value_matches(1.5, tp) and not value_matches(value, tp):
            try:
                value = float(value)  # YAML reads 1e-6 (no dot) as a string
            except ValueError:
                pass
        values[key] = checked(value, tp, key, minimum=fields[key].metadata.get("minimum"),
                              prefix=f"config file {path}: ")
    return values


def given_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The generated flags present on the command line (the others were suppressed)."""
    return {name: getattr(args, name) for name in getattr(args, FIELDS_ATTR, ()) if hasattr(args, name)}


def build_config(cls: type[C], args: argparse.Namespace, what: str, *, extra: Mapping[str, Any] | None = None,
                 merge: Callable[[dict[str, Any], dict[str, Any]], None] | None = None,
                 ignore: Iterable[str] = ()) -> C:
    """``cls`` from its defaults, then ``args.config`` (if given), then the flags given and ``extra`` (values the
    command computed from its own flags); types are checked and ``validate()`` runs. ``merge(file_values,
    flag_values)`` may combine the two (e.g. extend a file's list) before the flags win; ``ignore``: file keys
    dropped (e.g. derived values a run's metadata records)."""
    from ..util.options import check_types

    file_values = read_config_file(args.config, cls, ignore) if getattr(args, "config", None) else {}
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    flags = given_flags(args)
    flags.update(extra or {})
    if getattr(args, "quiet", False) and "progress" in names:
        flags["progress"] = False  # --quiet means --no-progress
    if merge is not None:
        merge(file_values, flags)
    values = {**file_values, **flags}
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        tp = hints.get(key, Any)
        if isinstance(value, list) and (typing.get_origin(_base_type(tp)) is tuple or _base_type(tp) is tuple):
            values[key] = tuple(value)
    try:
        config = cls(**values)
    except TypeError as err:
        raise InstaError(f"{what} options: {err}") from None
    check_types(config, what)
    validate = getattr(config, "validate", None)
    if callable(validate):
        validate()
    return config


# ---------------------------------------------------------------- --config for commands without a stage dataclass

#: Set on a subparser whose ``--config`` file is applied generically (:func:`apply_options_file`).
OPTIONS_FILE_ATTR = "_insta_options_file"


def add_options_file_flag(parser: argparse.ArgumentParser, what: str) -> None:
    """``--config FILE.yaml`` for a command whose options are its flags: keys are the flags' long names
    (``target_examples`` or ``target-examples``); flags given on the command line override the file."""
    parser.add_argument("--config", metavar="FILE.yaml", default=None, dest="options_file",
                        help=f"YAML/JSON mapping of {what} options (the long flag names, - or _); the flags given "
                        "here override it, it overrides the defaults")
    setattr(parser, OPTIONS_FILE_ATTR, True)


def _file_value(action: argparse.Action, value: Any, where: str) -> Any:
    """One option's value from a config file, checked as argparse would check the flag's."""
    if action.nargs == 0 or isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise InstaError(f"{where} must be true or false (got {value!r})")
        return value
    many = isinstance(action, argparse._AppendAction)
    items = value if many and isinstance(value, list) else [value]
    out = []
    for item in items:
        if isinstance(item, (dict, list)) or item is None or isinstance(item, bool):
            raise InstaError(f"{where} must be {'a list of values' if many else 'a single value'} (got {item!r})")
        if action.type is not None:
            try:
                item = action.type(str(item))
            except (argparse.ArgumentTypeError, TypeError, ValueError) as err:
                raise InstaError(f"{where}: {err or 'invalid value'} (got {item!r})") from None
        elif not isinstance(item, str):
            item = _text_value(action, item, where)
        if action.choices is not None and item not in action.choices:
            raise InstaError(f"{where} must be one of {', '.join(map(str, action.choices))} (got {item!r})")
        out.append(item)
    return out if many else out[0]


def _text_value(action: argparse.Action, item: Any, where: str) -> str:
    """A number given for a text option: its text where the option's default is a number written as text
    (``k: 5`` for ``-k 5``), else an error: ``instruction: 5``, ``json: 5`` (a file named 5) or ``stop: 5`` are
    slips, not values (quote a number that is meant as text)."""
    default = action.default[0] if isinstance(action.default, list) and action.default else action.default
    if isinstance(default, str) and default.strip().lstrip("-").replace(".", "", 1).isdigit():
        return str(item)
    raise InstaError(f"{where} must be text (got {item!r}; quote it if the number is meant as text)")


def apply_options_file(parser: argparse.ArgumentParser, path: str) -> None:
    """Make the options in ``path`` the defaults of ``parser`` (re-parsing then lets the flags override them)."""
    raw = _config_mapping(path, "option")
    by_name = {}
    for action in parser._actions:
        for opt in action.option_strings:
            if opt.startswith("--") and action.dest not in ("help", "options_file"):
                by_name[opt[2:].replace("-", "_")] = action
        if action.dest not in ("help", "options_file") and not isinstance(action, argparse._SubParsersAction):
            by_name.setdefault(action.dest, action)  # e.g. -k (no long name): its dest "k"; a positional's name
    defaults = {}
    for key, value in raw.items():
        action = by_name.get(key.replace("-", "_"))
        if action is None:
            import difflib

            close = difflib.get_close_matches(key.replace("-", "_"), list(by_name), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise InstaError(f"config file {path}: unknown option {key!r}{hint}")
        value = _file_value(action, value, f"config file {path}: {key}")
        if isinstance(action, argparse._StoreFalseAction):
            value = not value if key.replace("-", "_") == action.option_strings[0][2:].replace("-", "_") else value
        defaults[action.dest] = value
    parser.set_defaults(**defaults)
