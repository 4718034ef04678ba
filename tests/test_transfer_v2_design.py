"""Matrix v2's design in code (issue #22): the target rule over a screen's verdicts, keyword-nearest + spread
sources (with the pre-registered tie rule), the cost rule, the in-task oracle as a reference row, the frozen
decision, bad input, and the plans of both committed v2 configs on the real data."""
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from insta import cli
from insta.catalogs.base import Catalog
from insta.errors import InstaError
from insta.records import Task
from insta.transfer import config_from_dict, plan_transfer, run_transfer
from insta.transfer.runner import nearest_sources, spread_sources
from insta.transfer.v2_decision import FROZEN_TARGETS
from insta.transfer.screen import Screen
from insta.transfer.screen_config import load_screen_config
from insta.transfer.screen_verdicts import write_summary
from insta.transfer.v2_cost import CostInputs, apply_cost_rule, cost_lines, n_trainings
from insta.transfer.v2_targets import choose_targets, oracle_transfer, screen_ids_of

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "fixtures" / "experiment" / "data"


def quiet(msg):
    pass


# ---------------------------------------------------------------- the target rule


def rows(*spec):
    """Verdict rows from "task:status" strings, in the screen's order."""
    out = []
    for s in spec:
        task, status = s.rsplit("=", 1)
        out.append({"task": task, "status": status, "seed": 0})
    return out


def test_target_rule_v1_last_cap_and_pending():
    v1 = screen_ids_of(["bbh:navigate", "bigbench:winowhy"])
    assert v1 == {"bigbench:navigate", "bigbench:winowhy"}  # a BBH target is screened as its BIG-bench parent
    r = rows("bigbench:a=pass", "bigbench:navigate=pass", "bigbench:b=fail", "bigbench:c=pass",
             "bigbench:winowhy/sub=pass", "bigbench:d=pending")
    choice = choose_targets(r, v1, max_targets=3, min_targets=1)
    # fresh passing ones first (screen order), then v1's passing ones (a subtask of a v1 family counts), cap 3
    assert choice.targets == ["bigbench:a", "bigbench:c", "bigbench:navigate"]
    assert choice.v1_passed == ["bigbench:navigate", "bigbench:winowhy/sub"]
    assert not choice.final and choice.pending == ["bigbench:d"]
    assert "NOT final" in choice.status_line() and "1 pending" in choice.status_line()
    # more fresh passing candidates than the cap: the first max in the screen's order, no v1 target at all
    many = rows(*[f"bigbench:t{i}=pass" for i in range(30)], "bigbench:navigate=pass")
    capped = choose_targets(many, v1, max_targets=24, min_targets=12)
    assert capped.targets == [f"bigbench:t{i}" for i in range(24)] and capped.final
    assert any("first 24" in n for n in capped.notes)
    # only the seed of the first row counts
    two_seeds = rows("bigbench:a=pass") + [{"task": "bigbench:b", "status": "pass", "seed": 1}]
    assert choose_targets(two_seeds, set(), 24, 12).targets == ["bigbench:a"]


def test_target_rule_fewer_than_min_uses_every_passing_one():
    r = rows("bigbench:a=fail", "bigbench:navigate=pass", "bigbench:b=pass", "bigbench:c=fail")
    choice = choose_targets(r, {"bigbench:navigate"}, max_targets=24, min_targets=12)
    assert choice.targets == ["bigbench:b", "bigbench:navigate"]
    assert choice.final and "only 2 candidate(s) pass" in choice.notes[0]


# ---------------------------------------------------------------- the sources rule


def pool_of(**keywords):
    return Catalog("bigbench", [Task(id=k, instructions=[f"do {k}"], catalog="bigbench", family=k, keywords=list(v))
                                for k, v in keywords.items()])


