"""Matrix v2's training budget from the screen's learning curve (issue #22 item 3): the pre-registered rule on
hand-made curves (ties, the 90% boundary, all-negative averages, failed / pending / missing rows, seeds), its use by
a transfer run (the cost rule and the model keys see the chosen budget, the frozen decision keeps it on resume, the
run refuses while the curve is pending or unusable), and the refusal of a targets.json frozen by another
configuration when the folder holds cells."""
import json
from pathlib import Path

import pytest
import yaml

from insta import cli
from insta.engine.backends import DryRunBackend
from insta.errors import InstaError
from insta.transfer import config_from_dict, plan_transfer, run_transfer
from insta.transfer.runner import TransferRun
from insta.transfer.screen import Screen
from insta.transfer.screen_config import load_screen_config
from insta.transfer.screen_verdicts import write_summary
from insta.transfer.v2_budget import budget_lines, check_budget_final, choose_budget, curve_budget
from insta.transfer.v2_decision import FROZEN_TARGETS
from insta.transfer.v2_targets import read_screen
from test_transfer_v2_design import DATA, REPO, quiet, v2_raw

A, B = "bigbench:a", "bigbench:b"
LRS = (5e-5, 1.5e-4)


def curve(values, seeds=(0,)):
    """Curve rows from {(task, instances, lr): change}; a change of "pending" is a pending row, None a row whose
    base model is constant (no metric), a tuple (change, "fail") a measured row whose CI reaches 0."""
    rows = []
    for (task, n, lr), v in values.items():
        for seed in seeds:
            row = {"task": task, "budget": {"instances": n, "learning_rate": lr}, "seed": seed}
            if v == "pending":
                row.update(status="pending", why="oracle not trained yet")
            elif v is None:
                row.update(status="fail", why="base model constant (97% one answer)")
            else:
                change, status = v if isinstance(v, tuple) else (v, "pass")
                row.update(status=status, why="", margin_z={"change": change, "low": change - 0.1,
                                                            "high": change + 0.1})
            rows.append(row)
    return rows


def grid(a, b, small=(9.0, 9.0, 9.0, 9.0)):
    """A full curve: ``a`` / ``b`` map (instances, lr) at 400 and 800 to each target's change; the 100-instance
    budgets get ``small`` (large on purpose: they are not candidates and must not move the choice)."""
    values = {}
    for i, (n, lr) in enumerate((n, lr) for n in (100,) for lr in LRS):
        values[(A, n, lr)], values[(B, n, lr)] = small[2 * i], small[2 * i + 1]
    for task, d in ((A, a), (B, b)):
        for (n, lr), v in d.items():
            values[(task, n, lr)] = v
    return values


def test_cheapest_budget_within_the_fraction_of_the_best():
    a = {(400, 5e-5): 0.5, (400, 1.5e-4): 1.0, (800, 5e-5): 1.1, (800, 1.5e-4): 1.2}
    b = {(400, 5e-5): 0.5, (400, 1.5e-4): 0.9, (800, 5e-5): 0.9, (800, 1.5e-4): 0.8}
    # means: 400/5e-5 0.5, 400/1.5e-4 0.95, 800/5e-5 1.0 (the largest), 800/1.5e-4 1.0 -> threshold 0.9
    c = choose_budget(curve(grid(a, b)), targets=[A, B])
    assert c.final and (c.instances, c.learning_rate) == (400, 1.5e-4)
    assert c.best == pytest.approx(1.0) and c.threshold == pytest.approx(0.9)
    table = {(r["instances"], r["learning_rate"]): r for r in c.table}
    assert not table[(100, 5e-5)]["candidate"] and table[(100, 5e-5)]["mean"] == pytest.approx(9.0)
    assert table[(400, 5e-5)]["qualifies"] is False and table[(400, 1.5e-4)]["qualifies"] is True
    assert [r["chosen"] for r in c.table].count(True) == 1 and table[(400, 1.5e-4)]["chosen"]
    # a stricter fraction: only the largest qualify, the cheaper of the two tied ones (fewer instances) wins
    c = choose_budget(curve(grid(a, b)), fraction=1.0, targets=[A, B])
    assert (c.instances, c.learning_rate) == (800, 5e-5)
    # min_instances is a knob: at 100 the large 100-instance means set the bar and win
    c = choose_budget(curve(grid(a, b)), min_instances=100, targets=[A, B])
    assert (c.instances, c.learning_rate) == (100, 5e-5)
    lines = budget_lines({**c.to_dict(), "screen": "screen-x"})
    assert "screen-x" in lines[0] and any("CHOSEN" in line and "100 inst, lr 5e-05" in line for line in lines)


