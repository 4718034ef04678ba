"""Selection at scale: time per query and memory of every method on a synthetic pool (default 10,000 tasks x 10
instructions = 100,000 instructions, x 100 instances = 1,000,000 source instances).

    .venv/bin/python benchmarks/bench_selection_scale.py                     # the recorded run (~10 min, 2 cores)
    .venv/bin/python benchmarks/bench_selection_scale.py --tasks 1000 --out /tmp/scale   # a quick look

Each method runs in a fresh process (so its memory is its own): the synthetic corpus is generated (seeded), the
peak-RSS marker is reset (Linux ``/proc/self/clear_refs``), then the method selects ``k = 5`` for ``--queries``
synthetic targets (10 instructions and 32 unlabelled inputs each, topics not in the pool). The first query
builds the method's index (instruction embeddings, instance library, BM25 statistics, n-gram features);
``build`` is that first call minus a warm query. Memory = peak RSS above the corpus, i.e. the index plus one
query. The encoder is a stand-in with the shape of all-MiniLM-L6-v2 (384-d): bag of fixed random word vectors,
computed with one sparse matrix product, so index build times measure insta and not a sentence encoder (a real
encoder's cost is separate: see the note the script writes). Writes ``<out>/selection_scale.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
METHODS = ["insta-mean", "insta-max", "insta-topk-vote", "insta-format", "lexical", "roe", "dsir", "hybrid",
           "random", "all"]
DIM = 384
VOCAB = 20000
COMMON = 500
TOPICS = 1000
TOPIC_WORDS = 40


# ---------------------------------------------------------------- the synthetic corpus


class Corpus:
    """Seeded synthetic tasks: each has a topic (40 topic words) and draws its text 40% from them, 60% from 500
    common words (Zipf). Half of the tasks are classification (2-4 options from their topic words)."""

    def __init__(self, n_tasks: int, n_instr: int, n_inst: int, seed: int = 0):
        import numpy as np

        rng = np.random.default_rng(seed)
        self.vocab = np.asarray([f"w{i}" for i in range(VOCAB)], dtype=object)
        p = 1.0 / np.arange(1, COMMON + 1)
        self.p_common = p / p.sum()
        self.topic_words = rng.integers(COMMON, VOCAB, size=(TOPICS, TOPIC_WORDS))
        self.rng = rng
        self.n_instr, self.n_inst = n_instr, n_inst
        self.tasks = [self._task(f"t{i:06d}", int(rng.integers(TOPICS))) for i in range(n_tasks)]

    def _words(self, topic: int, n_rows: int, n_words: int) -> list[str]:
        import numpy as np

        rng = self.rng
        common = rng.choice(COMMON, size=(n_rows, n_words), p=self.p_common)
        top = self.topic_words[topic][rng.integers(TOPIC_WORDS, size=(n_rows, n_words))]
        idx = np.where(rng.random((n_rows, n_words)) < 0.4, top, common)
        return [" ".join(self.vocab[row]) for row in idx]

    def _task(self, tid: str, topic: int):
        from insta.records import Example, Task

        instructions = [s.capitalize() + "." for s in self._words(topic, self.n_instr, 16)]
        inputs = self._words(topic, self.n_inst, 30)
        options = None
        if self.rng.random() < 0.5:
            options = list(dict.fromkeys(self.vocab[self.topic_words[topic][:int(self.rng.integers(2, 5))]]))

        def load(inputs=inputs, options=options, tid=tid):
            for j, x in enumerate(inputs):
                yield Example(f"{tid}:{j}", x, [options[0]] if options else [x.split(" ", 1)[0]], options,
                              0 if options else None)

        return Task(id=tid, instructions=instructions, catalog="synthetic", family=tid, meta={"topic": topic},
                    loader=load)

    def target(self, i: int, n_samples: int = 32):
        import numpy as np

        from insta.records import Example

        rng = np.random.default_rng(10_000 + i)
        self.rng = rng
        task = self._task(f"target{i}", int(rng.integers(TOPICS)))
        samples = [Example(e.id, e.input, [], e.options) for e in task.examples(n_samples)]
        return task, samples


class BagOfWordVectors:
    """A stand-in sentence encoder: the normalised sum of fixed random 384-d word vectors (one sparse product)."""

    def __init__(self):
        import numpy as np

        self.table = np.random.default_rng(1).standard_normal((VOCAB, DIM)).astype(np.float32)
        self.index = {f"w{i}": i for i in range(VOCAB)}
        self.n_encoded = 0

    def describe(self) -> dict:
        return {"name": "bag-of-word-vectors-384", "path": None, "key": "bow384"}

    def encode(self, texts):
        import numpy as np
        from scipy import sparse

        out = np.empty((len(texts), DIM), dtype=np.float32)
        get = self.index.get
        for start in range(0, len(texts), 20000):  # chunks: the stand-in's own memory stays small
            cols, indptr = [], [0]
            for t in texts[start:start + 20000]:
                cols.extend(i for i in map(get, t.lower().replace(".", " ").split()) if i is not None)
                indptr.append(len(cols))
            m = sparse.csr_matrix((np.ones(len(cols), dtype=np.float32), np.asarray(cols, dtype=np.int32),
                                   np.asarray(indptr)), shape=(len(indptr) - 1, VOCAB))
            out[start:start + len(indptr) - 1] = m @ self.table
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        self.n_encoded += len(texts)
        return out


# ---------------------------------------------------------------- one method in one process


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def child(args) -> dict:
    sys.path.insert(0, str(REPO / "src"))
    import numpy as np

    from insta.catalogs.base import Catalog
    from insta.methods import load_method

    t0 = time.perf_counter()
    corpus = Corpus(args.tasks, args.instructions_per_task, args.instances_per_task)
    pool = Catalog("synthetic", corpus.tasks)
    targets = [corpus.target(i) for i in range(args.queries + 1)]
    gen_s = time.perf_counter() - t0
    enc = BagOfWordVectors()
    opts = {"encoder": enc} if args.child in ("insta-mean", "insta-max", "insta-topk-vote", "insta-format", "roe",
                                              "hybrid") else {}
    if args.child in ("roe", "dsir", "hybrid"):
        opts["library_size"] = args.instances_per_task
    method = load_method(args.child, **opts)
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS marker: count the method, not the corpus
    except OSError:
        pass
    base_rss = _status("VmRSS")
    times = []
    for task, samples in targets:
        t = time.perf_counter()
        sel = method.select(task, pool, 5, target_samples=samples if "target_samples" in method.consumes else None)
        times.append(time.perf_counter() - t)
        assert len(sel.selected) == (len(pool) if args.child == "all" else 5)
    warm = float(np.median(times[1:]))
    return {"method": args.child, "consumes": list(method.consumes), "corpus_seconds": round(gen_s, 1),
            "first_call_s": round(times[0], 2), "build_s": round(max(0.0, times[0] - warm), 2),
            "query_median_s": round(warm, 4), "query_max_s": round(max(times[1:]), 4),
            "peak_rss_above_corpus_mb": round((_status("VmHWM") - base_rss) / 2**20, 1),
            "rss_after_mb": round(_status("VmRSS") / 2**20, 1), "corpus_rss_mb": round(base_rss / 2**20, 1),
            "n_queries": len(times) - 1, "encoded_texts": enc.n_encoded}


# ---------------------------------------------------------------- the driver


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=10000)
    ap.add_argument("--instructions-per-task", type=int, default=10)
    ap.add_argument("--instances-per-task", type=int, default=100)
    ap.add_argument("--queries", type=int, default=5, help="warm queries per method (after the one that builds)")
    ap.add_argument("--methods", nargs="*", default=METHODS)
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    rows = []
    t_all = time.perf_counter()
    for m in args.methods:
        cmd = [sys.executable, __file__, "--child", m, "--tasks", str(args.tasks), "--instructions-per-task",
               str(args.instructions_per_task), "--instances-per-task", str(args.instances_per_task),
               "--queries", str(args.queries)]
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{m}: failed")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row["process_wall_s"] = round(time.perf_counter() - t, 1)
        rows.append(row)
        print(f"{m}: build {row['build_s']} s, query {row['query_median_s']} s, "
              f"+{row['peak_rss_above_corpus_mb']} MB ({row['process_wall_s']} s)", file=sys.stderr)
    n_instr = args.tasks * args.instructions_per_task
    n_inst = args.tasks * args.instances_per_task
    command = (f".venv/bin/python benchmarks/bench_selection_scale.py --tasks {args.tasks} --instructions-per-task "
               f"{args.instructions_per_task} --instances-per-task {args.instances_per_task} --queries {args.queries}")
    load = os.getloadavg()
    out = {"command": command, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
           "load_average_at_end": [round(x, 2) for x in load], "n_tasks": args.tasks,
           "n_instructions": n_instr, "n_instances": n_inst, "k": 5, "encoder": "bag-of-word-vectors-384 (stand-in)",
           "seconds_total": round(time.perf_counter() - t_all, 1), "rows": rows}
    dest = Path(args.out)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "selection_scale.json").write_text(json.dumps(out, indent=2) + "\n")
    md = [f"# Selection at scale: {args.tasks:,} tasks, {n_instr:,} instructions, {n_inst:,} source instances", "",
          f"`{command}` ({out['machine']}, load average at the end {load[0]:.1f}; "
          f"{out['seconds_total']:.0f} s in all). Every method in its own process; k = 5; "
          f"{args.queries} warm queries per method, each a new target with 10 instructions and 32 unlabelled "
          "inputs. Build = the first query minus a warm one (the method's index: instruction embeddings, instance "
          "library, BM25 statistics, n-gram features). Memory = peak RSS above the synthetic corpus (index + one "
          "query). Encoder: a 384-d stand-in (bag of random word vectors, one sparse product), so the times are "
          "insta's own; exact search throughout.", "",
          "| method | consumes | build (s) | query, median (s) | query, max (s) | memory above corpus (MB) |",
          "|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['method']} | {', '.join(r['consumes'])} | {r['build_s']:.1f} | {r['query_median_s']:.3f} | "
                  f"{r['query_max_s']:.3f} | {r['peak_rss_above_corpus_mb']:.0f} |")
    md += ["", NOTE.format(n_instr=n_instr, n_inst=n_inst, h_inst=n_inst / 153 / 3600, m_instr=n_instr / 153 / 60),
           FINDINGS]
    (dest / "selection_scale.md").write_text("\n".join(md) + "\n")
    print(f"wrote {dest / 'selection_scale.md'}", file=sys.stderr)


NOTE = """A real encoder adds its own one-off cost: all-MiniLM-L6-v2 embeds about 153 texts/s on these 2 cores
(`benchmarks/results/selection.md`), i.e. {m_instr:.0f} min for the {n_instr:,} instructions and {h_inst:.1f} h for
the {n_inst:,} instances that RoE and hybrid embed once (cached on disk by text afterwards); a GPU does both in
minutes. Query cost is independent of the encoder: one target's embeddings against the cached matrix."""


