"""TinyBERT data augmentation: the engine's batched candidate search against the original's loop.

    .venv/bin/python benchmarks/augment.py            # full run (~5 min on 2 cores), writes results
    .venv/bin/python benchmarks/augment.py --quick    # smoke test (< 1 min), writes nothing without --output

Absolute times drift on a shared machine; the figures reported are ratios against a baseline
measured in the same command, the two sides interleaved repetition by repetition (`--reps`,
medians reported).

1. GloVe path, on the first `--sentences` (2,000) sentences of SST-2's train.tsv, N = 20, p = 0.4,
   K = 15, glove.6B.50d (first 100,000 rows):
   - ours: `distill_engine.augment.job.run_job` end to end (into a temp dir), its time split into
     reading the vectors (`WordVectors.load`, timed by wrapping it) and augmenting;
   - the original (TinyBERT's `data_augmentation.py`, re-implemented below as plain functions):
     its loading of the vectors (python float parsing into a float64 [100000, d] matrix, then
     normalised), then per eligible word OCCURRENCE one `np.dot` over the whole float64 matrix
     and a full `np.argsort` (no memo), then N draws per sentence with python `random`. It is
     slow, so its rate is measured on the first `--original-sentences` sentences (a subset).
     Words and their eligibility come from `distill_engine.augment.words` for both sides, so both
     handle the same words: what is compared is the cost of the candidate search and the loop.
   - agreement: the neighbour lists of the first 20 eligible distinct words (and of every distinct
     word of the original's subset), `WordVectors.neighbours` vs the original's argsort.
2. Masked-LM path, on the first `--mlm-sentences` sentences: a masked LM built for timing only (the
   real MiniLM-L6-H384 encoder of ../shared/models/all-MiniLM-L6-v2 plus a RANDOM
   `cls.predictions.*` head, decoder tied): ours = `MaskedLM(path, backend="torch").candidates`
   over every single-piece eligible word's query (batched, padded), the original = one forward
   per query, batch 1, unpadded (the backend model called on `[CLS] masked [SEP] pieces [SEP]`),
   the head, a full argsort of the logits and the "##" filter. Agreement: how many queries'
   candidate lists differ, and the largest logit difference between padded batches and batch 1.

Prints a table; writes augment.json and README.md to --output (default
benchmarks/results/augment; in --quick mode only when --output is given).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import _cpu_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SST2 = SHARED / "data" / "glue" / "SST-2" / "train.tsv"
GLOVE = SHARED / "data" / "glove" / "glove.6B.50d.100k.txt"
MINILM = SHARED / "models" / "all-MiniLM-L6-v2"
N, P, K, SEED = 20, 0.4, 15, 42
CHECK_WORDS = 20


def say(msg: str = "") -> None:
    print(msg, flush=True)


def versions() -> dict:
    import numpy
    import safetensors
    import tokenizers
    import torch

    import distill_engine

    return {"python": platform.python_version(), "numpy": numpy.__version__, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "tokenizers": tokenizers.__version__,
            "safetensors": safetensors.__version__, "distill_engine": getattr(distill_engine, "__version__", "?")}


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ------------------------------------------------------------------------------------------------
# The original (TinyBERT data_augmentation.py), re-implemented faithfully for the timing
# ------------------------------------------------------------------------------------------------
def original_prepare_embedding_retrieval(glove_file, vocab_size: int = 100_000):
    """`prepare_embedding_retrieval`: the first `vocab_size` rows, python floats, float64, normalised."""
    cnt = 0
    words = []
    embeddings = {}
    with open(glove_file, encoding="utf-8") as fin:
        for line in fin:
            items = line.strip().split()
            words.append(items[0])
            embeddings[items[0]] = [float(x) for x in items[1:]]
            cnt += 1
            if cnt == vocab_size:
                break
    vocab = {w: idx for idx, w in enumerate(words)}
    ids_to_tokens = {idx: w for idx, w in enumerate(words)}
    vector_dim = len(embeddings[ids_to_tokens[0]])
    emb_matrix = np.zeros((len(words), vector_dim))
    for word, v in embeddings.items():
        emb_matrix[vocab[word], :] = v
    norm = np.sqrt(np.sum(emb_matrix * emb_matrix, axis=1))
    emb_norm = (emb_matrix.T / norm).T
    return emb_norm, vocab, ids_to_tokens


def original_word_distance(word, emb_norm, vocab, ids_to_tokens, m: int) -> list[str]:
    """`_word_distance`: one dot product over the whole matrix and a full argsort, per call."""
    if word not in vocab:
        return []
    word_idx = vocab[word]
    word_emb = emb_norm[word_idx]
    dist = np.dot(emb_norm, word_emb.T)
    dist[word_idx] = -np.inf
    candidate_ids = np.argsort(-dist)[:m]
    return [ids_to_tokens[idx] for idx in candidate_ids][:m]


def original_augment(tokens: list[str], eligible_idx: list[int], emb, n: int, p: float, m: int,
                     record: dict | None = None) -> list[str]:
    """`DataAugmentor.augment` without a masked LM (every eligible word by GloVe): candidates per
    eligible word occurrence, then N draws with python `random`; the sentence itself first."""
    emb_norm, vocab, ids_to_tokens = emb
    candidate_sents = [" ".join(tokens)]
    candidate_words = {}
    for idx in eligible_idx:
        cands = original_word_distance(tokens[idx], emb_norm, vocab, ids_to_tokens, m)
        if record is not None:
            record.setdefault(tokens[idx], list(cands))
        if len(cands) == 0:
            cands.append(tokens[idx])
        candidate_words[idx] = cands
    cnt = 0
    while cnt < n:
        new_sent = list(tokens)
        for idx in candidate_words.keys():
            candidate_word = random.choice(candidate_words[idx])
            x = random.random()
            if x < p:
                new_sent[idx] = candidate_word
        if " ".join(new_sent) not in candidate_sents:
            candidate_sents.append(" ".join(new_sent))
        cnt += 1
    return candidate_sents


def original_split(texts: list[str]) -> list[tuple[list[str], list[int]]]:
    """Per text: its basic tokens (normalised) and the indices of the eligible ones, from the
    engine's own splitter and eligibility (both sides handle the same words)."""
    from distill_engine.augment.words import basic_splitter, eligible, split_words

    out = []
    for words, _ in split_words(basic_splitter(), texts):
        tokens = [w.normalized for w in words]
        out.append((tokens, [i for i, t in enumerate(tokens) if eligible(t)]))
    return out


