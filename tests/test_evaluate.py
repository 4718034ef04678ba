"""Evaluation: batched scoring (causal and seq2seq), tokenizer boundary merges, rank-classification rules
(acc, acc_norm per character, acc_norm_token, calibrated, unconditional), template averaging, generation metrics,
outputs, bad input, CLI, SuperGLUE protocol."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "train"))
import tiny_lm  # noqa: E402

from insta.catalogs.base import Catalog  # noqa: E402
from insta.cli import main  # noqa: E402
from insta.errors import InstaError  # noqa: E402
from insta.evaluate import (  # noqa: E402
    EvalConfig,
    Scorer,
    content_free_prompt,
    cut_at_stop,
    evaluate_examples,
    evaluate_task,
    limit_examples,
)
from insta.lm import LoadedModel, encode_causal, load_model  # noqa: E402
from insta.records import Example, Task  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


_one_thread = tiny_lm.one_torch_thread

@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-eval-models")
    return {"causal": str(tiny_lm.build_causal(root / "llama", seed=3)),
            "seq2seq": str(tiny_lm.build_t5(root / "t5", seed=3))}


STUB = LoadedModel(model=None, tokenizer=None, kind="causal", name="stub", location="stub")


def stub_scores(monkeypatch, table, default=(-5.0, 1)):
    """Replace model scoring by a lookup: (prompt, option) -> (sum log-prob, n tokens)."""
    calls = []

    def ll(self, requests):
        calls.extend(requests)
        return [table.get(r, default) for r in requests]

    monkeypatch.setattr(Scorer, "loglikelihood", ll)
    return calls


# ---------------------------------------------------------------- real (tiny) model scoring


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
def test_batched_scores_equal_unbatched_and_manual(models, kind):
    import torch

    lm = load_model(models[kind])
    reqs = [("Which group ? Q : a1 a2 a3 A :", "yes"), ("Q : b1 A :", "no"),
            ("Which group ? Q : a1 A :", "yes no maybe"), ("A :", "no")]
    batched = Scorer(lm, batch_size=4).loglikelihood(reqs)
    single = Scorer(lm, batch_size=1).loglikelihood(reqs)
    for (a, n), (b, m) in zip(batched, single):
        assert n == m and a == pytest.approx(b, abs=1e-4)
    # options of one prompt: the shared-prefix path (KV cache) equals scoring each sequence on its own
    opts = [("Which group ? Q : a1 a2 A :", o) for o in ("yes", "no", "maybe yes", "the answer")]
    shared = Scorer(lm, batch_size=3, share_prefix=True).loglikelihood(opts + reqs)
    plain = Scorer(lm, batch_size=1, share_prefix=False).loglikelihood(opts + reqs)
    for (a, n), (b, m) in zip(shared, plain):
        assert n == m and a == pytest.approx(b, abs=1e-4)
    assert [n for _, n in batched] == ([1, 1, 3, 1] if kind == "causal" else [2, 2, 4, 2])  # seq2seq counts EOS
    if kind == "causal":  # against a direct computation
        ids, k = encode_causal(lm.tokenizer, *reqs[2])
        with torch.no_grad():
            logp = torch.log_softmax(lm.model(torch.tensor([ids])).logits[0], -1)
        manual = sum(float(logp[p - 1, ids[p]]) for p in range(k, len(ids)))
        assert batched[2][0] == pytest.approx(manual, abs=1e-4)


def test_packed_scoring_equals_scoring_each_sequence_whole(models):
    """Packed scoring (several prompts and all their options in one forward, block mask) gives each sequence's
    own log-likelihood, in fewer forward passes than the KV-cache path; the model passed the check on first use."""
    from insta.evaluate import packing

    lm = load_model(models["causal"])
    prompts = [f"Which group ? Q : {' '.join(['a%d' % j for j in range(n)])} A :" for n in (1, 4, 9, 2)]
    reqs = [(p, o) for p in prompts for o in ("yes", "no", "maybe yes", "the answer")] + [("A :", "no")]
    packed = Scorer(lm, batch_size=2, share_prefix=True)
    got = packed.loglikelihood(reqs)
    assert lm.packing_ok is True
    plain = Scorer(lm, batch_size=1, share_prefix=False).loglikelihood(reqs)
    for (a, n), (b, m) in zip(got, plain):
        assert n == m and a == pytest.approx(b, abs=1e-4)
    again = Scorer(lm, batch_size=2, share_prefix=True)
    assert again.loglikelihood(reqs) == got  # checked once: the second scorer packs straight away
    assert again.n_forward == 1  # 17 sequences of a few tokens: one packed forward
    # a budget smaller than one prompt with its options splits it (the prefix repeats), with the same scores
    old = packing.PACK_TOKENS
    try:
        packing.PACK_TOKENS = 12
        small = Scorer(lm, batch_size=2, share_prefix=True)
        split = small.loglikelihood(reqs)
        assert [n for _, n in split] == [n for _, n in got] and small.n_forward > 2
        assert [a for a, _ in split] == pytest.approx([a for a, _ in got], abs=1e-4)
    finally:
        packing.PACK_TOKENS = old


def test_pack_rows_fills_rows_in_order_and_splits_long_segments():
    from insta.evaluate.packing import pack_rows, packed_segment

    enc = [([1, 2, 3, 4], 3), ([1, 2, 3, 5, 6], 3), ([9, 8], 1), ([7, 7, 7, 7, 7, 7, 7, 7], 2)]
    segs = [packed_segment(enc, [0, 1]), packed_segment(enc, [2]), packed_segment(enc, [3])]
    assert segs[0] == ([1, 2, 3], [(0, [4]), (1, [5, 6])])
    rows = pack_rows(segs, budget=8)
    assert rows == [[segs[0], segs[1]], [segs[2]]]  # 6 + 2 tokens fit; the 8-token segment runs alone
    split = pack_rows([segs[0]], budget=5)  # 3 + 1 fits, + 2 more does not: the prefix repeats
    assert split == [[([1, 2, 3], [(0, [4])])], [([1, 2, 3], [(1, [5, 6])])]]
    # options whose truncated prompts differ share only their common start
    assert packed_segment([([5, 1, 2, 9], 3), ([1, 2, 3, 9], 3)], [0, 1])[0] == []


def test_packed_token_count_is_each_prompt_once_plus_every_option(models):
    from insta.evaluate.packing import packed_token_count

    lm = load_model(models["causal"])
    ex = Example(id="e", input="Which group ? Q : a1 a2 A :", references=["no"], options=["yes", "no", "maybe yes"],
                 label=1)
    enc = [encode_causal(lm.tokenizer, ex.input, o, 512) for o in ex.options]
    k = min(e[1] for e in enc)
    assert packed_token_count(lm.tokenizer, [ex, ex], 512) == 2 * (k + sum(len(s) - k for s, _ in enc))
    assert packed_token_count(lm.tokenizer, [Example(id="g", input="Q", references=["x"])], 512) == 0


def test_a_model_that_ignores_the_packing_mask_falls_back_to_the_kv_cache_path(models):
    """A forward pass that drops a custom 4D mask would score options against each other: the first-use check
    catches it, and the scores are the KV-cache path's."""
    lm = load_model(models["causal"])
    forward = lm.model.forward

    def careless(*a, **kw):
        mask = kw.get("attention_mask")
        if mask is not None and mask.dim() == 4:
            kw.pop("attention_mask")
            kw.pop("position_ids", None)
        return forward(*a, **kw)

    lm.model.forward = careless
    reqs = [("Q : a1 a2 A :", o) for o in ("yes", "no", "maybe yes")] + [("Q : b1 A :", "no")]
    got = Scorer(lm, batch_size=2, share_prefix=True).loglikelihood(reqs)
    assert lm.packing_ok is False
    plain = Scorer(lm, batch_size=1, share_prefix=False).loglikelihood(reqs)
    assert [n for _, n in got] == [n for _, n in plain]
    assert [a for a, _ in got] == pytest.approx([b for b, _ in plain], abs=1e-4)


