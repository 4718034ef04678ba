"""CLI conventions shared by every command (insta.commands._common.add_output_args): --json on every command
with a result, one meaning of --quiet (no progress, no tables, transformers' and datasets' bars included),
-v/--log-level, and one default catalog."""
import argparse
import json
import logging
import sys
from pathlib import Path

import pytest

from insta import cli
from insta.commands._common import DEFAULT_CATALOG, configure_output

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "train"))
import tiny_lm  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
FIX = Path(__file__).parent / "fixtures"
USER = FIX / "user" / "tasks.yaml"
_one_thread = tiny_lm.one_torch_thread


def leaf_parsers() -> dict[str, argparse.ArgumentParser]:
    """Every runnable (sub)command's parser, by its command line."""
    out = {}

    def walk(parser, prefix):
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            out[prefix] = parser
        for action in subs:
            for name, sub in action.choices.items():
                walk(sub, f"{prefix} {name}".strip())

    walk(cli.build_parser(), "")
    return out


@pytest.fixture(autouse=True)
def restore_logging(monkeypatch):
    for var in ("TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS",
                "TQDM_DISABLE"):
        monkeypatch.delenv(var, raising=False)
    yield
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_warning()
    hf_logging.enable_progress_bar()
    for name in ("insta", "transformers", "datasets", "sentence_transformers", "lm_eval"):
        logging.getLogger(name).setLevel(logging.NOTSET)


def test_every_command_has_the_shared_flags():
    parsers = leaf_parsers()
    assert {"select", "evaluate", "train", "mixture", "experiment", "transfer", "export-lm-eval", "align",
            "eval-selection", "catalog list", "catalog show", "data fetch"} <= set(parsers)
    for name, p in parsers.items():
        flags = {s for a in p._actions for s in a.option_strings}
        assert {"--quiet", "-q", "--verbose", "-v", "--log-level", "--json"} <= flags, name
    # one default catalog (or none) for the commands that take a catalog
    defaults = {name: p.get_default("catalog") for name, p in parsers.items()
                if name in ("select", "evaluate", "export-lm-eval", "eval-selection", "catalog list")}
    assert set(defaults.values()) == {DEFAULT_CATALOG}


def test_quiet_and_log_levels_reach_transformers_and_datasets(monkeypatch):
    import datasets
    import transformers  # noqa: F401
    from transformers.utils import logging as hf_logging

    args = argparse.Namespace(quiet=True, verbose=0, log_level=None, no_progress=False)
    configure_output(args)
    assert args.no_progress is True  # --quiet is --no-progress where a command has it
    assert hf_logging.get_verbosity() == logging.ERROR and not hf_logging.is_progress_bar_enabled()
    assert datasets.is_progress_bar_enabled() is False
    import os

    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1" and os.environ["TQDM_DISABLE"] == "1"
    configure_output(argparse.Namespace(quiet=False, verbose=2, log_level=None))
    assert hf_logging.get_verbosity() == logging.DEBUG and logging.getLogger("insta").level == logging.DEBUG
    configure_output(argparse.Namespace(quiet=False, verbose=0, log_level="INFO"))
    assert hf_logging.get_verbosity() == logging.INFO and os.environ["TRANSFORMERS_VERBOSITY"] == "info"
    datasets.enable_progress_bars()
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["select", "--log-level", "loud"])


def test_json_and_quiet_on_catalog_and_export(capsys, tmp_path):
    assert cli.main(["catalog", "show", "--catalog", str(USER), "review_sentiment", "--json", "-"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["id"] == "review_sentiment" and len(shown["examples"]) == 2
    assert cli.main(["catalog", "list", "--catalog", str(USER), "-q"]) == 0
    assert capsys.readouterr().out == ""  # no table
    assert cli.main(["export-lm-eval", "review_sentiment", "--catalog", str(USER), "--out", str(tmp_path / "x"),
                     "--mode", "generate", "--json", "-"]) == 0
    info = json.loads(capsys.readouterr().out)  # only the JSON on stdout
    assert info["name"] == "insta_review_sentiment"


def test_json_on_mixture_train_evaluate(tmp_path, capsys, monkeypatch):
    mix = tmp_path / "mix.jsonl"
    rc = cli.main(["mixture", "--tasks", "review_sentiment", "--catalog", str(USER), "--per-task", "3",
                   "--out", str(mix), "--json", str(tmp_path / "mix.json"), "-q"])
    assert rc == 0 and capsys.readouterr().out == ""
    m = json.loads((tmp_path / "mix.json").read_text())
    assert m["n"] == 3 and m["counts"] == {"review_sentiment": 3} and m["manifest"]["per_task"]
    model = tiny_lm.build_causal(tmp_path / "tiny")
    train_mix = tmp_path / "toy.jsonl"
    train_mix.write_text("".join(json.dumps(r) + "\n" for r in tiny_lm.toy_records(8)))
    rc = cli.main(["train", "--mixture", str(train_mix), "--model", str(model), "--out", str(tmp_path / "run"),
                   "--max-steps", "1", "--batch-size", "4", "--json", "-", "-q"])
    assert rc == 0
    trained = json.loads(capsys.readouterr().out)
    assert trained["metrics"]["global_step"] == 1 and Path(trained["model_dir"]).is_dir()

    import insta.catalogs
    from insta.catalogs.base import Catalog
    from insta.records import Task

    exs = tiny_lm.toy_examples(4)
    cat = Catalog("toy", [Task(id="toy", instructions=["Which group ?"], catalog="toy", loader=lambda: iter(exs))])
    monkeypatch.setattr(insta.catalogs, "load_catalog", lambda name, data_dir=None, **kw: cat)
    rc = cli.main(["evaluate", "--model", trained["model_dir"], "--catalog", "toy", "--task", "toy",
                   "--json", str(tmp_path / "eval.json"), "--quiet"])
    assert rc == 0 and capsys.readouterr().out == ""
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert ev["results"]["toy"]["primary_metric"] == "acc" and "acc_norm_token" in ev["results"]["toy"]["metrics"]


def test_json_on_experiment(tmp_path, capsys):
    tiny = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
    data = FIX / "experiment" / "data"
    common = [str(tiny), "--out", str(tmp_path / "exp"), "--data-dir", str(data), "-q"]
    assert cli.main(["experiment", *common, "--plan", "--json", str(tmp_path / "plan.json")]) == 0
    assert capsys.readouterr().out == ""  # --quiet: no plan table
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["plan"] and plan["missing_cells"]
    assert cli.main(["experiment", *common, "--json", str(tmp_path / "summary.json")]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["normalisation"] == "char" and summary["average"]["insta-mean"]["mean"] is not None
    assert cli.main(["experiment", *common, "--report-only", "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["average"] == summary["average"]
