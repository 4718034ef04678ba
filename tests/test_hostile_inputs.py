"""Hostile and careless inputs, driven through the CLI (``insta.cli.main``): each must end in exactly one stderr
line ``insta <command>: error: ...`` with a non-zero exit (never a traceback, never a silent wrong result), or in
the correct behaviour.

The corpus is generated in ``tmp_path`` (plus the repository's small fixtures). Every case is counted by class
of outcome; the tally is printed at the end of the module (``-rA`` not needed): inputs tried, clean errors,
correct behaviour, tracebacks, unclean errors (several lines), silent wrong results.
"""
from __future__ import annotations

import json
import sys
import traceback
from collections import Counter
from pathlib import Path
from typing import Callable

import pytest

from insta.cli import main

REPO = Path(__file__).resolve().parents[1]
FIX = REPO / "tests" / "fixtures"
USER = FIX / "user" / "tasks.yaml"
TINY_EXPERIMENT = REPO / "configs" / "tiny.yaml"
EXPERIMENT_DATA = FIX / "experiment" / "data"
DEEP = 50_000  # nesting levels: far past Python's recursion limit

sys.path.insert(0, str(FIX / "train"))
import tiny_lm  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")

TALLY: Counter = Counter()


@pytest.fixture(scope="module", autouse=True)
def _print_tally(request):
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None and TALLY["inputs tried"]:
        order = ("inputs tried", "clean errors", "correct behaviour", "tracebacks", "unclean errors",
                 "silent wrong results")
        with capture.global_and_fixture_disabled():
            reporter.write_line("\nhostile inputs: " + ", ".join(f"{k} {TALLY[k]}" for k in order))


# ---------------------------------------------------------------- corpus helpers


def latin1(path: Path, text: str = "Décidez si la critique est positive ou négative.\n") -> Path:
    """A file in Latin-1, not UTF-8."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("latin-1"))
    return path


def deep(path: Path, depth: int = DEEP) -> Path:
    """JSON (and YAML flow) nested ``depth`` levels deep."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("[" * depth + "]" * depth + "\n")
    return path


def a_file(path: Path, text: str = "not a directory\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def bigbench_root(tmp: Path, task: dict, name: str = "odd_task") -> Path:
    """A data folder holding one hand-made BIG-bench task (``task`` is the task.json object)."""
    root = tmp / "data"
    good = {"name": "good_task", "description": "Answer the question.", "keywords": ["toy"],
            "examples": [{"input": "2+2?", "target": "4"}]}
    for n, obj in ((name, task), ("good_task", good)):
        f = root / "big-bench" / n / "task.json"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(obj) if isinstance(obj, dict) else obj)
    return root


def bigbench_task(**fields) -> dict:
    base = {"name": "odd_task", "description": "Pick the odd one out.", "keywords": ["toy"],
            "examples": [{"input": "a, b, 3?", "target_scores": {"3": 1, "a": 0}}]}
    base.update(fields)
    return base


def niv2_root(tmp: Path, **fields) -> Path:
    root = tmp / "data"
    task = {"Definition": ["Answer the question."], "Categories": ["QA"], "Input_language": ["English"],
            "Output_language": ["English"], "Domains": ["toy"], "Positive Examples": [],
            "Instances": [{"id": "t1", "input": "2+2?", "output": ["4"]}]}
    task.update(fields)
    f = root / "natural-instructions" / "tasks" / "task1_odd.json"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps(task))
    splits = root / "natural-instructions" / "splits" / "default"
    splits.mkdir(parents=True, exist_ok=True)
    (splits / "train_tasks.txt").write_text("task1_odd\n")
    (splits / "test_tasks.txt").write_text("")
    return root


def user_with_examples(t: Path, examples: Path) -> Path:
    """A user task file whose one task reads ``examples`` (next to it)."""
    path = t / "mine.yaml"
    path.write_text(f"- id: mine\n  instructions: [Answer it.]\n  examples: {examples.name}\n")
    return path


