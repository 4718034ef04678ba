"""Hostile data never runs code, leaks files or drives the terminal, and caches cannot be poisoned or lose entries.

The corpus is built here, in ``tmp_path``: promptsource templates that would run ``touch MARKER`` through Jinja
internals (each proven closed through the library and the CLI commands that render templates), a poisoned and a
stale catalog index cache, user task files whose ``examples`` point outside their folder, task ids and
instructions carrying terminal escape sequences, a concurrently written and a corrupted embedding cache, and the
temp files a killed experiment run leaves behind.
"""
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

import insta.encoder as enc_mod
from insta.catalogs import index_cache, load_catalog, p3, user
from insta.cli import main
from insta.encoder import Encoder
from insta.errors import InstaError
from insta.util.paths import atomic_write_bytes, remove_stale_tmp
from insta.util.textsafe import safe_text

FIX = Path(__file__).parent / "fixtures"
TPL_ID = "evil0001-0000-0000-0000-000000000001"


def run_cli(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


# ---------------------------------------------------------------- P3 templates: code execution closed

# each one runs `touch MARKER` in the working directory under a plain jinja2.Environment
PAYLOADS = {
    "cycler": "{{ cycler.__init__.__globals__.os.system('touch MARKER') }}",
    "joiner": "{{ joiner.__init__.__globals__.os.system('touch MARKER') }}",
    "namespace": "{{ namespace.__init__.__globals__.os.system('touch MARKER') }}",
    "lipsum": "{{ lipsum.__globals__['os'].system('touch MARKER') }}",
    "mro": "{% for c in ''.__class__.__mro__[1].__subclasses__() %}{% if c.__name__ == '_wrap_close' %}"
           "{{ c.__init__.__globals__['system']('touch MARKER') }}{% endif %}{% endfor %}",
    "format": "{{ '{0.__init__.__globals__[os].system}'.format(cycler) }}{{ cycler.__init__.__globals__"
              "['os'].system('touch MARKER') if 'system' in '{0.__init__.__globals__[os].system}'.format(cycler) }}",
    "answer_choices": None,  # the payload sits in answer_choices, which is rendered too
}


def _p3_root(tmp_path: Path, payload: str) -> Path:
    """A P3 data folder with one task ``evil`` whose only template carries ``payload``, and two rows."""
    root = tmp_path / "data"
    tdir = root / "promptsource" / "templates" / "evil"
    tdir.mkdir(parents=True)
    template = {"id": TPL_ID, "name": "innocent looking", "answer_choices": "yes ||| no",
                "jinja": "Review: {{ text }} " + (payload or "") + " Positive? ||| {{ answer_choices[label] }}",
                "metadata": {"original_task": True, "choices_in_prompt": False, "metrics": ["Accuracy"],
                             "languages": ["en"]}}
    if payload is None:
        template["jinja"] = "Review: {{ text }} Positive? ||| {{ answer_choices[label] }}"
        template["answer_choices"] = PAYLOADS["cycler"] + " yes ||| no"
    (tdir / "templates.yaml").write_text(yaml.safe_dump({"dataset": "evil", "templates": {TPL_ID: template}}))
    rows = root / "p3" / "evil"
    rows.mkdir(parents=True)
    (rows / "val.jsonl").write_text('{"text": "great film", "label": 0}\n{"text": "dull film", "label": 1}\n')
    return root


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Work in tmp_path so that an open hole would create tmp_path/MARKER."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _assert_refused_line(text: str, root: Path) -> None:
    """One error line (a progress bar may share stderr) naming the templates file and the template id."""
    assert "Traceback" not in text
    lines = [line for line in text.splitlines() if TPL_ID in line]
    assert len(lines) == 1, text
    assert str(root / "promptsource" / "templates" / "evil" / "templates.yaml") in lines[0]
    assert "refused" in lines[0]


@pytest.mark.parametrize("name", PAYLOADS)
def test_p3_template_payload_is_refused_by_the_library(in_tmp, name):
    root = _p3_root(in_tmp, PAYLOADS[name])
    task = p3.load(root)["evil"]
    with pytest.raises(InstaError) as err:
        task.examples()
    _assert_refused_line(str(err.value), root)
    assert not (in_tmp / "MARKER").exists()


@pytest.mark.parametrize("name", PAYLOADS)
def test_p3_template_payload_is_refused_by_catalog_show(in_tmp, capsys, name):
    root = _p3_root(in_tmp, PAYLOADS[name])
    code, _, err = run_cli(["catalog", "show", "--catalog", "p3", "--data-dir", str(root), "evil"], capsys)
    assert code == 2
    _assert_refused_line(err, root)
    assert not (in_tmp / "MARKER").exists()


@pytest.mark.parametrize("name", PAYLOADS)
def test_p3_template_payload_is_refused_by_mixture(in_tmp, capsys, name):
    root = _p3_root(in_tmp, PAYLOADS[name])
    out = in_tmp / "mix.jsonl"
    code, _, err = run_cli(["mixture", "--tasks", "evil", "--catalog", "p3", "--data-dir", str(root),
                            "--out", str(out)], capsys)
    assert code == 2
    _assert_refused_line(err, root)
    assert not (in_tmp / "MARKER").exists() and not out.exists()


@pytest.mark.parametrize("name", ["cycler", "mro", "answer_choices"])
def test_p3_template_payload_is_refused_by_evaluate(in_tmp, capsys, monkeypatch, name):
    import insta.lm
    from insta.lm import LoadedModel

    stub = LoadedModel(model=None, tokenizer=None, kind="causal", name="stub", location="stub")
    monkeypatch.setattr(insta.lm, "load_model", lambda *a, **k: stub)  # no model needed to reach the templates
    root = _p3_root(in_tmp, PAYLOADS[name])
    code, _, err = run_cli(["evaluate", "--model", "stub", "--catalog", "p3", "--data-dir", str(root),
                            "--task", "evil", "--no-progress"], capsys)
    assert code == 2
    _assert_refused_line(err, root)
    assert not (in_tmp / "MARKER").exists()


def test_p3_unsafe_attribute_is_refused_not_rendered_empty(in_tmp):
    """Reading an internal attribute without calling anything is refused too (no silent empty string)."""
    root = _p3_root(in_tmp, "{{ text.__class__ }}")
    with pytest.raises(InstaError, match="refused"):
        p3.load(root)["evil"].examples()


def test_p3_malformed_template_is_one_line_naming_file_and_id(in_tmp):
    root = _p3_root(in_tmp, "{% if %}")
    with pytest.raises(InstaError) as err:
        p3.load(root)["evil"].examples()
    msg = str(err.value)
    assert "\n" not in msg and TPL_ID in msg and "templates.yaml" in msg and "malformed" in msg


def test_p3_normal_template_features_render_as_before(tmp_path):
    """Filters, answer_choices with |||, choice, loops, namespace, and list/dict building still work.

    A guard, not a hole: it passes on the unsandboxed renderer too, and must keep passing (Jinja's *immutable*
    sandbox would fail it on ``.append``/``.update``, as it would fail real promptsource templates)."""
    jinja = (
        "{% set words = [] %}{% for w in text.split(' ') %}{% if w|length > 2 %}{{ words.append(w|upper) or '' }}"
        "{% endif %}{% endfor %}{% set d = {} %}{{ d.update({'n': words|length}) or '' }}"
        "{% set ns = namespace(total=0) %}{% for x in range(3) %}{% set ns.total = ns.total + x %}{% endfor %}"
        "{{ words|join('-') }} n={{ d['n'] }} t={{ ns.total }} pick={{ ['a', 'b', 'c']|choice }} "
        "{% for a, b in zip([1, 2], 'xy') %}{{ a }}{{ b }}{% endfor %} {{ answer_choices|join(', ') }}"
        " ||| {{ answer_choices[label] }}"
    )
    root = _p3_root(tmp_path, "")
    tfile = root / "promptsource" / "templates" / "evil" / "templates.yaml"
    doc = yaml.safe_load(tfile.read_text())
    doc["templates"][TPL_ID].update(jinja=jinja, answer_choices="{{ 'Yes' }} ||| {{ 'No' | lower }}")
    tfile.write_text(yaml.safe_dump(doc))
    exs = p3.load(root, cache=False)["evil"].examples()
    first = exs[0]
    assert first.input.startswith("GREAT-FILM n=2 t=3 pick=") and first.input.endswith(" 1x2y Yes, no")
    assert first.options == ["Yes", "no"] and first.references == ["Yes"] and first.label == 0
    assert exs[1].references == ["no"] and exs[1].label == 1
    again = p3.load(root, cache=False)["evil"].examples()
    assert [e.input for e in again] == [e.input for e in exs]  # choice is seeded per (template, row)


# ---------------------------------------------------------------- catalog index cache


def _p3_copy(tmp_path: Path) -> Path:
    import shutil

    root = tmp_path / "p3data"
    shutil.copytree(FIX / "p3", root)
    return root


def test_poisoned_index_cache_entry_is_rebuilt_from_the_source(in_tmp):
    root = _p3_copy(in_tmp)
    clean = p3.load(root)
    expected = [t["jinja"] for t in clean["toy_nli"].meta["templates"]]
    cache_file = index_cache.cache_path("p3", root / "promptsource" / "templates", p3.INDEX_VERSION)
    data = json.loads(cache_file.read_text())
    entry = data["files"]["toy_nli/templates.yaml"]
    for t in entry["data"]:  # same size and mtime stamp: only the summary is swapped
        t["jinja"] = "{{ cycler.__init__.__globals__.os.system('touch MARKER') }} ||| x"
    cache_file.write_text(json.dumps(data))
    task = p3.load(root)["toy_nli"]
    assert [t["jinja"] for t in task.meta["templates"]] == expected
    assert task.examples()  # renders the real templates
    assert not (in_tmp / "MARKER").exists()
    # the rebuilt entry is good again
    assert json.loads(cache_file.read_text())["files"]["toy_nli/templates.yaml"]["data"][0]["jinja"] == expected[0]


@pytest.mark.parametrize("bad", [5, None, [{"id": 1}], [{"jinja": ["x"]}], "text"])
def test_misshapen_index_cache_entry_is_rebuilt_even_with_a_matching_digest(tmp_path, bad):
    root = _p3_copy(tmp_path)
    clean = p3.load(root)
    tdir = root / "promptsource" / "templates"
    cache_file = index_cache.cache_path("p3", tdir, p3.INDEX_VERSION)
    data = json.loads(cache_file.read_text())
    entry = data["files"]["toy_nli/templates.yaml"]
    entry["data"] = bad
    entry["digest"] = index_cache._digest(entry.get("sha256", ""), bad)  # a writer who knows the format
    cache_file.write_text(json.dumps(data))
    again = p3.load(root)
    assert again["toy_nli"].meta["templates"] == clean["toy_nli"].meta["templates"]


def test_deeply_nested_index_cache_file_is_rebuilt(tmp_path):
    root = _p3_copy(tmp_path)
    clean = p3.load(root)
    cache_file = index_cache.cache_path("p3", root / "promptsource" / "templates", p3.INDEX_VERSION)
    cache_file.write_text('{"files": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert p3.load(root).ids == clean.ids
    assert json.loads(cache_file.read_text())["files"]


def test_index_cache_sees_an_edit_that_keeps_size_and_mtime(tmp_path):
    root = _p3_copy(tmp_path)
    f = root / "promptsource" / "templates" / "toy_nli" / "templates.yaml"
    assert "does this mean" in p3.load(root)["toy_nli"].meta["templates"][0]["name"]
    st = f.stat()
    f.write_text(f.read_text().replace("does this mean", "does this MEAN"))  # same size
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the old mtime, as cp -p or a tar would leave it
    assert f.stat().st_size == st.st_size and f.stat().st_mtime_ns == st.st_mtime_ns
    assert p3.load(root)["toy_nli"].meta["templates"][0]["name"] == "does this MEAN"


# ---------------------------------------------------------------- user task files: examples path


def _user_catalog(folder: Path, examples: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tasks.yaml"
    path.write_text(f"- id: t\n  instructions: [Answer the question.]\n  examples: {json.dumps(examples)}\n")
    return path


@pytest.fixture
def outside(tmp_path):
    f = tmp_path / "secret.jsonl"
    f.write_text('{"input": "secret", "output": "leaked"}\n')
    return f


@pytest.mark.parametrize("how", ["relative", "absolute", "symlink"])
def test_examples_outside_the_catalog_folder_are_refused(tmp_path, outside, how, monkeypatch):
    monkeypatch.delenv(user.ALLOW_OUTSIDE_ENV, raising=False)
    folder = tmp_path / "shared" / "catalog"
    if how == "symlink":
        folder.mkdir(parents=True)
        (folder / "ex.jsonl").symlink_to(outside)
        target = "ex.jsonl"
    else:
        target = "../../secret.jsonl" if how == "relative" else str(outside)
    path = _user_catalog(folder, target)
    with pytest.raises(InstaError, match="outside the task file's folder") as err:
        load_catalog(str(path))
    assert "\n" not in str(err.value)
    # the explicit opt-ins
    assert load_catalog(str(path), allow_outside_paths=True)["t"].examples()[0].input == "secret"
    monkeypatch.setenv(user.ALLOW_OUTSIDE_ENV, "1")
    assert load_catalog(str(path))["t"].examples()[0].input == "secret"
    # a path that wanders but ends inside the folder is fine without any opt-in
    monkeypatch.delenv(user.ALLOW_OUTSIDE_ENV)
    (folder / "data").mkdir()
    (folder / "data" / "ex.jsonl").write_text('{"input": "q", "output": "a"}\n')
    assert load_catalog(str(_user_catalog(folder, "data/../data/ex.jsonl")))["t"].examples()[0].target == "a"


def test_examples_outside_the_folder_through_the_cli(tmp_path, outside, capsys, monkeypatch):
    monkeypatch.delenv(user.ALLOW_OUTSIDE_ENV, raising=False)
    path = _user_catalog(tmp_path / "catalog", "../secret.jsonl")
    code, out, err = run_cli(["catalog", "show", "--catalog", str(path), "t"], capsys)
    assert code == 2 and "outside the task file's folder" in err and len(err.strip().splitlines()) == 1
    assert "leaked" not in out
    code, out, _ = run_cli(["catalog", "show", "--catalog", str(path), "t", "--allow-outside-examples"], capsys)
    assert code == 0 and "leaked" in out


# ---------------------------------------------------------------- terminal control characters

EVIL_ID = "evil\x1b]0;pwned\x07\x1b[2J"
EVIL_INSTRUCTION = "Classify \x1b[31mthe\x1b[0m review\x9b2J\u202e."


def _assert_escaped(text: str) -> None:
    """No raw control character reaches the terminal; they show as ``\\x1b``-style escapes."""
    assert not any(c in text for c in ("\x1b", "\x07", "\x9b", "\u202e")), repr(text)
    assert "\\x1b" in text


def _escape_catalog(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ex.jsonl").write_text(json.dumps({"input": "Review: \x1b[2J bad \x1b]0;x\x07", "output": "neg"}) + "\n")
    path = folder / "tasks.jsonl"
    path.write_text(json.dumps({"id": EVIL_ID, "instructions": [EVIL_INSTRUCTION], "category": "\x1b[2J",
                                "examples": "ex.jsonl"}) + "\n"
                    + json.dumps({"id": "plain", "instructions": ["Classify the review as good or bad."]}) + "\n")
    return path


def test_safe_text_escapes_controls_and_keeps_text():
    assert safe_text("a\x1b]0;pwned\x07b") == "a\\x1b]0;pwned\\x07b"
    assert safe_text("l1\nl2\tx\r") == "l1\nl2\tx\\x0d"
    assert safe_text("l1\nl2", newlines=False) == "l1\\x0al2"
    assert safe_text("\x9b\x7f\u202e") == "\\x9b\\x7f\\u202e"
    assert safe_text("héllo 日本 – ok") == "héllo 日本 – ok"


def test_catalog_list_and_show_escape_terminal_controls(tmp_path, capsys):
    path = _escape_catalog(tmp_path / "c")
    code, out, _ = run_cli(["catalog", "list", "--catalog", str(path)], capsys)
    assert code == 0
    _assert_escaped(out)
    code, out, _ = run_cli(["catalog", "show", "--catalog", str(path), EVIL_ID], capsys)
    assert code == 0
    _assert_escaped(out)
    assert "\\x1b]0;pwned\\x07\\x1b[2J" in out and "Classify \\x1b[31mthe\\x1b[0m review\\x9b2J\\u202e." in out
    # JSON keeps the raw text
    code, out, _ = run_cli(["catalog", "list", "--catalog", str(path), "--json", "-"], capsys)
    assert json.loads(out)[0]["id"] == EVIL_ID


def test_select_table_escapes_terminal_controls(tmp_path, capsys):
    from insta.commands.select import print_selection
    from insta.encoder import HashingEncoder
    from insta.methods import Selector

    cat = load_catalog(str(_escape_catalog(tmp_path / "c")))
    result = Selector(cat, HashingEncoder()).select(["Classify the review."], 2)
    print_selection(result)
    out = capsys.readouterr().out
    _assert_escaped(out)
    assert "\\x1b]0;pwned" in out


def test_mixture_lines_escape_terminal_controls(tmp_path, capsys):
    path = _escape_catalog(tmp_path / "c")
    code, out, _ = run_cli(["mixture", "--tasks", EVIL_ID, "--catalog", str(path), "--out", str(tmp_path / "m.jsonl"),
                            "--no-dedup"], capsys)
    assert code == 0
    _assert_escaped(out)
    assert "\\x1b]0;pwned" in out
    record = json.loads((tmp_path / "m.jsonl").read_text().splitlines()[0])
    assert record["task"] == EVIL_ID  # the file keeps the raw id


def test_experiment_plan_and_log_escape_terminal_controls(capsys):
    from insta.commands.experiment import _print_plan
    from insta.util.helpers import Log

    _print_plan({"pool": {"n": 1, "removed_by_reason": {}}, "missing_cells": [], "cells": [],
                 "plan": [{"target": f"user:{EVIL_ID}", "label": "insta\x1b[2J", "done": False, "model_key": "m",
                           "selected": [EVIL_ID]}]})
    Log()(f"eval on {EVIL_ID}")
    out = capsys.readouterr()
    _assert_escaped(out.out)
    _assert_escaped(out.err)


def test_eval_selection_table_escapes_terminal_controls(capsys):
    from insta.commands.eval_selection import print_table

    label = "enc\x1b]0;pwned\x07"
    group = {"n_queries": 2, "n_units": 2, "by_encoder": {label: {"mean": {"top1": 0.5}}}}
    print_table({"encoders": [{"label": label}], "catalog": "user\x1b[2J", "pool": None, "n_queries": 2,
                 "n_units": 2, "unit": "task", "aggregations": ["mean"], "groups": {"all\x1b[2J": group}}, [1])
    _assert_escaped(capsys.readouterr().out)


# ---------------------------------------------------------------- embedding cache


class FakeST:
    """A 3-d 'model': each text's vector is a function of its length and its number of a's."""

    def encode(self, texts, **kw):
        out = np.array([[len(t), t.count("a") + 1.0, 1.0] for t in texts], dtype=np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.fixture
def fake_model(monkeypatch, tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text('{"dim": 3}')
    monkeypatch.setattr(enc_mod, "load_sentence_transformer", lambda path, device=None: FakeST())
    return str(model_dir)


def _write_cache(enc: Encoder, texts, vecs) -> None:
    """A cache file as insta on this machine writes it (valid integrity tags: the writer holds the cache key)."""
    import io

    keys = [enc_mod.EmbeddingCache.key(t) for t in texts]
    vecs = np.asarray(vecs, np.float32)
    buf = io.BytesIO()
    np.savez(buf, keys=np.array(keys), vecs=vecs, tags=np.array([enc.cache.tag(k, v) for k, v in zip(keys, vecs)]))
    atomic_write_bytes(enc.cache.path, buf.getvalue())


def test_two_encoders_writing_the_same_cache_keep_both_entries(fake_model):
    a, b = Encoder(fake_model), Encoder(fake_model)  # both read the (empty) cache before either writes
    a.encode(["alpha", "apple"])
    b.encode(["beta"])
    a.encode(["again"])  # a's next write keeps b's entry too
    third = Encoder(fake_model)
    third.encode(["alpha", "apple", "beta", "again"])
    assert third.n_encoded == 0


def test_concurrent_processes_writing_the_cache_lose_nothing(fake_model, tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent("""
        import sys
        import numpy as np
        import insta.encoder as enc_mod

        class FakeST:
            def encode(self, texts, **kw):
                out = np.array([[len(t), t.count("a") + 1.0, 1.0] for t in texts], dtype=np.float32)
                return out / np.linalg.norm(out, axis=1, keepdims=True)

        enc_mod.load_sentence_transformer = lambda path, device=None: FakeST()
        enc = enc_mod.Encoder(sys.argv[1])
        for i in range(int(sys.argv[3])):
            enc.encode([f"writer {sys.argv[2]} text {i}"])
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(enc_mod.__file__).parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, str(script), fake_model, str(w), "15"], env=env) for w in range(4)]
    assert [p.wait() for p in procs] == [0, 0, 0, 0]
    reader = Encoder(fake_model)
    reader.encode([f"writer {w} text {i}" for w in range(4) for i in range(15)])
    assert reader.n_encoded == 0 and len(reader.cache) == 60


def test_invalid_cached_vectors_are_recomputed(fake_model, caplog):
    enc = Encoder(fake_model)
    truth = enc.encode(["alpha", "beta", "gamma"])
    bad = truth.copy()
    bad[0] = np.nan  # NaN
    bad[1] *= 3.0  # not unit-norm
    _write_cache(enc, ["alpha", "beta", "gamma"], bad)
    again = Encoder(fake_model)
    got = again.encode(["alpha", "beta", "gamma"])
    assert again.n_encoded == 2 and np.allclose(got, truth)
    assert "2 invalid vector(s) discarded" in caplog.text
    assert Encoder(fake_model).cache.n_discarded == 0  # the file was rewritten with good vectors
    # a file of the wrong types altogether is rebuilt too
    import io

    buf = io.BytesIO()
    np.savez(buf, keys=np.array([1, 2]), vecs=np.array(["a", "b"]))
    enc.cache.path.write_bytes(buf.getvalue())
    rebuilt = Encoder(fake_model)
    assert rebuilt.cache.rebuilt and rebuilt.encode(["alpha"]).shape == (1, 3) and rebuilt.n_encoded == 1


def test_cached_vectors_of_another_dimension_are_recomputed(fake_model):
    enc = Encoder(fake_model)
    five = np.ones((1, 5), dtype=np.float32) / np.sqrt(5)
    _write_cache(enc, ["alpha"], five)
    again = Encoder(fake_model)
    got = again.encode(["alpha", "beta"])
    assert got.shape == (2, 3) and np.allclose(got, FakeST().encode(["alpha", "beta"]))
    assert again.n_encoded == 2
    assert Encoder(fake_model).encode(["alpha"]).shape == (1, 3)


def test_cache_file_that_is_a_folder_is_one_clear_error(fake_model):
    enc = Encoder(fake_model)
    enc.cache.path.mkdir(parents=True)
    with pytest.raises(InstaError, match="is a folder") as err:
        Encoder(fake_model).encode(["alpha"])
    assert "\n" not in str(err.value)


def test_cache_folder_that_is_a_file_is_one_clear_error(fake_model, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("INSTA_CACHE_DIR", str(blocker))
    with pytest.raises(InstaError, match="a file is in the way"):
        Encoder(fake_model).encode(["alpha"])


# ---------------------------------------------------------------- temp files of killed writers


def _age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_remove_stale_tmp_removes_only_old_temp_files(tmp_path):
    old_tmp = tmp_path / ".cell.json.abc123.tmp"
    fresh_tmp = tmp_path / ".cell2.json.def456.tmp"
    old_cell = tmp_path / "cell.json"
    for f in (old_tmp, fresh_tmp, old_cell):
        f.write_text("{}")
    _age(old_tmp, 3600)
    _age(old_cell, 3600)
    assert remove_stale_tmp(tmp_path) == [old_tmp]
    assert not old_tmp.exists() and fresh_tmp.exists() and old_cell.exists()
    assert remove_stale_tmp(tmp_path / "missing") == []


def test_experiment_run_cleans_temp_files_a_killed_run_left(tmp_path):
    from insta.engine import DryRunBackend
    from insta.experiment import load_config, run_experiment

    repo = Path(__file__).resolve().parents[1]
    cfg = load_config(repo / "configs" / "tiny.yaml", {"data_dir": str(FIX / "experiment" / "data"),
                                                       "out": str(tmp_path / "out")})
    cells = Path(cfg.out) / "cells"
    cells.mkdir(parents=True)
    stale = [cells / ".k1.json.x1.tmp", Path(cfg.out) / ".results.json.x2.tmp"]
    live = cells / ".k2.json.x3.tmp"  # a writer of another run, still going
    for f in (*stale, live):
        f.write_text("{partial")
    for f in stale:
        _age(f, 3600)
    run_experiment(cfg, backend=DryRunBackend(), log=lambda m: None, report=False)
    assert not any(f.exists() for f in stale) and live.exists()


def test_error_lines_escape_control_characters(tmp_path, capsys):
    """An unknown task id full of terminal escapes is echoed in the error line, but escaped."""
    from insta import cli

    code = cli.main(["catalog", "show", "--catalog", str(Path(__file__).parent / "fixtures" / "user" / "tasks.yaml"),
                     "evil\x1b]0;pwned\x07\x1b[2J"])
    err = capsys.readouterr().err
    assert code == 2 and "\x1b" not in err and "\\x1b" in err and len(err.strip().splitlines()) == 1