def test_nearest_sources_and_tie_rule():
    pool = pool_of(u_best=["logic", "math", "x"], u_tie_general=["logic", "math", "lang"],
                   u_tie_specific=["logic", "math", "y"], u_lang=["lang", "translation"], u_far=["music"],
                   u_other=["lang", "y"])
    targets = {"t_logic": ["logic", "math", "x"], "t_lang": ["lang", "translation"]}
    chosen, by_target = nearest_sources(pool, targets, per_target=2, seed=0)
    # t_logic: u_best shares 3; u_tie_general and u_tie_specific share 2 each: the one with more keywords in
    # common with the other targets (u_tie_general shares "lang" with t_lang) comes last
    assert by_target["t_logic"] == ["u_best", "u_tie_specific"]
    assert by_target["t_lang"][0] == "u_lang"  # shares 2
    # then 1 shared each ("lang"): u_tie_general has 2 keywords of t_logic (logic, math), u_other none: first
    assert by_target["t_lang"][1] == "u_other"
    assert chosen == ["u_best", "u_tie_specific", "u_lang", "u_other"]
    assert "u_far" not in chosen  # no keyword in common: never "nearest"
    # a full tie falls to a stable hash: the same order every time, different for another seed sometimes
    twins = pool_of(**{f"twin{i}": ["k"] for i in range(8)})
    a = nearest_sources(twins, {"t": ["k"]}, 3, seed=0)[1]["t"]
    assert a == nearest_sources(twins, {"t": ["k"]}, 3, seed=0)[1]["t"]
    assert any(nearest_sources(twins, {"t": ["k"]}, 3, seed=s)[1]["t"] != a for s in range(1, 6))


def test_spread_fills_after_the_nearest_units():
    pool = pool_of(a=["k1"], b=["k1"], c=["k2"], d=["k3"], e=["k1", "k2"])
    assert spread_sources(pool, 3, 0, start=["a"])[:1] == ["a"]
    filled = spread_sources(pool, 3, 0, start=["a", "b"])
    assert filled == ["a", "b", "d"]  # k3's only unit (rarest new keyword), not k1 again
    assert spread_sources(pool, 5, 0) == spread_sources(pool, 5, 0, start=())  # v1's behaviour unchanged


# ---------------------------------------------------------------- the cost rule


def test_cost_rule_drops_the_most_expensive_first_down_to_the_floor():
    inputs = CostInputs(train_s_per_instance=1.0, train_from="x",
                        eval_s={"a": 3.0, "b": 1.0, "c": 3.0, "d": 2.0},
                        eval_from={t: "x" for t in "abcd"}, n_eval={t: 100 for t in "abcd"})
    trainings = n_trainings(10, [0], [1], every=3)
    assert trainings == 10 + 4  # positions 0, 3, 6, 9 also at seed 1
    # 14 trainings x 100 instances x 1 s = 1400 s; 15 models x 100 examples x (3 + 1 + 3 + 2) s = 13500 s
    full = apply_cost_rule(list("abcd"), inputs, trainings, 100, budget_hours=None, floor=2)
    assert full["fits"] and full["kept"] == list("abcd") and len(full["choices"]) == 1
    assert full["hours"] == pytest.approx((1400 + 13500) / 3600, abs=0.01)
    # over a 3 h budget: a and c cost alike (300 s per model); the later one in the screen's order goes first
    mid = apply_cost_rule(list("abcd"), inputs, trainings, 100, budget_hours=3.0, floor=2)
    assert mid["dropped"] == ["c"] and mid["kept"] == ["a", "b", "d"] and mid["fits"]
    assert mid["hours"] == pytest.approx((1400 + 1500 * 6) / 3600, abs=0.01)
    assert [c["k"] for c in mid["choices"]] == [4, 3]
    # a budget nothing fits: drop down to the floor, which wins; the overrun is stated
    low = apply_cost_rule(list("abcd"), inputs, trainings, 100, budget_hours=0.1, floor=2)
    assert low["dropped"] == ["c", "a"] and low["kept"] == ["b", "d"] and not low["fits"]
    assert low["overrun_hours"] == pytest.approx((1400 + 1500 * 3) / 3600 - 0.1, abs=0.01)
    lines = cost_lines(low)
    assert "the floor of 2 targets wins over the budget" in lines[-1]
    assert "4 targets: " in lines[2] and "3 targets without c" in lines[2] and "2 targets without a" in lines[2]
    assert low["floor_hours"] == pytest.approx(1400 / 3600, abs=0.01)


# ---------------------------------------------------------------- the oracle reference row


def cell(ids, scores, labels):
    from insta.matrix.cells import compact_rank_samples

    samples = [{"type": "rank", "id": i, "options": [f"o{j}" for j in range(len(s))], "label": lab,
                "scores_sum": s, "n_tokens": [1] * len(s), "scores_calibrated": None}
               for i, s, lab in zip(ids, scores, labels)]
    return {"samples": compact_rank_samples(samples)}


