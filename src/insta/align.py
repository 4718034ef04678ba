"""INSTA-aligned: fine-tune a sentence encoder on a meta-dataset's own instructions (METHOD.md §2).

The encoder learns the catalog's instruction style: two instructions of one task should embed close together,
instructions of unrelated tasks far apart. The result is a plain sentence-transformers model directory that
``insta select --encoder DIR`` (or :class:`insta.encoder.Encoder`) uses as is.

Pipeline (:func:`align_encoder`):

1. **Split** (:func:`split_catalog`). Evaluation targets never feed alignment: every task in an evaluation pool
   (``t0_eval``, ``eval``, ``test``) and its family, for BIG-bench also the BIG-bench parents of the BBH tasks,
   plus anything the caller names. Of the remaining units (a unit is a task family by default: a P3 dataset, a
   BIG-bench parent with its subtasks) a seeded share of instructions is held out for the identification test
   (``heldout_fraction``) and another for the dev set (``dev_fraction``); every unit keeps at least one
   instruction for training. The split is written into the model's ``insta_alignment.json``.
2. **Pairs** (:func:`build_pairs`, authors' recipe): all same-unit pairs of training instructions, a random
   ``positive_fraction`` kept, label 1; for each training instruction one instruction of another unit whose
   base-encoder cosine is below ``negative_threshold``, each negative text used at most ``max_negative_reuse``
   times, label 0. Dev pairs: each dev instruction with its unit's training instructions (1) and one
   under-threshold other-unit instruction (0).
3. **Training**: ``objective="cosine"`` = ``CosineSimilarityLoss`` on those pairs (the paper);
   ``objective="mnrl"`` = ``MultipleNegativesRankingLoss`` on the positive pairs, batched by
   :class:`TaskAwareBatchSampler` so that no two pairs of one unit share a batch (no false in-batch negatives).
   AdamW, linear warm-up then linear decay, gradient clipping at 1. After each epoch the dev Pearson
   correlation (cosine vs label) is measured and a checkpoint is written; the best epoch's weights are the
   saved model.

Interrupt any time: rerunning with the same output directory and configuration resumes from the last finished
epoch (every epoch reseeds its shuffling and dropout from ``seed + epoch``, so a resumed run ends with the
same weights as an uninterrupted one); a finished directory is returned as is; a changed configuration is an
error unless ``overwrite=True``.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .catalogs.base import Catalog
from .records import Task
from .errors import InstaError
from .paths import atomic_write_json

from .align_data import (  # noqa: F401  (re-exported: the alignment's public names live here too)
    EVAL_POOLS,
    FORMAT_VERSION,
    METADATA_FILE,
    OBJECTIVES,
    UNITS,
    WORK_DIR,
    AlignConfig,
    AlignmentSplit,
    Pair,
    PairSet,
    TaskAwareBatchSampler,
    build_dev_pairs,
    build_pairs,
    catalog_units,
    default_exclusions,
    shuffled_batches,
    split_catalog,
    unit_of,
    _embed,
    _progress,
    _text_units,
)

# ---------------------------------------------------------------- run bookkeeping

CHECKPOINT_FILE = "state.pt"  # the last finished epoch, under <out>/.insta-align/checkpoint/
PREVIOUS_CHECKPOINT_FILE = "state.prev.pt"  # the epoch before it (the fallback)


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [k for k in keys if old.get(k) != new.get(k)]


def _versions() -> dict[str, str]:
    out = {}
    for mod in ("torch", "transformers", "sentence_transformers"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # pragma: no cover
            pass
    from . import __version__

    out["insta"] = __version__
    return out


def read_alignment_metadata(model_dir: str | os.PathLike) -> dict | None:
    """The ``insta_alignment.json`` of an aligned model directory (``None`` for any other model)."""
    p = Path(model_dir) / METADATA_FILE
    return _read_json(p) if p.is_file() else None


# ---------------------------------------------------------------- training


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    def ranks(v):
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        # average ties
        _, inv, counts = np.unique(v, return_inverse=True, return_counts=True)
        sums = np.bincount(inv, weights=r)
        return sums[inv] / counts[inv]

    return _pearson(ranks(x), ranks(y))


class _ModelEncoder:
    """The in-training model as a TextEncoder (no cache)."""

    def __init__(self, model, batch_size: int = 64):
        self.model = model
        self.batch_size = batch_size

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            vecs = self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=False)
        if was_training:
            self.model.train()
        return np.asarray(vecs, dtype=np.float32)

    def describe(self) -> dict:
        return {"name": "in-training", "path": None, "key": "in-training"}


def _dev_metrics(encoder, dev: PairSet) -> dict[str, float]:
    pairs = dev.pairs
    if not pairs:
        return {}
    texts = list(dict.fromkeys(t for p in pairs for t in (p.a, p.b)))
    emb = _embed(encoder, texts)
    idx = {t: i for i, t in enumerate(texts)}
    cos = np.array([float(emb[idx[p.a]] @ emb[idx[p.b]]) for p in pairs])
    lab = np.array([p.label for p in pairs])
    out = {"pearson": _pearson(cos, lab), "spearman": _spearman(cos, lab)}
    if dev.positives and dev.negatives:
        out["mean_cos_pos"] = float(cos[lab == 1].mean())
        out["mean_cos_neg"] = float(cos[lab == 0].mean())
    return out


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def align_encoder(
    catalog: Catalog,
    config: AlignConfig | None = None,
    out_dir: str | os.PathLike = "aligned-encoder",
    *,
    overwrite: bool = False,
    pair_encoder=None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Train an aligned encoder on ``catalog`` and write it to ``out_dir`` (a sentence-transformers model dir).

    ``pair_encoder`` (optional) is the encoder used for the negative-pair threshold; by default the base
    encoder itself, through insta's embedding cache. Returns ``out_dir``. See the module docstring for the
    split, resume and overwrite rules.
    """
    config = config or AlignConfig()
    config.validate()
    log = log or (lambda msg: print(f"insta align: {msg}", file=sys.stderr))
    out = Path(out_dir).expanduser()
    t_start = time.perf_counter()

    from .encoder import Encoder, model_fingerprint, resolve_encoder

    base_path = resolve_encoder(config.base_encoder)
    split = split_catalog(catalog, config)
    identity = {
        "format": FORMAT_VERSION,
        "config": config.identity(),
        "catalog": catalog.name,
        "split": _sha(split.to_dict()),
        "base": model_fingerprint(base_path),
    }
    fingerprint = _sha(identity)
    work = out / WORK_DIR
    meta_path = out / METADATA_FILE

    # ---- an existing directory: finished, resumable, foreign, or a different run
    if out.exists() and not out.is_dir():
        raise InstaError(f"{out} exists and is not a directory")
    done = _read_json(meta_path) if meta_path.is_file() else None
    running = _read_json(work / "run.json") if (work / "run.json").is_file() else None
    previous = done or running
    if previous is not None and previous.get("fingerprint") != fingerprint:
        if not overwrite:
            diff = _config_diff(previous.get("config_identity", {}), config.identity())
            what = (f" (differs in: {', '.join(diff)})" if diff
                    else " (same options, different catalog, split or base encoder)")
            raise InstaError(f"{out} holds an alignment run with another configuration{what}: pass --overwrite "
                             "to replace it, or choose another output directory")
        _clear_alignment_dir(out)
        done = running = None
    elif overwrite and previous is not None:
        _clear_alignment_dir(out)
        done = running = None
    if done is not None and done.get("status") == "complete":
        log(f"{out} is already aligned with this configuration (best epoch {done['training']['best_epoch']}); "
            "nothing to do")
        return out
    if previous is None and out.is_dir() and any(out.iterdir()):
        raise InstaError(f"{out} is not empty and holds no insta alignment run: choose an empty or new directory")

    try:
        import torch
        import sentence_transformers  # noqa: F401
    except ImportError:
        raise InstaError("alignment needs torch and sentence-transformers: pip install 'insta[encode]'") from None
    if config.threads:
        torch.set_num_threads(config.threads)
    work.mkdir(parents=True, exist_ok=True)
    if running is None:  # written first, so an interrupted run is always recognised as this one
        atomic_write_json(work / "run.json", {
            "fingerprint": fingerprint, "config_identity": config.identity(), "status": "running",
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        })

    # ---- pairs (built once, stored in the work dir)
    t0 = time.perf_counter()
    pairs_path = work / "pairs.json"
    stored = _read_json(pairs_path) if running else None
    if stored and stored.get("fingerprint") == fingerprint:
        train_pairs = PairSet([Pair.from_list(r) for r in stored["positives"]],
                              [Pair.from_list(r) for r in stored["negatives"]], stored["stats"])
        dev_pairs = PairSet([Pair.from_list(r) for r in stored["dev_positives"]],
                            [Pair.from_list(r) for r in stored["dev_negatives"]], stored["dev_stats"])
        pair_seconds = stored.get("seconds", 0.0)
        log(f"resuming: {len(train_pairs.pairs)} training pairs from {pairs_path}")
    else:
        log(f"building pairs over {len(split.train)} {config.unit} units "
            f"({split.to_dict()['n_train_instructions']} training instructions; "
            f"{len(split.excluded)} evaluation tasks excluded"
            f"{f', {split.n_outside_pool} tasks outside pool ' + config.pool if config.pool else ''})")
        penc = pair_encoder or Encoder(base_path, show_progress=config.progress)
        train_pairs = build_pairs(
            split.train, penc, positive_fraction=config.positive_fraction, negative_threshold=config.negative_threshold,
            max_negative_reuse=config.max_negative_reuse,
            max_positive_pairs_per_unit=config.max_positive_pairs_per_unit,
            seed=config.seed, progress=config.progress,
        )
        dev_pairs = build_dev_pairs(split, penc, negative_threshold=config.negative_threshold, seed=config.seed,
                                    progress=config.progress)
        pair_seconds = round(time.perf_counter() - t0, 2)
        atomic_write_json(pairs_path, {
            "fingerprint": fingerprint, "seconds": pair_seconds, "stats": train_pairs.stats,
            "positives": [p.to_list() for p in train_pairs.positives],
            "negatives": [p.to_list() for p in train_pairs.negatives],
            "dev_stats": dev_pairs.stats,
            "dev_positives": [p.to_list() for p in dev_pairs.positives],
            "dev_negatives": [p.to_list() for p in dev_pairs.negatives],
        })
    if not train_pairs.positives:
        raise InstaError("no positive pair could be built (every task has a single training instruction)")
    examples = train_pairs.positives if config.objective == "mnrl" else train_pairs.pairs
    if config.objective == "cosine" and not train_pairs.negatives:
        log("warning: no negative pair under the threshold; training on positives only")

    # ---- model, loss, batches
    from .encoder import load_sentence_transformer

    _seed_everything(config.seed)
    model = load_sentence_transformer(base_path, config.device or "cpu")
    saved_max_len = model.max_seq_length
    if config.max_seq_length and (saved_max_len is None or config.max_seq_length < saved_max_len):
        model.max_seq_length = config.max_seq_length
    if config.objective == "cosine":
        from sentence_transformers.sentence_transformer.losses import CosineSimilarityLoss

        loss_fn = CosineSimilarityLoss(model)
        epoch_batches = [shuffled_batches(len(examples), config.batch_size, config.seed, e)
                         for e in range(config.epochs)]
        dropped = 0
    else:
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

        loss_fn = MultipleNegativesRankingLoss(model, scale=config.mnrl_scale)
        text_units = _text_units(split.train)
        keys = [text_units.get(p.a, {p.unit_a}) | text_units.get(p.b, {p.unit_b}) | {p.unit_a} for p in examples]
        sampler = TaskAwareBatchSampler(keys, config.batch_size, seed=config.seed)
        epoch_batches = []
        dropped = 0
        for e in range(config.epochs):
            epoch_batches.append(sampler.batches(e))
            dropped += sampler.dropped
    steps_per_epoch = [len(b) for b in epoch_batches]
    total_steps = sum(steps_per_epoch)
    if total_steps == 0:
        raise InstaError("no training batch could be formed (too few tasks for the task-aware sampler)")
    warmup = math.ceil(config.warmup_ratio * steps_per_epoch[0])
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if ("bias" in name or "LayerNorm" in name or "layer_norm" in name) else decay).append(param)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)

    def lr_lambda(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)

    # ---- resume
    history: list[dict[str, Any]] = []
    start_epoch, best_epoch, best_score = 0, None, -math.inf
    train_seconds = 0.0
    base_dev: dict[str, float] = {}
    ckpt = work / "checkpoint" / CHECKPOINT_FILE
    menc = _ModelEncoder(model)
    state = _load_checkpoint(ckpt.parent, fingerprint, model, log)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history = state["history"]
        start_epoch = state["epoch"]
        best_epoch, best_score = state["best_epoch"], state["best_score"]
        train_seconds = state.get("train_seconds", 0.0)
        base_dev = state.get("base_dev", {})
        log(f"resuming after epoch {start_epoch} of {config.epochs}")
    if start_epoch == 0:
        base_dev = _dev_metrics(menc, dev_pairs)
        if base_dev:
            log(f"base encoder dev pearson {base_dev['pearson']:.4f}")

    # ---- epochs
    model.train()
    for epoch in range(start_epoch, config.epochs):
        t_ep = time.perf_counter()
        _seed_everything(config.seed + epoch + 1)
        batches = epoch_batches[epoch]
        losses = []
        bar = _progress(batches, len(batches), f"epoch {epoch + 1}/{config.epochs}", config.progress)
        for batch in bar:
            chosen = [examples[i] for i in batch]
            fa = model.preprocess([p.a for p in chosen])
            fb = model.preprocess([p.b for p in chosen])
            labels = torch.tensor([p.label for p in chosen], dtype=torch.float32)
            loss = loss_fn([fa, fb], labels)
            loss.backward()
            if config.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            if config.progress and hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", refresh=False)
        dev = _dev_metrics(menc, dev_pairs)
        model.train()
        seconds = time.perf_counter() - t_ep
        train_seconds += seconds
        record = {"epoch": epoch + 1, "steps": len(batches), "train_loss": float(np.mean(losses)) if losses else None,
                  "seconds": round(seconds, 2), **{f"dev_{k}": v for k, v in dev.items()}}
        history.append(record)
        score = dev.get("pearson", float("nan"))
        has_score = bool(dev) and not math.isnan(score)
        improved = (not config.select_best) or (not has_score) or score > best_score
        if improved:  # without a usable dev score the last epoch wins
            best_epoch, best_score = epoch + 1, (score if has_score else best_score)
            _save_model_atomic(model, work / "best", saved_max_len)
        log(f"epoch {epoch + 1}/{config.epochs}: loss {record['train_loss']:.4f}"
            + (f", dev pearson {score:.4f}" if dev else "") + f", {seconds:.1f}s" + (" (best)" if improved else ""))
        _save_checkpoint(ckpt, {
            "fingerprint": fingerprint, "epoch": epoch + 1, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "history": history,
            "best_epoch": best_epoch, "best_score": best_score, "train_seconds": train_seconds, "base_dev": base_dev,
        })

    # ---- finish: best weights into out_dir, metadata last (its presence marks completion)
    best_dir = work / "best"
    if not (best_dir / "modules.json").is_file():  # pragma: no cover - defensive
        _save_model_atomic(model, best_dir, saved_max_len)
    # the manifest of what insta writes into out_dir (all that --overwrite removes), recorded before writing it
    outputs = sorted({item.name for item in best_dir.iterdir()} | {"README.md", METADATA_FILE, WORK_DIR})
    atomic_write_json(work / "run.json", {**(_read_json(work / "run.json") or {}), "outputs": outputs})
    for item in best_dir.iterdir():
        target = out / item.name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        shutil.copytree(item, target) if item.is_dir() else shutil.copy2(item, target)
    meta = {
        "insta_alignment_version": FORMAT_VERSION,
        "status": "complete",
        "fingerprint": fingerprint,
        "config": config.to_dict(),
        "config_identity": config.identity(),
        "base_encoder": {"name": config.base_encoder, "path": base_path, "fingerprint": identity["base"]},
        "catalog": {"name": catalog.name, "n_tasks": len(catalog), "pool": config.pool},
        "split": split.to_dict(),
        "pairs": {"train": train_pairs.stats, "dev": dev_pairs.stats,
                  "n_training_examples": len(examples), "dropped_by_sampler": dropped},
        "training": {
            "objective": config.objective, "learning_rate": config.lr, "steps_per_epoch": steps_per_epoch,
            "warmup_steps": warmup, "epochs": history, "base_dev": base_dev,
            "best_epoch": best_epoch, "best_dev_pearson": best_score if best_score != -math.inf else None,
        },
        "timings": {"pairs_seconds": pair_seconds, "train_seconds": round(train_seconds, 2),
                    "this_call_seconds": round(time.perf_counter() - t_start, 2)},
        "software": _versions(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "outputs": outputs,
    }
    _write_readme(out, meta)
    atomic_write_json(meta_path, meta)
    if not config.keep_checkpoints:
        shutil.rmtree(work, ignore_errors=True)
    log(f"wrote {out} (best epoch {best_epoch}, {train_seconds:.0f}s training)")
    return out


#: What sentence-transformers and insta put in an aligned model folder, for folders written before insta kept a
#: manifest of its outputs (``outputs`` in insta_alignment.json).
_LEGACY_OUTPUTS = (
    METADATA_FILE, WORK_DIR, "README.md", "modules.json", "config.json", "config_sentence_transformers.json",
    "sentence_bert_config.json", "model.safetensors", "pytorch_model.bin", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "vocab.txt", "vocab.json", "merges.txt", "added_tokens.json", "sentencepiece.bpe.model",
    "spiece.model",
)


def _clear_alignment_dir(out: Path) -> None:
    """Remove what an earlier alignment run wrote into ``out`` (its manifest says what), and nothing else: files
    the user added to the folder stay."""
    meta_path, work = out / METADATA_FILE, out / WORK_DIR
    if not (meta_path.exists() or work.exists()):
        raise InstaError(f"{out} holds no insta alignment run; refusing to delete it")
    meta = _read_json(meta_path) or {}
    run = _read_json(work / "run.json") or {}
    names = {METADATA_FILE, WORK_DIR}
    for listed in (meta.get("outputs"), run.get("outputs")):
        if isinstance(listed, list):
            names |= {n for n in listed if isinstance(n, str)}
    if meta_path.is_file() and not isinstance(meta.get("outputs"), list):  # written before manifests existed
        names |= set(_LEGACY_OUTPUTS)
        modules = _read_json(out / "modules.json")
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


def _load_checkpoint(folder: Path, fingerprint: str, model, log: Callable[[str], None]) -> dict | None:
    """The newest loadable epoch checkpoint of this run (the last one, else the one before), loaded with
    ``weights_only=True`` (a checkpoint file never runs code); one that does not load or does not fit is
    discarded with a warning. ``None``: start from the first epoch."""
    import torch

    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for name in (CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE):
        path = folder / name
        if not path.is_file():
            continue
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            problem = _checkpoint_problem(state, fingerprint, expected)
        except Exception as err:  # unpickling refused, truncated or corrupt file
            problem = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:120]}"
        if problem is None:
            return state
        log(f"warning: checkpoint {path} cannot be used ({problem}); discarded")
        path.unlink()
    return None