def test_ties_go_to_fewer_instances_then_the_lower_learning_rate():
    same = {(400, 5e-5): 1.0, (400, 1.5e-4): 1.0, (800, 5e-5): 1.0, (800, 1.5e-4): 1.0}
    c = choose_budget(curve(grid(same, same)), targets=[A, B])
    assert (c.instances, c.learning_rate) == (400, 5e-5)
    # only the higher learning rates qualify: 400 at 1.5e-4 before 800 at 1.5e-4
    a = {(400, 5e-5): 0.1, (400, 1.5e-4): 2.0, (800, 5e-5): 0.1, (800, 1.5e-4): 2.0}
    c = choose_budget(curve(grid(a, a)), targets=[A, B])
    assert (c.instances, c.learning_rate) == (400, 1.5e-4)


def test_the_fraction_boundary_exactly():
    # 400/5e-5 averages (0.8 + 1.0) / 2 = 0.9 = 0.9 x the largest (1.0): it qualifies whatever the float rounding
    a = {(400, 5e-5): 0.8, (400, 1.5e-4): 0.0, (800, 5e-5): 1.0, (800, 1.5e-4): 0.0}
    b = {(400, 5e-5): 1.0, (400, 1.5e-4): 0.0, (800, 5e-5): 1.0, (800, 1.5e-4): 0.0}
    c = choose_budget(curve(grid(a, b)), targets=[A, B])
    assert (c.instances, c.learning_rate) == (400, 5e-5)
    # just below the boundary: the largest is taken
    a[(400, 5e-5)] = 0.7998
    c = choose_budget(curve(grid(a, b)), targets=[A, B])
    assert (c.instances, c.learning_rate) == (800, 5e-5)
    # the same boundary at another fraction (0.3 x 2.0 = 0.6, from 0.2 and 1.0)
    a = {(400, 5e-5): 0.2, (400, 1.5e-4): 0.1, (800, 5e-5): 2.0, (800, 1.5e-4): 0.1}
    b = {(400, 5e-5): 1.0, (400, 1.5e-4): 0.1, (800, 5e-5): 2.0, (800, 1.5e-4): 0.1}
    assert (choose_budget(curve(grid(a, b)), fraction=0.3, targets=[A, B]).instances) == 400
    assert (choose_budget(curve(grid(a, b)), fraction=0.31, targets=[A, B]).instances) == 800


def test_all_negative_averages_take_the_cheapest_candidate():
    a = {(400, 5e-5): -0.5, (400, 1.5e-4): -0.2, (800, 5e-5): -0.1, (800, 1.5e-4): -0.3}
    c = choose_budget(curve(grid(a, a)), targets=[A, B])
    assert c.final and (c.instances, c.learning_rate) == (400, 5e-5)
    assert c.best == pytest.approx(-0.1) and c.threshold is None
    assert any("no candidate budget raises margin_z" in n for n in c.notes)
    # a largest average of exactly 0: the same (nothing is raised)
    z = {k: 0.0 for k in a}
    assert (choose_budget(curve(grid(z, z)), targets=[A, B]).instances) == 400


