"""Transfer-aligned encoder: pairs labelled by measured transfer (hand-computed percentiles), the held-out target's
column and instructions never feed them, and a tiny training run whose directory the selection methods use."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

from insta.align import METADATA_FILE, align_to_transfer, build_transfer_pairs, transfer_config
from insta.catalogs import load_catalog
from insta.catalogs.base import Catalog
from insta.errors import InstaError
from insta.matrix.matrix import TransferMatrix
from insta.matrix.prior import PriorMatrix

DATA = Path(__file__).parent / "fixtures" / "experiment" / "data"
SOURCES = ["animal_trivia", "arith", "color_names", "plant_facts"]
TARGETS = ["bigbench:animal_facts", "bigbench:capitals", "bigbench:movie_sentiment"]
#: transfer[target][source]
TRANSFER = {
    "bigbench:animal_facts": [0.30, -0.10, 0.05, 0.20],
    "bigbench:capitals": [0.10, -0.05, 0.10, 0.12],
    "bigbench:movie_sentiment": [0.02, -0.02, 0.04, 0.01],
}
TEXTS = {"bigbench:animal_facts": ["Answer questions about animals", "Tell facts about animals"],
         "bigbench:capitals": ["Name the capital city"],
         "bigbench:movie_sentiment": ["Classify the sentiment of a movie review"]}
SOURCE_TEXTS = {"animal_trivia": ["Animal trivia questions", "Quiz on animals"], "arith": ["Add two numbers"],
                "color_names": ["Name the color"], "plant_facts": ["Facts about plants"]}


def _prior(transfer=TRANSFER) -> PriorMatrix:
    return PriorMatrix(list(transfer), list(SOURCES), np.asarray([transfer[t] for t in transfer], float), "acc")


def _labels(pairs) -> dict[tuple[str, str], set[float]]:
    out: dict[tuple[str, str], set[float]] = {}
    for p in pairs.positives:
        out.setdefault((p.unit_a, p.unit_b), set()).add(round(p.label, 9))
    return out


def test_labels_are_per_target_percentiles_by_hand():
    pairs = build_transfer_pairs(_prior(), TEXTS, SOURCE_TEXTS, pairs_per_cell=4)
    labels = _labels(pairs)
    # animal_facts: arith < color_names < plant_facts < animal_trivia -> 0, 1/3, 2/3, 1
    assert labels[("bigbench:animal_facts", "animal_trivia")] == {1.0}
    assert labels[("bigbench:animal_facts", "arith")] == {0.0}
    assert labels[("bigbench:animal_facts", "color_names")] == {round(1 / 3, 9)}
    # capitals: animal_trivia and color_names tie (0.10) and share their mean rank: (1 + 2) / 2 / 3
    assert labels[("bigbench:capitals", "animal_trivia")] == labels[("bigbench:capitals", "color_names")] == {0.5}
    assert labels[("bigbench:capitals", "plant_facts")] == {1.0}
    # every pair is one instruction of the target and one of the source; a cell gives every combination up to 4
    by_cell = {}
    for p in pairs.positives:
        assert p.a in TEXTS[p.unit_a] and p.b in SOURCE_TEXTS[p.unit_b]
        by_cell.setdefault((p.unit_a, p.unit_b), []).append((p.a, p.b))
    assert len(by_cell[("bigbench:animal_facts", "animal_trivia")]) == 4
    assert len(set(by_cell[("bigbench:animal_facts", "animal_trivia")])) == 4
    assert len(by_cell[("bigbench:capitals", "arith")]) == 1
    assert pairs.stats["n_pairs"] == len(pairs.positives) == (4 + 2 + 2 + 2) + 2 * (2 + 1 + 1 + 1)
    assert not pairs.negatives


def test_pairs_per_cell_caps_each_cell_and_the_draw_is_seeded():
    one = build_transfer_pairs(_prior(), TEXTS, SOURCE_TEXTS, pairs_per_cell=1, seed=3)
    assert len(one.positives) == len(TARGETS) * len(SOURCES)
    again = build_transfer_pairs(_prior(), TEXTS, SOURCE_TEXTS, pairs_per_cell=1, seed=3)
    assert [p.to_list() for p in one.positives] == [p.to_list() for p in again.positives]
    with pytest.raises(InstaError, match="pairs_per_cell"):
        build_transfer_pairs(_prior(), TEXTS, SOURCE_TEXTS, pairs_per_cell=0)


def test_the_held_out_targets_column_and_instructions_never_feed_the_pairs():
    held = "bigbench:animal_facts"
    base = build_transfer_pairs(_prior(), TEXTS, SOURCE_TEXTS, held_out=[held])
    # whatever the held-out column holds (reversed, NaN, huge), the pairs are the same: it is never read
    for column in ([-0.3, 0.1, -0.05, -0.2], [math.nan] * 4, [1e9, -1e9, 0.0, 5.0]):
        other = build_transfer_pairs(_prior({**TRANSFER, held: column}), TEXTS, SOURCE_TEXTS, held_out=[held])
        assert [p.to_list() for p in other.positives] == [p.to_list() for p in base.positives]
    assert all(p.unit_a != held for p in base.positives)
    texts = {t for p in base.positives for t in (p.a, p.b)}
    assert not texts & set(TEXTS[held])
    # the other targets' labels are the percentiles among their own sources, as without the held-out target
    assert _labels(base)[("bigbench:capitals", "plant_facts")] == {1.0}
    assert base.stats["held_out"] == [held] and base.stats["n_targets"] == 2


def test_excluded_texts_and_unmeasured_cells_give_no_pair():
    transfer = {**TRANSFER, "bigbench:capitals": [0.10, math.nan, 0.10, 0.12]}
    src = {**SOURCE_TEXTS, "animal_trivia": ["Animal trivia questions", "Answer questions about animals"]}
    pairs = build_transfer_pairs(_prior(transfer), TEXTS, src, exclude_texts=["Quiz on animals", "Name the color"])
    cells = _labels(pairs)
    assert ("bigbench:capitals", "arith") not in cells  # not measured
    assert all(("color_names" != p.unit_b) for p in pairs.positives)  # its only text is excluded
    assert pairs.stats["cells_without_texts"] == len(TARGETS)
    assert all(p.a != p.b for p in pairs.positives)  # a text shared by target and source is never its own pair
    # capitals' percentiles among the three sources it measured: 0.10, 0.10, 0.12 -> 0.25, 0.25, 1
    assert cells[("bigbench:capitals", "plant_facts")] == {1.0}
    assert cells[("bigbench:capitals", "animal_trivia")] == {0.25}
    with pytest.raises(InstaError, match="no training pair"):
        build_transfer_pairs(_prior(), TEXTS, {s: [] for s in SOURCES})


# ---------------------------------------------------------------- a tiny training run


@pytest.fixture(scope="module")
def bigbench():
    return load_catalog("bigbench", DATA)


@pytest.fixture(scope="module")
def pool(bigbench):
    from insta.engine.pool import merge_families

    fams = merge_families(bigbench, "bigbench")
    return Catalog("bigbench", [fams.get(s) for s in SOURCES + ["zoo_statements"]])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, bigbench):
    from _tiny_encoder import make_tiny_encoder

    texts = [x for t in bigbench for x in t.instructions]
    return str(make_tiny_encoder(tmp_path_factory.mktemp("tiny") / "enc", texts))


def _matrix() -> TransferMatrix:
    rows = [{"target": t, "source": s, "seed": 0, "metric": "acc", "value": None, "base_value": None,
             "transfer": v} for t, vals in TRANSFER.items() for s, v in zip(SOURCES, vals)]
    return TransferMatrix(rows, {"source_catalog": "bigbench"})


def _weights(model_dir: Path) -> np.ndarray:
    from safetensors.numpy import load_file

    files = sorted(model_dir.rglob("model.safetensors"))
    return np.concatenate([v.ravel() for f in files for v in load_file(str(f)).values()])


def test_a_tiny_transfer_alignment_trains_and_serves_the_methods(tiny, bigbench, pool, tmp_path):
    from insta.methods import load_method
    from insta.selection import ranking_scores

    out = tmp_path / "tenc"
    held = "bigbench:movie_sentiment"
    config = transfer_config(base_encoder=tiny, epochs=1, batch_size=64, learning_rate=1e-3, warmup_ratio=0.0,
                             threads=1, progress=False)  # one step, no warm-up (its first step has rate 0)
    logs: list[str] = []
    align_to_transfer(_matrix(), pool, out, held_out=[held], config=config, target_catalog=bigbench,
                      log=logs.append)
    meta = json.loads((out / METADATA_FILE).read_text())
    assert meta["kind"] == "transfer" and meta["status"] == "complete"
    assert meta["transfer_matrix"]["held_out"] == [held]
    assert meta["pairs"]["train"]["n_targets"] == 2 and meta["training"]["steps_per_epoch"] == [1]
    assert not np.allclose(_weights(out), _weights(Path(tiny)))  # one optimizer step moved the weights
    assert held not in meta["split"]["train"]
    assert not set(bigbench.get("movie_sentiment").instructions) & {t for v in meta["split"]["train"].values()
                                                                      for t in v}
    # a rerun with the same inputs trains nothing; other inputs need overwrite
    logs.clear()
    align_to_transfer(_matrix(), pool, out, held_out=[held], config=config, target_catalog=bigbench,
                      log=logs.append)
    assert any("nothing to do" in m for m in logs)
    with pytest.raises(InstaError, match="another configuration"):
        align_to_transfer(_matrix(), pool, out, held_out=[held], config=transfer_config(
            base_encoder=tiny, epochs=2, batch_size=64, progress=False), target_catalog=bigbench, log=logs.append)
    # the directory is an encoder of insta-mean and prior-transfer
    target = bigbench.get("movie_sentiment")
    for name, opts in (("insta-mean", {}), ("prior-transfer", {"prior_matrix": _matrix(),
                                                                 "target_catalog": bigbench})):
        scores = ranking_scores(load_method(name, encoder=str(out), **opts), target, pool, [])
        assert set(scores) and all(math.isfinite(v) for v in scores.values())
    with pytest.raises(InstaError, match="not in the transfer matrix"):
        align_to_transfer(_matrix(), pool, tmp_path / "x", held_out=["bigbench:nope"], config=config,
                          target_catalog=bigbench, log=logs.append)


def test_cli_transfer_matrix_flag_and_its_errors(tiny, tmp_path, capsys):
    from insta.cli import main

    mfile = tmp_path / "m.json"
    mfile.write_text(json.dumps({"meta": {"source_catalog": "bigbench"}, "rows": _matrix().rows}))
    out = tmp_path / "cli-tenc"
    rc = main(["align", "-c", "bigbench", "--data-dir", str(DATA), "--transfer-matrix", str(mfile), "--out", str(out),
               "--encoder", tiny, "--held-out-target", "bigbench:capitals", "--learning-rate", "0.001",
               "--threads", "1", "--no-progress", "--json", str(tmp_path / "s.json")])
    assert rc == 0
    meta = json.loads((out / METADATA_FILE).read_text())
    assert meta["config"]["epochs"] == 1 and meta["config"]["learning_rate"] == 0.001  # recipe, then the flag
    assert meta["config"]["select_best"] is False
    assert json.loads((tmp_path / "s.json").read_text())["held_out"] == ["bigbench:capitals"]
    assert "transfer-aligned encoder" in capsys.readouterr().out
    bad = tmp_path / "bad.csv"
    bad.write_text("target,source,transfer\nbigbench:capitals,arith,oops\n")
    for argv in (["--transfer-matrix", str(bad)], ["--held-out-target", "bigbench:capitals"],
                 ["--transfer-matrix", str(mfile), "--objective", "mnrl"]):
        rc = main(["align", "-c", "bigbench", "--data-dir", str(DATA), "--out", str(tmp_path / "o"),
                   "--encoder", tiny, "--no-progress", *argv])
        err = capsys.readouterr().err
        assert rc != 0 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