def test_oracle_transfer_by_hand_and_refusal():
    base = cell(["x", "y"], [[-1.0, -2.0], [-1.0, -3.0]], [1, 1])  # both wrong; margins -1, -2
    oracle = cell(["y", "x"], [[-2.0, -1.0], [-3.0, -1.0]], [1, 1])  # other order; both right; margins 1, 2
    t = oracle_transfer(base, oracle, ["x", "y"], "bigbench:t")
    assert t["acc"] == pytest.approx(1.0)
    assert t["margin"] == pytest.approx(3.0)  # mean 1.5 - mean -1.5, paired by id whatever the cells' order
    # scales: sd of each example's two scores = |diff|/2 = .5, 1 (both cells) -> rms sqrt(.625)
    assert t["margin_z"] == pytest.approx(3.0 / 0.625 ** 0.5, rel=1e-4)
    with pytest.raises(InstaError, match="other examples"):
        oracle_transfer(base, oracle, ["x", "z"], "bigbench:t")


# ---------------------------------------------------------------- end to end on a fixture screen


@pytest.fixture()
def fixture_screen(tmp_path):
    """A finished dry-run screen of the fixture tasks (3 pass), its config, and v1's config."""
    raw = yaml.safe_load((REPO / "configs" / "screen-tiny.yaml").read_text())
    raw.update(data_dir=str(DATA), out=str(tmp_path / "screen"), curve={"targets": [], "instances": []})
    path = tmp_path / "screen.yaml"
    path.write_text(yaml.safe_dump(raw))
    screen = Screen(load_screen_config(str(path)), log=quiet)
    screen.prepare()
    screen.run(progress=False)
    summary = write_summary(screen)
    v1 = tmp_path / "v1.yaml"
    v1.write_text(yaml.safe_dump({"name": "v1", "targets": ["bbh:sports_understanding", "bigbench:capitals"]}))
    return {"path": str(path), "summary": summary, "v1": str(v1), "screen": screen}


def v2_raw(fs, tmp_path, **over):
    raw = yaml.safe_load((REPO / "configs" / "transfer-tiny.yaml").read_text())
    raw.update(data_dir=str(DATA), out=str(tmp_path / "v2"), seeds=[0], subset_seeds={"seeds": [1], "every": 2},
               targets={"from_screen": fs["path"], "max": 24, "min": 2, "exclude_v1": fs["v1"]},
               sources={"strategy": "nearest-spread", "nearest": 1, "n": 4}, eval={"n": 8})
    raw.update(over)
    return raw


def test_v2_run_end_to_end(fixture_screen, tmp_path):
    fs = fixture_screen
    passed = fs["summary"]["passed"]
    assert passed == ["bigbench:zoo_statements", "bigbench:plant_facts", "bigbench:sports_understanding"]
    cfg = config_from_dict(v2_raw(fs, tmp_path))
    # v1's sports_understanding (screened as the BIG-bench parent of bbh:sports_understanding) comes last
    assert cfg.targets == ["bigbench:zoo_statements", "bigbench:plant_facts", "bigbench:sports_understanding"]
    plan = plan_transfer(cfg, log=quiet)
    assert plan["target_decision"]["rule"]["final"]
    assert plan["n_units"] == 1 + 4 + 2  # base, 4 sources at seed 0, sources 0 and 2 at seed 1
    assert any(line.startswith("targets final") for line in plan["plan_lines"])
    results = run_transfer(config_from_dict(v2_raw(fs, tmp_path)), log=quiet, progress=False)
    # every source records the rule that chose it
    rules = {s["id"]: s["chosen_by"] for s in results["sources"]}
    assert {r["rule"] for r in rules.values()} <= {"nearest", "spread"} and len(rules) == 4
    assert any(r["rule"] == "nearest" and r["targets"] for r in rules.values())
    # the targets are evaluated on the screen's examples, and the oracle row equals the screen's own verdict
    screen = fs["screen"]
    verdicts = {r["task"]: r for r in fs["summary"]["rows"]}
    for t in results["targets"]:
        cand = next(c for c in screen.candidates if c.spec == t["id"])
        assert t["eval_ids"] == [ex.id for ex in cand.eval_examples]
        ref = results["oracle"]["targets"][t["id"]]["transfer"]
        assert ref["margin_z"] == pytest.approx(verdicts[t["id"]]["margin_z"]["change"], abs=1e-3)
        assert ref["acc"] == pytest.approx(verdicts[t["id"]]["acc"]["change"], abs=1e-3)
    out = Path(cfg.out)
    md = (out / "report.md").read_text()
    assert "In-task oracle (reference row, not a source)" in md and "## Targets and cost" in md
    assert "| chosen by |" in md and "| nearest (" in md
    assert "oracle" not in {r["source"] for r in json.loads((out / "matrix.json").read_text())["rows"]}
    frozen = json.loads((out / FROZEN_TARGETS).read_text())
    assert frozen["targets"] == cfg.targets
    # seed 1 on the subset: reliability over the common sources
    rel = results["reliability"]["margin_z"][cfg.targets[0]]
    assert rel["n_seeds"] == 2 and rel["n_common"] == 2