def latin1_bigbench(t: Path) -> Path:
    root = bigbench_root(t, bigbench_task())
    (root / "big-bench" / "odd_task" / "task.json").write_bytes(
        '{"description": "é", "examples": []}'.encode("latin-1"))
    return root


def experiment_config(tmp: Path, **change) -> Path:
    """configs/tiny.yaml with ``change`` applied (dotted keys set nested ones)."""
    import yaml

    raw = yaml.safe_load(TINY_EXPERIMENT.read_text())
    raw.update({"data_dir": str(EXPERIMENT_DATA), "out": str(tmp / "exp-out")})
    for key, value in change.items():
        node = raw
        *parents, leaf = key.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    path = tmp / "experiment.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Shared inputs: a tiny causal LM, a tiny sentence encoder, a valid mixture."""
    from _tiny_encoder import make_tiny_encoder

    root = tmp_path_factory.mktemp("hostile-env")
    mix = root / "mix.jsonl"
    mix.write_text("".join(json.dumps(r) + "\n" for r in tiny_lm.toy_records(8)))
    return {
        "lm": str(tiny_lm.build_causal(root / "llama")),
        "encoder": str(make_tiny_encoder(root / "encoder", ["Is this review positive?"])),
        "mix": str(mix),
    }


# ---------------------------------------------------------------- the corpus
# (id, command, argv builder (tmp_path, env) -> argv, substring the error line must contain)

Case = tuple[str, str, Callable[[Path, dict], list[str]], str]


def train_args(env: dict, out: Path, *more: str) -> list[str]:
    return ["train", "--mixture", env["mix"], "--model", env["lm"], "--out", str(out), "--max-steps", "1",
            "--batch-size", "4", "--no-progress", *more]


def corrupt_run_dir(t: Path) -> Path:
    out = t / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "train_config.json").write_text('{"fingerprint": {"model": ')
    return out


OUTPUT_PATHS: list[Case] = [
    ("select --json DIR", "select", lambda t, e: ["select", "-c", str(USER), "-i", "x", "--json", str(t)],
     "is a directory"),
    ("select --json under a file", "select",
     lambda t, e: ["select", "-c", str(USER), "-i", "x", "--json", str(a_file(t / "f") / "sel.json")],
     "is not a directory"),
    ("catalog list --json DIR", "catalog list", lambda t, e: ["catalog", "list", "-c", str(USER), "--json", str(t)],
     "is a directory"),
    ("mixture --out DIR", "mixture",
     lambda t, e: ["mixture", "--tasks", "review_sentiment", "-c", str(USER), "--out", str(t)], "is a directory"),
    ("mixture --out under a file", "mixture",
     lambda t, e: ["mixture", "--tasks", "review_sentiment", "-c", str(USER),
                   "--out", str(a_file(t / "f") / "m.jsonl")],
     "is not a directory"),
    ("eval-selection --markdown DIR", "eval-selection",
     lambda t, e: ["eval-selection", "-c", str(USER), "--markdown", str(t)], "is a directory"),
    ("eval-selection --json DIR", "eval-selection",
     lambda t, e: ["eval-selection", "-c", str(USER), "--json", str(t)], "is a directory"),
    ("train --out FILE", "train", lambda t, e: train_args(e, a_file(t / "f")), "is not a directory"),
    ("evaluate --out FILE", "evaluate",
     lambda t, e: ["evaluate", "--model", e["lm"], "-c", str(USER), "-t", "review_sentiment", "--out",
                   str(a_file(t / "f"))], "is not a directory"),
    ("align --out FILE", "align", lambda t, e: ["align", "-c", str(USER), "--out", str(a_file(t / "f"))],
     "is not a directory"),
    ("align --json DIR", "align", lambda t, e: ["align", "-c", str(USER), "--out", str(t / "a"), "--json", str(t)],
     "is a directory"),
    ("experiment --out FILE", "experiment",
     lambda t, e: ["experiment", str(experiment_config(t)), "--plan", "-q", "--out", str(a_file(t / "f"))],
     "is not a directory"),
]