def test_causal_boundary_merge_uses_natural_tokenization():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    corpus = ["Q: is it so?\nA: True", "Q: is it not?\nA: False", "A: True A: False A: True"] * 50
    tk.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<eos>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<eos>", pad_token="<eos>")
    with_space, k1 = encode_causal(tok, "Q: is it so?\nA: ", "True")
    without, k2 = encode_causal(tok, "Q: is it so?\nA:", "True")
    assert with_space == without and k1 == k2
    assert with_space == tok("Q: is it so?\nA: True")["input_ids"]
    assert tok.decode(with_space[k1:]) == " True"  # the merged " True" token belongs to the option
    assert tok.decode(with_space[:k1]) == "Q: is it so?\nA:"
    # training appends EOS after the target
    ids, k = encode_causal(tok, "Q: is it so?\nA:", "True", add_eos=True)
    assert ids[-1] == tok.eos_token_id and ids[:-1] == with_space


def test_generation_with_tiny_models(models):
    for kind in ("causal", "seq2seq"):
        lm = load_model(models[kind])
        exs = [Example(id=str(i), input=f"Q : a{i} A :", references=["yes"]) for i in range(3)]
        res = evaluate_examples(lm, exs, EvalConfig(max_new_tokens=3, progress=False), task_id="gen")
        assert res["mode"] == "generate" and res["primary_metric"] == "rouge_l"
        assert set(res["metrics"]) == {"n", "rouge_l", "exact_match"}
        assert all("raw_output" in s for s in res["samples"])


