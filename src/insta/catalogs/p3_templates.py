"""promptsource templates, read and rendered safely: the YAML of a ``templates.yaml`` file, a template's
instruction (its input side with placeholders), and the sandboxed Jinja renderer that applies a template to a row.

:mod:`insta.catalogs.p3` builds the P3 catalog (task ids, pools, example sources) on top of these. Templates come
from downloaded files, so they are parsed with a safe YAML loader and rendered in Jinja's sandbox (see
:class:`Renderer` and :func:`render_error`).
"""
from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from ..errors import InstaError
from ..util.helpers import stable_int
from ..util.textsafe import safe_text

PIPE_PROTECTOR = "3ed2dface8203c4c9dfb1a5dc58e41e0"  # promptsource's stand-in for "|||" inside row values
_KEYWORDS = frozenset({"not", "and", "or", "if", "else", "in", "is", "true", "false", "none", "True", "False",
                       "None", "loop", "range", "zip", "namespace"})


# ---------------------------------------------------------------- YAML


class TemplateLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """A safe loader that reads promptsource's ``!Template`` / ``!TemplateMetadata`` objects as mappings."""


def _mapping(loader: yaml.Loader, node: yaml.Node) -> dict:
    return loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]


TemplateLoader.add_constructor("!Template", _mapping)
TemplateLoader.add_constructor("!TemplateMetadata", _mapping)


# ---------------------------------------------------------------- instructions

_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}|\|\|\|", re.S)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\s*\.\s*[A-Za-z_][A-Za-z0-9_]*)*")
_STRING = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", re.S)


def input_side(jinja: str) -> str:
    """The part of a template before its first ``|||`` that is not inside a Jinja tag."""
    for m in _TAG.finditer(jinja):
        if m.group(0) == "|||":
            return jinja[: m.start()]
    return jinja


def placeholder(expr: str) -> str:
    """``[name]`` for the main variable of a ``{{ expr }}`` (a string literal stays as its text)."""
    e = expr.strip().strip("-+").strip()
    lit = re.fullmatch(r"'([^']*)'|\"([^\"]*)\"", e)
    if lit:
        return lit.group(1) if lit.group(1) is not None else lit.group(2)
    e = _STRING.sub(" ", e)
    for m in _IDENT.finditer(e):
        before = e[: m.start()].rstrip()
        if before.endswith(("|", ".")) or re.search(r"(^|\s)is$", before):
            continue  # a filter, a method, or a test
        parts = [p.strip() for p in m.group(0).split(".")]
        if e[m.end():].lstrip().startswith("("):
            parts = parts[:-1]  # drop a called method (``text.split(...)``) or function
        if parts and parts[0] not in _KEYWORDS:
            return f"[{'.'.join(parts)}]"
    return ""


def template_instruction(jinja: str) -> str:
    """A template's instruction: its input side with placeholders, tags removed, whitespace collapsed."""

    def sub(m: re.Match) -> str:
        tok = m.group(0)
        return placeholder(tok[2:-2]) if tok.startswith("{{") else ""

    text = " ".join(_TAG.sub(sub, input_side(jinja)).split())
    # ``{{ x[0]|upper }}{{ x[1:] }}`` renders one value in two pieces: one placeholder, not two
    return re.sub(r"(\[[^\]\s]+\])(?:\1)+", r"\1", text)


# ---------------------------------------------------------------- parsing


