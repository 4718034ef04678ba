"""Hostile and careless inputs, round 2: the surfaces added since the first corpus (transfer runs, matrices,
config files, k rules, export, resume), under bad input, concurrency and scale.

Driven through the CLI (``insta.cli.main``, or two real ``python -m insta.cli`` processes for concurrency). Each
case ends in one of: a clean error (exactly one stderr line ``insta <command>: error: ...`` and a non-zero exit),
the documented correct behaviour, or a refusal that names the flag overriding it. Every case is counted; the tally
(inputs tried, clean errors, correct behaviour, tracebacks, unclean errors, silent wrong results, data loss,
hangs) is printed at the end of the module.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import traceback
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import yaml

from insta.cli import main

REPO = Path(__file__).resolve().parents[1]
FIX = REPO / "tests" / "fixtures"
USER = FIX / "user" / "tasks.yaml"
DATA = FIX / "experiment" / "data"
TINY_EXPERIMENT = REPO / "configs" / "tiny.yaml"
TINY_TRANSFER = REPO / "configs" / "transfer-tiny.yaml"
PUBLISHED = FIX / "transfer" / "published.csv"

sys.path.insert(0, str(FIX / "train"))
import tiny_lm  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")

TALLY: Counter = Counter()
ORDER = ("inputs tried", "clean errors", "correct behaviour", "tracebacks", "unclean errors", "silent wrong results",
         "data loss", "hangs")


@pytest.fixture(scope="module", autouse=True)
def _print_tally(request):
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None and TALLY["inputs tried"]:
        with capture.global_and_fixture_disabled():
            reporter.write_line("\nhostile inputs, round 2: " + ", ".join(f"{k} {TALLY[k]}" for k in ORDER))


@pytest.fixture(autouse=True)
def _restore_insta_log_level():
    """``main([... "-q"])`` sets the ``insta`` logger to ERROR for the process: put it back for the next tests."""
    import logging

    level = logging.getLogger("insta").level
    yield
    logging.getLogger("insta").setLevel(level)


def count(kind: str) -> None:
    TALLY["inputs tried"] += 1
    TALLY[kind] += 1


def run_cli(argv: list[str], capsys) -> tuple[int | None, str, str, str | None]:
    """(exit code, stdout, stderr, traceback text if ``main`` raised)."""
    try:
        code, tb = main(argv), None
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


# ---------------------------------------------------------------- corpus builders


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def yaml_file(path: Path, obj) -> Path:
    return write(path, yaml.safe_dump(obj))


def transfer_config(tmp: Path, **change) -> Path:
    """configs/transfer-tiny.yaml on the fixture data, out in ``tmp``; ``a__b`` keys set nested values."""
    raw = yaml.safe_load(TINY_TRANSFER.read_text())
    raw.update({"data_dir": str(DATA), "out": str(tmp / "transfer-out")})
    for key, value in change.items():
        node = raw
        *parents, leaf = key.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return yaml_file(tmp / "transfer.yaml", raw)


def experiment_config(tmp: Path, **change) -> Path:
    raw = yaml.safe_load(TINY_EXPERIMENT.read_text())
    raw.update({"data_dir": str(DATA), "out": str(tmp / "exp-out")})
    for key, value in change.items():
        node = raw
        *parents, leaf = key.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return yaml_file(tmp / "experiment.yaml", raw)


def bomb(levels: int = 7, fan: int = 9) -> str:
    """A "billion laughs" YAML fragment: ``levels`` anchors, each ``fan`` aliases of the one before."""
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * fan) + "]")
    return "\n".join(lines) + "\n"


def bombed_transfer_config(t: Path) -> Path:
    text = TINY_TRANSFER.read_text().replace("data_dir: tests/fixtures/experiment/data", f"data_dir: {DATA}")
    text = text.replace("out: runs/transfer-tiny", f"out: {t / 'transfer-out'}")
    return write(t / "bomb.yaml", text + "description: " + bomb().replace("\n", "\n  ").replace("l0:", "\n  l0:", 1))


def bombed_experiment_config(t: Path) -> Path:
    text = TINY_EXPERIMENT.read_text().replace("data_dir: tests/fixtures/experiment/data", f"data_dir: {DATA}")
    return write(t / "bomb.yaml", text + "report:\n  extra: " + bomb().replace("\n", "\n    ").replace(
        "l0:", "\n    l0:", 1))


def methods_file(t: Path, text: str) -> Path:
    return write(t / "methods.yaml", text)


def train_args(env: dict, out: Path, *more: str) -> list[str]:
    return ["train", "--mixture", env["mix"], "--model", env["lm"], "--out", str(out), "--max-steps", "1",
            "--batch-size", "4", "--no-progress", *more]


def options_file(t: Path, text: str) -> Path:
    return write(t / "opts.yaml", text)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile2-env")
    mix = root / "mix.jsonl"
    mix.write_text("".join(json.dumps(r) + "\n" for r in tiny_lm.toy_records(8)))
    return {"lm": str(tiny_lm.build_causal(root / "llama")), "mix": str(mix)}


Case = tuple[str, str, Callable[[Path, dict], list[str]], str]


def _tr(**change):
    return lambda t, e: ["transfer", str(transfer_config(t, **change)), "--plan", "-q"]


def _exp(**change):
    return lambda t, e: ["experiment", str(experiment_config(t, **change)), "--plan", "-q"]


NUMBERS: list[Case] = [  # NaN and infinity: no option means anything by them
    ("train --lr nan", "train", lambda t, e: train_args(e, t / "r", "--lr", "nan"), "finite number"),
    ("train --lr inf", "train", lambda t, e: train_args(e, t / "r", "--lr", "inf"), "finite number"),
    ("train --epochs inf", "train", lambda t, e: train_args(e, t / "r", "--epochs", "inf"), "finite number"),
    ("train --epochs nan", "train", lambda t, e: train_args(e, t / "r", "--epochs", "nan"), "finite number"),
    ("train --warmup-ratio nan", "train", lambda t, e: train_args(e, t / "r", "--warmup-ratio", "nan"),
     "finite number"),
    ("train --max-grad-norm inf", "train", lambda t, e: train_args(e, t / "r", "--max-grad-norm", "inf"),
     "finite number"),
    ("train --weight-decay -inf", "train", lambda t, e: train_args(e, t / "r", "--weight-decay=-inf"),
     "finite number"),
    ("train --config epochs: .inf", "train",
     lambda t, e: train_args(e, t / "r", "--config", str(options_file(t, "epochs: .inf\n"))), "finite number"),
    ("train --config learning_rate: .nan", "train",
     lambda t, e: train_args(e, t / "r", "--config", str(options_file(t, "learning_rate: .nan\n"))),
     "finite number"),
    ("train --config learning_rate: '1e999'", "train",
     lambda t, e: train_args(e, t / "r", "--config", str(options_file(t, "learning_rate: 1e999\n"))),
     "finite number"),
    ("align --learning-rate nan", "align",
     lambda t, e: ["align", "-c", str(USER), "--out", str(t / "a"), "--learning-rate", "nan"], "finite number"),
    ("align --config warmup_ratio: .inf", "align",
     lambda t, e: ["align", "-c", str(USER), "--out", str(t / "a"), "--config",
                   str(options_file(t, "warmup_ratio: .inf\n"))], "finite number"),
    ("transfer reliability_min: .nan", "transfer", _tr(reliability_min=float("nan")), "finite number"),
    ("transfer reliability_min: .inf", "transfer", _tr(reliability_min=float("inf")), "finite number"),
    ("transfer train.epochs: .inf", "transfer", _tr(train__epochs=float("inf")), "finite number"),
    ("transfer train.learning_rate: .nan", "transfer", _tr(train__learning_rate=float("nan")), "finite number"),
    ("transfer pool.near_duplicate_cosine: .nan", "transfer", _tr(pool__near_duplicate_cosine=float("nan")),
     "finite number"),
    ("experiment train.epochs: .inf", "experiment", _exp(train__epochs=float("inf")), "finite number"),
    ("experiment train.learning_rate: .nan", "experiment", _exp(train__learning_rate=float("nan")),
     "finite number"),
    ("experiment pool.near_duplicate_cosine: .nan", "experiment", _exp(pool__near_duplicate_cosine=float("nan")),
     "finite number"),
    ("select -k threshold --z nan", "select",
     lambda t, e: ["select", "-c", str(USER), "-i", "x", "-k", "threshold", "--z", "nan"], "finite number"),
    ("select -k threshold --z inf", "select",
     lambda t, e: ["select", "-c", str(USER), "-i", "x", "-k", "threshold", "--z", "inf"], "finite number"),
    ("select -k threshold --z -inf", "select",
     lambda t, e: ["select", "-c", str(USER), "-i", "x", "-k", "threshold", "--z=-inf"], "finite number"),
    ("select --config z: .nan", "select",
     lambda t, e: ["select", "-c", str(USER), "-i", "x", "-k", "threshold", "--config",
                   str(options_file(t, "z: .nan\n"))], "finite number"),
    ("eval-selection --reliability-min nan", "eval-selection",
     lambda t, e: ["eval-selection", "--transfer", str(PUBLISHED), "--reliability-min", "nan"], "finite number"),
    ("eval-selection --config reliability_min: .inf", "eval-selection",
     lambda t, e: ["eval-selection", "--transfer", str(PUBLISHED), "--config",
                   str(options_file(t, "reliability_min: .inf\n"))], "finite number"),
    ("eval-selection --output-space-weight inf", "eval-selection",
     lambda t, e: ["eval-selection", "-c", str(USER), "--output-space-weight", "inf"], "finite number"),
]

VALUES: list[Case] = [  # values of the wrong kind, and values that silently meant something else
    ("select -m random -o seed=x", "select",
     lambda t, e: ["select", "-c", str(USER), "-i", "x", "-m", "random", "-o", "seed=x"], "bad options"),
    ("select -m random -o seed=[1]", "select",
     lambda t, e: ["select", "-c", str(USER), "-i", "x", "-m", "random", "-o", "seed=[1]"], "bad options"),
    ("eval-selection --methods: random with seed 'x'", "eval-selection",
     lambda t, e: ["eval-selection", "--transfer", str(PUBLISHED), "--methods",
                   str(methods_file(t, "- {method: random, options: {seed: x}}\n"))], "bad options"),
    ("select --config instruction: 5", "select",
     lambda t, e: ["select", "-c", str(USER), "--config", str(options_file(t, "instruction: 5\n"))], "must be text"),
    ("select --config instruction: [5]", "select",
     lambda t, e: ["select", "-c", str(USER), "--config", str(options_file(t, "instruction: [5]\n"))],
     "must be text"),
    ("select --config json: 5", "select",
     lambda t, e: ["select", "-c", str(USER), "-i", "x", "--config", str(options_file(t, "json: 5\n"))],
     "must be text"),
    ("export-lm-eval --config stop: 5", "export-lm-eval",
     lambda t, e: ["export-lm-eval", "review_sentiment", "-c", str(USER), "--out", str(t / "x"), "--config",
                   str(options_file(t, "stop: 5\n"))], "must be text"),
    ("export-lm-eval --config name: 12", "export-lm-eval",
     lambda t, e: ["export-lm-eval", "review_sentiment", "-c", str(USER), "--out", str(t / "x"), "--config",
                   str(options_file(t, "name: 12\n"))], "must be text"),
    ("transfer sources: [a, a, b] (duplicate)", "transfer",
     _tr(sources=["animal_facts", "animal_facts", "plant_facts"]), "twice"),
    ("transfer scoring.metric: bogus", "transfer", _tr(scoring__metric="bogus"), "scoring.metric must be one of"),
    ("eval-selection --metric acc on a matrix without it", "eval-selection",
     lambda t, e: ["eval-selection", "--transfer", str(PUBLISHED), "--metric", "acc"], "no metric 'acc'"),
    ("transfer config: 7-level alias bomb", "transfer", lambda t, e: ["transfer", str(bombed_transfer_config(t)),
                                                                        "--plan", "-q"], "alias bomb"),
    ("experiment config: 7-level alias bomb", "experiment",
     lambda t, e: ["experiment", str(bombed_experiment_config(t)), "--plan", "-q"], "alias bomb"),
    ("select --instructions-file alias bomb", "select",
     lambda t, e: ["select", "-c", str(USER), "--instructions-file", str(write(t / "ins.yaml", bomb()))],
     "alias bomb"),
    ("user catalog alias bomb", "catalog list",
     lambda t, e: ["catalog", "list", "-c", str(write(t / "tasks.yaml", "- id: a\n  instructions: [x]\n  meta:\n    "
                                                       + bomb().replace("\n", "\n    ")))], "alias bomb"),
    ("transfer config: an alias inside itself", "transfer",
     lambda t, e: ["transfer", str(write(t / "cyc.yaml", f"name: c\ndata_dir: {DATA}\ntargets: &t [x, *t]\n")),
                   "--plan", "-q"], "cycle"),
    ("train --config alias bomb", "train",
     lambda t, e: train_args(e, t / "r", "--config", str(options_file(t, bomb()))), "alias bomb"),
]


def big_matrix(t: Path, value: float, name: str = "big.csv") -> Path:
    rows = ["target,source,seed,transfer"]
    for seed in (0, 1):
        rows += [f"bigbench:animal_facts,{s},{seed},{value * f}" for s, f in
                 (("arith", 1.0), ("plant_facts", -0.5), ("capitals", 0.9), ("color_names", -1.0))]
    return write(t / name, "\n".join(rows) + "\n")


MATRICES: list[Case] = [
    ("eval-selection: value - base_value overflows", "eval-selection",
     lambda t, e: ["eval-selection", "--transfer", str(write(t / "m.csv", "target,source,value,base_value\n"
                                                           "x,y,1.7e308,-1.7e308\n"))], "overflow"),
    ("eval-selection: a value of 1e309", "eval-selection",
     lambda t, e: ["eval-selection", "--transfer", str(write(t / "m.csv", "target,source,transfer\nx,y,1e309\n"))],
     "not finite"),
    ("transfer --report-only on an empty folder", "transfer",
     lambda t, e: ["transfer", str(transfer_config(t)), "--report-only", "-q", "--out", str(t / "empty")],
     "nothing to report"),
    ("transfer --report-only on a folder of other files", "transfer",
     lambda t, e: ["transfer", str(transfer_config(t)), "--report-only", "-q", "--out",
                   str(write(t / "mine" / "notes.txt", "mine\n").parent)], "nothing to report"),
]

CORPUS = [*NUMBERS, *VALUES, *MATRICES]


@pytest.mark.parametrize("name,command,build,expected", CORPUS, ids=[c[0] for c in CORPUS])
def test_bad_input_is_one_clean_error_line(name, command, build, expected, env, tmp_path, capsys):
    argv = build(tmp_path, env)
    code, out, err, tb = run_cli(argv, capsys)
    kind = classify(code, err, tb, command)
    count(kind)
    assert tb is None, f"{name}: traceback\n{tb}"
    assert kind == "clean errors", f"{name}: exit {code}, stderr {err!r}"
    assert expected in err, f"{name}: {err!r}"
    assert not (tmp_path / "5").exists()  # `json: 5` once wrote a file named 5


def test_an_alias_used_sensibly_is_read(tmp_path, capsys):
    """Refusing bombs keeps ordinary anchors and aliases working (one list used twice, say)."""
    text = TINY_TRANSFER.read_text().replace("data_dir: tests/fixtures/experiment/data", f"data_dir: {DATA}")
    text = text.replace("seeds: [0, 1]", "seeds: &s [0, 1]") + "description: {seeds: *s, note: shared}\n"
    cfg = write(tmp_path / "alias.yaml", text)
    code, out, err, tb = run_cli(["transfer", str(cfg), "--plan", "-q", "--out", str(tmp_path / "o")], capsys)
    count("correct behaviour" if (tb is None and code == 0) else classify(code, err, tb, "transfer"))
    assert tb is None and code == 0, err
    from insta.util.fileio import parse_yaml

    shared = parse_yaml("a: &a {x: 1, y: [1, 2]}\nb: *a\nc: *a\n", "t")
    assert shared["b"] == shared["c"] == {"x": 1, "y": [1, 2]}


# ---------------------------------------------------------------- k rules on exact ties


def test_gap_and_elbow_never_cut_inside_a_tie_group():
    """Float noise inside a group of equal scores is no drop ("largest drop after rank 4 (1 -> 1)"): the rules
    cut only between distinct scores; when the bounds leave no such cut they take k_min and say so (``--ties``
    then decides the group, as for a fixed k)."""
    from insta.selection import KRule
    from insta.selection.ranking import choose_k

    rng = np.random.default_rng(0)
    tied = list(1.0 + rng.normal(scale=1e-15, size=12))  # one tie group, its order from float noise
    for rule in ("gap", "elbow"):
        k, why = choose_k(tied, KRule(rule, k_max=10))
        ok = k == 1 and "all tie" in why
        count("correct behaviour" if ok else "silent wrong results")
        assert ok, (rule, k, why)
    noisy = [0.9, 0.9 - 1e-15, 0.9 + 1e-16, 0.9 - 2e-15, 0.9, 0.6, 0.6 + 1e-16, 0.58, 0.3, 0.29, 0.28, 0.27]
    for rule in ("gap", "elbow"):
        k, why = choose_k(noisy, KRule(rule, k_max=10))
        ok = k in (5, 7, 8, 9, 10)  # a boundary between distinct scores
        count("correct behaviour" if ok else "silent wrong results")
        assert ok, (rule, k, why)


def test_select_gap_cuts_between_tie_groups_through_the_cli(tmp_path, capsys):
    """Five tasks sharing one instruction (in different orders: equal up to float noise) and five others: the
    gap rule never selects part of the five."""
    same = ["Is the review positive?", "Decide the sentiment of the review.", "Classify the review."]
    tasks = [{"id": f"same{i}", "instructions": same[i % 3:] + same[:i % 3]} for i in range(5)]
    tasks += [{"id": f"other{i}", "instructions": [f"Translate sentence {i} into French, word {i}."]} for i in range(5)]
    cat = yaml_file(tmp_path / "tasks.yaml", tasks)
    for rule in ("gap", "elbow"):
        out = tmp_path / f"{rule}.json"
        code, _, err, tb = run_cli(["select", "-c", str(cat), "-i", "Is the review positive?", "-k", rule,
                                    "-e", "hashing", "--json", str(out), "-q"], capsys)
        sel = json.loads(out.read_text()) if code == 0 else {"selected": []}
        picked = {s["task"] for s in sel["selected"]}
        same = {f"same{i}" for i in range(5)}
        ok = tb is None and code == 0 and (same <= picked or not (same & picked))
        count("correct behaviour" if ok else ("tracebacks" if tb else "silent wrong results"))
        assert ok, (rule, picked, err)


# ---------------------------------------------------------------- scale of a user matrix


def _old_ndcg(transfer, scores) -> float:
    """The NDCG as computed before the overflow fix (2^rel - 1 directly), the reference below 1,000 sources."""
    t = np.asarray(transfer, float)
    n = len(t)
    rel = np.array([n - int(np.sum(t > x)) for x in t], float)
    idx = sorted(range(n), key=lambda i: -scores[i])
    groups: list[list[int]] = []
    for i in idx:
        if groups and scores[groups[-1][0]] == scores[i]:
            groups[-1].append(i)
        else:
            groups.append([i])
    disc, pos = np.zeros(n), 0
    for g in groups:
        disc[g] = np.mean([1.0 / math.log2(p + 2) for p in range(pos, pos + len(g))])
        pos += len(g)
    gains = np.power(2.0, rel) - 1.0
    ideal = float(np.sum(np.sort(gains)[::-1] / np.log2(np.arange(n) + 2)))
    return float(np.sum(gains * disc)) / ideal


def test_ndcg_is_unchanged_below_1000_sources_and_finite_above():
    from insta.transfer import ndcg

    rng = np.random.default_rng(0)
    for n in (2, 3, 7, 40, 300, 999):
        for rep in range(6):
            transfer = rng.integers(0, n // 3 + 2, n).astype(float) if rep % 2 else rng.normal(size=n)
            scores = rng.integers(0, 4, n).astype(float) if rep % 3 == 0 else rng.normal(size=n)
            same = ndcg(transfer, scores) == _old_ndcg(transfer, list(scores))  # bit for bit
            count("correct behaviour" if same else "silent wrong results")
            assert same, (n, rep)
    for n in (1100, 5000):
        transfer = rng.normal(size=n)
        values = [ndcg(transfer, transfer), ndcg(transfer, -transfer), ndcg(transfer, rng.normal(size=n))]
        ok = all(math.isfinite(v) for v in values) and values[0] == pytest.approx(1.0) and values[1] < values[2]
        count("correct behaviour" if ok else "silent wrong results")
        assert ok, values


def test_regret_of_values_near_the_float_limit_is_finite():
    from insta.transfer import regret_at_k

    perf = [1.7e308, -1.7e308, 1.6e308, 1.0e308, -1.0e308, 1.5e308, 0.5e308]
    got = [regret_at_k(perf, list(range(7, 0, -1)), 5), regret_at_k(perf, perf, 5)]
    ok = all(math.isfinite(v) for v in got) and got[1] == 0.0 and got[0] > 0
    count("correct behaviour" if ok else "silent wrong results")
    assert ok, got


@pytest.mark.parametrize("value", [1.7e308, -1.7e308, 1e300, 1e150, -1e150])
def test_matrix_of_values_near_the_float_limit_scores_finite_or_refuses(tmp_path, capsys, value):
    out = tmp_path / "s.json"
    code, _, err, tb = run_cli(["eval-selection", "--transfer", str(big_matrix(tmp_path, value)), "--catalog",
                                "bigbench", "--data-dir", str(DATA), "--encoder", "hashing", "--regret-k", "2",
                                "--include-unreliable", "--methods", str(methods_file(tmp_path, "- lexical\n- all\n")),
                                "--json", str(out), "-q"], capsys)
    if code == 0:
        res = json.loads(out.read_text())
        vals = [v[m] for by_t in res["per_target"].values() for v in by_t.values() for m in ("ndcg", "regret")]
        kind = "correct behaviour" if vals and all(math.isfinite(v) for v in vals) else "silent wrong results"
    else:
        kind = classify(code, err, tb, "eval-selection")
    count(kind)
    assert kind in ("correct behaviour", "clean errors"), (code, err, tb)


def test_a_2000_source_matrix_scores_finite_through_the_cli(tmp_path, capsys):
    """Above ~1,000 sources 2^N overflowed: every NDCG was NaN with exit 0. (10,000 sources: benchmarks/
    bench_matrix_scale.py.)"""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_matrix_scale import build

    catalog, matrix, methods = build(tmp_path, 2000)
    out = tmp_path / "s.json"
    code, _, err, tb = run_cli(["eval-selection", "--transfer", str(matrix), "-c", str(catalog), "--methods",
                                str(methods), "--json", str(out), "-q"], capsys)
    ok = tb is None and code == 0
    if ok:
        res = json.loads(out.read_text())
        vals = [v["ndcg"] for by_t in res["per_target"].values() for v in by_t.values()]
        ok = len(vals) == 3 * 4 and all(0 < v <= 1 for v in vals)
    count("correct behaviour" if ok else ("tracebacks" if tb else "silent wrong results"))
    assert ok, err


# ---------------------------------------------------------------- output folders


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
            and p.name != ".lock"}


def test_transfer_refuses_a_folder_holding_a_users_matrix(tmp_path, capsys):
    out = tmp_path / "mine"
    mine = write(out / "matrix.csv", "target,source,transfer\nmy,own,1\n")
    cfg = transfer_config(tmp_path)
    code, _, err, tb = run_cli(["transfer", str(cfg), "-q", "--out", str(out)], capsys)
    kind = classify(code, err, tb, "transfer")
    count(kind if mine.read_text().startswith("target,source,transfer\nmy") else "data loss")
    assert kind == "clean errors" and "--overwrite" in err and "matrix.csv" in err, err
    assert mine.read_text() == "target,source,transfer\nmy,own,1\n"
    code, _, err, tb = run_cli(["transfer", str(cfg), "-q", "--out", str(out), "--overwrite"], capsys)
    ok = tb is None and code == 0 and "bigbench:animal_facts" in mine.read_text()
    count("correct behaviour" if ok else classify(code, err, tb, "transfer"))
    assert ok, err


def test_transfer_refuses_another_configurations_run_and_reruns_its_own(tmp_path, capsys):
    out = tmp_path / "run"
    first = transfer_config(tmp_path, seeds=[0, 1])
    assert run_cli(["transfer", str(first), "-q", "--out", str(out)], capsys)[0] == 0
    before = _files(out)
    other = transfer_config(tmp_path, seeds=[0, 1, 2])
    code, _, err, tb = run_cli(["transfer", str(other), "-q", "--out", str(out)], capsys)
    kind = classify(code, err, tb, "transfer")
    count(kind if _files(out) == before else "data loss")
    assert kind == "clean errors" and "differs in: seeds" in err and "--overwrite" in err, err
    assert _files(out) == before
    # the same config again (a different executor or scoring is the same matrix): no work, exit 0
    code, _, err, tb = run_cli(["transfer", str(transfer_config(tmp_path, seeds=[0, 1], scoring__k=3)), "-q", "--out",
                                str(out)], capsys)
    count("correct behaviour" if (tb is None and code == 0) else classify(code, err, tb, "transfer"))
    assert tb is None and code == 0, err


def test_report_only_on_a_run_with_cells_still_works(tmp_path, capsys):
    out = tmp_path / "run"
    cfg = transfer_config(tmp_path)
    assert run_cli(["transfer", str(cfg), "-q", "--out", str(out), "--no-report"], capsys)[0] == 0
    (out / "matrix.csv").unlink()
    code, _, err, tb = run_cli(["transfer", str(cfg), "-q", "--out", str(out), "--report-only"], capsys)
    ok = tb is None and code == 0 and (out / "matrix.csv").read_text().count("\n") > 1
    count("correct behaviour" if ok else classify(code, err, tb, "transfer"))
    assert ok, err


def test_export_lm_eval_never_replaces_a_hand_edited_yaml(tmp_path, capsys):
    out = tmp_path / "lm"
    argv = ["export-lm-eval", "review_sentiment", "-c", str(USER), "--out", str(out), "--mode", "generate", "-q"]
    assert run_cli(argv, capsys)[0] == 0
    yaml_path = out / "insta_review_sentiment.yaml"
    code, _, err, tb = run_cli(argv, capsys)  # unedited: rewritten, fine
    count("correct behaviour" if (tb is None and code == 0) else classify(code, err, tb, "export-lm-eval"))
    assert code == 0, err
    edited = yaml_path.read_text() + "# my note: num_fewshot 5\n"
    yaml_path.write_text(edited)
    code, _, err, tb = run_cli(argv, capsys)
    kind = classify(code, err, tb, "export-lm-eval")
    count(kind if yaml_path.read_text() == edited else "data loss")
    assert kind == "clean errors" and "--overwrite" in err and "edited" in err, err
    assert yaml_path.read_text() == edited
    data = out / "insta_review_sentiment.jsonl"  # a hand-edited data file too
    yaml_path.unlink()
    data.write_text(data.read_text() + "\n")
    code, _, err, tb = run_cli(argv, capsys)
    kind = classify(code, err, tb, "export-lm-eval")
    count(kind)
    assert kind == "clean errors" and "jsonl" in err
    code, _, err, tb = run_cli([*argv, "--overwrite"], capsys)
    ok = tb is None and code == 0 and "# my note" not in yaml_path.read_text()
    count("correct behaviour" if ok else classify(code, err, tb, "export-lm-eval"))
    assert ok, err
    user_file = write(tmp_path / "lm2" / "insta_review_sentiment.yaml", "task: mine\n")  # never written by insta
    code, _, err, tb = run_cli(["export-lm-eval", "review_sentiment", "-c", str(USER), "--out",
                                str(user_file.parent), "--mode", "generate", "-q"], capsys)
    kind = classify(code, err, tb, "export-lm-eval")
    count(kind if user_file.read_text() == "task: mine\n" else "data loss")
    assert kind == "clean errors"


# ---------------------------------------------------------------- resume and rerun


def test_rerunning_a_finished_train_trains_nothing(env, tmp_path, capsys):
    out = tmp_path / "run"
    argv = train_args(env, out)
    code, first, err, tb = run_cli(argv, capsys)
    assert code == 0, err
    result = (out / "train_result.json").read_bytes()
    stamp = (out / "train_result.json").stat().st_mtime_ns
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir()) if (out / "checkpoints").is_dir() else []
    code, second, err, tb = run_cli(argv, capsys)
    ok = (tb is None and code == 0 and "already holds this finished run" in second and "--overwrite" in second
          and (out / "train_result.json").read_bytes() == result
          and (out / "train_result.json").stat().st_mtime_ns == stamp
          and (sorted(p.name for p in (out / "checkpoints").iterdir()) if (out / "checkpoints").is_dir() else [])
          == ckpts)
    count("correct behaviour" if ok else ("tracebacks" if tb else "silent wrong results"))
    assert ok, (second, err)


class Unpicklable:
    """A class ``torch.load(weights_only=True)`` refuses to construct."""


def test_a_checkpoint_with_refused_pickles_is_discarded_and_training_restarts(env, tmp_path, capsys, caplog):
    import torch

    out = tmp_path / "run"
    argv = train_args(env, out, "--max-steps", "2", "--save-steps", "1")
    assert run_cli(argv, capsys)[0] == 0
    ckpts = sorted((out / "checkpoints").glob("checkpoint-*"))
    assert ckpts
    for ckpt in ckpts:  # whole zip archives, refused by weights_only
        torch.save({"state": Unpicklable()}, ckpt / "optimizer.pt")
    import shutil

    shutil.rmtree(out / "model")
    (out / "train_result.json").unlink()
    code, _, err, tb = run_cli(argv, capsys)
    warned = " ".join(r.getMessage() for r in caplog.records)
    ok = (tb is None and code == 0 and all(c.name in warned for c in ckpts) and "optimizer.pt" in warned
          and (out / "train_result.json").is_file())
    count("correct behaviour" if ok else ("tracebacks" if tb else "silent wrong results"))
    assert tb is None, tb
    assert ok, (err, warned)
    assert json.loads((out / "train_result.json").read_text())["metrics"]["resumed_from"] is None


# ---------------------------------------------------------------- smaller


def test_methods_labels_with_terminal_escapes_are_escaped(tmp_path, capsys):
    methods = methods_file(tmp_path, '- {method: lexical, label: "lex\\e]0;pwned\\a\\e[2J"}\n- all\n')
    code, out, err, tb = run_cli(["eval-selection", "--transfer", str(PUBLISHED), "--catalog", "bigbench",
                                  "--data-dir", str(DATA), "--methods", str(methods), "--regret-k", "2"], capsys)
    ok = tb is None and code == 0 and "\x1b" not in out + err and "\\x1b" in out
    count("correct behaviour" if ok else ("tracebacks" if tb else "silent wrong results"))
    assert ok, (code, out[-400:], err)


def test_a_swapped_embedding_cache_vector_is_detected(tmp_path, monkeypatch, caplog):
    import io

    import insta.encoder as enc_mod
    from insta.encoder import Encoder

    class FakeST:
        def encode(self, texts, **kw):
            out = np.array([[len(t), t.count("a") + 1.0, 1.0] for t in texts], dtype=np.float32)
            return out / np.linalg.norm(out, axis=1, keepdims=True)

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"dim": 3}')
    monkeypatch.setattr(enc_mod, "load_sentence_transformer", lambda path, device=None: FakeST())
    enc = Encoder(str(model))
    truth = enc.encode(["alpha", "beta", "gamma"])
    with np.load(enc.cache.path) as data:
        keys, vecs, tags = data["keys"], data["vecs"].copy(), data["tags"]
    vecs[[0, 1]] = vecs[[1, 0]]  # two valid unit vectors swapped: finite, unit-norm, wrong
    buf = io.BytesIO()
    np.savez(buf, keys=keys, vecs=vecs, tags=tags)
    enc.cache.path.write_bytes(buf.getvalue())
    again = Encoder(str(model))
    got = again.encode(["alpha", "beta", "gamma"])
    ok = np.allclose(got, truth) and again.n_encoded == 2 and "integrity" in caplog.text
    count("correct behaviour" if ok else "silent wrong results")
    assert ok, (again.n_encoded, caplog.text)
    # rows copied from another machine's cache (another key) are recomputed too
    monkeypatch.setenv("INSTA_CACHE_DIR", str(tmp_path / "other-machine"))
    other = Encoder(str(model))
    other.encode(["alpha"])
    stolen = other.cache.path.read_bytes()
    monkeypatch.setenv("INSTA_CACHE_DIR", str(enc.cache.path.parents[1]))
    Encoder(str(model)).cache.path.write_bytes(stolen)
    third = Encoder(str(model))
    third.encode(["alpha"])
    count("correct behaviour" if third.n_encoded == 1 else "silent wrong results")
    assert third.n_encoded == 1


def test_an_index_cache_entry_with_a_recomputed_plain_digest_is_not_trusted(tmp_path):
    import hashlib

    from insta.catalogs import index_cache, load_catalog

    root = DATA
    load_catalog("bigbench", root)
    files = sorted(index_cache.cache_dir().glob("bigbench-*.json"))
    assert files
    data = json.loads(files[0].read_text())
    rel, entry = next(iter(data["files"].items()))
    poisoned = json.loads(json.dumps(entry["data"]).replace("animal", "poisoned"))
    blob = json.dumps(poisoned, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    entry["data"] = poisoned
    entry["digest"] = hashlib.sha256(f"{entry['sha256']}\0{blob}".encode()).hexdigest()  # the unkeyed recipe
    files[0].write_text(json.dumps(data))
    cat = load_catalog("bigbench", root)
    ok = not any("poisoned" in json.dumps([t.id, t.instructions, t.keywords, str(t.meta)]) for t in cat)
    count("correct behaviour" if ok else "silent wrong results")
    assert ok


def test_select_json_is_the_same_bytes_for_the_same_selection(tmp_path, capsys):
    outs = []
    for i in range(3):
        out = tmp_path / f"sel{i}.json"
        code, _, err, tb = run_cli(["select", "-c", str(USER), "-i", "Is this review positive?", "-k", "2", "-e",
                                    "hashing", "--json", str(out)], capsys)
        assert code == 0, err
        outs.append(out.read_bytes())
        assert "insta select:" in err and " s" in err  # the timing goes to stderr, not into the file
    ok = outs[0] == outs[1] == outs[2]
    count("correct behaviour" if ok else "silent wrong results")
    assert ok


# ---------------------------------------------------------------- two processes on one output folder


def _cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "insta.cli", *argv]


def _proc_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
            "HF_HUB_OFFLINE": "1"}


def test_a_run_holding_the_folder_makes_a_second_one_refuse_with_one_line(tmp_path, capsys):
    from insta.util.paths import run_lock

    out = tmp_path / "run"
    cfg = transfer_config(tmp_path)
    with run_lock(out, "transfer"):
        code, _, err, tb = run_cli(["transfer", str(cfg), "-q", "--out", str(out)], capsys)
    kind = classify(code, err, tb, "transfer")
    count(kind)
    assert kind == "clean errors" and f"in use by another insta transfer run (pid {os.getpid()})" in err, err
    assert not (out / "cells").exists()
    code, _, err, tb = run_cli(["transfer", str(cfg), "-q", "--out", str(out)], capsys)  # released: runs
    count("correct behaviour" if code == 0 else classify(code, err, tb, "transfer"))
    assert code == 0, err


def test_a_killed_run_leaves_no_stale_lock(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom insta.util.paths import run_lock\n"
                               f"with run_lock({str(out)!r}, 'transfer'):\n    print('held', flush=True)\n"
                               "    time.sleep(60)\n"], stdout=subprocess.PIPE, text=True, env=_proc_env())
    assert holder.stdout.readline().strip() == "held"
    from insta.errors import InstaError
    from insta.util.paths import run_lock

    with pytest.raises(InstaError, match="in use"):
        with run_lock(out, "transfer"):
            pass
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with run_lock(out, "transfer"):  # the OS released the lock with the process
        ok = True
    count("correct behaviour" if ok else "hangs")


def _two_at_once(argv: list[str], cwd: Path, timeout: float = 240) -> list[subprocess.CompletedProcess]:
    procs = [subprocess.Popen(argv, cwd=cwd, env=_proc_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    done = []
    for p in procs:
        try:
            o, e = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            count("hangs")
            raise AssertionError("a run hung") from None
        done.append(subprocess.CompletedProcess(argv, p.returncode, o, e))
    return done


def _judge_pair(results: list[subprocess.CompletedProcess], same_as_single: bool, command: str) -> str:
    """Both finished with the single-process result, or one did and the other refused with one line."""
    codes = sorted(r.returncode for r in results)
    if any("Traceback" in r.stderr for r in results):
        return "tracebacks"
    if codes == [0, 0]:
        return "correct behaviour" if same_as_single else "silent wrong results"
    if codes == [0, 2]:
        refused = next(r for r in results if r.returncode == 2).stderr.strip().splitlines()
        clean = len(refused) == 1 and refused[0].startswith(f"insta {command}: error: ") and "in use" in refused[0]
        if not clean:
            return "unclean errors"
        return "clean errors" if same_as_single else "silent wrong results"
    return "silent wrong results"


TRIALS = 5


@pytest.mark.slow
def test_two_transfer_processes_on_one_folder(tmp_path):
    """The race of issue 19: one process deleted models/<key> while the other evaluated it (wrong rows)."""
    cfg = transfer_config(tmp_path)
    single = tmp_path / "single"
    ref = subprocess.run(_cli("transfer", str(cfg), "-q", "--out", str(single)), env=_proc_env(),
                         capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    outcomes = []
    for trial in range(TRIALS):
        out = tmp_path / f"pair{trial}"
        results = _two_at_once(_cli("transfer", str(cfg), "-q", "--out", str(out)), tmp_path)
        same = (out / "matrix.csv").is_file() and (out / "matrix.csv").read_bytes() == (single / "matrix.csv"
                                                                                        ).read_bytes()
        kind = _judge_pair(results, same, "transfer")
        count(kind)
        outcomes.append((kind, sorted(r.returncode for r in results)))
    print(f"two transfer processes, {TRIALS} trials: {outcomes}")
    assert all(k in ("correct behaviour", "clean errors") for k, _ in outcomes), outcomes


@pytest.mark.slow
def test_two_experiment_processes_on_one_folder(tmp_path):
    cfg = experiment_config(tmp_path)

    def cells(folder: Path):
        res = json.loads((folder / "results.json").read_text())
        return sorted((c["target"], c["label"], json.dumps(c["evaluate_metrics"], sort_keys=True))
                      for c in res["cells"])

    single = tmp_path / "single"
    ref = subprocess.run(_cli("experiment", str(cfg), "-q", "--out", str(single)), env=_proc_env(),
                         capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    outcomes = []
    for trial in range(TRIALS):
        out = tmp_path / f"pair{trial}"
        results = _two_at_once(_cli("experiment", str(cfg), "-q", "--out", str(out)), tmp_path)
        same = (out / "results.json").is_file() and cells(out) == cells(single)
        kind = _judge_pair(results, same, "experiment")
        count(kind)
        outcomes.append((kind, sorted(r.returncode for r in results)))
    print(f"two experiment processes, {TRIALS} trials: {outcomes}")
    assert all(k in ("correct behaviour", "clean errors") for k, _ in outcomes), outcomes