NOT_UTF8: list[Case] = [
    ("select --instructions-file latin-1", "select",
     lambda t, e: ["select", "-c", str(USER), "--instructions-file", str(latin1(t / "ins.txt"))], "not UTF-8"),
    ("select --instructions-file latin-1 yaml", "select",
     lambda t, e: ["select", "-c", str(USER), "--instructions-file", str(latin1(t / "ins.yaml", "- é\n"))],
     "not UTF-8"),
    ("user catalog latin-1", "catalog list",
     lambda t, e: ["catalog", "list", "-c", str(latin1(t / "tasks.yaml", "- id: é\n  instructions: [x]\n"))],
     "UTF-8"),
    ("user examples file latin-1", "catalog show",
     lambda t, e: ["catalog", "show", "-c", str(user_with_examples(t, latin1(t / "ex.jsonl",
                   '{"input": "é", "output": "x"}\n'))), "mine"], "not UTF-8"),
    ("mixture --selection latin-1", "mixture",
     lambda t, e: ["mixture", "-s", str(latin1(t / "sel.txt", "review_sentimenté\n")), "-c", str(USER), "--out",
                   str(t / "m.jsonl")], "not UTF-8"),
    ("train --mixture latin-1", "train",
     lambda t, e: ["train", "--mixture", str(latin1(t / "mix.jsonl", '{"input": "é", "target": "x"}\n')),
                   "--model", e["lm"], "--out", str(t / "run"), "--no-progress"], "not UTF-8"),
    ("experiment config latin-1", "experiment",
     lambda t, e: ["experiment", str(latin1(t / "exp.yaml", "name: é\n")), "--plan"], "not UTF-8"),
    ("align --config latin-1", "align",
     lambda t, e: ["align", "-c", str(USER), "--out", str(t / "a"), "--config", str(latin1(t / "a.yaml", "seed: é\n"))],
     "not UTF-8"),
    ("BIG-bench task.json latin-1", "catalog list",
     lambda t, e: ["catalog", "list", "-c", "bigbench", "--data-dir", str(latin1_bigbench(t))], "task.json"),
]


DEEP_NESTING: list[Case] = [
    ("select --instructions-file deep json", "select",
     lambda t, e: ["select", "-c", str(USER), "--instructions-file", str(deep(t / "ins.json"))], "nested too deeply"),
    ("user catalog deep yaml", "catalog list",
     lambda t, e: ["catalog", "list", "-c", str(deep(t / "tasks.yaml"))], "nested too deeply"),
    ("user catalog deep jsonl", "catalog list",
     lambda t, e: ["catalog", "list", "-c", str(deep(t / "tasks.jsonl"))], "nested too deeply"),
    ("user examples deep jsonl", "catalog show",
     lambda t, e: ["catalog", "show", "-c", str(user_with_examples(t, deep(t / "ex.jsonl"))), "mine"],
     "nested too deeply"),
    ("mixture --selection deep json", "mixture",
     lambda t, e: ["mixture", "-s", str(deep(t / "sel.json")), "-c", str(USER), "--out", str(t / "m.jsonl")],
     "nested too deeply"),
    ("train --mixture deep jsonl", "train",
     lambda t, e: ["train", "--mixture", str(deep(t / "mix.jsonl")), "--model", e["lm"], "--out", str(t / "r"),
                   "--no-progress"],
     "nested too deeply"),
    ("experiment config deep yaml", "experiment",
     lambda t, e: ["experiment", str(deep(t / "exp.yaml")), "--plan"], "nested too deeply"),
    ("align --config deep yaml", "align",
     lambda t, e: ["align", "-c", str(USER), "--out", str(t / "a"), "--config", str(deep(t / "a.yaml"))],
     "nested too deeply"),
    ("BIG-bench task.json deep", "catalog list",
     lambda t, e: ["catalog", "list", "-c", "bigbench", "--data-dir",
                   str(bigbench_root(t, "[" * DEEP + "]" * DEEP))], "nested too deeply"),
]