def parse_file(path: Path) -> list[dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as fh:
            doc = yaml.load(fh, Loader=TemplateLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InstaError(f"malformed P3 templates file {path}: {first}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InstaError(f"cannot read P3 templates file {path}: {err}") from None
    if doc is None:
        return []
    templates = doc.get("templates") if isinstance(doc, dict) else None
    if not isinstance(templates, dict):
        raise InstaError(f"malformed P3 templates file {path}: no 'templates' mapping")
    out = []
    for key, tpl in templates.items():
        if not isinstance(tpl, dict) or not isinstance(tpl.get("jinja"), str):
            continue
        meta = tpl.get("metadata") if isinstance(tpl.get("metadata"), dict) else {}
        instruction = template_instruction(tpl["jinja"])
        if not instruction:
            continue
        out.append({
            "id": str(tpl.get("id") or key),
            "name": str(tpl.get("name") or key),
            "jinja": tpl["jinja"],
            "answer_choices": tpl.get("answer_choices"),
            "original_task": meta.get("original_task"),
            "choices_in_prompt": meta.get("choices_in_prompt"),
            "metrics": list(meta.get("metrics") or []),
            "languages": list(meta.get("languages") or []),
            "instruction": instruction,
        })
    return out


_STR_FIELDS = ("id", "name", "jinja", "instruction")
_LIST_FIELDS = ("metrics", "languages")


def valid_summary(templates: Any) -> bool:
    """Whether cached data has the shape :func:`parse_file` returns (anything else is parsed again)."""
    if not isinstance(templates, list):
        return False
    for t in templates:
        if not isinstance(t, dict) or set(t) != {*_STR_FIELDS, *_LIST_FIELDS, "answer_choices", "original_task",
                                                   "choices_in_prompt"}:
            return False
        if not all(isinstance(t[k], str) for k in _STR_FIELDS) or not t["instruction"]:
            return False
        if not (t["answer_choices"] is None or isinstance(t["answer_choices"], str)):
            return False
        if not all(isinstance(t[k], list) for k in _LIST_FIELDS):
            return False
    return True


# ---------------------------------------------------------------- examples


def _most_frequent(items):  # promptsource's filter
    if not items:
        return None
    counts = Counter(items).most_common()
    return [c for c, n in counts if n == counts[0][1]]


def _sandbox_env():
    """A Jinja sandbox that refuses unsafe attribute access outright instead of rendering it as empty."""
    from jinja2 import BaseLoader
    from jinja2.sandbox import SandboxedEnvironment, SecurityError

    class StrictSandbox(SandboxedEnvironment):
        def unsafe_undefined(self, obj: Any, attribute: str):
            raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe")

    return StrictSandbox(loader=BaseLoader())


class Renderer:
    """promptsource's Jinja environment, sandboxed, with a reproducible ``choice`` filter.

    Templates come from downloaded files, so they run in Jinja's sandbox: no access to ``__``-attributes,
    function globals or other internals (the ``cycler.__init__.__globals__.os`` route to a shell) and no unsafe
    callables. Jinja's *immutable* sandbox is not used: promptsource templates build lists and dicts with
    ``.append``/``.update``/``.pop`` (e2e_nlg_cleaned, scan, docred, acronym_identification, ...), which it
    refuses; the plain sandbox allows those and closes the same code-execution routes.
    """

    def __init__(self) -> None:
        self.rng = random.Random(0)
        self.env = _sandbox_env()
        self.env.globals.update(zip=zip)
        self.env.filters.update(highlight=lambda s: s, most_frequent=_most_frequent,
                                choice=lambda seq: self.rng.choice(seq))
        self._compiled: dict[str, Any] = {}

    def _tpl(self, text: str):
        if text not in self._compiled:
            self._compiled[text] = self.env.from_string(text)
        return self._compiled[text]

    def apply(self, template: dict, row: dict, seed: str) -> tuple[str, str, list[str] | None]:
        """(input, target, options) of a template applied to a row."""
        self.rng.seed(stable_int(seed))
        protected = {k: v.replace("|||", PIPE_PROTECTOR) if isinstance(v, str) else v for k, v in row.items()}
        options = None
        if template.get("answer_choices"):
            text = self._tpl(template["answer_choices"]).render(**protected)
            options = [c.strip().replace(PIPE_PROTECTOR, "|||") for c in text.split("|||")]
        rendered = self._tpl(template["jinja"]).render(**protected, answer_choices=options)
        parts = [p.replace(PIPE_PROTECTOR, "|||").strip() for p in rendered.split("|||")]
        return parts[0], (parts[1] if len(parts) > 1 else ""), options


def render_error(err: Exception, template: dict, templates_file: Path | str, where: str) -> InstaError:
    """The one-line error for a template that fails: refused by the sandbox, malformed, or failing on a row.

    A template the sandbox refuses is never retried or skipped: the command stops, naming the file and the
    template id, since dropping one template would silently change template-averaged scores and mixtures.
    """
    from jinja2 import TemplateSyntaxError
    from jinja2.sandbox import SecurityError

    what = f"P3 template {template.get('id')!r} ({template.get('name')!r}) in {templates_file}"
    detail = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, SecurityError):
        msg = f"{what} refused: it reaches outside the Jinja sandbox ({detail})"
    elif isinstance(err, TemplateSyntaxError):
        msg = f"{what} is malformed: {detail}"
    else:
        msg = f"{what} failed on {where}: {type(err).__name__}: {detail}"
    return InstaError(safe_text(msg, newlines=False))