def run_original_glove(split, emb, record: dict | None = None) -> dict:
    random.seed(SEED)
    t0 = time.perf_counter()
    new = occurrences = 0
    for tokens, idx in split:
        occurrences += len(idx)
        new += len(original_augment(tokens, idx, emb, N, P, K, record)) - 1
    s = time.perf_counter() - t0
    return {"seconds": s, "examples": len(split), "examples_per_s": len(split) / s, "eligible_occurrences": occurrences,
            "new_sentences": new}


# ------------------------------------------------------------------------------------------------
# Ours: the engine's job, end to end
# ------------------------------------------------------------------------------------------------
def run_ours_glove(subset: Path, work: Path, rep: int) -> tuple[dict, object]:
    from distill_engine.augment import job as job_mod
    from distill_engine.augment.augmenter import AugmentSettings
    from distill_engine.augment.glove import GLOVE_ROWS, WordVectors
    from distill_engine.data.tasks import get_task

    timing: dict = {}

    class TimedVectors(WordVectors):
        @classmethod
        def load(cls, path, rows=GLOVE_ROWS):
            t0 = time.perf_counter()
            vectors = WordVectors.load(path, rows=rows)
            timing["load_s"] = time.perf_counter() - t0
            timing["vectors"] = vectors
            return vectors

    out = work / f"ours-{rep}" / "train.aug.tsv"
    job = job_mod.AugmentJob(input=subset, task=get_task("sst2"), glove=GLOVE, output=out,
                             settings=AugmentSettings(n=N, p=P, k=K, seed=SEED))
    # the split is measured here, not taken from the manifest's "seconds" (whose span is the job's
    # internal choice): the vectors' load and every Augmenter.augment call are timed by wrapping
    saved, saved_aug = job_mod.WordVectors, job_mod._augmenter
    timing["augment_s"] = 0.0

    def timed_augmenter(j):
        aug = saved_aug(j)
        inner = aug.augment

        def augment(*a, **kw):
            t = time.perf_counter()
            try:
                return inner(*a, **kw)
            finally:
                timing["augment_s"] += time.perf_counter() - t

        aug.augment = augment
        return aug

    job_mod.WordVectors, job_mod._augmenter = TimedVectors, timed_augmenter
    try:
        t0 = time.perf_counter()
        manifest = job_mod.run_job(job, progress=False, say=lambda _m: None)
        wall = time.perf_counter() - t0
    finally:
        job_mod.WordVectors, job_mod._augmenter = saved, saved_aug
    shutil.rmtree(out.parent, ignore_errors=True)
    c = manifest["counts"]
    examples = c["input_rows"]
    augment_s = timing["augment_s"]
    return ({"wall_s": wall, "load_s": timing["load_s"], "augment_s": augment_s,
             "other_s": wall - timing["load_s"] - augment_s, "manifest_seconds": manifest["seconds"],
             "examples": examples, "examples_per_s_end_to_end": examples / wall,
             "examples_per_s_augment": examples / augment_s, "manifest_examples_per_second": manifest["examples_per_second"],
             "counts": c}, timing["vectors"])