# ---------------------------------------------------------------- rank-classification logic (stubbed scores)


def test_sum_norm_calibrated_rules(monkeypatch, tmp_path):
    p1, p2 = "Q: first\nA: ", "Q: second\nA: "
    exs = [Example(id="e1", input=p1, references=["short"], options=["short", "a much longer option"], label=0),
           Example(id="e2", input=p2, references=["a much longer option"], options=["short", "a much longer option"],
                   label=1)]
    cf = "Q: N/A\nA: "
    table = {
        (p1, "short"): (-2.0, 1), (p1, "a much longer option"): (-4.0, 4),  # sum: short; norm: long (-1 vs -2)
        (p2, "short"): (-3.0, 1), (p2, "a much longer option"): (-3.2, 4),  # sum: short; norm: long
        (cf, "short"): (-1.0, 1), (cf, "a much longer option"): (-6.0, 4),  # prior favours "short"
    }
    calls = stub_scores(monkeypatch, table)
    res = evaluate_examples(STUB, exs, EvalConfig(progress=False), task_id="t")
    m = res["metrics"]
    assert m["acc"] == 0.5 and m["acc_norm_token"] == 0.5 and m["acc_norm"] == 0.5
    # calibrated: e1 short -1 vs long 2 -> long (wrong); e2 short -2 vs long 2.8 -> long (right)
    assert m["acc_calibrated"] == 0.5
    assert [s["pred_sum"] for s in res["samples"]] == [0, 0]
    assert [s["pred_norm_token"] for s in res["samples"]] == [1, 1]
    assert [s["pred_norm"] for s in res["samples"]] == [1, 1]
    assert [s["pred_calibrated"] for s in res["samples"]] == [1, 1]
    assert m["bal_acc"] == 0.5 and m["macro_f1"] == pytest.approx((2 / 3 + 0) / 2)
    assert m["gold_logprob"] == pytest.approx((-2.0 - 3.2) / 2)
    assert m["gold_nll_per_token"] == pytest.approx((2.0 + 0.8) / 2)
    assert res["primary_metric"] == "acc" and res["primary"] == 0.5
    # content-free scores are computed once per option text
    assert sum(1 for c in calls if c[0] == cf) == 2
    s0 = res["samples"][0]
    assert s0["scores_norm_token"] == [-2.0, -1.0] and s0["prediction"] == "short" and s0["reference"] == "short"
    assert s0["scores_norm"] == [-2.0 / 5, -4.0 / 20]
    # primary metric configurable; predictions follow its rule
    res = evaluate_examples(STUB, exs, EvalConfig(progress=False, primary_metric="acc_norm_token", calibration="none"))
    assert res["primary"] == 0.5 and res["samples"][1]["correct"] is True
    assert "acc_calibrated" not in res["metrics"]
    with pytest.raises(InstaError, match="needs calibration"):
        evaluate_examples(STUB, exs, EvalConfig(progress=False, primary_metric="acc_calibrated", calibration="none"))
    # the names used before lm-evaluation-harness naming are refused with their new name
    with pytest.raises(InstaError, match="'acc_sum' is now called 'acc'"):
        evaluate_examples(STUB, exs, EvalConfig(progress=False, primary_metric="acc_sum"))