def test_partial_screen_refused_unless_allowed_then_frozen(fixture_screen, tmp_path):
    fs = fixture_screen
    screen_json = Path(fs["screen"].out) / "screen.json"
    summary = json.loads(screen_json.read_text())
    summary["rows"][-1]["status"] = "pending"  # as if the last candidate had no verdict yet
    screen_json.write_text(json.dumps(summary))
    cfg = config_from_dict(v2_raw(fs, tmp_path))
    plan = plan_transfer(cfg, log=quiet)
    assert plan["plan_lines"][0].startswith("targets are NOT final") and "1 pending" in plan["plan_lines"][0]
    with pytest.raises(InstaError, match="targets are not final"):
        run_transfer(config_from_dict(v2_raw(fs, tmp_path)), log=quiet, progress=False, report=False)
    assert not (Path(cfg.out) / FROZEN_TARGETS).exists()
    run_transfer(config_from_dict(v2_raw(fs, tmp_path)), log=quiet, progress=False, report=False,
                 allow_partial_screen=True)
    frozen = json.loads((Path(cfg.out) / FROZEN_TARGETS).read_text())
    # the screen completes with another verdict: the run keeps the decision frozen before its first cell
    summary["rows"][-1]["status"] = "pass"
    summary["rows"][0]["status"] = "fail"
    screen_json.write_text(json.dumps(summary))
    again = plan_transfer(config_from_dict(v2_raw(fs, tmp_path)), log=quiet)
    assert again["targets"] == frozen["targets"] and again["target_decision"]["frozen"]


def test_cost_rule_is_honoured_by_the_run(fixture_screen, tmp_path):
    fs = fixture_screen
    screen = fs["screen"]
    seconds = {"bigbench:zoo_statements": 10.0, "bigbench:plant_facts": 30.0, "bigbench:sports_understanding": 20.0}
    for cand in screen.candidates:  # the base model's measured evaluation seconds, as if on this machine
        if cand.spec in seconds:
            path = screen.cell_path(screen.eval_key("base", cand))
            path.write_text(json.dumps({**json.loads(path.read_text()), "seconds": seconds[cand.spec]}))
    # per model: 8 examples x (10 + 30 + 20) / 8 s = 60 s; 7 models = 420 s = 0.117 h (training ~0 s in a dry run)
    raw = v2_raw(fs, tmp_path, cost={"budget_hours": 0.1})
    plan = plan_transfer(config_from_dict(raw), log=quiet)
    cost = plan["target_decision"]["cost"]
    assert cost["dropped"] == ["bigbench:plant_facts"] and cost["fits"]  # the most expensive
    # the subset seed (sources 0 and 2 at seed 1): 2 models x 8 examples x (10 + 20) / 8 s, training ~0 s
    assert cost["subset_seeds"]["trainings"] == 2
    assert cost["subset_seeds"]["hours"] == pytest.approx(2 * 30 / 3600, abs=0.01)
    assert plan["targets"] == ["bigbench:zoo_statements", "bigbench:sports_understanding"]
    results = run_transfer(config_from_dict(raw), log=quiet, progress=False, report=False)
    assert [t["id"] for t in results["targets"]] == plan["targets"]  # decided before any cell, as planned
    assert json.loads((tmp_path / "v2" / FROZEN_TARGETS).read_text())["targets"] == plan["targets"]
    # a budget below the floor (min 2): the floor wins, the overrun is stated
    low = plan_transfer(config_from_dict(v2_raw(fs, tmp_path, out=str(tmp_path / "low"),
                                                cost={"budget_hours": 1e-6})), log=quiet)
    assert len(low["targets"]) == 2 and not low["target_decision"]["cost"]["fits"]
    assert any("wins over the budget" in line for line in low["plan_lines"])


