"""The output directory of an alignment run (:func:`insta.align.align_encoder`): whose run it holds, what
``--overwrite`` may remove (only what insta wrote: the ``outputs`` manifest), the Trainer checkpoints a rerun
resumes from (only those that load without running code) and the finished model with its card."""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping

from .data import METADATA_FILE, WORK_DIR
from ..errors import InstaError
from ..util.paths import atomic_write_json

CHECKPOINTS = "checkpoints"  # the Trainer's epoch checkpoints (checkpoint-<step>), under <out>/.insta-align/


def read_json(path: Path) -> Any:
    """The JSON in ``path``; ``None`` when it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None


def read_alignment_metadata(model_dir: str | os.PathLike) -> dict | None:
    """The ``insta_alignment.json`` of an aligned model directory (``None`` for any other model)."""
    p = Path(model_dir) / METADATA_FILE
    return read_json(p) if p.is_file() else None


def _config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [k for k in keys if old.get(k) != new.get(k)]


def existing_run(out: Path, fingerprint: str, identity: Mapping[str, Any],
                 overwrite: bool) -> tuple[dict | None, dict | None]:
    """The finished metadata and the running record of the run ``fingerprint`` in ``out`` (``None`` when absent),
    after clearing another insta run with ``overwrite`` (refused without it, naming the options of ``identity``
    that differ) or refusing a folder insta did not write."""
    if out.exists() and not out.is_dir():
        raise InstaError(f"{out} exists and is not a directory")
    meta_path, run_path = out / METADATA_FILE, out / WORK_DIR / "run.json"
    done = read_json(meta_path) if meta_path.is_file() else None
    running = read_json(run_path) if run_path.is_file() else None
    previous = done if isinstance(done, dict) else running if isinstance(running, dict) else None
    if previous is not None and previous.get("fingerprint") != fingerprint and not overwrite:
        old = previous.get("config_identity")
        diff = _config_diff(old if isinstance(old, dict) else {}, identity)
        what = (f" (differs in: {', '.join(diff)})" if diff
                else " (same options, different catalog, split or base encoder)")
        raise InstaError(f"{out} holds an alignment run with another configuration{what}: pass --overwrite "
                         "to replace it, or choose another output directory")
    if previous is not None and (overwrite or previous.get("fingerprint") != fingerprint):
        clear_alignment_dir(out)
        return None, None
    if previous is None and out.is_dir() and any(out.iterdir()):
        raise InstaError(f"{out} is not empty and holds no insta alignment run: choose an empty or new directory")
    return (done if isinstance(done, dict) else None), (running if isinstance(running, dict) else None)


#: What sentence-transformers and insta put in an aligned model folder, for folders written before insta kept a


#: manifest of its outputs (``outputs`` in insta_alignment.json).


_LEGACY_OUTPUTS = (
    METADATA_FILE, WORK_DIR, "README.md", "modules.json", "config.json", "config_sentence_transformers.json",
    "sentence_bert_config.json", "model.safetensors", "pytorch_model.bin", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "vocab.txt", "vocab.json", "merges.txt", "added_tokens.json", "sentencepiece.bpe.model",
    "spiece.model",
)


def clear_alignment_dir(out: Path) -> None:
    """Remove what an earlier alignment run wrote into ``out`` (its manifest says what), and nothing else: files
    the user added to the folder stay."""
    meta_path, work = out / METADATA_FILE, out / WORK_DIR
    if not (meta_path.exists() or work.exists()):
        raise InstaError(f"{out} holds no insta alignment run; refusing to delete it")
    meta = read_json(meta_path) if meta_path.is_file() else {}
    run = read_json(work / "run.json") if (work / "run.json").is_file() else {}
    meta, run = (x if isinstance(x, dict) else {} for x in (meta, run))
    names = {METADATA_FILE, WORK_DIR}
    for listed in (meta.get("outputs"), run.get("outputs")):
        if isinstance(listed, list):
            names |= {n for n in listed if isinstance(n, str)}
    if meta_path.is_file() and not isinstance(meta.get("outputs"), list):  # written before manifests existed
        names |= set(_LEGACY_OUTPUTS)
        modules = read_json(out / "modules.json")
        if isinstance(modules, list):
            names |= {m["path"] for m in modules if isinstance(m, dict) and isinstance(m.get("path"), str)}
    for name in sorted(names):
        if not name or name in (".", "..") or "/" in name or os.sep in name:  # only the folder's own entries
            continue
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


# ---------------------------------------------------------------- checkpoints and the finished model


def resume_checkpoint(folder: Path, steps: int, epochs: int, log: Callable[[str], None]) -> str | None:
    """The newest epoch checkpoint under ``folder`` that is complete and loads safely (``None``: start from the
    first epoch); each newer one that does not is discarded with a warning."""
    found = []
    for path in folder.glob("checkpoint-*") if folder.is_dir() else []:
        m = re.fullmatch(r"checkpoint-(\d+)", path.name)
        if m and path.is_dir():
            found.append((int(m.group(1)), path))
    for step, path in sorted(found, reverse=True):
        problem = _checkpoint_problem(path, step, steps, epochs)
        if problem is None:
            return str(path)
        log(f"warning: checkpoint {path} cannot be used ({problem}); discarded")
        shutil.rmtree(path, ignore_errors=True)
    return None


def _checkpoint_problem(path: Path, step: int, steps: int, epochs: int) -> str | None:
    """Why a Trainer checkpoint cannot be resumed from (``None``: it can).

    Besides completeness (:func:`insta.train.checkpoint_problem`) the checkpoint must be an epoch boundary of
    this run, hold its weights as safetensors, name only sentence-transformers modules, and every pickled file
    (optimizer, scheduler, random state) must load with ``torch.load(weights_only=True)``: a file that loads
    that way holds tensors and plain containers only, so the Trainer's own loading of it runs no code either.
    """
    from ..train import checkpoint_problem

    problem = checkpoint_problem(path)
    if problem:
        return problem
    state = read_json(path / "trainer_state.json") or {}
    if state.get("global_step") != step or step % steps or state.get("max_steps") != steps * epochs:
        return "not an epoch checkpoint of this run"
    if not (path / "model.safetensors").is_file():
        return "no model.safetensors"
    modules = read_json(path / "modules.json")
    if not isinstance(modules, list) or not all(
            isinstance(m, dict) and str(m.get("type", "")).startswith("sentence_transformers.") for m in modules):
        return "modules.json is missing or names a module outside sentence-transformers"
    missing = [n for n in ("optimizer.pt", "scheduler.pt", "rng_state.pth") if not (path / n).is_file()]
    return f"no {missing[0]}" if missing else None  # (checkpoint_problem loaded the pickles weights_only)


def write_model(model, out: Path, work: Path) -> list[str]:
    """Save the model into ``out`` (through the work dir) and return the manifest of what insta writes there,
    recorded in the work dir's run.json before anything is copied (so ``--overwrite`` can always clean up)."""
    staged = work / "model"
    if staged.exists():
        shutil.rmtree(staged)
    model.save(str(staged), create_model_card=False)
    outputs = sorted({item.name for item in staged.iterdir()} | {"README.md", METADATA_FILE, WORK_DIR})
    atomic_write_json(work / "run.json", {**(read_json(work / "run.json") or {}), "outputs": outputs})
    for item in staged.iterdir():
        target = out / item.name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        shutil.copytree(item, target) if item.is_dir() else shutil.copy2(item, target)
    return outputs


