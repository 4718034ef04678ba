"""Flags generated from the stage dataclasses and ``--config FILE.yaml`` (precedence flags > file > defaults)."""
from __future__ import annotations

import argparse
import dataclasses

import pytest

from insta import cli
from insta.align.config import AlignConfig
from insta.eval_config import EvalConfig
from insta.mixture import MixtureConfig
from insta.train import TrainConfig

# the arguments each command needs besides its config, and the fields those set
COMMANDS = {
    "train": (TrainConfig, ["--mixture", "m.jsonl", "--out", "o"], {"output_dir": "o"}),
    "evaluate": (EvalConfig, ["--task", "t"], {}),
    "align": (AlignConfig, ["--out", "a"], {}),
    "mixture": (MixtureConfig, ["--tasks", "a", "--catalog", "c", "--out", "o.jsonl"], {}),
}

# fields a command sets through flags of its own (not generated one to one)
OWN_FLAGS: dict[str, set[str]] = {"mixture": {"caps"}, "align": {"exclude_tasks", "exclude_families", "pool"}}


def config_of(command: str, *argv: str):
    """The config ``insta <command> ... argv`` would run with."""
    import importlib

    _, base, _ = COMMANDS[command]
    args = cli.build_parser().parse_args([command, *base, *argv])
    return importlib.import_module(f"insta.commands.{command}").config_from_args(args)


def run(argv, capsys):
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_cli_defaults_are_the_dataclass_defaults(command):
    cls, _, set_by_base = COMMANDS[command]
    assert config_of(command) == dataclasses.replace(cls(), **set_by_base)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_lists_every_generated_flag_with_help(command, capsys, monkeypatch):
    cls, _, set_by_base = COMMANDS[command]
    monkeypatch.setenv("COLUMNS", "1000")  # no wrapping inside a help text
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    blocks: list[str] = []  # one per option: its flags, then its help (on the same line or the next)
    for line in capsys.readouterr().out.splitlines():
        if line.startswith("  -"):
            blocks.append(line.strip())
        elif line.startswith("    ") and blocks:
            blocks[-1] += " " + line.strip()
    assert any(b.startswith("--config") for b in blocks)
    for f in dataclasses.fields(cls):
        help_text = f.metadata.get("help")
        assert help_text, f"{cls.__name__}.{f.name} has no help text"
        if f.name in OWN_FLAGS.get(command, ()):
            continue
        flag = "--" + f.name.replace("_", "-")
        block = next((b for b in blocks if b.startswith((flag + " ", flag + ","))), "")
        assert help_text in block, f.name
        if getattr(cls(), f.name) is not None and f.name not in set_by_base and "(default" not in help_text:
            assert "(default: " in block, f.name


def test_train_config_file_sets_values_and_flags_override_it(tmp_path):
    cfg = tmp_path / "train.yaml"
    cfg.write_text("lora: true\nlora_r: 16\nlearning_rate: 1e-4\nlora_target_modules: [q_proj, v_proj]\nseed: 7\n")
    config = config_of("train", "--config", str(cfg))
    assert (config.lora, config.lora_r, config.learning_rate, config.seed) == (True, 16, 1e-4, 7)
    assert config.lora_target_modules == ["q_proj", "v_proj"]
    config = config_of("train", "--config", str(cfg), "--lora-r", "4", "--lr", "3e-4", "--no-lora",
                       "--lora-targets", "all-linear")
    assert (config.lora, config.lora_r, config.learning_rate, config.seed) == (False, 4, 3e-4, 7)
    assert config.lora_target_modules == "all-linear"


def test_train_legacy_flag_names_still_work():
    config = config_of("train", "--no-resume", "--no-progress", "--scheduler", "cosine", "--lora",
                       "--lora-targets", "q_proj,v_proj", "--bf16", "--merge-lora")
    assert (config.resume, config.progress, config.lr_scheduler, config.bf16) == (False, False, "cosine", True)
    assert config.lora_target_modules == ["q_proj", "v_proj"] and config.merge_lora
    assert config_of("train", "--quiet").progress is False


@pytest.mark.parametrize("text, needle", [
    ("lora_rr: 4\n", "lora_rr (did you mean lora_r?)"),
    ("lora_r: abc\n", "lora_r must be an integer"),
    ("bf16: 'yes'\n", "bf16 must be true or false"),
    ("lora_r: 0\n", "lora_r must be at least 1"),
    ("- a\n- b\n", "must hold a mapping"),
])
def test_train_bad_config_file_is_one_line(tmp_path, capsys, text, needle):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    code, _, err = run(["train", "--mixture", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "o"),
                        "--config", str(cfg)], capsys)
    assert code != 0 and needle in err and len(err.strip().splitlines()) == 1, err