def test_acc_norm_divides_by_characters_acc_norm_token_by_tokens(monkeypatch):
    """lm-eval's acc_norm: log-likelihood / len(option) in characters; the per-token rule can disagree."""
    p = "Q: which?\nA:"
    # "ab": 2 tokens, 2 chars; "abcdefgh": 1 token, 8 chars
    table = {(p, "ab"): (-2.0, 2), (p, "abcdefgh"): (-4.0, 1)}
    stub_scores(monkeypatch, table)
    ex = Example(id="e", input=p, references=["abcdefgh"], options=["ab", "abcdefgh"], label=1)
    res = evaluate_examples(STUB, [ex], EvalConfig(progress=False, calibration="none", primary_metric="acc_norm"))
    s = res["samples"][0]
    assert s["scores_norm"] == [-1.0, -0.5] and s["pred_norm"] == 1  # per character: -2/2 < -4/8
    assert s["scores_norm_token"] == [-1.0, -4.0] and s["pred_norm_token"] == 0  # per token: -2/2 > -4/1
    assert res["metrics"]["acc_norm"] == 1.0 and res["metrics"]["acc_norm_token"] == 0.0
    assert res["metrics"]["acc"] == 0.0 and res["primary"] == 1.0 and s["correct"] is True


def test_unconditional_calibration_scores_the_joined_option_after_nothing(monkeypatch):
    """calibration='unconditional' is lm-eval's acc_mutual_info: each option (with the space that joins it to
    the prompt) scored after an empty context; a prompt ending in whitespace joins without one."""
    p1, p2 = "Q: one\nA:", "Q: two\nA: "
    table = {(p1, "yes"): (-1.0, 1), (p1, "no"): (-2.0, 1), ("", " yes"): (-0.5, 1), ("", " no"): (-3.0, 1),
             (p2, "yes"): (-1.0, 1), (p2, "no"): (-2.0, 1), ("", "yes"): (-4.0, 1), ("", "no"): (-1.0, 1)}
    calls = stub_scores(monkeypatch, table)
    exs = [Example(id=str(i), input=p, references=["no"], options=["yes", "no"], label=1)
           for i, p in enumerate((p1, p2))]
    res = evaluate_examples(STUB, exs, EvalConfig(progress=False, calibration="unconditional"))
    assert {c for c in calls if c[0] == ""} == {("", " yes"), ("", " no"), ("", "yes"), ("", "no")}
    # p1: -1-(-0.5) = -0.5 vs -2-(-3) = 1 -> no; p2: -1-(-4) = 3 vs -2-(-1) = -1 -> yes
    assert [s["pred_calibrated"] for s in res["samples"]] == [1, 0]
    assert res["metrics"]["acc_calibrated"] == 0.5


def test_content_free_prompt_uses_raw_input():
    ex = Example(id="1", input="Decide.\nQ: the raw text\n  choice: yes\n  choice: no\nA: ", references=["yes"],
                 options=["yes", "no"], label=0, provenance={"raw_input": "the raw text"})
    assert content_free_prompt(ex, EvalConfig()) == "Decide.\nQ: N/A\n  choice: yes\n  choice: no\nA: "
    assert content_free_prompt(ex, EvalConfig(calibration="fixed")) == "Q: N/A\nA: "
    ex.provenance = {}
    assert content_free_prompt(ex, EvalConfig()) == "Q: N/A\nA: "


