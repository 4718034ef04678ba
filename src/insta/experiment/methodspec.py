"""The ``methods`` list of an experiment config: one :class:`MethodSpec` per grid column, checked on load (unknown
method or option, seeds, duplicate labels), with the experiment-wide defaults (encoder, library size) filled in."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..align.data import AlignConfig
from ..errors import InstaError
from ..methods import METHODS, SHARED_ENCODER_METHODS, load_method
from ..util.options import checked_mapping, read_section


@dataclass
class MethodSpec:
    """One column of the grid: a selection method, its label and options (``random`` gives one per seed)."""

    name: str
    label: str
    options: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    group: str = ""  # label shared by the seeds of one method (random)
    align: AlignConfig | None = None  # insta-aligned: how to train the encoder when it is missing


def align_config(raw: Any, name: str, **defaults: Any) -> AlignConfig | None:
    """An alignment recipe (``align:`` of insta-aligned or of the P3 table) as an :class:`AlignConfig`, checked
    now; ``defaults`` (and no progress bars) apply where the recipe does not say."""
    if raw is None:
        return None
    return read_section(AlignConfig, {"progress": False, **defaults, **checked_mapping(raw, name)}, name,
                        where=f"{name!r} of the experiment config")


def _with_defaults(name: str, opts: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """A method's options with the experiment's encoder and library size where the method takes them."""
    if name in SHARED_ENCODER_METHODS and top.get("encoder") and "encoder" not in opts:
        opts["encoder"] = top["encoder"]
    if (name in METHODS and "source_instances" in METHODS[name].consumes and "library_size" not in opts
            and top.get("library_size")):
        opts["library_size"] = top["library_size"]
    if name == "insta-aligned" and opts.get("encoder"):
        opts["encoder"] = str(Path(opts["encoder"]).expanduser())
    return opts


def _random_specs(opts: dict[str, Any], label: str | None, seeds: Any) -> list[MethodSpec]:
    """``random`` with one column per seed (``random-s0``, ...), all of group ``label``."""
    if seeds is None:
        seeds = [opts.pop("seed", 0)]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise InstaError("random: 'seeds' must be a non-empty list of integers")
    specs = []
    for s in seeds:
        load_method("random", seed=s, **opts)  # validates the options
        specs.append(MethodSpec("random", f"{label or 'random'}-s{s}", {**opts, "seed": s}, seed=s,
                                group=label or "random"))
    return specs


def _specs_of(i: int, item: Any, top: dict[str, Any]) -> list[MethodSpec]:
    """The column(s) of ``methods[i]``."""
    if isinstance(item, str):
        item = {"name": item}
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise InstaError(f"methods[{i}] must be a method name or a mapping with 'name'")
    opts = dict(item)
    name = opts.pop("name")
    label = opts.pop("label", None)
    align = opts.pop("align", None)
    seeds = opts.pop("seeds", None)
    if name == "base":
        raise InstaError("'base' is not a selection method: the untrained model is evaluated when include_base is "
                         "true")
    opts = _with_defaults(name, opts, top)
    if name == "random":
        return _random_specs(opts, label, seeds)
    if seeds is not None:
        raise InstaError(f"method {name!r} takes no 'seeds' (only random does)")
    load_method(name, **opts)  # unknown name or option: a clear error now
    lab = label or name
    base = {"base_encoder": top["encoder"]} if name == "insta-aligned" and top.get("encoder") else {}
    return [MethodSpec(name, lab, opts, group=lab, align=align_config(align, f"{lab}.align", **base))]


def method_specs(raw: Any, top: dict[str, Any]) -> list[MethodSpec]:
    """The grid's columns from the config's ``methods`` list (``top``: the whole config, for its defaults)."""
    if not isinstance(raw, list) or not raw:
        raise InstaError("the experiment config needs a non-empty 'methods' list")
    specs = [spec for i, item in enumerate(raw) for spec in _specs_of(i, item, top)]
    labels = [s.label for s in specs]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise InstaError(f"method label(s) used twice: {', '.join(dup)} (give each a distinct 'label')")
    return specs


__all__ = ["MethodSpec", "align_config", "method_specs"]