TRAIN_OPTIONS: list[Case] = [
    ("train --scheduler bogus", "train", lambda t, e: train_args(e, t / "r", "--scheduler", "bogus"), "invalid choice"),
    ("train --lora-targets nothing", "train",
     lambda t, e: train_args(e, t / "r", "--lora", "--lora-targets", "no_such_proj"), "linear modules"),
    ("train --lora-targets empty", "train", lambda t, e: train_args(e, t / "r", "--lora", "--lora-targets", ","),
     "lora_target_modules is empty"),
    ("train corrupt train_config.json", "train", lambda t, e: train_args(e, corrupt_run_dir(t)), "corrupt"),
    ("train a sentence encoder", "train", lambda t, e: ["train", "--mixture", e["mix"], "--model", e["encoder"],
                                                         "--out", str(t / "r"), "--max-steps", "1"],
     "sentence-transformers encoder"),
    ("train an encoder without a LM head", "train",
     lambda t, e: train_args(e, t / "r", "--model", e["encoder"] + "-hf"),
     "is not a causal language model"),
    ("evaluate a corrupt adapter_config.json", "evaluate",
     lambda t, e: ["evaluate", "--model", str(a_file(t / "adapter" / "adapter_config.json", "{oops").parent), "-c",
                   str(USER), "-t", "review_sentiment"], "adapter_config.json"),
    ("experiment --report-only corrupt results.json", "experiment",
     lambda t, e: ["experiment", str(experiment_config(t)), "--report-only", "--out",
                   str(a_file(t / "exp" / "results.json", '{"cells": [').parent)], "results.json"),
    ("train --batch-size 0", "train", lambda t, e: train_args(e, t / "r", "--batch-size", "0"), "positive integer"),
    ("train --save-steps -1", "train", lambda t, e: train_args(e, t / "r", "--save-steps", "-1"), "positive integer"),
]

DATA_DIR: list[Case] = [
    ("data fetch --data-dir FILE", "data fetch",
     lambda t, e: ["data", "fetch", "p3", "--data-dir", str(a_file(t / "f"))],
     "is a file"),
    ("data fetch --data-dir under a file", "data fetch",
     lambda t, e: ["data", "fetch", "bigbench", "--data-dir", str(a_file(t / "f") / "data")], "is not a directory"),
    ("catalog list --data-dir FILE", "catalog list",
     lambda t, e: ["catalog", "list", "-c", "bigbench", "--data-dir", str(a_file(t / "f"))], "is a file"),
]

UPSTREAM_TYPES: list[Case] = [
    ("BIG-bench keywords: 3", "catalog list",
     lambda t, e: ["catalog", "list", "-c", "bigbench", "--data-dir", str(bigbench_root(t, bigbench_task(keywords=3)))],
     "'keywords' must be a list of strings"),
    ("BIG-bench description: list", "catalog list",
     lambda t, e: ["catalog", "list", "-c", "bigbench", "--data-dir",
                   str(bigbench_root(t, bigbench_task(description=["a", "b"])))], "'description' must be a string"),
    ("BIG-bench task_prefix: 7", "catalog list",
     lambda t, e: ["catalog", "list", "-c", "bigbench", "--data-dir",
                   str(bigbench_root(t, bigbench_task(task_prefix=7)))], "'task_prefix' must be a string"),
    ("BIG-bench examples: object", "catalog list",
     lambda t, e: ["catalog", "list", "-c", "bigbench", "--data-dir",
                   str(bigbench_root(t, bigbench_task(examples={"input": "x"})))], "'examples' must be a list"),
    ("BIG-bench task.json is a list", "catalog list",
     lambda t, e: ["catalog", "list", "-c", "bigbench", "--data-dir", str(bigbench_root(t, "[1, 2]"))],
     "expected a JSON object"),
    ("NIV2 Definition: 5", "catalog list",
     lambda t, e: ["catalog", "list", "-c", "niv2", "--data-dir", str(niv2_root(t, Definition=5))], "'Definition'"),
    ("NIV2 Instances: 5", "catalog list",
     lambda t, e: ["catalog", "list", "-c", "niv2", "--data-dir", str(niv2_root(t, Instances=5))], "'Instances'"),
    ("NIV2 Categories: object", "catalog list",
     lambda t, e: ["catalog", "list", "-c", "niv2", "--data-dir", str(niv2_root(t, Categories={"a": 1}))],
     "'Categories'"),
]

