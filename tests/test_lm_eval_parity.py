"""insta's evaluator against lm-evaluation-harness (lm_eval's HFLM) on a tiny random-init causal LM and a
hand-written multiple-choice task, offline: the same prompts give the same per-option log-likelihoods (1e-4) and
the same per-example acc, acc_norm (per character) and acc_mutual_info (insta's unconditional calibration), so
the two cannot drift apart silently. The fixture's options differ in characters per token, so a per-token
acc_norm would fail here. Also: a task written by ``insta export-lm-eval`` scores the same in the harness."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "train"))
import tiny_lm  # noqa: E402

from insta.evaluate import EvalConfig, evaluate_examples  # noqa: E402
from insta.lm import load_model  # noqa: E402
from insta.records import Example  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning", "ignore::DeprecationWarning")
_one_thread = tiny_lm.one_torch_thread

#: (prompt, options, gold index): options of very different lengths in characters and tokens, one non-ASCII
FIXTURE = [
    ("Q: What colour is the sky on a clear day?\nA:", ["blue", "green", "a deep shade of purple", "red"], 0),
    ("Q: Which animal barks?\nA:", ["dog", "cat", "the common house sparrow"], 0),
    ("Q: Is fire hot?\nA:", ["yes", "no"], 0),
    ("Q: How many legs does a spider have?\nA:", ["eight", "six", "four", "two hundred"], 0),
    ("Q: What is the capital of France?\nA:", ["Paris", "London", "Rome", "Madrid"], 0),
    ("Q: Which city is in Switzerland?\nA:", ["Zürich", "Lyon", "Graz"], 0),
    ("Q: What do bees make?\nA:", ["honey", "milk", "silk and wool"], 0),
    ("Q: Which number is even?\nA:", ["7", "12", "one hundred and one"], 1),
]
CORPUS = [p + " " + " ".join(opts) for p, opts, _ in FIXTURE] * 3 + ["the quick brown fox jumps over the lazy dog"]


def fixture_examples() -> list[Example]:
    return [Example(id=f"q{i}", input=p, references=[opts[g]], options=list(opts), label=g,
                    provenance={"task": "parity"}) for i, (p, opts, g) in enumerate(FIXTURE)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_lm.build_causal_bpe(tmp_path_factory.mktemp("parity-model") / "bpe-llama", CORPUS, seed=5)


@pytest.fixture()
def offline(monkeypatch):
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "1")


def run_lm_eval(model_dir: Path, include_path: Path, task: str) -> dict:
    """lm-eval's own pipeline: TaskManager over a folder, HFLM on the local model, per-sample logs."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=str(model_dir), backend="causal", batch_size=4, device="cpu")
    tm = TaskManager(include_path=str(include_path), include_defaults=False)
    return simple_evaluate(model=lm, tasks=[task], task_manager=tm, log_samples=True, bootstrap_iters=0)


def test_loglikelihoods_and_accuracies_match_lm_eval(model_dir, tmp_path, offline):
    data = tmp_path / "parity.jsonl"
    data.write_text("".join(json.dumps({"text": p, "choices": o, "label": g}) + "\n" for p, o, g in FIXTURE))
    (tmp_path / "parity.yaml").write_text(f"""task: insta_parity
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
  cache_dir: {tmp_path / "datasets-cache"}
test_split: test
output_type: multiple_choice
doc_to_text: text
doc_to_choice: choices
doc_to_target: label
target_delimiter: " "
metric_list:
  - metric: acc
  - metric: acc_norm
  - metric: acc_mutual_info
metadata:
  version: 1.0
""")
    out = run_lm_eval(model_dir, tmp_path, "insta_parity")
    theirs = sorted(out["samples"]["insta_parity"], key=lambda s: s["doc_id"])
    lm = load_model(str(model_dir))
    for share_prefix in (True, False):  # the KV-cache path and the plain batched path
        ours = evaluate_examples(lm, fixture_examples(), EvalConfig(calibration="unconditional", progress=False,
                                                                    share_prefix=share_prefix, batch_size=3))
        assert len(theirs) == len(ours["samples"]) == len(FIXTURE)
        for t, s in zip(theirs, ours["samples"]):
            n = len(s["options"])
            lls = [r[0] for r in t["filtered_resps"]]
            assert lls[:n] == pytest.approx(s["scores_sum"], abs=1e-4)  # conditional log-likelihoods
            assert lls[n:] == pytest.approx([a - b for a, b in zip(s["scores_sum"], s["scores_calibrated"])],
                                            abs=1e-4)  # unconditional ones (acc_mutual_info's)
            assert t["acc"] == float(s["pred_sum"] == s["label"])
            assert t["acc_norm"] == float(s["pred_norm"] == s["label"])
            assert t["acc_mutual_info"] == float(s["pred_calibrated"] == s["label"])
        res = out["results"]["insta_parity"]
        m = ours["metrics"]
        assert (res["acc,none"], res["acc_norm,none"], res["acc_mutual_info,none"]) == \
            (m["acc"], m["acc_norm"], m["acc_calibrated"])
    # the fixture tells the normalisations apart: a per-token acc_norm would not have matched lm-eval's
    assert any(s["pred_norm"] != s["pred_norm_token"] for s in ours["samples"])
    assert any(s["pred_norm"] != s["pred_sum"] for s in ours["samples"])


def test_exported_task_scores_the_same_in_lm_eval(model_dir, tmp_path, offline):
    from insta.catalogs.base import Catalog
    from insta.evaluate.lm_eval_export import export_lm_eval_task
    from insta.records import Task

    exs = fixture_examples()
    task = Task(id="parity/mc", instructions=["Answer."], catalog="mine", loader=lambda: iter(exs))
    info = export_lm_eval_task(Catalog("mine", [task]).get("parity/mc"), tmp_path / "export")
    assert info["name"] == "insta_parity_mc" and info["output_type"] == "multiple_choice"
    out = run_lm_eval(model_dir, tmp_path / "export", info["name"])
    ours = evaluate_examples(load_model(str(model_dir)), exs, EvalConfig(calibration="none", progress=False))
    res = out["results"][info["name"]]
    assert (res["acc,none"], res["acc_norm,none"]) == (ours["metrics"]["acc"], ours["metrics"]["acc_norm"])