def run_ours_subset(vectors, texts: list[str]) -> dict:
    """The engine's Augmenter (fresh memo) on the original's subset, vectors already loaded."""
    from distill_engine.augment.augmenter import Augmenter, AugmentSettings

    aug = Augmenter(vectors, AugmentSettings(n=N, p=P, k=K, seed=SEED))
    t0 = time.perf_counter()
    _, counts = aug.augment(texts, list(range(len(texts))), [0] * len(texts))
    s = time.perf_counter() - t0
    return {"seconds": s, "examples": len(texts), "examples_per_s": len(texts) / s, "new_texts": counts.new_texts}


def neighbour_check(vectors, emb, words: list[str]) -> dict:
    ours = vectors.neighbours(words, K)
    emb_norm, vocab, ids_to_tokens = emb
    diffs = []
    for w in words:
        orig = original_word_distance(w, emb_norm, vocab, ids_to_tokens, K)
        if ours[w] != orig:
            diffs.append({"word": w, "ours": ours[w], "original": orig,
                          "first_difference_at": next((i for i, (a, b) in enumerate(zip(ours[w], orig)) if a != b),
                                                      min(len(ours[w]), len(orig)))})
    return {"words": len(words), "identical": len(words) - len(diffs), "differences": diffs}


def explain_difference(vectors, emb, d: dict) -> str:
    """Similarities (float32-parsed as ours, float64-parsed as the original) of the swapped words."""
    emb_norm, vocab, _ = emb
    w, i = d["word"], d["first_difference_at"]
    pair = [x for x in (d["ours"][i:i + 1] + d["original"][i:i + 1]) if x in vocab]
    parts = []
    for x in pair:
        ours = float(vectors.unit64[vectors.index[x]] @ vectors.unit64[vectors.index[w]])
        orig = float(emb_norm[vocab[x]] @ emb_norm[vocab[w]])
        parts.append(f"{x}: cos {ours:.12f} (ours, vectors parsed as float32) / {orig:.12f} (float64 parse)")
    return f"{w!r} position {i}: " + "; ".join(parts)


# ------------------------------------------------------------------------------------------------
# Masked LM
# ------------------------------------------------------------------------------------------------
def build_mlm(dest: Path) -> Path:
    """MiniLM's real encoder + a random cls.predictions head (decoder tied), for timing only."""
    from safetensors.numpy import load_file, save_file

    dest.mkdir(parents=True, exist_ok=True)
    tensors = load_file(str(MINILM / "model.safetensors"))
    cfg = json.loads((MINILM / "config.json").read_text())
    h, v = cfg["hidden_size"], cfg["vocab_size"]
    rng = np.random.default_rng(0)
    tensors.update({
        "cls.predictions.transform.dense.weight": rng.normal(0, 0.02, (h, h)).astype(np.float32),
        "cls.predictions.transform.dense.bias": np.zeros(h, np.float32),
        "cls.predictions.transform.LayerNorm.weight": np.ones(h, np.float32),
        "cls.predictions.transform.LayerNorm.bias": np.zeros(h, np.float32),
        "cls.predictions.bias": rng.normal(0, 0.02, v).astype(np.float32),
    })
    save_file(tensors, str(dest / "model.safetensors"))
    shutil.copy(MINILM / "config.json", dest / "config.json")
    shutil.copy(MINILM / "vocab.txt", dest / "vocab.txt")
    return dest