SILENT_WRONG: list[Case] = [
    ("eval-selection --top 0", "eval-selection", lambda t, e: ["eval-selection", "-c", str(USER), "--top", "0"],
     "positive integer"),
    ("eval-selection --top -1", "eval-selection", lambda t, e: ["eval-selection", "-c", str(USER), "--top", "-1"],
     "positive integer"),
    ("eval-selection --vote-depth 0", "eval-selection",
     lambda t, e: ["eval-selection", "-c", str(USER), "--vote-depth", "0"], "positive integer"),
    ("eval-selection --vote-depth -5", "eval-selection",
     lambda t, e: ["eval-selection", "-c", str(USER), "--vote-depth", "-5"], "positive integer"),
    ("select --n-target-instructions 0", "select",
     lambda t, e: ["select", "-c", str(USER), "-i", "x", "-k", "1", "--n-target-instructions", "0"],
     "positive integer"),
    ("select --n-target-instructions -1", "select",
     lambda t, e: ["select", "-c", str(USER), "-i", "x", "-i", "y", "-k", "1", "--n-target-instructions", "-1"],
     "positive integer"),
    ("select -k 0", "select", lambda t, e: ["select", "-c", str(USER), "-i", "x", "-k", "0"], "positive integer"),
    ("select --exclude unknown id", "select",
     lambda t, e: ["select", "-c", str(USER), "-i", "x", "-k", "1", "--exclude", "review_sentimnt"],
     "unknown task 'review_sentimnt'"),
    ("select --exclude-family unknown", "select",
     lambda t, e: ["select", "-c", str(USER), "-i", "x", "-k", "1", "--exclude-family", "newz"],
     "unknown task family 'newz'"),
    ("mixture --cap task not in the mixture", "mixture",
     lambda t, e: ["mixture", "--tasks", "review_sentiment", "-c", str(USER), "--out", str(t / "m.jsonl"),
                   "--cap", "headline_writing=3"], "not in the mixture"),
    ("mixture --per-task 0", "mixture",
     lambda t, e: ["mixture", "--tasks", "review_sentiment", "-c", str(USER), "--out", str(t / "m.jsonl"),
                   "--per-task", "0"], "positive integer"),
    ("catalog show --examples -1", "catalog show",
     lambda t, e: ["catalog", "show", "-c", str(USER), "review_sentiment", "--examples", "-1"], "integer >= 0"),
    ("evaluate --limit 0", "evaluate",
     lambda t, e: ["evaluate", "--model", e["lm"], "-c", str(USER), "-t", "review_sentiment", "--limit", "0"],
     "positive integer"),
]


def _exp(**change):
    return lambda t, e: ["experiment", str(experiment_config(t, **change)), "--plan", "-q"]