def test_cost_rule_ranks_targets_by_evaluation_tokens(fixture_screen, tmp_path):
    """``cost.rank_by: tokens``: a target's cost is its evaluation tokens (what packed scoring runs) x the screen's
    seconds per token (median of its packed base cells), so the most expensive is the one with the most tokens,
    whatever seconds its own base cell happened to take."""
    from insta.evaluate.packing import packed_token_count
    from insta.lm import load_tokenizer, resolve_model

    fs = fixture_screen
    screen = fs["screen"]
    tok = load_tokenizer(resolve_model("smollm2"))
    specs = ["bigbench:zoo_statements", "bigbench:plant_facts", "bigbench:sports_understanding"]
    cands = {c.spec: c for c in screen.candidates if c.spec in specs}
    tokens = {t: packed_token_count(tok, c.eval_examples, 512) for t, c in cands.items()}
    most = max(reversed(specs), key=lambda t: tokens[t])
    # the base cell of the most token-heavy target was timed fastest (say, on an idle machine): tokens rank anyway
    seconds = {t: 2.0 * tokens[t] for t in specs}  # hours enough to be over any tiny budget
    seconds[most] = min(seconds.values()) / 2
    for t, c in cands.items():
        path = screen.cell_path(screen.eval_key("base", c))
        path.write_text(json.dumps({**json.loads(path.read_text()), "seconds": seconds[t], "scoring_path": "packed"}))
    by_seconds = plan_transfer(config_from_dict(v2_raw(fs, tmp_path, out=str(tmp_path / "s"),
                                                       cost={"budget_hours": 1e-6})), log=quiet)
    assert by_seconds["target_decision"]["cost"]["dropped"][0] != most  # the old rule: the slowest cell goes
    plan = plan_transfer(config_from_dict(v2_raw(fs, tmp_path, out=str(tmp_path / "t"),
                                                 cost={"budget_hours": 1e-6, "rank_by": "tokens"})), log=quiet)
    cost = plan["target_decision"]["cost"]
    assert cost["dropped"] == [most]
    rate = sorted(seconds[t] / tokens[t] for t in specs)[1]  # the median of three
    for t in specs:
        n = len(cands[t].eval_examples)
        assert cost["eval_s_per_example"][t] == pytest.approx(tokens[t] / n * rate, rel=1e-3)
        assert "median of 3 packed base evaluation(s)" in cost["eval_from"][t]
    with pytest.raises(InstaError, match="cost.rank_by"):
        config_from_dict(v2_raw(fs, tmp_path, cost={"rank_by": "flops"}))