def mlm_queries(mlm, texts: list[str]):
    """Every single-piece eligible word's query, as `Augmenter.candidates` builds them."""
    from distill_engine.augment.mlm import MaskQuery
    from distill_engine.augment.words import eligible, split_words

    queries = []
    multi = 0
    for words, pieces in split_words(mlm.tokenizer.library_tokenizer, texts):
        for word in words:
            if not eligible(word.normalized):
                continue
            if len(word.piece_ids) == 1:
                queries.append(MaskQuery(tuple(pieces), word.first_piece))
            else:
                multi += 1
    return queries, multi


def original_mlm(mlm, queries, k: int) -> tuple[list[list[str]], np.ndarray]:
    """One forward per query (batch 1, unpadded), the head, a full argsort, the "##" filter."""
    out, rows = [], []
    for q in queries:
        ids, types = mlm.pair_input(q)
        batch = {"input_ids": np.asarray([ids], np.int32), "token_type_ids": np.asarray([types], np.int32),
                 "attention_mask": np.ones((1, len(ids)), np.int32)}
        last = np.asarray(mlm.model.forward(batch).hidden_states[-1], np.float32)
        logits = mlm.head.logits(last[:, q.position + 1])[0]
        rows.append(logits)
        top = np.argsort(-logits)[:k].tolist()
        out.append([t for t in (mlm.vocab_tokens[i] for i in top) if t.find("##")])
    return out, np.stack(rows) if rows else np.zeros((0, mlm.config.vocab_size), np.float32)


def time_original_mlm(mlm, queries, k):
    t0 = time.perf_counter()
    cands, logits = original_mlm(mlm, queries, k)
    return time.perf_counter() - t0, cands, logits


def time_ours_mlm(mlm, queries, k):
    t0 = time.perf_counter()
    cands = mlm.candidates(queries, k)
    return time.perf_counter() - t0, cands


# ------------------------------------------------------------------------------------------------
def read_subset(n: int, dest: Path) -> Path:
    lines = SST2.read_text(encoding="utf-8").splitlines(keepends=True)
    dest.write_text("".join(lines[: n + 1]), encoding="utf-8")
    return dest