def test_missing_config_file_is_one_line(tmp_path, capsys):
    code, _, err = run(["train", "--mixture", "m.jsonl", "--out", str(tmp_path / "o"), "--config",
                        str(tmp_path / "nope.yaml")], capsys)
    assert code != 0 and "does not exist" in err and len(err.strip().splitlines()) == 1


def test_evaluate_config_file_and_flags(tmp_path):
    cfg = tmp_path / "eval.yaml"
    cfg.write_text("mode: rank\nlimit: 5\nstop: ['###', '@@']\nsamples: false\n")
    config = config_of("evaluate", "--config", str(cfg))
    assert (config.mode, config.limit, config.stop, config.samples) == ("rank", 5, ("###", "@@"), False)
    config = config_of("evaluate", "--config", str(cfg), "--limit", "2", "--stop", "END", "--samples")
    assert (config.mode, config.limit, config.stop, config.samples) == ("rank", 2, ("END",), True)
    assert config_of("evaluate", "--no-samples", "--no-progress").samples is False


def test_evaluate_bad_config_value_is_one_line(tmp_path, capsys):
    cfg = tmp_path / "eval.yaml"
    cfg.write_text("mode: ranked\n")
    code, _, err = run(["evaluate", "--task", "t", "--config", str(cfg)], capsys)
    assert code != 0 and "unknown evaluation mode 'ranked'" in err and len(err.strip().splitlines()) == 1, err


def test_mixture_config_file_caps_and_flags(tmp_path):
    cfg = tmp_path / "mix.yaml"
    cfg.write_text("per_task: 50\ntotal: 300\ncaps: {a: 5, b: 7}\nshuffle: false\n")
    config = config_of("mixture", "--config", str(cfg))
    assert (config.per_task, config.total, config.caps, config.shuffle) == (50, 300, {"a": 5, "b": 7}, False)
    config = config_of("mixture", "--config", str(cfg), "-n", "20", "--cap", "b=1", "--cap", "c=2", "--shuffle")
    assert (config.per_task, config.total, config.caps, config.shuffle) == (20, 300, {"a": 5, "b": 1, "c": 2}, True)
    assert config_of("mixture", "--no-dedup", "--no-shuffle").dedup is False


def test_mixture_bad_config_file_is_one_line(tmp_path, capsys):
    cfg = tmp_path / "mix.yaml"
    cfg.write_text("n_total: 100\n")
    code, _, err = run(["mixture", "--tasks", "a", "--catalog", "c", "--out", str(tmp_path / "o.jsonl"),
                        "--config", str(cfg)], capsys)
    assert code != 0 and "unknown key(s)" in err and "n_total" in err and len(err.strip().splitlines()) == 1, err


def test_align_config_file_lists_and_legacy_flags(tmp_path):
    cfg = tmp_path / "align.yaml"
    cfg.write_text("objective: mnrl\nexclude_tasks: [a]\nlearning_rate: 1e-5\nlearning_rate_effective: 1e-5\n")
    config = config_of("align", "--config", str(cfg))
    assert (config.objective, config.exclude_tasks, config.learning_rate) == ("mnrl", ["a"], 1e-5)
    config = config_of("align", "--config", str(cfg), "--exclude", "b", "--lr", "3e-5", "-e", "enc", "--last-epoch",
                       "--max-pairs-per-task", "10", "--no-default-exclusions", "--pool", "t0_train")
    assert config.exclude_tasks == ["a", "b"] and config.learning_rate == 3e-5 and config.base_encoder == "enc"
    assert not config.select_best and config.max_positive_pairs_per_unit == 10 and not config.default_exclusions
    assert config.pool == "t0_train"
    assert config_of("align", "--keep-checkpoints", "--no-progress").keep_checkpoints


def test_align_bad_config_file_is_one_line(tmp_path, capsys):
    cfg = tmp_path / "align.yaml"
    cfg.write_text("epochs: five\n")
    code, _, err = run(["align", "--out", str(tmp_path / "a"), "--config", str(cfg)], capsys)
    assert code != 0 and "epochs must be an integer" in err and len(err.strip().splitlines()) == 1, err


def test_catalog_flags_left_out_do_not_override_the_file(tmp_path):
    cfg = tmp_path / "align.yaml"
    cfg.write_text("pool: t0_train\n")
    assert config_of("align", "--config", str(cfg)).pool == "t0_train"
    assert config_of("align", "--config", str(cfg), "--pool", "other").pool == "other"