EXPERIMENT_TYPES: list[Case] = [
    ("experiment seed: abc", "experiment", _exp(seed="abc"), "seed must be an integer"),
    ("experiment library_size: many", "experiment", _exp(library_size="many"), "library_size must be an integer"),
    ("experiment library_size: 0", "experiment", _exp(library_size=0), "library_size must be at least 1"),
    ("experiment include_base: 'false'", "experiment", _exp(include_base="false"),
     "include_base must be true or false"),
    ("experiment keep_models: 'no'", "experiment", _exp(keep_models="no"), "keep_models must be true or false"),
    ("experiment model: 5", "experiment", _exp(model=5), "model must be a string"),
    ("experiment report.bootstrap: lots", "experiment", _exp(report__bootstrap="lots"),
     "report.bootstrap must be an integer"),
    ("experiment report.confidence: 95", "experiment", _exp(report__confidence=95), "report.confidence"),
    ("experiment mixture.dedup: 'no'", "experiment", _exp(mixture__dedup="no"), "mixture.dedup must be true or false"),
    ("experiment pool.exclude: string", "experiment", _exp(pool__exclude="animal_facts"),
     "pool.exclude must be a list"),
    ("experiment pool.stem_match: 'off'", "experiment", _exp(pool__stem_match="off"),
     "pool.stem_match must be true or false"),
    ("experiment train.epochs: one", "experiment", _exp(train__epochs="one"), "train.epochs must be a number"),
    ("experiment train.bf16: 'false'", "experiment", _exp(train__bf16="false"), "train.bf16 must be true or false"),
    ("experiment eval.batch_size: 2.5", "experiment", _exp(eval__batch_size=2.5), "eval.batch_size must be an integer"),
]

TOP_LEVEL: list[Case] = [
    ("catalog without an action", "catalog", lambda t, e: ["catalog"], "required"),
    ("unknown option", "select", lambda t, e: ["select", "--no-such-option"], "unrecognized arguments"),
    ("select -k abc", "select", lambda t, e: ["select", "-c", str(USER), "-i", "x", "-k", "abc"], "positive integer"),
]

TINY_TRANSFER = REPO / "configs" / "transfer-tiny.yaml"


def transfer_config(tmp: Path, **change) -> Path:
    """configs/transfer-tiny.yaml with top-level keys changed."""
    import yaml

    raw = yaml.safe_load(TINY_TRANSFER.read_text())
    raw.update({"data_dir": str(EXPERIMENT_DATA), "out": str(tmp / "transfer-out"), **change})
    path = tmp / "transfer.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def matrix_file(t: Path, text: str, name: str = "m.csv") -> Path:
    path = t / name
    path.write_text(text)
    return path


TRANSFER: list[Case] = [
    ("transfer config is a directory", "transfer", lambda t, e: ["transfer", str(t)], "is a directory"),
    ("transfer config not UTF-8", "transfer", lambda t, e: ["transfer", str(latin1(t / "c.yaml"))], "not UTF-8"),
    ("transfer config nested deeply", "transfer", lambda t, e: ["transfer", str(deep(t / "c.yaml"))],
     "nested too deeply"),
    ("transfer seeds: abc", "transfer", lambda t, e: ["transfer", str(transfer_config(t, seeds="abc")), "--plan"],
     "seeds"),
    ("transfer instances: many", "transfer",
     lambda t, e: ["transfer", str(transfer_config(t, instances="many")), "--plan"], "instances"),
    ("transfer keep_models: 'false'", "transfer",
     lambda t, e: ["transfer", str(transfer_config(t, keep_models="false")), "--plan"], "keep_models"),
    ("transfer unknown target", "transfer",
     lambda t, e: ["transfer", str(transfer_config(t, targets=["bigbench:no_such_task"])), "--plan", "-q"],
     "no_such_task"),
    ("transfer --out FILE", "transfer",
     lambda t, e: ["transfer", str(transfer_config(t)), "-q", "--out", str(a_file(t / "f"))], "not a directory"),
    ("transfer --json DIR", "transfer", lambda t, e: ["transfer", str(transfer_config(t)), "-q", "--json", str(t)],
     "is a directory"),
    ("eval-selection --transfer missing column", "eval-selection",
     lambda t, e: ["eval-selection", "--transfer", str(matrix_file(t, "target,source\nx,y\n"))], "transfer"),
    ("eval-selection --transfer non-number", "eval-selection",
     lambda t, e: ["eval-selection", "--transfer", str(matrix_file(t, "target,source,transfer\nx,y,lots\n"))],
     "not a number"),
    ("eval-selection --transfer nested JSON", "eval-selection",
     lambda t, e: ["eval-selection", "--transfer", str(deep(t / "m.json"))], "nested too deeply"),
    ("eval-selection --transfer --regret-k 0", "eval-selection",
     lambda t, e: ["eval-selection", "--transfer", str(matrix_file(t, "target,source,transfer\nx,y,1\n")),
                   "--regret-k", "0"], "--regret-k"),
]

