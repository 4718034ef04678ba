"""The embedding cache: hits encode nothing, writes are atomic, a corrupt file is rebuilt."""
import numpy as np
import pytest

import insta.encoder as enc_mod
from insta.encoder import EmbeddingCache, Encoder, resolve_encoder
from insta.errors import InstaError


class FakeST:
    def __init__(self):
        self.seen = []

    def encode(self, texts, **kw):
        self.seen.extend(texts)
        out = np.array([[len(t), t.count("a") + 1.0, 1.0] for t in texts], dtype=np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.fixture
def fake_model(monkeypatch, tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text('{"dim": 3}')
    fake = FakeST()
    monkeypatch.setattr(enc_mod, "load_sentence_transformer", lambda path, device=None: fake)
    return str(model_dir), fake


def test_second_encoder_reads_everything_from_cache(fake_model):
    path, fake = fake_model
    first = Encoder(path)
    a = first.encode(["alpha", "beta", "alpha"])
    assert first.n_encoded == 2  # duplicates are encoded once
    second = Encoder(path)
    b = second.encode(["beta", "alpha"])
    assert second.n_encoded == 0
    assert np.allclose(b, a[[1, 0]])
    assert second.cache.loaded_from_disk


def test_cache_is_keyed_by_model_identity(fake_model):
    path, fake = fake_model
    Encoder(path).encode(["alpha"])
    # changing the model's config changes its identity: nothing is reused
    (__import__("pathlib").Path(path) / "config.json").write_text('{"dim": 3, "changed": true}')
    other = Encoder(path)
    other.encode(["alpha"])
    assert other.n_encoded == 1


def test_corrupt_cache_is_rebuilt_not_fatal(fake_model, caplog):
    path, fake = fake_model
    enc = Encoder(path)
    enc.encode(["alpha", "beta"])
    enc.cache.path.write_bytes(b"this is not an npz file")
    again = Encoder(path)
    assert again.cache.rebuilt
    out = again.encode(["alpha"])
    assert again.n_encoded == 1 and out.shape == (1, 3)
    assert "rebuilding" in caplog.text  # a warning of logger insta.embedding_cache (the CLI shows it)
    assert Encoder(path).cache.loaded_from_disk  # rewritten whole


def test_cache_write_is_atomic(fake_model, monkeypatch):
    path, fake = fake_model
    enc = Encoder(path)
    enc.encode(["alpha"])
    before = enc.cache.path.read_bytes()

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(enc_mod.np, "savez", boom)
    with pytest.raises(KeyboardInterrupt):
        enc.encode(["gamma"])
    assert enc.cache.path.read_bytes() == before  # the old cache survives an interrupted write
    assert len(EmbeddingCache(enc.model_key)) == 1


def test_empty_text_is_rejected(fake_model):
    path, _ = fake_model
    with pytest.raises(InstaError, match="empty"):
        Encoder(path).encode(["ok", "  "])


def test_missing_local_model_dir_is_a_clear_error(tmp_path):
    with pytest.raises(InstaError, match="does not exist"):
        resolve_encoder(str(tmp_path / "nope" / "model"))


def _fake_model_dir(root, *, stamp: str, version: str, weights: bytes):
    import json

    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"hidden_size": 8, "transformers_version": version}, indent=2))
    (root / "model.safetensors").write_bytes(weights)
    (root / "insta_source.json").write_text(json.dumps({"converted_from": "x.gguf", "at": stamp}))
    return root


def test_model_fingerprint_ignores_location_provenance_and_version_stamps(tmp_path):
    """Caches keyed by a model must survive a re-conversion on another machine (new time, path and library)."""
    from insta.encoder import model_fingerprint

    a = _fake_model_dir(tmp_path / "cache1" / "m", stamp="2026-11-24T09:00:00", version="5.1.0", weights=b"w" * 1000)
    b = _fake_model_dir(tmp_path / "cache2" / "other", stamp="2026-11-30T15:42:33", version="5.24.0",
                        weights=b"w" * 1000)
    c = _fake_model_dir(tmp_path / "cache3" / "m", stamp="2026-11-24T09:00:00", version="5.1.0", weights=b"v" * 1000)
    assert model_fingerprint(str(a)) == model_fingerprint(str(b))
    assert model_fingerprint(str(a)) != model_fingerprint(str(c))  # different weights, different identity
    (b / "config.json").write_text('{"hidden_size": 16}')
    assert model_fingerprint(str(a)) != model_fingerprint(str(b))  # a real config change still counts


def test_a_loaded_sentence_transformer_is_used_as_it_is():
    """A plain SentenceTransformer (an object with encode only) works wherever an encoder goes: wrapped, no
    disk cache (its weights may differ from any saved copy), same vectors as it gives."""
    from insta.catalogs.base import Catalog
    from insta.encoder import as_text_encoder
    from insta.evaluators.identification import evaluate_identification
    from insta.methods import load_method
    from insta.records import Task
    from insta.methods import Selector

    fake = FakeST()
    enc = as_text_encoder(fake)
    assert isinstance(enc, Encoder) and enc.cache is None and enc.describe()["name"] == "FakeST"
    assert np.allclose(enc.encode(["alpha"]), fake.encode(["alpha"]))
    pool = Catalog("toy", [Task(id=t, instructions=[f"{t} one", f"{t} two aa"], catalog="toy")
                           for t in ("alpha", "beta", "gamma")])
    direct = Selector(pool, FakeST()).select(["alpha one"], k=2)
    via_method = load_method("insta-mean", encoder=FakeST()).select(["alpha one"], pool, 2)
    assert direct.task_ids == via_method.task_ids and len(direct.task_ids) == 2
    assert via_method.params["encoder"] == "FakeST"
    res = evaluate_identification(pool, [FakeST()], unit="task")
    assert res["encoders"][0]["label"] == "FakeST" and res["n_queries"] == 6


def test_the_library_sets_no_process_wide_environment(tmp_path):
    """Importing insta and loading an encoder from a local directory leave the environment alone (no
    OMP_WAIT_POLICY, no HF_HUB_OFFLINE): the library passes local_files_only instead."""
    import os
    import subprocess
    import sys

    code = (
        "import os, sys\n"
        "import insta, insta.encoder as e, insta.methods, insta.selection, insta.evaluate, insta.mixture\n"
        "seen = {}\n"
        "class ST:\n"
        "    def __init__(self, path, device=None, **kw): seen.update(kw)\n"
        "sys.modules['sentence_transformers'] = type(sys)('sentence_transformers')\n"
        "sys.modules['sentence_transformers'].SentenceTransformer = ST\n"
        f"e.load_sentence_transformer({str(tmp_path)!r})\n"
        "print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('HF_HUB_OFFLINE'), seen)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "HF_HUB_OFFLINE")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "None None {'local_files_only': True}"