# every flag these commands had before their flags were generated (none may disappear)
LEGACY_FLAGS = {
    "align": (
        "--allow-outside-examples --batch-size --catalog --config --data-dir --dev-fraction --device "
        "--encoder --epochs --exclude --exclude-family --heldout-fraction --json --keep-checkpoints "
        "--last-epoch --log-level --lr --max-negative-reuse --max-pairs-per-task --max-seq-length "
        "--mnrl-scale --negative-threshold --no-default-exclusions --no-progress --objective --out "
        "--overwrite --pool --positive-fraction --quiet --seed --threads --unit --verbose --warmup-ratio "
        "--weight-decay -c -e -o -q -v "
    ).split(),
    "evaluate": (
        "--allow-outside-examples --batch-size --calibration --catalog --data-dir --json --limit "
        "--limit-per-template --log-level --max-new-tokens --max-source-length --mode --model --no-progress "
        "--no-samples --out --pool --primary-metric --quiet --stop --task --verbose -c -o -q -t -v "
    ).split(),
    "mixture": (
        "--allow-empty --cap --catalog --data-dir --dedup-ngram --exclude-target --format --json --log-level "
        "--max-scan --mixing --no-dedup --no-shuffle --out --per-task --quiet --seed --selection "
        "--target-catalog --tasks --total --verbose -c -n -o -q -s -t -v "
    ).split(),
    "train": (
        "--batch-size --bf16 --deepspeed --epochs --fsdp --fsdp-config --grad-accum --gradient-checkpointing "
        "--group-by-length --json --log-level --logging-steps --lora --lora-alpha --lora-dropout --lora-r "
        "--lora-targets --lr --max-source-length --max-steps --max-target-length --merge-lora --mixture "
        "--model --no-group-by-length --no-padding-free --no-progress --no-resume --no-target-logits-only "
        "--out --overwrite --packing-row-tokens --padding-free --quiet --report-to --save-steps "
        "--save-total-limit --scheduler --seed --target-logits-only --verbose --warmup-ratio --weight-decay "
        "-m -o -q -v "
    ).split(),
}


@pytest.mark.parametrize("command", sorted(LEGACY_FLAGS))
def test_every_earlier_flag_still_exists(command):
    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    have = {s for a in sub.choices[command]._actions for s in a.option_strings}
    assert not set(LEGACY_FLAGS[command]) - have


# ---------------------------------------------------------------- --config on commands whose options are flags

def _select_json(tmp_path, capsys, *argv: str) -> dict:
    import json

    code = cli.main(["select", *argv, "--json", "-", "-q"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def test_select_config_file_sets_options_and_flags_override_it(tmp_path, capsys):
    from pathlib import Path

    tasks = Path(__file__).parent / "fixtures" / "user" / "tasks.yaml"
    cfg = tmp_path / "select.yaml"
    cfg.write_text(f"catalog: {tasks}\ninstruction: ['Is this review positive?']\nencoder: hashing\nk: 2\n"
                   "ties: include\nno_cache: true\n")
    from_file = _select_json(tmp_path, capsys, "--config", str(cfg))
    assert len(from_file["selected"]) == 2
    overridden = _select_json(tmp_path, capsys, "--config", str(cfg), "-k", "1")
    assert len(overridden["selected"]) == 1
    assert overridden["selected"][0]["task"] == from_file["selected"][0]["task"]


@pytest.mark.parametrize("content, msg", [
    ("colour: red\n", "unknown option 'colour'"),
    ("k_min: abc\n", "k_min"),
    ("ties: maybe\n", "must be one of first, include"),
    ("no_cache: 'yes'\n", "must be true or false"),
    ("instruction: {a: 1}\n", "instruction"),
    ("- a\n- b\n", "must hold a mapping"),
])
def test_bad_select_config_file_is_one_line(tmp_path, capsys, content, msg):
    cfg = tmp_path / "select.yaml"
    cfg.write_text(content)
    code = cli.main(["select", "--config", str(cfg), "-i", "x", "--encoder", "hashing"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and msg in err and len(err.splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("command", ["select", "eval-selection", "export-lm-eval"])
def test_option_commands_take_a_config_file(command, capsys):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    assert "--config FILE.yaml" in capsys.readouterr().out


def test_config_file_supplies_required_flags_and_positionals(tmp_path, capsys):
    """A generic --config may give what argparse requires (export-lm-eval's TASK and --out); the command line
    still overrides it, and what neither gives is the usual one-line argparse error."""
    from pathlib import Path

    data = Path(__file__).parent / "fixtures" / "bigbench"
    cfg = tmp_path / "export.yaml"
    cfg.write_text(f"task: color_quiz\ncatalog: bigbench\ndata_dir: {data}\nout: {tmp_path / 'from-file'}\n")
    assert cli.main(["export-lm-eval", "--config", str(cfg), "-q"]) == 0
    assert (tmp_path / "from-file" / "insta_color_quiz.yaml").is_file()
    assert cli.main(["export-lm-eval", "--config", str(cfg), "--out", str(tmp_path / "flag"), "-q"]) == 0
    assert (tmp_path / "flag" / "insta_color_quiz.yaml").is_file()
    capsys.readouterr()
    partial = tmp_path / "partial.yaml"
    partial.write_text("catalog: bigbench\n")
    with pytest.raises(SystemExit) as exc:
        cli.main(["export-lm-eval", "--config", str(partial)])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "required: task, --out/-o" in err and len(err.splitlines()) == 1