def test_template_averaging(monkeypatch):
    # template t1: 2 examples, both right; template t2: 4 examples, 2 right -> mean 0.75, pooled 4/6
    exs = []
    table = {}
    for i in range(6):
        tpl = "t1" if i < 2 else "t2"
        prompt = f"{tpl} prompt {i}"
        gold = 0
        right = i < 4
        table[(prompt, "yes")] = (-1.0 if right else -3.0, 1)
        table[(prompt, "no")] = (-2.0, 1)
        exs.append(Example(id=str(i), input=prompt, references=["yes"], options=["yes", "no"], label=gold,
                           provenance={"template_id": tpl, "task": "super_glue/rte"}))
    stub_scores(monkeypatch, table)
    res = evaluate_examples(STUB, exs, EvalConfig(progress=False, calibration="none"), task_id="super_glue/rte")
    assert res["metrics"]["acc"] == pytest.approx(0.75)
    assert res["metrics_pooled"]["acc"] == pytest.approx(4 / 6)
    assert res["metrics"]["n_templates"] == 2 and res["metrics"]["n"] == 6
    assert res["per_template"]["t1"]["acc"] == 1.0 and res["per_template"]["t2"]["acc"] == 0.5
    assert res["primary"] == pytest.approx(0.75)
    # limit per template keeps the first N of each
    assert [e.id for e in limit_examples(exs, limit_per_template=1)] == ["0", "2"]
    flat = evaluate_examples(STUB, exs, EvalConfig(progress=False, calibration="none", average_over_templates=False))
    assert flat["metrics"]["acc"] == pytest.approx(4 / 6) and "per_template" not in flat


def test_superglue_protocol(monkeypatch, tmp_path):
    """T0's SuperGLUE protocol is simple_evaluate on the P3 tasks (T0 names are the catalog's aliases): every
    template scored, accuracy averaged over templates."""
    from insta.evaluate import simple_evaluate

    def rows(tid, n_templates, n_rows):
        exs = [Example(id=f"{tid}:{t}:{r}", input=f"{tid} {t} {r}", references=["Yes"], options=["Yes", "No"],
                       label=0, provenance={"task": tid, "template_id": f"tpl{t}", "row": r})
               for r in range(n_rows) for t in range(n_templates)]
        return Task(id=tid, instructions=["x"], catalog="p3", loader=lambda: iter(exs))

    cat = Catalog("p3", [rows("super_glue/rte", 3, 4), rows("super_glue/wsc.fixed", 2, 3)],
                  aliases={"rte": "super_glue/rte", "wsc": "super_glue/wsc.fixed"})
    # template k is right on rows < k+1 (of 4 / 3 rows)
    table = {}
    for task, nt, nr in (("super_glue/rte", 3, 4), ("super_glue/wsc.fixed", 2, 3)):
        for t in range(nt):
            for r in range(nr):
                table[(f"{task} {t} {r}", "Yes")] = (-1.0 if r < t + 1 else -3.0, 1)
                table[(f"{task} {t} {r}", "No")] = (-2.0, 1)
    stub_scores(monkeypatch, table)
    out = simple_evaluate(STUB, ["rte", "wsc"], catalog=cat, out_dir=tmp_path, calibration="none", progress=False)
    rte = out["results"]["super_glue/rte"]
    assert rte["metrics"]["acc"] == pytest.approx((1 / 4 + 2 / 4 + 3 / 4) / 3)
    assert out["results"]["super_glue/wsc.fixed"]["metrics"]["acc"] == pytest.approx((1 / 3 + 2 / 3) / 2)
    assert (tmp_path / "super_glue__rte" / "results.json").is_file()
    out = simple_evaluate(STUB, ["rte"], catalog=cat, limit_per_template=2, calibration="none", progress=False)
    assert out["results"]["super_glue/rte"]["n"] == 6
    assert out["results"]["super_glue/rte"]["metrics"]["n_templates"] == 3
    with pytest.raises(InstaError, match="unknown task 'cola'"):
        simple_evaluate(STUB, ["cola"], catalog=cat)


