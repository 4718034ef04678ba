"""INSTA-aligned: split, pair construction, the task-aware sampler, training end to end on a tiny model."""
from __future__ import annotations

import itertools
import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from insta.align import (
    CHECKPOINTS,
    METADATA_FILE,
    WORK_DIR,
    AlignConfig,
    TaskAwareBatchSampler,
    align_encoder,
    build_pairs,
    default_exclusions,
    split_catalog,
)
from insta.catalogs import load_catalog
from insta.catalogs.base import Catalog
from insta.cli import main
from insta.encoder import HashingEncoder
from insta.errors import InstaError
from insta.records import Task

FIX = Path(__file__).parent / "fixtures" / "align"


@pytest.fixture(scope="module")
def style():
    return load_catalog(str(FIX / "style.yaml"))


@pytest.fixture(scope="module")
def tasks():
    return load_catalog(str(FIX / "tasks.yaml"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, style, tasks):
    from _tiny_encoder import make_tiny_encoder

    texts = [x for cat in (style, tasks) for t in cat for x in t.instructions]
    return str(make_tiny_encoder(tmp_path_factory.mktemp("tiny") / "enc", texts))


def tiny_config(tiny, **kw):
    base = dict(base_encoder=tiny, objective="mnrl", learning_rate=5e-3, epochs=8, batch_size=8, threads=1,
                heldout_fraction=0.34, dev_fraction=0.0, positive_fraction=1.0, negative_threshold=0.97,
                progress=False)
    base.update(kw)
    return AlignConfig(**base)


def quiet(_msg):
    pass


# ---------------------------------------------------------------- split


def test_split_excludes_eval_pool_and_holds_out_instructions(tasks):
    cfg = AlignConfig(heldout_fraction=0.2, dev_fraction=0.1)
    split = split_catalog(tasks, cfg)
    assert split.excluded == {"nli_eval": "evaluation pool eval"}
    assert "nli_eval" not in split.train
    # units are families: coref/a and coref/b form one unit
    assert "coref" in split.train and set(split.unit_tasks["coref"]) == {"coref/a", "coref/b"}
    for unit, texts in split.train.items():
        assert texts, unit  # every unit keeps at least one training instruction
        assert not set(texts) & set(split.heldout[unit]) and not set(texts) & set(split.dev[unit])
    n_total = sum(len(v) for v in split.train.values()) + sum(len(v) for v in split.heldout.values()) + sum(
        len(v) for v in split.dev.values())
    assert n_total == sum(len(t.instructions) for t in tasks if t.id != "nli_eval")
    n_held = sum(len(v) for v in split.heldout.values())
    assert 0.1 * n_total <= n_held <= 0.35 * n_total
    assert split_catalog(tasks, cfg).to_dict() == split.to_dict()  # seeded
    assert split_catalog(tasks, AlignConfig(seed=7)).heldout != split.heldout
    # caller exclusions, and switching the default ones off
    s2 = split_catalog(tasks, AlignConfig(exclude_tasks=["qa"], exclude_families=["coref"], default_exclusions=False))
    assert "nli_eval" in s2.train and "qa" not in s2.train and "coref" not in s2.train
    assert s2.excluded["coref/a"] == "family excluded by the caller"


def test_bigbench_exclusions_cover_bbh_parents_and_families():
    tasks = [
        Task("logical_deduction/three_objects", ["a", "b"], "bigbench", family="logical_deduction", pools={"t0_eval"}),
        Task("logical_deduction/five_objects", ["c", "d"], "bigbench", family="logical_deduction"),
        Task("navigate", ["e", "f"], "bigbench"),  # a BBH parent
        Task("anachronisms", ["g", "h"], "bigbench"),
    ]
    ex = default_exclusions(Catalog("bigbench", tasks))
    assert set(ex) == {"logical_deduction/three_objects", "logical_deduction/five_objects", "navigate"}
    assert "BBH" in ex["navigate"]
    # the same tasks in another catalog: no BBH rule
    assert set(default_exclusions(Catalog("other", tasks))) == {"logical_deduction/three_objects",
                                                                 "logical_deduction/five_objects"}


def test_bad_catalogs_get_clear_errors(tasks):
    single = load_catalog(str(FIX / "single.yaml"))
    with pytest.raises(InstaError, match="no task has two instructions"):
        split_catalog(single, AlignConfig())
    with pytest.raises(InstaError, match="no tasks"):
        split_catalog(Catalog("empty", []), AlignConfig())
    two = Catalog("two", [Task("a", ["x", "y"], "two"), Task("b", ["z", "w"], "two")])
    with pytest.raises(InstaError, match="lower --heldout-fraction"):
        split_catalog(two, AlignConfig(heldout_fraction=0.5, dev_fraction=0.4))
    with pytest.raises(InstaError, match="objective"):
        AlignConfig(objective="triplet")
    with pytest.raises(InstaError, match="unknown alignment option"):
        AlignConfig.from_dict({"epochz": 3})


def test_cli_errors_are_one_line(tmp_path, capsys):
    rc = main(["align", "-c", str(FIX / "single.yaml"), "--out", str(tmp_path / "m"), "--encoder", "hashing-x"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "no task has two instructions" in err
    empty = tmp_path / "empty.yaml"
    empty.write_text("tasks: []\n")
    rc = main(["align", "-c", str(empty), "--out", str(tmp_path / "m2")])
    assert rc == 2


# ---------------------------------------------------------------- pairs


def test_pairs_positive_within_negative_across_and_under_threshold(tasks):
    split = split_catalog(tasks, AlignConfig(heldout_fraction=0.0, dev_fraction=0.0))
    enc = HashingEncoder()
    ps = build_pairs(split.train, enc, positive_fraction=0.4, negative_threshold=0.3, max_negative_reuse=4, seed=1)
    owner = {t: u for u, texts in split.train.items() for t in texts}
    all_pos = sum(len(v) * (len(v) - 1) // 2 for v in split.train.values())
    assert ps.stats["n_positive_candidates"] == all_pos
    assert len(ps.positives) == int(all_pos * 0.4)
    for p in ps.positives:
        assert p.label == 1.0 and owner[p.a] == owner[p.b] == p.unit_a and p.a != p.b
    assert ps.negatives
    for p in ps.negatives:
        assert p.label == 0.0 and owner[p.a] != owner[p.b]
        va, vb = enc.encode([p.a, p.b])
        assert float(va @ vb) < 0.3
    assert len({p.a for p in ps.negatives}) == len(ps.negatives)  # one negative per instruction
    # reproducible, and the seed matters
    again = build_pairs(split.train, enc, positive_fraction=0.4, negative_threshold=0.3, max_negative_reuse=4, seed=1)
    assert [p.to_list() for p in again.pairs] == [p.to_list() for p in ps.pairs]
    other = build_pairs(split.train, enc, positive_fraction=0.4, negative_threshold=0.3, max_negative_reuse=4, seed=2)
    assert [p.to_list() for p in other.pairs] != [p.to_list() for p in ps.pairs]


def test_negative_reuse_bound_is_respected():
    # 30 anchors in one unit, only three possible negatives: each may serve at most twice
    groups = {"big": [f"alpha beta gamma number {i}" for i in range(30)],
              "small": ["zeta eta", "theta iota", "kappa lambda"]}
    ps = build_pairs(groups, HashingEncoder(), positive_fraction=1.0, negative_threshold=0.3, max_negative_reuse=2,
                     seed=0)
    used = Counter(p.b for p in ps.negatives if p.unit_a == "big")
    assert used and max(used.values()) <= 2
    total = Counter(p.b for p in ps.negatives)
    assert max(total.values()) <= 2
    assert ps.stats["n_without_negative"] >= 30 - 3 * 2
    assert ps.stats["max_negative_reuse_seen"] <= 2
    none = build_pairs(groups, HashingEncoder(), max_negative_reuse=0, seed=0)
    assert not none.negatives


def test_shared_text_is_never_a_negative_of_its_units():
    shared = "completely shared instruction text"
    groups = {"a": [shared, "apple banana cherry"], "b": [shared, "dog elephant fox"], "c": ["green house", "red car"]}
    for seed in range(5):
        ps = build_pairs(groups, HashingEncoder(), positive_fraction=1.0, negative_threshold=1.1, seed=seed)
        for p in ps.negatives:
            assert not (p.b == shared and p.unit_a in {"a", "b"})
            assert p.a != p.b


def test_positive_cap_per_unit():
    groups = {"big": [f"text number {i}" for i in range(20)], "small": ["x one", "y two"]}
    ps = build_pairs(groups, HashingEncoder(), positive_fraction=1.0, max_positive_pairs_per_unit=10, seed=0)
    assert Counter(p.unit_a for p in ps.positives) == {"big": 10, "small": 1}
    assert ps.stats["n_units_capped"] == 1


# ---------------------------------------------------------------- sampler


def test_task_aware_sampler_never_puts_one_task_twice_in_a_batch():
    rng = random.Random(0)
    keys = []
    for _ in range(400):
        unit = f"u{int(rng.paretovariate(1.0)) % 25}"
        ks = {unit}
        if rng.random() < 0.1:  # a pair whose text also belongs to another unit
            ks.add(f"u{rng.randrange(25)}")
        keys.append(ks)
    sampler = TaskAwareBatchSampler(keys, batch_size=16, seed=3)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        seen = [i for b in batches for i in b]
        assert len(seen) == len(set(seen))  # each example at most once
        assert len(seen) + sampler.dropped == len(keys)
        for b in batches:
            assert 2 <= len(b) <= 16
            for i, j in itertools.combinations(b, 2):
                assert not (sampler.keys[i] & sampler.keys[j]), (i, j)
        assert len(sampler) == len(batches)
    assert sampler.batches(0) == TaskAwareBatchSampler(keys, 16, seed=3).batches(0)  # reproducible
    assert sampler.batches(0) != sampler.batches(1)  # reshuffled per epoch


def test_sampler_epochs_all_have_the_trainers_length():
    """The Trainer counts steps as epochs x len(sampler): every epoch yields exactly that many batches (the shortest
    packing of the first `epochs` epochs; longer ones leave out their smallest batches, shorter ones halve their
    largest), still with no two examples of one task in a batch."""
    rng = random.Random(1)
    keys = [{f"u{u}"} for u in range(35) for _ in range(rng.randint(1, 25))]  # P3-like: 35 tasks of 1-25 pairs
    sampler = TaskAwareBatchSampler(keys, batch_size=16, seed=5, epochs=4)
    natural = [len(sampler._make(e)[0]) for e in range(12)]
    assert any(n > sampler.n_batches for n in natural[:4])  # longer packings left out their smallest batches
    assert sampler.n_batches == min(natural[:4]) == len(sampler)
    for epoch in range(12):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == sampler.n_batches, epoch
        seen = [i for b in batches for i in b]
        assert len(seen) == len(set(seen)) and len(seen) + sampler.dropped == len(keys)
        for b in batches:
            assert len({next(iter(keys[i])) for i in b}) == len(b)
    assert any(n < sampler.n_batches for n in natural[4:])  # later, shorter packings were halved (checked above)


def test_sampler_works_as_a_dataloader_batch_sampler():
    from torch.utils.data import DataLoader

    keys = [f"t{i % 5}" for i in range(40)]
    loader = DataLoader(list(range(40)), batch_sampler=TaskAwareBatchSampler(keys, batch_size=4, seed=0))
    for batch in loader:
        assert len({keys[int(i)] for i in batch}) == len(batch)


def test_sampler_drops_what_cannot_be_batched():
    sampler = TaskAwareBatchSampler(["a"] * 5 + ["b"], batch_size=4, seed=0)
    batches = sampler.batches(0)
    assert batches == [b for b in batches if len(b) == 2] and len(batches) == 1
    assert sampler.dropped == 4


# ---------------------------------------------------------------- end to end on a tiny model


def _top1(result, group="heldout", agg="mean"):
    by = result["groups"][group]["by_encoder"]
    return [by[e["label"]][agg]["top1"] for e in result["encoders"]]


def test_mnrl_alignment_raises_identification_accuracy(tiny, style, tmp_path):
    from insta.evaluators.identification import evaluate_identification

    out = align_encoder(style, tiny_config(tiny), tmp_path / "aligned", log=quiet)
    meta = json.loads((out / METADATA_FILE).read_text())
    assert meta["status"] == "complete" and meta["config"]["objective"] == "mnrl"
    assert meta["pairs"]["train"]["n_positive"] > 0 and meta["split"]["n_heldout_instructions"] > 0
    assert not (out / WORK_DIR).exists()
    assert (out / "modules.json").is_file() and (out / "README.md").is_file()
    result = evaluate_identification(style, [tiny, str(out)], aggregations=["mean", "max"])
    assert result["groups"]["heldout"]["n_queries"] == meta["split"]["n_heldout_instructions"]
    base, aligned = _top1(result)
    assert aligned >= base + 0.25, result["groups"]["heldout"]
    base_max, aligned_max = _top1(result, agg="max")
    assert aligned_max > base_max


def test_cosine_alignment_runs_and_helps(tiny, style, tmp_path):
    from insta.evaluators.identification import evaluate_identification

    cfg = tiny_config(tiny, objective="cosine", learning_rate=1e-2, epochs=10, dev_fraction=0.0)
    out = align_encoder(style, cfg, tmp_path / "cos", log=quiet)
    meta = json.loads((out / METADATA_FILE).read_text())
    assert meta["pairs"]["train"]["n_negative"] > 0
    result = evaluate_identification(style, [tiny, str(out)], aggregations=["mean"])
    base, aligned = _top1(result)
    assert aligned > base


def test_aligned_dir_works_with_insta_select(tiny, style, tmp_path, capsys):
    out = align_encoder(style, tiny_config(tiny, epochs=1), tmp_path / "m", log=quiet)
    rc = main(["select", "-c", str(FIX / "style.yaml"), "--encoder", str(out), "-i", "translate this into French",
               "-k", "2", "--json", "-"])
    assert rc == 0
    sel = json.loads(capsys.readouterr().out)
    assert len(sel["selected"]) == 2


def _weights(path: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(path / "model.safetensors"))


def _interrupt_at(text):
    def log(msg):
        if msg.startswith(text):
            raise KeyboardInterrupt

    return log


def _assert_same_weights(a_dir: Path, b_dir: Path) -> None:
    a, b = _weights(a_dir), _weights(b_dir)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-6)


def _checkpoints(out: Path) -> list[Path]:
    folder = out / WORK_DIR / CHECKPOINTS
    return sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))


@pytest.mark.parametrize("objective", ["mnrl", "cosine"])
def test_interrupted_run_resumes_to_the_same_weights(tiny, style, tmp_path, objective):
    """Killed right after epoch 1's checkpoint: the Trainer resumes weights, optimizer, schedule, random state and
    the batch order, so the result equals an uninterrupted run."""
    cfg = tiny_config(tiny, objective=objective, epochs=3, dev_fraction=0.2)
    full = align_encoder(style, cfg, tmp_path / "full", log=quiet)
    with pytest.raises(KeyboardInterrupt):
        align_encoder(style, cfg, tmp_path / "resumed", log=_interrupt_at("epoch 1/"))
    assert [p.name for p in _checkpoints(tmp_path / "resumed")] == [f"checkpoint-{_steps(full)}"]
    assert not (tmp_path / "resumed" / METADATA_FILE).exists()
    messages = []
    out = align_encoder(style, cfg, tmp_path / "resumed", log=messages.append)
    assert any("resuming after epoch 1 of 3" in m for m in messages), messages
    assert not any(m.startswith("epoch 1/") for m in messages)  # epoch 1 was not trained again
    _assert_same_weights(full, out)
    m1 = json.loads((full / METADATA_FILE).read_text())
    m2 = json.loads((out / METADATA_FILE).read_text())
    assert m1["training"]["best_epoch"] == m2["training"]["best_epoch"]
    assert [e["epoch"] for e in m2["training"]["epochs"]] == [1, 2, 3]  # the history survives the resume
    assert [e["dev_pearson"] for e in m1["training"]["epochs"]] == pytest.approx(
        [e["dev_pearson"] for e in m2["training"]["epochs"]], abs=1e-6)
    assert m1["training"]["base_dev"] == m2["training"]["base_dev"]


def _steps(model_dir: Path) -> int:
    return json.loads((model_dir / METADATA_FILE).read_text())["training"]["steps_per_epoch"][0]


def test_best_epoch_is_the_best_dev_pearson_and_its_weights_are_saved(tiny, style, tmp_path):
    cfg = tiny_config(tiny, epochs=4, dev_fraction=0.2, keep_checkpoints=True)
    out = align_encoder(style, cfg, tmp_path / "m", log=quiet)
    tr = json.loads((out / METADATA_FILE).read_text())["training"]
    pearsons = [e["dev_pearson"] for e in tr["epochs"]]
    assert len(pearsons) == 4 and tr["best_epoch"] == 1 + int(np.argmax(pearsons))
    assert tr["best_dev_pearson"] == max(pearsons)
    assert all(e["steps"] == tr["steps_per_epoch"][0] and e["train_loss"] > 0 for e in tr["epochs"])
    best = out / WORK_DIR / CHECKPOINTS / f"checkpoint-{tr['best_epoch'] * _steps(out)}"
    assert best.is_dir()  # the Trainer's rotation keeps the best checkpoint
    from safetensors.numpy import load_file

    saved, ckpt = _weights(out), load_file(str(best / "model.safetensors"))
    for k in saved:
        np.testing.assert_array_equal(saved[k], ckpt[k])
    last = align_encoder(style, tiny_config(tiny, epochs=4, dev_fraction=0.2, select_best=False), tmp_path / "last",
                         log=quiet)
    assert json.loads((last / METADATA_FILE).read_text())["training"]["best_epoch"] == 4


def test_finished_run_is_kept_and_changed_config_needs_overwrite(tiny, style, tmp_path):
    cfg = tiny_config(tiny, epochs=1)
    out = align_encoder(style, cfg, tmp_path / "m", log=quiet)
    messages = []
    align_encoder(style, cfg, out, log=messages.append)
    assert any("already aligned" in m for m in messages)
    with pytest.raises(InstaError, match="differs in: .*epochs"):
        align_encoder(style, tiny_config(tiny, epochs=2), out, log=quiet)
    align_encoder(style, tiny_config(tiny, epochs=2), out, log=quiet, overwrite=True)
    assert json.loads((out / METADATA_FILE).read_text())["config"]["epochs"] == 2
    # runtime knobs (threads, progress) are not part of the identity
    messages.clear()
    align_encoder(style, tiny_config(tiny, epochs=2, threads=2), out, log=messages.append)
    assert any("already aligned" in m for m in messages)


def test_foreign_directory_is_not_overwritten(tiny, style, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(InstaError, match="not empty|refusing"):
            align_encoder(style, tiny_config(tiny, epochs=1), foreign, log=quiet, overwrite=overwrite)
    assert (foreign / "precious.txt").read_text() == "keep me"


def test_cli_align_with_config_file_and_flags(tiny, tmp_path, capsys):
    cfg = tmp_path / "align.yaml"
    cfg.write_text("objective: mnrl\nepochs: 3\nbatch_size: 8\nlearning_rate: 0.005\nthreads: 1\n"
                   "heldout_fraction: 0.34\ndev_fraction: 0.0\n")
    out = tmp_path / "cli-model"
    rc = main(["align", "-c", str(FIX / "style.yaml"), "--out", str(out), "--encoder", tiny, "--config", str(cfg),
               "--epochs", "1", "--no-progress", "--json", str(tmp_path / "s.json")])
    assert rc == 0
    meta = json.loads((out / METADATA_FILE).read_text())
    assert meta["config"]["epochs"] == 1 and meta["config"]["objective"] == "mnrl"
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["best_epoch"] == 1 and summary["n_heldout_instructions"] > 0
    assert "aligned encoder" in capsys.readouterr().out


def test_interruption_while_building_pairs_resumes(tiny, style, tmp_path):
    class Boom:
        def encode(self, texts):
            raise KeyboardInterrupt

        def describe(self):
            return {"name": "boom"}

    cfg = tiny_config(tiny, epochs=1)
    with pytest.raises(KeyboardInterrupt):
        align_encoder(style, cfg, tmp_path / "m", log=quiet, pair_encoder=Boom())
    out = align_encoder(style, cfg, tmp_path / "m", log=quiet)
    assert json.loads((out / METADATA_FILE).read_text())["status"] == "complete"


# ------------------------------------------------------------ checkpoints never run code; --overwrite keeps user files


def _two_checkpoints(style, cfg, out):
    """Killed right after epoch 2's checkpoint: the checkpoints of epochs 1 and 2 are there."""
    with pytest.raises(KeyboardInterrupt):
        align_encoder(style, cfg, out, log=_interrupt_at("epoch 2/"))
    ckpts = _checkpoints(out)
    assert len(ckpts) == 2
    return ckpts


class _Payload:
    """A pickle that creates a marker file when unpickled with weights_only=False."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path(self.marker).touch, ())


@pytest.mark.parametrize("name", ["optimizer.pt", "scheduler.pt", "rng_state.pth"])
def test_a_checkpoint_file_never_runs_code(tiny, style, tmp_path, name):
    """A checkpoint file replaced by a pickle that would run code when unpickled (weights_only=False) runs nothing:
    the checkpoint is discarded with a warning and the run starts over."""
    import torch

    cfg = tiny_config(tiny, epochs=2)
    with pytest.raises(KeyboardInterrupt):
        align_encoder(style, cfg, tmp_path / "m", log=_interrupt_at("epoch 1/"))
    (ckpt,) = _checkpoints(tmp_path / "m")
    marker = tmp_path / "MARKER"
    torch.save({"state": {}, "payload": _Payload(marker)}, ckpt / name)
    messages = []
    align_encoder(style, cfg, tmp_path / "m", log=messages.append)
    assert not marker.exists(), "loading a checkpoint ran code"
    assert any("discarded" in m and name in m for m in messages), messages
    assert not any("resuming after" in m for m in messages)


def test_training_args_pickle_is_never_loaded(tiny, style, tmp_path):
    """The Trainer writes its arguments as a pickle (training_args.bin) but never reads them back: a code-running
    one there changes nothing and the checkpoint resumes."""
    import torch

    cfg = tiny_config(tiny, epochs=2)
    with pytest.raises(KeyboardInterrupt):
        align_encoder(style, cfg, tmp_path / "m", log=_interrupt_at("epoch 1/"))
    (ckpt,) = _checkpoints(tmp_path / "m")
    marker = tmp_path / "MARKER"
    torch.save(_Payload(marker), ckpt / "training_args.bin")
    messages = []
    align_encoder(style, cfg, tmp_path / "m", log=messages.append)
    assert not marker.exists()
    assert any("resuming after epoch 1" in m for m in messages), messages


@pytest.mark.parametrize("damage", ["code-running pickle", "truncated weights", "another run's", "foreign module"])
def test_a_bad_checkpoint_is_discarded_and_the_previous_one_resumes(tiny, style, tmp_path, damage):
    import torch

    cfg = tiny_config(tiny, epochs=4, dev_fraction=0.2)
    full = align_encoder(style, cfg, tmp_path / "full", log=quiet)
    _, newest = _two_checkpoints(style, cfg, tmp_path / "resumed")
    marker = tmp_path / "MARKER"
    if damage == "code-running pickle":
        torch.save({"state": {}, "payload": _Payload(marker)}, newest / "optimizer.pt")
    elif damage == "truncated weights":
        weights = newest / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:2000])
    elif damage == "another run's":
        state = json.loads((newest / "trainer_state.json").read_text())
        (newest / "trainer_state.json").write_text(json.dumps({**state, "max_steps": state["max_steps"] + 1}))
    else:
        modules = json.loads((newest / "modules.json").read_text())
        modules[0]["type"] = "os.system"
        (newest / "modules.json").write_text(json.dumps(modules))
    messages = []
    out = align_encoder(style, cfg, tmp_path / "resumed", log=messages.append)
    assert not marker.exists(), "a checkpoint file ran code"
    assert any(newest.name in m and "cannot be used" in m and "discarded" in m for m in messages), messages
    assert any("resuming after epoch 1" in m for m in messages), messages
    _assert_same_weights(full, out)  # the previous checkpoint leads to the same model as an uninterrupted run


def test_no_loadable_checkpoint_restarts_from_the_first_epoch(tiny, style, tmp_path):
    cfg = tiny_config(tiny, epochs=4, dev_fraction=0.2)
    for ckpt in _two_checkpoints(style, cfg, tmp_path / "m"):
        (ckpt / "optimizer.pt").write_bytes(b"garbage")
    messages = []
    align_encoder(style, cfg, tmp_path / "m", log=messages.append)
    assert sum("discarded" in m for m in messages) == 2
    assert not any("resuming after" in m for m in messages)
    assert json.loads((tmp_path / "m" / METADATA_FILE).read_text())["status"] == "complete"


def test_overwrite_removes_only_what_insta_wrote(tiny, style, tmp_path, capsys):
    out = tmp_path / "m"
    align_encoder(style, tiny_config(tiny, epochs=1), out, log=quiet)
    meta = json.loads((out / METADATA_FILE).read_text())
    assert {"modules.json", "model.safetensors", METADATA_FILE, "README.md"} <= set(meta["outputs"])
    (out / "my_notes.txt").write_text("keep me")
    (out / "my_results").mkdir()
    (out / "my_results" / "eval.json").write_text("{}")
    rc = main(["align", "-c", str(FIX / "style.yaml"), "--out", str(out), "--encoder", tiny, "--objective", "mnrl",
               "--epochs", "2", "--batch-size", "8", "--lr", "5e-3", "--threads", "1", "--heldout-fraction", "0.34",
               "--dev-fraction", "0", "--positive-fraction", "1", "--negative-threshold", "0.97", "--no-progress",
               "--overwrite"])
    assert rc == 0, capsys.readouterr().err
    assert (out / "my_notes.txt").read_text() == "keep me"
    assert (out / "my_results" / "eval.json").is_file()
    assert json.loads((out / METADATA_FILE).read_text())["config"]["epochs"] == 2


def test_overwrite_of_a_folder_without_manifest_keeps_user_files(tiny, style, tmp_path):
    """A folder written before insta kept a manifest: the standard model files go, the user's stay."""
    out = tmp_path / "m"
    align_encoder(style, tiny_config(tiny, epochs=1), out, log=quiet)
    meta = json.loads((out / METADATA_FILE).read_text())
    del meta["outputs"]
    (out / METADATA_FILE).write_text(json.dumps(meta))
    (out / "my_notes.txt").write_text("keep me")
    (out / "stale_extra.bin").write_text("x")  # not a file name insta or sentence-transformers write
    align_encoder(style, tiny_config(tiny, epochs=2), out, log=quiet, overwrite=True)
    assert (out / "my_notes.txt").read_text() == "keep me"
    assert json.loads((out / METADATA_FILE).read_text())["config"]["epochs"] == 2


def test_a_tampered_manifest_cannot_reach_outside_the_folder(tiny, style, tmp_path):
    out = tmp_path / "m"
    align_encoder(style, tiny_config(tiny, epochs=1), out, log=quiet)
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    meta = json.loads((out / METADATA_FILE).read_text())
    meta["outputs"] += ["../outside.txt", str(outside), ".."]
    (out / METADATA_FILE).write_text(json.dumps(meta))
    align_encoder(style, tiny_config(tiny, epochs=2), out, log=quiet, overwrite=True)
    assert outside.read_text() == "keep me"