CORPUS = [*OUTPUT_PATHS, *NOT_UTF8, *DEEP_NESTING, *TRAIN_OPTIONS, *DATA_DIR, *UPSTREAM_TYPES, *SILENT_WRONG,
          *EXPERIMENT_TYPES, *TOP_LEVEL, *TRANSFER]


def run_cli(argv: list[str], capsys) -> tuple[int | None, str, str, str | None]:
    """(exit code, stdout, stderr, traceback text if ``main`` raised)."""
    try:
        code = main(argv)
        tb = None
    except SystemExit as stop:  # argparse
        code, tb = stop.code, None
    except BaseException:  # noqa: BLE001 - a traceback is exactly what this test looks for
        code, tb = None, traceback.format_exc()
    out = capsys.readouterr()
    return code, out.out, out.err, tb


def classify(code, err: str, tb: str | None, command: str) -> str:
    if tb is not None or "Traceback" in err:
        return "tracebacks"
    if code == 0:
        return "silent wrong results"
    lines = err.strip().splitlines()
    if len(lines) == 1 and lines[0].startswith(f"insta {command}: error: "):
        return "clean errors"
    return "unclean errors"


@pytest.mark.parametrize("name,command,build,expected", CORPUS, ids=[c[0] for c in CORPUS])
def test_bad_input_is_one_clean_error_line(name, command, build, expected, env, tmp_path, capsys):
    argv = build(tmp_path, env)
    code, out, err, tb = run_cli(argv, capsys)
    kind = classify(code, err, tb, command)
    TALLY["inputs tried"] += 1
    TALLY[kind] += 1
    assert tb is None, f"{name}: traceback\n{tb}"
    assert kind == "clean errors", f"{name}: exit {code}, stderr {err!r}"
    assert code != 0
    assert expected in err, f"{name}: {err!r}"


def test_bare_insta_prints_usage_on_stderr_and_exits_2(capsys):
    code, out, err, tb = run_cli([], capsys)
    TALLY["inputs tried"] += 1
    TALLY["clean errors" if (tb is None and code == 2 and err.startswith("usage: insta") and not out)
          else "silent wrong results"] += 1
    assert tb is None and code == 2
    assert err.startswith("usage: insta") and out == ""


def test_unusable_bigbench_examples_are_counted_and_reported(tmp_path, capsys, caplog):
    """Examples of the wrong type are skipped, never silently: counted in the catalog and reported."""
    root = bigbench_root(tmp_path, bigbench_task(examples=[
        {"input": "a, b, 3?", "target_scores": {"3": 1, "a": 0}},
        "just a string",
        42,
        {"input": "x?", "target_scores": {"yes": "high", "no": "low"}},
        {"input": ["not", "a", "string"], "target": "x"},
        {"input": "no target here"},
    ]))
    code, out, err, tb = run_cli(["catalog", "show", "-c", "bigbench", "--data-dir", str(root), "odd_task",
                                  "--examples", "9"], capsys)
    TALLY["inputs tried"] += 1
    warned = " ".join(r.getMessage() for r in caplog.records if r.name == "insta.catalogs.bigbench")
    ok = tb is None and code == 0 and "skipped 5 unusable example(s)" in out and "5 of 6 examples" in warned
    TALLY["correct behaviour" if ok else ("tracebacks" if tb else "silent wrong results")] += 1
    assert tb is None, tb
    assert code == 0
    assert "skipped 5 unusable example(s)" in out and "example 1: not an object (str)" in out
    assert out.count("--- example") == 1  # the one usable example
    assert "5 of 6 examples are unusable" in warned  # a logging warning (the CLI prints it on stderr)
    from insta.catalogs import load_catalog

    task = load_catalog("bigbench", root)["odd_task"]
    assert task.meta["n_examples"] == 1 and task.meta["n_skipped_examples"] == 5
    assert [s["index"] for s in task.meta["skipped_examples"]] == [1, 2, 3, 4, 5]