# ---------------------------------------------------------------- generation logic, outputs, errors


def test_cut_at_stop():
    assert cut_at_stop("  True\nQ: next", ["\n"]) == "True"
    assert cut_at_stop("\nTrue.", ["\n"]) == "True."
    assert cut_at_stop("a b</s>c", ["</s>", "\n"]) == "a b"
    assert cut_at_stop("plain", []) == "plain"


def test_generation_metrics_and_outputs(monkeypatch, tmp_path):
    exs = [Example(id="g1", input="Capital of France?", references=["Paris"]),
           Example(id="g2", input="Capital of Japan?", references=["Kyoto", "Tokyo"]),
           Example(id="g3", input="Describe.", references=["the cat is on the mat"])]
    outs = {"Capital of France?": " Paris.\nNext question", "Capital of Japan?": " tokyo",
            "Describe.": "the cat sat on the mat"}
    monkeypatch.setattr(Scorer, "generate", lambda self, prompts, max_new_tokens=32: [outs[p] for p in prompts])
    task = Task(id="gen/task", instructions=["x"], catalog="niv2", loader=lambda: iter(exs))
    res = evaluate_task(STUB, task, out_dir=tmp_path, progress=False)
    assert [s["prediction"] for s in res["samples"]] == ["Paris.", "tokyo", "the cat sat on the mat"]
    assert [s["exact_match"] for s in res["samples"]] == [1.0, 1.0, 0.0]
    assert res["samples"][2]["rouge_l"] == pytest.approx(100 * 5 / 6)
    assert res["metrics"]["exact_match"] == pytest.approx(2 / 3)
    assert res["metrics"]["rouge_l"] == pytest.approx((100 + 100 + 500 / 6) / 3)
    assert res["primary_metric"] == "rouge_l"
    folder = tmp_path / "gen__task"
    saved = json.loads((folder / "results.json").read_text())
    assert saved["metrics"] == res["metrics"] and "samples" not in saved
    assert saved["timings"]["examples_per_second"] > 0 and saved["config"]["stop"] == ["\n"]
    lines = [json.loads(x) for x in (folder / "samples.jsonl").read_text().splitlines()]
    assert [x["id"] for x in lines] == ["g1", "g2", "g3"]
    assert set(lines[0]) >= {"input", "options", "prediction", "reference", "references", "exact_match", "rouge_l"}
    bbh = Task(id="bbh_task", instructions=["x"], catalog="bbh", loader=lambda: iter(exs))
    assert evaluate_task(STUB, bbh, progress=False)["primary_metric"] == "exact_match"


def test_bad_inputs(monkeypatch):
    stub_scores(monkeypatch, {})
    no_opts = [Example(id="x1", input="p", references=["a"])]
    with pytest.raises(InstaError, match="x1.*fewer than 2 answer options"):
        evaluate_examples(STUB, no_opts, EvalConfig(mode="rank"), task_id="t")
    with pytest.raises(InstaError, match="out of range"):
        evaluate_examples(STUB, [Example(id="x", input="p", references=[], options=["a", "b"], label=5)])
    with pytest.raises(InstaError, match="no gold label"):
        evaluate_examples(STUB, [Example(id="x", input="p", references=["c"], options=["a", "b"])])
    # a reference among the options stands in for the label
    res = evaluate_examples(STUB, [Example(id="x", input="p", references=["b"], options=["a", "b"])],
                            EvalConfig(progress=False))
    assert res["samples"][0]["label"] == 1
    with pytest.raises(InstaError, match="no reference answer"):
        evaluate_examples(STUB, [Example(id="x", input="p", references=[""])], EvalConfig(mode="generate"))
    empty = Task(id="empty", instructions=["x"], catalog="c")
    with pytest.raises(InstaError, match="'empty' has no instances"):
        evaluate_task(STUB, empty)
    nothing = Task(id="nothing", instructions=["x"], catalog="c", loader=lambda: iter(()))
    with pytest.raises(InstaError, match="nothing has no instances"):
        evaluate_task(STUB, nothing)
    with pytest.raises(InstaError, match="unknown primary metric"):
        evaluate_examples(STUB, no_opts, EvalConfig(primary_metric="f1"))
    monkeypatch.setattr(Scorer, "generate", lambda self, prompts, max_new_tokens=32: ["a"] * len(prompts))
    with pytest.raises(InstaError, match="does not apply"):
        evaluate_examples(STUB, no_opts, EvalConfig(primary_metric="acc", progress=False), task_id="t")
    with pytest.raises(InstaError, match="does not exist"):
        load_model("./no/such/model")
    with pytest.raises(InstaError, match="not found"):
        load_model("not-a-model")


