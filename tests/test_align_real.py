"""INSTA-aligned on the real data with the real all-MiniLM-L6-v2 (slow: about a minute on 2 cores)."""
from __future__ import annotations

import json

import pytest

from insta.align import METADATA_FILE, AlignConfig, align_encoder, split_catalog
from insta.catalogs import load_catalog
from insta.evaluators.identification import evaluate_identification

pytestmark = pytest.mark.slow

#: eight T0 training datasets from different clusters
SUBSET = ["imdb", "ag_news", "samsum", "glue/qqp", "cosmos_qa", "common_gen", "ropes", "wiki_qa"]


def test_real_leakage_guard_p3_and_bigbench(data_dir):
    p3 = load_catalog("p3", data_dir)
    split = split_catalog(p3, AlignConfig(pool="t0_train"))
    eval_ids = set(p3.pool("t0_eval"))
    assert eval_ids <= set(split.excluded)  # recorded although outside the pool
    assert not eval_ids & {t for ts in split.unit_tasks.values() for t in ts}
    assert len(split.train) == 35
    bb = load_catalog("bigbench", data_dir)
    bsplit = split_catalog(bb, AlignConfig())
    trained = {t for ts in bsplit.unit_tasks.values() for t in ts}
    for family in ("logical_deduction", "formal_fallacies_syllogisms_negation", "strategyqa", "navigate",
                   "tracking_shuffled_objects", "date_understanding", "causal_judgment"):
        members = bb.members(family)
        assert members, family
        assert not set(members) & trained, family
        assert set(members) <= set(bsplit.excluded)


def test_real_tiny_alignment_and_identification(data_dir, tmp_path):
    p3 = load_catalog("p3", data_dir)
    from insta.catalogs.p3 import t0_task_id

    sub = p3.subset([t0_task_id(n) for n in SUBSET], name="p3")
    cfg = AlignConfig(objective="mnrl", epochs=1, batch_size=8, learning_rate=2e-5, progress=False)
    out = align_encoder(sub, cfg, tmp_path / "minilm-aligned", log=lambda m: None)
    meta = json.loads((out / METADATA_FILE).read_text())
    assert meta["base_encoder"]["name"] == "all-MiniLM-L6-v2"
    assert meta["training"]["steps_per_epoch"][0] > 0
    assert meta["training"]["epochs"][0]["dev_pearson"] == meta["training"]["epochs"][0]["dev_pearson"]  # not NaN

    result = evaluate_identification(sub, ["all-MiniLM-L6-v2", str(out)])
    held = result["groups"]["heldout"]
    assert held["n_queries"] == meta["split"]["n_heldout_instructions"] > 0
    for label, by_agg in held["by_encoder"].items():
        for agg, s in by_agg.items():
            assert 0.0 <= s["top1"] <= s["top5"] <= 1.0, (label, agg)
    base, aligned = (held["by_encoder"][e["label"]]["mean"]["top5"] for e in result["encoders"])
    assert base >= 0.5 and aligned >= 0.5  # 8 well separated datasets: both encoders find most of them

    from insta.encoder import Encoder
    from insta.methods import Selector

    top = Selector(sub, Encoder(str(out))).select(["Is this movie review positive or negative?"], k=3).task_ids[0]
    assert top in {"imdb", "rotten_tomatoes", "yelp_review_full", "amazon_polarity", "app_reviews"}