def test_bad_input_one_line(fixture_screen, tmp_path, capsys):
    fs = fixture_screen
    with pytest.raises(InstaError, match="screen config .* not found"):
        config_from_dict(v2_raw(fs, tmp_path, targets={"from_screen": str(tmp_path / "nope.yaml")}))
    moved = tmp_path / "screen-moved.yaml"  # a screen config whose folder does not exist
    raw = yaml.safe_load(Path(fs["path"]).read_text())
    raw["out"] = str(tmp_path / "never-run")
    moved.write_text(yaml.safe_dump(raw))
    with pytest.raises(InstaError, match="does not exist"):
        config_from_dict(v2_raw(fs, tmp_path, targets={"from_screen": str(moved)}))
    with pytest.raises(InstaError, match="eval.n is 10, the screen's is 8"):
        config_from_dict(v2_raw(fs, tmp_path, eval={"n": 10}))
    with pytest.raises(InstaError, match="subset_seeds.seeds repeats"):
        config_from_dict(v2_raw(fs, tmp_path, subset_seeds={"seeds": [0]}))
    with pytest.raises(InstaError, match="cost.estimate"):
        config_from_dict(v2_raw(fs, tmp_path, cost={"estimate": "guess"}))
    # screen.json written by another screen configuration (here: another budget)
    screen_json = Path(fs["screen"].out) / "screen.json"
    summary = json.loads(screen_json.read_text())
    summary["budget"]["instances"] = 999
    screen_json.write_text(json.dumps(summary))
    cfg_path = tmp_path / "v2.yaml"
    cfg_path.write_text(yaml.safe_dump(v2_raw(fs, tmp_path)))
    assert cli.main(["transfer", str(cfg_path), "--plan"]) == 2
    err = capsys.readouterr().err.strip()
    assert "written by another screen configuration" in err and "budget" in err and len(err.splitlines()) == 1
    screen_json.write_text("{not json")
    assert cli.main(["transfer", str(cfg_path), "--plan"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    shutil.rmtree(fs["screen"].out)
    assert cli.main(["transfer", str(cfg_path), "--plan"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_oracle_row_refuses_other_examples(fixture_screen, tmp_path):
    fs = fixture_screen
    screen = fs["screen"]
    cand = next(c for c in screen.candidates if c.spec == "bigbench:zoo_statements")
    path = screen.cell_path(screen.eval_key(screen.model_key(cand, screen.screen_budget(), 0), cand))
    data = json.loads(path.read_text())
    data["samples"]["ids"][0] = "another-example"
    path.write_text(json.dumps(data))
    with pytest.raises(InstaError, match="oracle reference of bigbench:zoo_statements: .* other examples"):
        plan_transfer(config_from_dict(v2_raw(fs, tmp_path)), log=quiet)


# ---------------------------------------------------------------- the committed configs on the real data


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("INSTA_DATA_DIR"), reason="needs the real data folder")
@pytest.mark.parametrize("name, estimate", [("transfer-v2-bigbench-smollm2", "measured"), ("transfer-v2-gpu", "gpu")])
def test_committed_v2_configs_plan(name, estimate, tmp_path, capsys, monkeypatch):
    from insta.lm import BUILTIN_MODELS
    from insta.transfer import load_transfer_config

    # the oracle row keys the screen's cells by its base model's identity (the converted SmolLM2's fingerprint):
    # reuse the user's conversion when there is one, as the insta command would (converting takes ~2 min here)
    shared = Path.home() / ".cache" / "insta"
    if (shared / "models" / BUILTIN_MODELS["smollm2"][2] / "config.json").is_file():
        monkeypatch.setenv("INSTA_CACHE_DIR", str(shared))

    path = REPO / "configs" / f"{name}.yaml"
    cfg = load_transfer_config(path, {"data_dir": os.environ["INSTA_DATA_DIR"]})
    assert cfg.cost.estimate == estimate and cfg.cost.budget_hours == 10
    # the budget per (source, seed) is the learning curve's choice (the cheapest candidate while it is pending)
    budget = cfg.budget_choice
    assert cfg.budget.min_instances == 400 and budget.instances >= 400
    assert (cfg.instances, cfg.train.learning_rate) == (budget.instances, budget.learning_rate)
    assert cfg.seeds == [0] and cfg.subset_seeds.seeds == [1]
    choice = cfg.target_choice
    assert choice.targets and set(choice.targets) <= set(choice.passed)
    # the plan as a user runs it (one pass: the pool's near-duplicate filter encodes every instruction)
    assert cli.main(["transfer", str(path), "--plan", "--dry-run", "--data-dir", os.environ["INSTA_DATA_DIR"],
                     "--json", str(tmp_path / "plan.json")]) == 0
    out = capsys.readouterr().out
    assert "cost rule (budget 10 h, floor " in out and "choices (most expensive target dropped first" in out
    assert "of which the second seed on a subset of the sources: 20 models" in out
    assert "budget per (source, seed) from the learning curve of" in out
    assert ("-> NOT final" in out) == (budget.status == "pending")
    assert out.count("\n") < 40  # a readable plan
    plan = json.loads((tmp_path / "plan.json").read_text())
    d = plan["target_decision"]
    assert plan["n_sources"] == 60 and plan["n_units"] == 1 + 60 + 20
    assert d["cost"]["choices"][0]["k"] == len(choice.targets) and d["cost"]["instances"] == budget.instances
    assert all(n == 200 for n in d["cost"]["n_eval"].values())
    assert len(plan["targets"]) >= min(12, len(choice.targets))  # the floor wins over the budget
    near = [s for s in plan["sources"] if s["chosen_by"]["rule"] == "nearest"]
    assert near and all(s["chosen_by"]["targets"] for s in near)
    if estimate == "measured":  # seconds measured by the screen on this machine
        assert d["cost"]["train_from"].startswith("the screen's")
        assert plan["oracle"]["targets"] and all("transfer" in r for r in plan["oracle"]["targets"].values())
    else:
        assert "H100" in " ".join(d["cost"]["notes"]) and plan["oracle"]["why"]
        assert any("the curve is smollm2's" in n for n in d["budget"]["notes"])  # carried over from another model
