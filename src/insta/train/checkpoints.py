"""The run directory and its checkpoints: what an earlier run left, folders insta did not write, and which
checkpoint a rerun resumes from (a half-written one is never resumed)."""
from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path
from typing import Any

from ..errors import InstaError
from .config import MODEL_MARKER


def run_fingerprint(meta_path: Path) -> dict[str, Any]:
    """The fingerprint an earlier run left in ``train_config.json``; a corrupt file is a one-line error."""
    try:
        data = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as err:
        raise InstaError(f"{meta_path} is unreadable or corrupt ({type(err).__name__}): pass --overwrite to start "
                         "this run over, or use another --out") from None
    fp = data.get("fingerprint") if isinstance(data, dict) else None
    if not isinstance(fp, dict):
        raise InstaError(f"{meta_path} is not an insta training record (no fingerprint): pass --overwrite to start "
                         "this run over, or use another --out")
    return fp


def refuse_foreign_outputs(out: Path, meta_path: Path) -> None:
    """Refuse to write over a model (or adapter) folder in ``out`` that no ``insta train`` run wrote."""
    if meta_path.is_file():  # an insta run directory (train_config.json is written before any model)
        return
    for folder in (out / "model", out / "adapter"):
        if folder.exists() and not folder.is_dir():
            raise InstaError(f"{folder} exists and is not a directory: use another --out, or --overwrite")
        if folder.is_dir() and any(folder.iterdir()) and not (folder / MODEL_MARKER).is_file():
            raise InstaError(f"{folder} holds files that insta train did not write (no {MODEL_MARKER}): use "
                             "another --out, or pass --overwrite to replace them")


_LM_HEADS = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration", "ForSeq2SeqLM")


def refuse_sentence_encoder(location: str, name: str) -> None:
    """A sentence-transformers encoder directory (modules.json) whose architecture has no LM head is no
    language model: say so before transformers bolts a random head onto it."""
    p = Path(location)
    if not any((p / n).is_file() for n in ("modules.json", "config_sentence_transformers.json")):
        return
    try:
        archs = json.loads((p / "config.json").read_text(encoding="utf-8")).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        archs = []
    if not any(isinstance(a, str) and a.endswith(_LM_HEADS) for a in archs):
        raise InstaError(f"{name!r} is a sentence-transformers encoder ({', '.join(map(str, archs)) or 'no LM head'}), "
                         "not a causal or seq2seq language model: train from a language model")


def find_resume_checkpoint(ckpt_dir: str | os.PathLike) -> tuple[str | None, list[tuple[str, str]]]:
    """The newest complete ``checkpoint-N`` folder under ``ckpt_dir`` (``None`` if there is none), and the
    newer folders that a kill left incomplete or corrupt, as ``(path, problem)`` pairs."""
    found = []
    for p in Path(ckpt_dir).iterdir():
        m = re.fullmatch(r"checkpoint-(\d+)", p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    broken: list[tuple[str, str]] = []
    for _, path in sorted(found, reverse=True):
        problem = checkpoint_problem(path)
        if problem is None:
            return str(path), broken
        broken.append((str(path), problem))
    return None, broken


def checkpoint_problem(path: str | os.PathLike) -> str | None:
    """Why a Trainer checkpoint folder cannot be resumed from (``None`` when it looks complete).

    The Trainer writes the weights, then optimizer and scheduler, then ``trainer_state.json``: all must be there
    and whole (safetensors headers and sizes agree, torch files are complete zip archives).
    """
    p = Path(path)
    try:
        state = json.loads((p / "trainer_state.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "no trainer_state.json"
    except (OSError, ValueError, RecursionError):
        return "trainer_state.json is corrupt"
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        return "trainer_state.json has no global_step"
    weights = [p / n for n in ("model.safetensors", "adapter_model.safetensors") if (p / n).is_file()]
    index = p / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return f"{index.name} is corrupt"
        weights += [p / s for s in sorted(shards)]
    for w in weights:
        problem = safetensors_problem(w)
        if problem:
            return f"{w.name}: {problem}"
    has_other = any((p / n).is_file() for n in ("pytorch_model.bin", "adapter_model.bin")) or any(
        x.name.startswith("pytorch_model_fsdp") for x in p.iterdir())
    if not weights and not has_other:
        return "no model weights"
    for name in ("optimizer.pt", "scheduler.pt"):
        f = p / name
        if f.is_file():
            if not zipfile.is_zipfile(f):
                return f"{name} is truncated or corrupt"
        elif not (name == "optimizer.pt"
                  and any(x.name.startswith(("optimizer_", "global_step")) for x in p.iterdir())):
            return f"no {name}"
    return pickles_problem(p)


def pickles_problem(path: str | os.PathLike) -> str | None:
    """Why a checkpoint's pickled files cannot be resumed from safely (``None``: they can).

    Every pickled file the Trainer reads back (optimizer, scheduler, random states) must load with
    ``torch.load(weights_only=True)``: such a file holds tensors and plain containers only, so loading it runs no
    code, and the Trainer's own loading of it (weights_only too) does not fail halfway through a resume.
    """
    import torch
    from transformers.trainer_pt_utils import safe_globals

    p = Path(path)
    names = ["optimizer.pt", "scheduler.pt", *sorted(x.name for x in p.glob("rng_state*.pth"))]
    for name in names:
        if not (p / name).is_file():
            continue
        try:
            with safe_globals():
                torch.load(p / name, map_location="cpu", weights_only=True, mmap=True)
        except Exception as err:  # unpickling refused, truncated or corrupt file
            return f"{name}: {type(err).__name__}: {(str(err).splitlines() or [''])[0][:120]}"
    return None


def finished_run(out: Path, fp: dict[str, Any]) -> dict[str, Any] | None:
    """The metrics of a finished run of this same configuration in ``out`` (``None``: there is work to do), so that
    rerunning a finished command trains nothing and leaves ``train_result.json`` as it is."""
    meta, result = out / "train_config.json", out / "train_result.json"
    if not (meta.is_file() and result.is_file() and (out / "model" / MODEL_MARKER).is_file()):
        return None
    try:
        old = run_fingerprint(meta)
        data = json.loads(result.read_text(encoding="utf-8"))
    except (InstaError, OSError, ValueError, RecursionError):
        return None
    if any(old.get(k) != v for k, v in fp.items()) or not isinstance(data, dict):
        return None
    metrics = data.get("metrics")
    return metrics if isinstance(metrics, dict) else None


def safetensors_problem(path: str | os.PathLike) -> str | None:
    """Why a ``.safetensors`` file is not whole (``None`` when its header parses and the sizes agree)."""
    p = Path(path)
    try:
        size = p.stat().st_size
        with p.open("rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return "empty or truncated"
            n = int.from_bytes(head, "little")
            if n > size - 8:
                return "truncated header"
            header = json.loads(fh.read(n))
    except FileNotFoundError:
        return "missing"
    except (OSError, ValueError):
        return "corrupt header"
    if not isinstance(header, dict):
        return "corrupt header"
    try:
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (KeyError, TypeError, ValueError, IndexError):
        return "corrupt header"
    if 8 + n + end != size:
        return f"truncated ({size} of {8 + n + end} bytes)"
    return None