def test_cli_evaluate(models, tmp_path, monkeypatch, capsys):
    import insta.catalogs

    exs = tiny_lm.toy_examples(6)
    cat = Catalog("toy", [Task(id="toy", instructions=["Which group ?"], catalog="toy", loader=lambda: iter(exs))])
    monkeypatch.setattr(insta.catalogs, "load_catalog", lambda name, data_dir=None, **kw: cat)
    rc = main(["evaluate", "--model", models["causal"], "--catalog", "toy", "--task", "toy", "--limit", "4",
               "--out", str(tmp_path), "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "toy: acc=" in out and "(n=4" in out
    res = json.loads((tmp_path / "toy" / "results.json").read_text())
    assert res["n"] == 4 and res["model_kind"] == "causal" and res["primary_metric"] == "acc"
    assert set(res["metrics"]) >= {"acc", "acc_norm", "acc_norm_token", "acc_calibrated", "bal_acc",
                                   "gold_nll_per_token"}
    assert json.loads((tmp_path / "summary.json").read_text())["summary"]["toy"]["n"] == 4
    assert len((tmp_path / "toy" / "samples.jsonl").read_text().splitlines()) == 4
    rc = main(["evaluate", "--model", models["causal"], "--catalog", "toy", "--task", "toyy"])
    assert rc == 2 and "unknown task 'toyy'" in capsys.readouterr().err
    rc = main(["evaluate", "--model", str(tmp_path / "nope"), "--catalog", "toy", "--task", "toy"])
    assert rc == 2 and "does not exist" in capsys.readouterr().err


def test_superglue_through_the_p3_reader(monkeypatch):
    """The P3 reader's RTE examples (row x template, provenance template_id) are averaged over templates."""
    from insta.catalogs import load_catalog
    from insta.evaluate import simple_evaluate

    cat = load_catalog("p3", Path(__file__).parent / "fixtures" / "p3", cache=False)
    exs = cat.get("super_glue/rte").examples()
    templates = {e.provenance["template_id"] for e in exs}
    # the gold option scores best on the first template only
    first = sorted(templates)[0]
    table = {}
    for e in exs:
        for j, opt in enumerate(e.options):
            good = (j == e.label) == (e.provenance["template_id"] == first)
            table[(e.input, opt)] = (-1.0 if good else -2.0, 1)
    stub_scores(monkeypatch, table)
    out = simple_evaluate(STUB, ["rte"], catalog=cat, calibration="none", progress=False)
    res = out["results"]["super_glue/rte"]
    assert res["metrics"]["n_templates"] == len(templates) == 2
    assert res["per_template"][first]["acc"] == 1.0
    assert res["metrics"]["acc"] == pytest.approx(0.5)


def test_keyword_overrides_leave_the_callers_config_alone():
    """evaluate_task / simple_evaluate(config, **overrides) work on a copy: one config serves many calls."""
    from insta.util.options import apply_overrides

    config = EvalConfig(progress=False)
    changed = apply_overrides(config, {"limit": 3, "calibration": "none"}, "evaluation")
    assert (changed.limit, changed.calibration) == (3, "none")
    assert (config.limit, config.calibration) == (None, "auto")