def test_failed_rows_count_pending_rows_wait_and_seeds_are_averaged():
    a = {(400, 5e-5): (0.05, "fail"), (400, 1.5e-4): 1.0, (800, 5e-5): 1.0, (800, 1.5e-4): 1.0}
    b = {(400, 5e-5): (0.05, "fail"), (400, 1.5e-4): 1.0, (800, 5e-5): 1.0, (800, 1.5e-4): 1.0}
    c = choose_budget(curve(grid(a, b)), targets=[A, B])
    assert c.final and (c.instances, c.learning_rate) == (400, 1.5e-4)  # the failed rows' values were read
    # a pending row the rule needs: no choice, the cheapest candidate stands in, the plan names the row
    a[(800, 1.5e-4)] = "pending"
    c = choose_budget(curve(grid(a, b)), targets=[A, B])
    assert c.status == "pending" and not c.final and (c.instances, c.learning_rate) == (400, 5e-5)
    assert c.pending == ["bigbench:a at 800 inst, lr 0.00015 (seed 0)"]
    assert any("NOT final" in line and "bigbench:a at 800" in line for line in budget_lines(c.to_dict()))
    with pytest.raises(InstaError, match="not final: .* 1 pending row"):
        check_budget_final(c.to_dict(), allow_partial=False)
    check_budget_final(c.to_dict(), allow_partial=True)
    # nothing measured yet (the state of the real curve today): one line instead of a table of unknowns
    waiting = {k: "pending" for k in grid(a, b)}
    lines = budget_lines(choose_budget(curve(waiting), targets=[A, B]).to_dict())
    assert lines[1].startswith("  no row of the curve is measured yet (100 inst, lr 5e-05;") and len(lines) == 4
    assert "8 curve row(s) the rule needs are pending" in lines[2] and lines[2].endswith("and 5 more")
    # a pending row below min_instances is not needed
    a[(800, 1.5e-4)] = 1.0
    c = choose_budget(curve(grid(a, b, small=("pending", 1.0, 1.0, 1.0))), targets=[A, B])
    assert c.final
    # two seeds: a target's value at a budget is their mean
    rows = curve(grid(a, b), seeds=(0, 1))
    for r in rows:
        if r["task"] == A and r["seed"] == 1 and r["budget"] == {"instances": 400, "learning_rate": 5e-5}:
            r["margin_z"]["change"] = 3.95  # A at 400/5e-5: (0.05 + 3.95) / 2 = 2.0; mean with B: 1.025 (largest)
    c = choose_budget(rows, targets=[A, B])
    row = next(r for r in c.table if (r["instances"], r["learning_rate"]) == (400, 5e-5))
    assert row["per_target"][A] == pytest.approx(2.0) and (c.instances, c.learning_rate) == (400, 5e-5)


def test_missing_or_valueless_rows_make_the_curve_unusable():
    a = {(400, 5e-5): 1.0, (400, 1.5e-4): 1.0, (800, 5e-5): 1.0, (800, 1.5e-4): 1.0}
    b = dict(a)
    del b[(800, 1.5e-4)]  # a budget the curve lacks for one target
    c = choose_budget(curve(grid(a, b)), targets=[A, B])
    assert c.status == "unusable" and c.unusable == ["bigbench:b at 800 inst, lr 0.00015: no row in the curve"]
    b[(800, 1.5e-4)] = None  # its base model is constant: no margin_z change
    c = choose_budget(curve(grid(a, b)), targets=[A, B])
    assert c.status == "unusable" and "no margin_z change (fail: base model constant" in c.unusable[0]
    for allow in (False, True):  # no flag makes the rule apply
        with pytest.raises(InstaError, match="cannot give the pre-registered choice .* without `budget`"):
            check_budget_final(c.to_dict(), allow_partial=allow)
    # a curve target with no rows at all
    c = choose_budget(curve(grid(a, a)), targets=[A, B, "bigbench:c"])
    assert c.status == "unusable" and len(c.unusable) == 4
    # no budget of min_instances or more: one error
    with pytest.raises(InstaError, match="no budget with at least 1000 instances .*100 inst, lr 5e-05"):
        choose_budget(curve(grid(a, a)), min_instances=1000, targets=[A, B])
    with pytest.raises(InstaError, match="no budget with at least 400 instances"):
        choose_budget([], targets=[A, B])
    with pytest.raises(InstaError, match="must be a list of rows"):
        choose_budget({"rows": []}, targets=[A, B])
    with pytest.raises(InstaError, match="a row of 'bigbench:a' has no budget"):
        choose_budget([{"task": A, "status": "pass"}], targets=[A, B])