def _checkpoint_problem(state: Any, fingerprint: str, expected: dict[str, tuple]) -> str | None:
    if not isinstance(state, dict):
        return "not a checkpoint"
    if state.get("fingerprint") != fingerprint:
        return "from another run"
    missing = [k for k in ("model", "optimizer", "scheduler", "history", "epoch", "best_epoch", "best_score")
               if k not in state]
    if missing:
        return f"no {', '.join(missing)}"
    weights = state["model"]
    if not isinstance(weights, dict) or {k: tuple(getattr(v, "shape", ())) for k, v in weights.items()} != expected:
        return "weights do not fit the model"
    if not isinstance(state["epoch"], int) or state["epoch"] < 1:
        return "no finished epoch"
    return None


def _save_model_atomic(model, path: Path, max_seq_length) -> None:
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    current = model.max_seq_length
    model.max_seq_length = max_seq_length
    try:
        model.save(str(tmp), create_model_card=False)
    finally:
        model.max_seq_length = current
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


def _save_checkpoint(path: Path, state: dict) -> None:
    """Write the epoch checkpoint atomically, keeping the one before as the fallback if this one ever fails
    to load."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    if path.is_file():
        os.replace(path, path.with_name(PREVIOUS_CHECKPOINT_FILE))
    os.replace(tmp, path)


def _write_readme(out: Path, meta: dict) -> None:
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


def align_for_targets(source: Catalog, targets: Sequence[Task], out: str | os.PathLike,
                      options: Mapping[str, Any] | None = None, log: Callable[[str], None] = lambda m: None) -> Path:
    """Align an encoder on ``source`` with every target's family (and BIG-bench parent) kept out of alignment,
    on top of the alignment's own default exclusions; returns ``out``. Used by the experiment grid and the
    transfer scoring when their configured aligned encoder is missing."""

    opts = dict(options or {})
    covered = set(default_exclusions(source)) if opts.get("default_exclusions", True) else set()
    fams = {t.family for t in targets} | {str(t.meta["parent"]) for t in targets if (t.meta or {}).get("parent")}
    extra = sorted(f for f in fams if any(x.family == f and x.id not in covered for x in source))
    if extra:
        opts["exclude_families"] = sorted(set(opts.get("exclude_families", [])) | set(extra))
    opts.setdefault("progress", False)
    return align_encoder(source, AlignConfig(**opts), out, log=log)