def med(values):
    return float(statistics.median(values))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny subsets, one repetition (a smoke test)")
    p.add_argument("--sentences", type=int, help="SST-2 sentences for ours (default 2000; --quick 100)")
    p.add_argument("--original-sentences", type=int, help="the subset the original's GloVe loop is timed on "
                   "(default 200; --quick 20)")
    p.add_argument("--mlm-sentences", type=int, help="sentences for the masked-LM comparison (default 200; --quick 20)")
    p.add_argument("--reps", type=int, help="interleaved repetitions (default 3; --quick 1)")
    p.add_argument("--mlm-chunks", type=int, help="chunks the masked-LM pass alternates ours/original over "
                   "(default 4; --quick 1)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: on a shared machine a team "
                   "of threads larger than the free cores stalls in its barriers, which hits the original's many "
                   "small batch-1 ops hardest; 0 = torch's default)")
    p.add_argument("--no-mlm", action="store_true", help="skip the masked-LM part")
    p.add_argument("--output", type=Path, help="results folder (default benchmarks/results/augment; --quick: none)")
    args = p.parse_args(argv)
    q = args.quick
    sentences = args.sentences or (100 if q else 2000)
    orig_sentences = min(args.original_sentences or (20 if q else 200), sentences)
    mlm_sentences = args.mlm_sentences or (20 if q else 200)
    reps = args.reps or (1 if q else 3)
    out_dir = args.output if (args.output or q) else ROOT / "benchmarks" / "results" / "augment"

    for path in (SST2, GLOVE) + (() if args.no_mlm else (MINILM / "model.safetensors",)):
        if not path.exists():
            say(f"missing {path}: cannot run this benchmark")
            return 2
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    load_start = loadavg()
    t_start = time.perf_counter()
    machine = {"cpu": _cpu_name(), "cores": os.cpu_count(), "platform": platform.platform(), **versions()}
    say(f"machine: {machine['cpu']}, {machine['cores']} cores; load average {load_start}")
    result: dict = {"command": " ".join([".venv/bin/python", "benchmarks/augment.py", *(argv if argv is not None else sys.argv[1:])]),
                    "date": started, "machine": machine,
                    "settings": {"sentences": sentences, "original_sentences": orig_sentences,
                                 "mlm_sentences": mlm_sentences, "reps": reps, "torch_threads": args.threads or None, "n": N, "p": P, "k": K, "seed": SEED,
                                 "glove": str(GLOVE), "glove_rows": 100_000, "input": str(SST2)}}
    from distill_engine.data.tasks import get_task, read_task_file

    with tempfile.TemporaryDirectory(prefix="distill-augment-bench-") as tmp:
        work = Path(tmp)
        subset = read_subset(sentences, work / "train.tsv")
        table = read_task_file(subset, get_task("sst2"))
        texts = [table.texts(r)[0] for r in table.records]
        split = original_split(texts[:orig_sentences])

        # ---- 1. GloVe --------------------------------------------------------------------------
        say(f"\n== GloVe path: ours on {len(texts)} sentences, the original on the first {orig_sentences} ==")
        ours_runs, orig_runs, orig_loads, subset_runs = [], [], [], []
        vectors = emb = None
        record: dict = {}
        for rep in range(reps):
            r, vectors = run_ours_glove(subset, work, rep)
            ours_runs.append(r)
            say(f"rep {rep + 1}: ours end to end {r['wall_s']:.2f} s (vectors {r['load_s']:.2f} s, augmenting "
                f"{r['augment_s']:.2f} s, other {r['other_s']:.2f} s): {r['examples_per_s_augment']:.0f} examples/s "
                f"augmenting, {r['examples_per_s_end_to_end']:.0f} end to end")
            t0 = time.perf_counter()
            emb = original_prepare_embedding_retrieval(GLOVE)
            orig_loads.append(time.perf_counter() - t0)
            o = run_original_glove(split, emb, record if rep == 0 else None)
            orig_runs.append(o)
            s = run_ours_subset(vectors, texts[:orig_sentences])
            subset_runs.append(s)
            say(f"rep {rep + 1}: original: vectors {orig_loads[-1]:.2f} s, loop {o['seconds']:.2f} s over "
                f"{o['examples']} sentences ({o['eligible_occurrences']} word occurrences): {o['examples_per_s']:.1f} "
                f"examples/s; ours on the same subset (vectors loaded, fresh memo): {s['examples_per_s']:.0f} examples/s")
        counts = ours_runs[-1]["counts"]
        ours_aug = med([r["examples_per_s_augment"] for r in ours_runs])
        ours_e2e = med([r["examples_per_s_end_to_end"] for r in ours_runs])
        orig_rate = med([o["examples_per_s"] for o in orig_runs])
        orig_load = med(orig_loads)
        # the original end to end over the same sentences: its loading + its loop's rate
        orig_e2e = sentences / (orig_load + sentences / orig_rate)
        glove = {
            "ours_runs": ours_runs, "original_runs": orig_runs, "original_load_s": orig_loads,
            "ours_on_original_subset_runs": subset_runs,
            "ours_examples_per_s_augment": ours_aug, "ours_examples_per_s_end_to_end": ours_e2e,
            "ours_load_s": med([r["load_s"] for r in ours_runs]), "ours_augment_s": med([r["augment_s"] for r in ours_runs]),
            "original_examples_per_s": orig_rate, "original_load_s_median": orig_load,
            "original_examples_per_s_end_to_end_projected": orig_e2e,
            "ratio_augment": ours_aug / orig_rate,
            "ratio_end_to_end": ours_e2e / orig_e2e,
            "ratio_same_subset": med([s["examples_per_s"] for s in subset_runs]) / orig_rate,
            "ratio_per_rep": [r["examples_per_s_augment"] / o["examples_per_s"] for r, o in zip(ours_runs, orig_runs)],
            "manifest_counts": counts,
        }
        say(f"manifest: {counts['input_rows']} rows -> {counts['output_rows']} ({counts['new_rows']} new rows; "
            f"{counts['eligible_words']} eligible words, {counts['words_without_candidates']} without candidates, "
            f"{counts['repeated_draws']} repeated draws, {counts['duplicate_rows_dropped']} duplicate rows dropped)")

        # agreement of the neighbour lists
        from distill_engine.augment.words import basic_splitter, eligible, split_words

        distinct: list[str] = []
        for words, _ in split_words(basic_splitter(), texts):
            for w in words:
                if eligible(w.normalized) and w.normalized not in distinct:
                    distinct.append(w.normalized)
            if len(distinct) >= CHECK_WORDS:
                break
        first = neighbour_check(vectors, emb, distinct[:CHECK_WORDS])
        ours_sub = vectors.neighbours(list(record), K)
        sub_diff = [w for w, cands in record.items() if ours_sub[w] != cands]
        glove["neighbours_first_words"] = first
        glove["neighbours_original_subset"] = {"words": len(record), "identical": len(record) - len(sub_diff),
                                               "differing_words": sub_diff}
        say(f"neighbours, first {first['words']} eligible distinct words: {first['identical']} identical lists")
        notes = []
        for d in first["differences"]:
            say(f"  DIFFERENT {d['word']!r}: ours {d['ours']}\n            original {d['original']}")
            notes.append(explain_difference(vectors, emb, d))
            say(f"  {notes[-1]}")
        say(f"neighbours, every distinct word of the original's subset: {len(record) - len(sub_diff)} of {len(record)} "
            f"identical" + (f"; differing: {sub_diff}" if sub_diff else ""))
        for w in sub_diff:
            d = {"word": w, "ours": ours_sub[w], "original": record[w],
                 "first_difference_at": next((i for i, (a, b) in enumerate(zip(ours_sub[w], record[w])) if a != b),
                                             min(len(ours_sub[w]), len(record[w])))}
            notes.append(explain_difference(vectors, emb, d))
            say(f"  {notes[-1]}")
        glove["difference_notes"] = notes
        result["glove"] = glove
        del emb

        # ---- 2. masked LM ---------------------------------------------------------------------
        if not args.no_mlm:
            from distill_engine.augment.mlm import MaskedLM

            say(f"\n== masked-LM path: the first {mlm_sentences} sentences ==")
            t0 = time.perf_counter()
            path = build_mlm(work / "mlm")
            build_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            mlm = MaskedLM(path, backend="torch")
            load_s = time.perf_counter() - t0
            queries, multi = mlm_queries(mlm, texts[:mlm_sentences])
            say(f"checkpoint built in {build_s:.1f} s, MaskedLM loaded in {load_s:.1f} s; {len(queries)} single-piece "
                f"queries ({multi} multi-piece eligible words go to GloVe); batch size {mlm.batch_size}")
            # warm-up (first torch calls allocate and pick kernels)
            mlm.candidates(queries[:8], K)
            original_mlm(mlm, queries[:4], K)
            # one pass over the queries in --mlm-chunks chunks, ours and the original alternating
            # chunk by chunk (load drift hits both alike); ours batches within each chunk
            chunks = max(1, min(args.mlm_chunks or (1 if q else 4), len(queries)))
            bounds = [round(i * len(queries) / chunks) for i in range(chunks + 1)]
            ours_t, orig_t, ours_c, orig_c, orig_rows = [], [], [], [], []
            for c in range(chunks):
                part = queries[bounds[c]: bounds[c + 1]]
                s, cands = time_ours_mlm(mlm, part, K)
                ours_t.append(s)
                ours_c += cands
                s2, cands2, rows = time_original_mlm(mlm, part, K)
                orig_t.append(s2)
                orig_c += cands2
                orig_rows.append(rows)
                say(f"chunk {c + 1}/{chunks} ({len(part)} queries): ours {s:.2f} s ({len(part) / s:.1f} queries/s), "
                    f"original {s2:.2f} s ({len(part) / s2:.1f} queries/s)")
            orig_logits = np.concatenate(orig_rows)
            # agreement: the original's lists with the engine's documented extra filter (special
            # tokens, ids without a vocab line) applied, against ours
            specials = set(mlm._special_ids)
            known = len(mlm.vocab_tokens)
            tok_id = {t: i for i, t in enumerate(mlm.vocab_tokens)}
            filtered = [[t for t in c if tok_id[t] < known and tok_id[t] not in specials] for c in orig_c]
            with_specials = sum(1 for c, f in zip(orig_c, filtered) if c != f)
            differ = [i for i, (a, b) in enumerate(zip(ours_c, filtered)) if a != b]
            raw_differ = sum(1 for a, b in zip(ours_c, orig_c) if a != b)
            padded = mlm.logits(queries)
            max_dlogit = float(np.max(np.abs(padded - orig_logits))) if len(queries) else 0.0
            say(f"agreement: {len(queries) - len(differ)} of {len(queries)} candidate lists identical (the original's "
                f"with special tokens dropped, as ours documents); {raw_differ} differ before that filter "
                f"({with_specials} of the original's lists hold a special token); max |logit difference| padded "
                f"batch vs batch 1: {max_dlogit:.2e}")
            gaps = []
            for i in differ:
                # the two swapped tokens' logits, padded batch vs batch 1: a near-tie that float noise flips?
                j = next((t for t, (a, b) in enumerate(zip(ours_c[i], filtered[i])) if a != b), 0)
                pair = [tok_id[x] for x in {ours_c[i][j], filtered[i][j]}]
                gap = {"query": i, "tokens": [mlm.vocab_tokens[t] for t in pair],
                       "logits_padded": [float(padded[i, t]) for t in pair],
                       "logits_batch1": [float(orig_logits[i, t]) for t in pair]}
                gaps.append(gap)
                if len(gaps) <= 5:
                    say(f"  query {i}: ours {ours_c[i]}\n            original {filtered[i]}\n"
                        f"            logits of {gap['tokens']}: padded batch {gap['logits_padded']}, batch 1 "
                        f"{gap['logits_batch1']}")
            ours_qps = len(queries) / sum(ours_t)
            orig_qps = len(queries) / sum(orig_t)
            result["mlm"] = {
                "checkpoint": f"{MINILM} encoder + random cls.predictions head (seed 0), decoder tied",
                "build_s": build_s, "load_s": load_s, "queries": len(queries), "multi_piece_words": multi,
                "batch_size": mlm.batch_size, "ours_s": ours_t, "original_s": orig_t,
                "ours_queries_per_s": ours_qps, "original_queries_per_s": orig_qps, "ratio": ours_qps / orig_qps,
                "chunks": bounds, "ratio_per_chunk": [o / s for s, o in zip(ours_t, orig_t)],
                "identical_lists": len(queries) - len(differ), "differing_queries": differ,
                "differ_before_special_filter": raw_differ, "original_lists_with_special_tokens": with_specials,
                "max_abs_logit_difference": max_dlogit, "differences": gaps,
            }

    result["load_average"] = {"start": load_start, "end": loadavg()}
    result["wall_s"] = time.perf_counter() - t_start
    lines = table_lines(result)
    say("")
    say("\n".join(lines))
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "augment.json").write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
        (out_dir / "README.md").write_text(readme(result, lines))
        say(f"\nwrote {out_dir / 'augment.json'} and {out_dir / 'README.md'}")
    return 0