# ---------------------------------------------------------------- a transfer run on a fixture screen with a curve

T1, T2 = "bigbench:zoo_statements", "bigbench:plant_facts"


@pytest.fixture()
def curve_screen(tmp_path):
    """A finished dry-run screen of the fixture tasks whose learning curve (2 targets x 2 / 6 / 12 instances x 2
    learning rates; 6 is the screen's budget, standing for 400) is complete, and v1's config."""
    raw = yaml.safe_load((REPO / "configs" / "screen-tiny.yaml").read_text())
    raw.update(data_dir=str(DATA), out=str(tmp_path / "screen"),
               curve={"targets": [T1, T2], "instances": [2, 6, 12], "learning_rates": list(LRS)})
    path = tmp_path / "screen.yaml"
    path.write_text(yaml.safe_dump(raw))
    screen = Screen(load_screen_config(str(path)), log=quiet)
    screen.prepare()
    screen.run(progress=False)
    write_summary(screen)
    v1 = tmp_path / "v1.yaml"
    v1.write_text(yaml.safe_dump({"name": "v1", "targets": ["bbh:sports_understanding", "bigbench:capitals"]}))
    return {"path": str(path), "v1": str(v1), "screen": screen, "json": Path(screen.out) / "screen.json"}


def set_curve(cs, values):
    """Overwrite the curve's margin_z changes in screen.json: {(instances, lr): change, same for both targets};
    "pending" marks both targets' rows at that budget pending."""
    summary = json.loads(cs["json"].read_text())
    for r in summary["curve"]:
        v = values.get((r["budget"]["instances"], r["budget"]["learning_rate"]))
        if v == "pending":
            r.update(status="pending", why="oracle not trained yet")
            r.pop("margin_z", None)
        elif v is not None:
            r.update(status="pass", margin_z={"change": v, "low": v - 0.1, "high": v + 0.1})
    cs["json"].write_text(json.dumps(summary))


def budget_raw(cs, tmp_path, **over):
    raw = v2_raw({"path": cs["path"], "v1": cs["v1"]}, tmp_path, **over)
    raw.pop("instances")  # the budget section chooses it
    raw.setdefault("budget", {"from_curve": cs["path"], "min_instances": 6})
    return raw