#: Written by hand for the recorded run (the table above is regenerated; update this text if it changes).
FINDINGS = """
## Findings (recorded run)

- The machine was shared (another job training models, alignment runs, tests: load average 8-10 on 2 cores;
  1173 s wall for about 450 s of CPU, user and system), so the times are about 3x those of an idle machine.
- **INSTA** (every aggregation, format-aware too) answers a query against 100,000 instructions in 0.3-0.6 s and
  holds the 100,000 x 384 float32 embeddings (150 MB) plus the owner index: about 350 MB. The score rests on one
  (target instructions x 100,000) product and one pass of the shared aggregation.
- **Exact search is fast enough**: RoE retrieves the nearest of 1,000,000 instances for 32 target inputs in
  2.6 s per query (hybrid, which adds INSTA's score, 4.1 s), in column chunks of 65,536 so the similarity block
  stays small. A selection is one query per target, so an approximate index (faiss) is not needed at this scale
  and is not a dependency. What dominates is memory: the library's 1,000,000 x 384 embeddings (1.5 GB) and its
  instances (about 3.6 GB in all).
- **DSIR with sparse features** holds 1,000,000 instances' hashed n-grams in 1.4 GB (the former dense
  texts x 10,000 float64 matrix would need 80 GB) and scores a target in 1.8 s; its one-off featurisation is
  pure Python (the data-selection package's tokenizer and SHA-256 bucket per n-gram, kept for identical
  features) and took 590 s here.
- **Lexical** BM25 (rank-bm25, kept as the reference implementation) costs 2.3 s per query over 10,000 task
  documents: it loops over documents in Python for every query token.
"""


if __name__ == "__main__":
    main()
