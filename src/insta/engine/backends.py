"""Backends: what trains and evaluates the grid's models. ``transformers`` (:mod:`insta.train` and
:mod:`insta.evaluate`) for real runs, ``dry-run`` (no model; deterministic pseudo-predictions) to test a
configuration, the cache and the report end to end. Tests substitute their own (:class:`Backend`)."""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Protocol

from ..errors import InstaError
from ..util.helpers import stable_key
from ..util.paths import atomic_write_json
from ..records import Example
from .sections import EVAL_OWN_KEYS


class Backend(Protocol):
    """What the runner needs from a model library (tests and dry runs substitute a fake)."""

    name: str

    def base_identity(self, model: str) -> str: ...

    def train(self, records: list[dict[str, Any]], out_dir: Path, model: str,
              options: dict[str, Any]) -> dict[str, Any]:
        """Fine-tune ``model`` on ``records``; return ``{"model_dir": ..., "metrics": {...}}``."""

    def load(self, model_dir_or_name: str) -> Any: ...

    def evaluate(self, handle: Any, examples: list[Example], options: dict[str, Any], task_id: str,
                 catalog: str) -> dict[str, Any]:
        """An :func:`insta.evaluate.evaluate_examples`-style result (``metrics``, ``samples``)."""


class TransformersBackend:
    """insta.train.train_model + insta.evaluate.evaluate_examples (SmolLM2 by default)."""

    name = "transformers"

    def base_identity(self, model: str) -> str:
        from ..encoder import model_fingerprint
        from ..lm import resolve_model

        loc = resolve_model(model)
        return f"{model}@{model_fingerprint(loc) if Path(loc).is_dir() else loc}"

    def train(self, records, out_dir, model, options):
        from ..train import TrainConfig, train_model

        cfg = TrainConfig(**{**options, "model": model, "output_dir": str(out_dir), "overwrite": True,
                             "resume": False})
        res = train_model(records, cfg)
        return {"model_dir": res.model_dir, "metrics": res.metrics}

    def load(self, model_dir_or_name):
        from ..lm import load_model

        return load_model(model_dir_or_name)

    def evaluate(self, handle, examples, options, task_id, catalog):
        from ..evaluate import EvalConfig, evaluate_examples

        opts = {k: v for k, v in options.items() if k not in EVAL_OWN_KEYS}
        if "stop" in opts:
            opts["stop"] = tuple(opts["stop"])
        opts.setdefault("progress", False)
        return evaluate_examples(handle, examples, EvalConfig(**opts), task_id=task_id, catalog=catalog)


class DryRunBackend:
    """No model: 'training' writes the mixture's task counts, 'evaluation' answers pseudo-randomly but
    deterministically per (model, example), with a small bias toward the gold option that grows with the share
    of the training mixture coming from tasks whose name shares a word with the target. For testing configs,
    the cache and the report; its numbers mean nothing."""

    name = "dry-run"

    def __init__(self):
        self.n_train = 0
        self.n_eval = 0

    def base_identity(self, model: str) -> str:
        return f"dry-run:{model}"

    def train(self, records, out_dir, model, options):
        self.n_train += 1
        out_dir = Path(out_dir)
        counts: dict[str, int] = {}
        for r in records:
            counts[r["task"]] = counts.get(r["task"], 0) + 1
        model_dir = out_dir / "model"
        atomic_write_json(model_dir / "dry_run_model.json", {"base": model, "counts": counts})
        return {"model_dir": str(model_dir), "metrics": {"n_examples": len(records), "train_seconds": 0.0,
                                                         "tasks": counts}}

    def load(self, model_dir_or_name):
        p = Path(model_dir_or_name) / "dry_run_model.json"
        counts = json.loads(p.read_text())["counts"] if p.is_file() else {}
        # a trained model is named by its key (<out>/models/<key>/model), so answers do not depend on <out>
        return {"name": Path(model_dir_or_name).parent.name if p.is_file() else str(model_dir_or_name),
                "counts": counts}

    def evaluate(self, handle, examples, options, task_id, catalog):
        self.n_eval += 1
        words = set(task_id.replace("/", "_").split("_"))
        total = sum(handle["counts"].values()) or 1
        related = sum(n for t, n in handle["counts"].items() if words & set(t.replace("/", "_").split("_"))) / total
        samples = []
        for ex in examples:
            rng = random.Random(stable_key("dry-run", handle["name"] if handle["counts"] else "base", ex.id))
            if ex.options and options.get("mode") != "generate":  # eval.mode generate: scored as generation
                n = len(ex.options)
                sums = [rng.gauss(-5.0, 1.0) for _ in range(n)]
                lab = ex.label if ex.label is not None else 0
                sums[lab] += 0.8 * related + 0.3 * rng.random()
                ntok = [max(1, len(o.split())) for o in ex.options]
                norms = [s / max(1, len(o)) for s, o in zip(sums, ex.options)]
                norms_tok = [s / t for s, t in zip(sums, ntok)]
                cal = [s + rng.gauss(0, 0.5) for s in sums]
                best = lambda xs: max(range(len(xs)), key=lambda i: xs[i])  # noqa: E731
                samples.append({"type": "rank", "id": ex.id, "options": list(ex.options), "label": lab,
                                "reference": ex.options[lab], "scores_sum": sums, "scores_norm": norms,
                                "scores_norm_token": norms_tok, "scores_calibrated": cal, "n_tokens": ntok,
                                "pred_sum": best(sums), "pred_norm": best(norms), "pred_norm_token": best(norms_tok),
                                "pred_calibrated": best(cal)})
            else:
                ok = rng.random() < 0.2 + 0.5 * related
                samples.append({"type": "generate", "id": ex.id, "options": None, "reference": ex.target,
                                "prediction": ex.target if ok else "", "exact_match": float(ok),
                                "rouge_l": 100.0 * ok})
        return {"task": task_id, "catalog": catalog, "n": len(samples), "metrics": {}, "samples": samples,
                "timings": {"seconds": 0.0}}


def make_backend(name: str) -> Backend:
    """The backend called ``name`` (``transformers`` or ``dry-run``)."""
    if name == "transformers":
        return TransformersBackend()
    if name == "dry-run":
        return DryRunBackend()
    raise InstaError(f"unknown backend {name!r}")


__all__ = ["Backend", "DryRunBackend", "TransformersBackend", "make_backend"]