def table_lines(r: dict) -> list[str]:
    g, s = r["glove"], r["settings"]
    c = g["manifest_counts"]
    lines = ["| path | ours | original (TinyBERT's loop) | ours / original |", "|---|---:|---:|---:|",
             f"| GloVe, augmenting (examples/s; original on the first {s['original_sentences']}) | "
             f"{g['ours_examples_per_s_augment']:.0f} | {g['original_examples_per_s']:.1f} | **{g['ratio_augment']:.0f}x** |",
             f"| GloVe, same {s['original_sentences']}-sentence subset (examples/s, vectors loaded, fresh memo) | "
             f"{statistics.median(x['examples_per_s'] for x in g['ours_on_original_subset_runs']):.0f} | "
             f"{g['original_examples_per_s']:.1f} | {g['ratio_same_subset']:.0f}x |",
             f"| GloVe, end to end over {s['sentences']} (examples/s, with loading the vectors; original projected) | "
             f"{g['ours_examples_per_s_end_to_end']:.0f} | {g['original_examples_per_s_end_to_end_projected']:.1f} | "
             f"{g['ratio_end_to_end']:.0f}x |",
             f"| loading 100k GloVe vectors (s; ratio: original's time / ours) | {g['ours_load_s']:.2f} | "
             f"{g['original_load_s_median']:.2f} | {g['original_load_s_median'] / g['ours_load_s']:.2f}x |"]
    if "mlm" in r:
        m = r["mlm"]
        lines.append(f"| masked LM, {m['queries']} queries of {s['mlm_sentences']} sentences (queries/s; one pass, {len(m['ratio_per_chunk'])} interleaved chunks) | "
                     f"{m['ours_queries_per_s']:.0f} | {m['original_queries_per_s']:.1f} | **{m['ratio']:.1f}x** |")
    n1, n2 = g["neighbours_first_words"], g["neighbours_original_subset"]
    lines += ["", f"Ours over {s['sentences']} sentences: vectors {g['ours_load_s']:.2f} s + augmenting "
              f"{g['ours_augment_s']:.2f} s (medians of {s['reps']}); manifest: {c['new_rows']} new rows, "
              f"{c['eligible_words']} eligible words, {c['words_without_candidates']} without candidates, "
              f"{c['output_rows']} output rows.",
              "", f"Agreement: GloVe neighbour lists identical for {n1['identical']} of the first {n1['words']} eligible "
              f"distinct words and {n2['identical']} of the {n2['words']} distinct words of the original's subset"]
    if "mlm" in r:
        m = r["mlm"]
        lines[-1] += (f"; masked-LM candidate lists identical for {m['identical_lists']} of {m['queries']} queries "
                      f"(the original's lists with special tokens dropped, as the engine documents; "
                      f"{m['original_lists_with_special_tokens']} held one), max |logit difference| padded batch vs "
                      f"batch 1 {m['max_abs_logit_difference']:.1e}.")
    else:
        lines[-1] += "."
    return lines