class TrainSpy(DryRunBackend):
    """The dry-run backend, recording each training's (instances, learning rate)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def train(self, records, out_dir, model, options):
        self.calls.append((len(records), options.get("learning_rate")))
        return super().train(records, out_dir, model, options)


CURVE = {(6, 5e-5): 0.5, (6, 1.5e-4): 0.95, (12, 5e-5): 1.0, (12, 1.5e-4): 0.7, (2, 5e-5): 3.0, (2, 1.5e-4): 3.0}


def test_the_run_trains_at_the_chosen_budget_and_keeps_it_frozen(curve_screen, tmp_path):
    cs = curve_screen
    assert len(json.loads(cs["json"].read_text())["curve"]) == 2 * 3 * 2
    set_curve(cs, CURVE)
    cfg = config_from_dict(budget_raw(cs, tmp_path))
    assert (cfg.instances, cfg.train.learning_rate) == (6, 1.5e-4) and cfg.budget_choice.final
    plan = plan_transfer(cfg, log=quiet)
    d = plan["target_decision"]
    assert d["budget"]["instances"] == 6 and d["cost"]["instances"] == 6  # the cost rule saw the chosen instances
    assert any(line.startswith("budget per (source, seed) from the learning curve") for line in plan["plan_lines"])
    assert any("6 inst, lr 0.00015" in line and "CHOSEN" in line for line in plan["plan_lines"])
    assert "the run refuses" not in " ".join(plan["plan_lines"])
    spy = TrainSpy()
    run_transfer(config_from_dict(budget_raw(cs, tmp_path)), backend=spy, log=quiet, progress=False, report=False)
    out = tmp_path / "v2"
    frozen = json.loads((out / FROZEN_TARGETS).read_text())
    assert (frozen["budget"]["instances"], frozen["budget"]["learning_rate"]) == (6, 1.5e-4)
    # every source was trained on 6 instances at lr 1.5e-4
    assert len(spy.calls) == plan["units_to_train"] and {lr for _, lr in spy.calls} == {1.5e-4}
    assert {n for n, _ in spy.calls} == {6}
    # the report states the budget rule's table and choice next to the targets and the cost
    run_transfer(config_from_dict(budget_raw(cs, tmp_path)), log=quiet, progress=False, run_cells=False)
    md = (out / "report.md").read_text()
    assert "budget per (source, seed) from the learning curve" in md and "-> 6 inst, lr 0.00015" in md
    # the curve changes afterwards (the rule would now take 12 instances at 5e-5): a resumed run keeps the frozen
    # budget, so every model key, and so every cell, is the one already computed
    set_curve(cs, {**CURVE, (6, 1.5e-4): 0.1})
    logs = []
    again = config_from_dict(budget_raw(cs, tmp_path))
    assert (again.instances, again.train.learning_rate) == (12, 5e-5)  # what the rule gives now
    plan2 = plan_transfer(again, log=logs.append)
    assert plan2["target_decision"]["frozen"] and plan2["target_decision"]["budget"]["instances"] == 6
    assert plan2["cells_done"] == plan2["cells"] and plan2["units_to_train"] == 0
    assert any("budget: kept as frozen" in m and "12 instances" in m for m in logs)
    run = TransferRun(config_from_dict(budget_raw(cs, tmp_path)), log=quiet)
    run.prepare()
    assert (run.cfg.instances, run.cfg.key_options("train")["learning_rate"]) == (6, 1.5e-4)


def test_the_run_refuses_while_the_curve_is_pending_or_unusable(curve_screen, tmp_path, capsys):
    cs = curve_screen
    set_curve(cs, {**CURVE, (12, 1.5e-4): "pending"})
    plan = plan_transfer(config_from_dict(budget_raw(cs, tmp_path)), log=quiet)
    text = "\n".join(plan["plan_lines"])
    assert "NOT final: 2 curve row(s)" in text and "bigbench:plant_facts at 12 inst, lr 0.00015" in text
    assert "the run refuses until the screen is complete" in text
    assert plan["target_decision"]["cost"]["instances"] == 6  # the cheapest candidate, provisionally
    cfg_path = tmp_path / "v2.yaml"
    cfg_path.write_text(yaml.safe_dump(budget_raw(cs, tmp_path)))
    assert cli.main(["transfer", str(cfg_path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "training budget is not final" in err and "--allow-partial-screen" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "v2" / FROZEN_TARGETS).exists()
    # told to go on: the provisional choice is frozen with the targets
    run_transfer(config_from_dict(budget_raw(cs, tmp_path)), log=quiet, progress=False, report=False,
                 allow_partial_screen=True)
    frozen = json.loads((tmp_path / "v2" / FROZEN_TARGETS).read_text())
    assert frozen["budget"]["status"] == "pending" and frozen["budget"]["instances"] == 6
    # a curve that cannot give the choice (a target's base model constant): refused whatever the flags
    summary = json.loads(cs["json"].read_text())
    for r in summary["curve"]:
        if r["task"] == T2:
            r.update(status="fail", why="base model constant (96% one answer)")
            r.pop("margin_z", None)
    cs["json"].write_text(json.dumps(summary))
    raw = budget_raw(cs, tmp_path, out=str(tmp_path / "other"))
    assert "the run refuses: the learning curve cannot give" in "\n".join(
        plan_transfer(config_from_dict(raw), log=quiet)["plan_lines"])
    with pytest.raises(InstaError, match="cannot give the pre-registered choice"):
        run_transfer(config_from_dict(raw), log=quiet, progress=False, report=False, allow_partial_screen=True)


def test_budget_config_errors(curve_screen, tmp_path):
    cs = curve_screen
    set_curve(cs, CURVE)
    with pytest.raises(InstaError, match="instances would be set twice"):
        config_from_dict({**budget_raw(cs, tmp_path), "instances": 8})
    with pytest.raises(InstaError, match="train.learning_rate would be set twice"):
        config_from_dict(budget_raw(cs, tmp_path, train={"epochs": 1, "batch_size": 4, "learning_rate": 1e-4}))
    with pytest.raises(InstaError, match="budget.metric must be one of"):
        config_from_dict(budget_raw(cs, tmp_path, budget={"from_curve": cs["path"], "metric": "f1"}))
    with pytest.raises(InstaError, match=r"budget.fraction must be in \(0, 1\]"):
        config_from_dict(budget_raw(cs, tmp_path, budget={"from_curve": cs["path"], "fraction": 1.5}))
    with pytest.raises(InstaError, match="unknown key.* in budget: fractoin"):
        config_from_dict(budget_raw(cs, tmp_path, budget={"from_curve": cs["path"], "fractoin": 0.9}))
    with pytest.raises(InstaError, match="no budget with at least 400 instances"):  # the fixture curve tops at 12
        config_from_dict(budget_raw(cs, tmp_path, budget={"from_curve": cs["path"]}))
    with pytest.raises(InstaError, match=r"^transfer config: budget.from_curve: screen config \S+nope.yaml not found"):
        config_from_dict(budget_raw(cs, tmp_path, budget={"from_curve": str(tmp_path / "nope.yaml")}))
    listed = {**budget_raw(cs, tmp_path), "targets": [T1, T2]}
    with pytest.raises(InstaError, match="budget.from_curve needs targets from a screen"):
        config_from_dict(listed)
    # the same rule from a notebook: the screen read as the config reads it
    cfg = config_from_dict(budget_raw(cs, tmp_path))
    alone = curve_budget(read_screen(cs["path"]), min_instances=6)
    assert alone.to_dict() == cfg.budget_choice.to_dict() and (alone.instances, alone.learning_rate) == (6, 1.5e-4)
    # other training options than the curve's oracles: stated in the plan
    cfg = config_from_dict(budget_raw(cs, tmp_path, train={"epochs": 2, "batch_size": 4}))
    assert any("epochs: 1 there, 2 here" in n for n in cfg.budget_choice.notes)
    # no budget section: everything as before (instances and learning rate as written)
    plain = config_from_dict(v2_raw({"path": cs["path"], "v1": cs["v1"]}, tmp_path))
    assert plain.budget is None and plain.budget_choice is None and plain.instances == 8


def test_a_decision_frozen_by_another_configuration(curve_screen, tmp_path):
    cs = curve_screen
    set_curve(cs, CURVE)
    out = tmp_path / "v2"
    run_transfer(config_from_dict(budget_raw(cs, tmp_path)), log=quiet, progress=False, report=False)
    assert any((out / "cells").glob("*.json"))
    other = budget_raw(cs, tmp_path, cost={"budget_hours": 5})  # another design, same folder
    with pytest.raises(InstaError, match=f"{FROZEN_TARGETS} was frozen by another configuration .* holds \\d+ "
                                         "cell\\(s\\) .* another --out"):
        plan_transfer(config_from_dict(other), log=quiet)
    with pytest.raises(InstaError, match="was frozen by another configuration"):
        run_transfer(config_from_dict(other), log=quiet, progress=False, report=False)
    # an unreadable file is refused the same way while there are cells
    frozen = (out / FROZEN_TARGETS).read_text()
    (out / FROZEN_TARGETS).write_text("{not json")
    with pytest.raises(InstaError, match="cannot be read, and .* holds"):
        plan_transfer(config_from_dict(budget_raw(cs, tmp_path)), log=quiet)
    (out / FROZEN_TARGETS).write_text(frozen)
    # no cell yet: the other configuration decides again, says so, and its run replaces the file
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / FROZEN_TARGETS).write_text(frozen)
    logs = []
    other = budget_raw(cs, tmp_path, out=str(fresh), cost={"budget_hours": 5})
    run_transfer(config_from_dict(other), log=logs.append, progress=False, report=False)
    assert any("was frozen by another configuration" in m and "decides again" in m for m in logs)
    assert json.loads((fresh / FROZEN_TARGETS).read_text())["identity"] != json.loads(frozen)["identity"]