def write_readme(out: Path, meta: dict) -> None:
    """The model card of an aligned model (``README.md``), from its metadata."""
    cfg, tr, sp = meta["config"], meta["training"], meta["split"]
    lines = [
        "---",
        "library_name: sentence-transformers",
        "tags: [sentence-transformers, insta, instruction-alignment]",
        "---",
        f"# INSTA-aligned encoder ({meta['catalog']['name']})",
        "",
        f"Base encoder `{cfg['base_encoder']}` fine-tuned on the instructions of the `{meta['catalog']['name']}` "
        f"catalog{' (pool ' + cfg['pool'] + ')' if cfg.get('pool') else ''} with the `{cfg['objective']}` objective "
        f"(lr {tr['learning_rate']}, {cfg['epochs']} epochs, batch {cfg['batch_size']}, seed {cfg['seed']}); "
        "best epoch "
        f"{tr['best_epoch']} by dev Pearson.",
        "",
        f"Kept out of alignment: {len(sp['excluded_tasks'])} evaluation tasks and {sp['n_heldout_instructions']} "
        f"held-out instructions (+ {sp['n_dev_instructions']} dev). The full split, pairs statistics and per-epoch "
        f"history are in `{METADATA_FILE}`.",
        "",
        "Use: `insta select --encoder <this dir> ...` or `SentenceTransformer(<this dir>)`.",
        "",
    ]
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")