def readme(r: dict, lines: list[str]) -> str:
    m, la, s = r["machine"], r["load_average"], r["settings"]
    busy = max(la["start"][0], la["end"][0]) > 0.5 * (m["cores"] or 1)
    out = ["# TinyBERT data augmentation: ours vs the original's loop", "",
           f"Command: `{r['command']}`  ", f"Date: {r['date']}; wall {r['wall_s']:.0f} s  ",
           f"Machine: {m['cpu']}, {m['cores']} cores; {m['platform']}; Python {m['python']}, numpy {m['numpy']}, "
           f"torch {m['torch']} ({m['torch_threads']} threads), tokenizers {m['tokenizers']}, safetensors "
           f"{m['safetensors']}  ",
           f"Torch threads: {s.get('torch_threads') or 'default'} (`--threads`).  ",
           f"Load average (1, 5, 15 min): {la['start']} at start, {la['end']} at end.", ""]
    if busy:
        out += ["**The machine was busy** during the run (other jobs on the same cores); absolute rates are low "
                "and noisy, the ratios stay fair: both sides run in the same command, interleaved repetition by "
                "repetition, and the per-repetition ratios are in augment.json.", ""]
    out += [f"SST-2 train.tsv, first {s['sentences']} sentences; N = {s['n']}, p = {s['p']}, K = {s['k']}, seed "
            f"{s['seed']}; glove.6B.50d, first 100,000 rows. GloVe: medians of {s['reps']} interleaved repetitions; "
            "masked LM: one pass over the queries in chunks, ours and the original alternating chunk by chunk. The "
            f"original's GloVe rate is measured on the first {s['original_sentences']} sentences (a subset: it "
            "is slow); its end-to-end rate over all sentences is projected from its loading time and that rate.",
            "", *lines, "",
            "What is compared (see the docstring of benchmarks/augment.py): ours is `run_job` end to end (its "
            "vector loading timed by wrapping `WordVectors.load`); the original is TinyBERT's "
            "`data_augmentation.py` re-implemented in the benchmark: python-float loading into a float64 "
            "matrix, per eligible word occurrence one `np.dot` over the 100k x 50 matrix and a full `np.argsort`, "
            "python `random` draws. Both take their words and eligibility from `distill_engine.augment.words`. "
            "The masked LM is the real MiniLM-L6-H384 encoder with a random `cls.predictions` head (timing "
            "only; its candidates are meaningless as words): ours batches the queries "
            f"(batch {r['mlm']['batch_size'] if 'mlm' in r else '-'}, padded to a multiple of 16), the original "
            "runs one unpadded batch-1 forward per query on the same backend model."]
    if "mlm" in r and r["mlm"]["differences"]:
        out += ["", "Masked-LM lists that differ (two adjacent candidates swapped: their logits, padded batch vs "
                "batch 1):", ""] + [f"- query {d['query']}: {d['tokens']}: padded {d['logits_padded']}, batch 1 "
                                    f"{d['logits_batch1']}" for d in r["mlm"]["differences"]]
    notes = r["glove"].get("difference_notes")
    if notes:
        out += ["", "Neighbour-list differences:", ""] + [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