def test_exponent_numbers_that_yaml_reads_as_strings_are_numbers(tmp_path, capsys):
    """``learning_rate: 1e-4`` (no dot) is a string to YAML 1.1: read as the number it means, not refused."""
    cfg = experiment_config(tmp_path, train__learning_rate="1e-4")
    import yaml

    assert yaml.safe_load(cfg.read_text())["train"]["learning_rate"] == "1e-4"  # a string, as a user writes it
    code, out, err, tb = run_cli(["experiment", str(cfg), "--plan"], capsys)  # (--quiet would hide the plan)
    TALLY["inputs tried"] += 1
    TALLY["correct behaviour" if (tb is None and code == 0) else classify(code, err, tb, "experiment")] += 1
    assert tb is None and code == 0, err
    assert "grid cell(s) to compute" in out


def test_an_unreadable_file_reaching_the_top_level_is_one_line(tmp_path, capsys, monkeypatch):
    """The last line of defence: an OSError / RecursionError / UnicodeDecodeError that no reader caught."""
    import insta.commands.catalog as catalog_cmd

    for exc in (PermissionError(13, "Permission denied", str(tmp_path / "x.json")), RecursionError("deep"),
                UnicodeDecodeError("utf-8", b"\xe9", 0, 1, "invalid continuation byte")):
        def boom(args, exc=exc):
            raise exc

        monkeypatch.setattr(catalog_cmd, "run_list", boom)
        code, out, err, tb = run_cli(["catalog", "list", "-c", str(USER)], capsys)
        TALLY["inputs tried"] += 1
        TALLY[classify(code, err, tb, "catalog list")] += 1
        assert tb is None and code == 2, tb
        assert len(err.strip().splitlines()) == 1 and err.startswith("insta catalog list: error: ")
    assert "0xe9" in err


def test_an_unwritable_output_folder_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    """Permissions cannot be tested as root: the folder is made unwritable for insta's check instead."""
    import insta.util.fileio

    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = insta.util.fileio.os.access
    monkeypatch.setattr(insta.util.fileio.os, "access", lambda p, mode: Path(p) != locked and real_access(p, mode))
    cases = ((["select", "-c", str(USER), "-i", "x", "--json", str(locked / "sel.json")], "select"),
             (["mixture", "--tasks", "review_sentiment", "-c", str(USER), "--out", str(locked / "m.jsonl")], "mixture"),
             (["catalog", "list", "-c", str(USER), "--json", str(locked / "x" / "t.json")], "catalog list"))
    for argv, command in cases:
        code, out, err, tb = run_cli(argv, capsys)
        TALLY["inputs tried"] += 1
        TALLY[classify(code, err, tb, command)] += 1
        assert classify(code, err, tb, command) == "clean errors" and "not writable" in err, err
    assert not any(locked.iterdir())


def test_a_bug_still_shows_its_traceback(monkeypatch):
    """Only user-file errors are turned into one line: a programming error keeps its traceback."""
    import insta.commands.catalog as catalog_cmd

    def bug(args):
        raise KeyError("internal")

    monkeypatch.setattr(catalog_cmd, "run_list", bug)
    with pytest.raises(KeyError):
        main(["catalog", "list", "-c", str(USER)])
