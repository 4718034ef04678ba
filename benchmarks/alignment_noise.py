"""Seed noise of INSTA-aligned MNRL on P3: the same split and pairs, other training randomness (dropout and the
task-aware batch order), so that a before/after difference of the dev Pearson can be read against it.

    PYTHONPATH=CHECKOUT/src INSTA_DATA_DIR=DATA python benchmarks/alignment_noise.py IMPL K OUT

IMPL is ``loop`` for a checkout from before the Trainer (commit 579ad4e: hand-written loop, seeded by
``insta.align._seed_everything``) or ``trainer`` for one with ``SentenceTransformerTrainer`` (seeded by
``transformers.trainer.set_seed``); K = 0 is the plain run, K > 0 adds 1000 * K to the training seeds only (the split
and the pairs keep seed 42). Prints the dev Pearson per epoch. Results: benchmarks/results/alignment_trainer.md.
"""
from __future__ import annotations

import json
import os
import sys


def main() -> None:
    impl, k, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import insta.align as align
    from insta.catalogs import load_catalog

    shift = 1000 * k
    init = align.TaskAwareBatchSampler.__init__

    def shifted_init(self, keys, batch_size, seed=42, *args, **kwargs):
        init(self, keys, batch_size, seed + shift, *args, **kwargs)

    align.TaskAwareBatchSampler.__init__ = shifted_init
    if impl == "loop":
        seed_everything = align._seed_everything
        align._seed_everything = lambda seed: seed_everything(seed + shift)
    else:
        import transformers.trainer as hf_trainer

        set_seed = hf_trainer.set_seed
        hf_trainer.set_seed = lambda seed, *a, **kw: set_seed(seed + shift, *a, **kw)
    catalog = load_catalog("p3", os.environ.get("INSTA_DATA_DIR"))
    config = align.AlignConfig(pool="t0_train", objective="mnrl", progress=False)
    align.align_encoder(catalog, config, out, log=lambda m: print(m, flush=True))
    tr = json.loads(open(os.path.join(out, align.METADATA_FILE), encoding="utf-8").read())["training"]
    print(json.dumps({"impl": impl, "k": k, "dev_pearson": [round(e["dev_pearson"], 4) for e in tr["epochs"]],
                      "best_epoch": tr["best_epoch"]}))


if __name__ == "__main__":
    main()
