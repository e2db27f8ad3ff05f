"""Inference speed of the TinyBERT4 student against its teacher, on each installed backend.

    .venv/bin/python benchmarks/inference.py                      # MiniLM teacher + BERT-base shape (~10 min, 2 busy cores)
    .venv/bin/python benchmarks/inference.py --quick               # smoke test (< 1 min), writes nothing without --out
    .venv/bin/python benchmarks/inference.py --teachers minilm6 --backends torch

What is timed: `Model.predict` (the path of `distill-engine predict` and of evaluation: logits, no
gradient, no dropout) of each model on the same batches of real SST-2 dev sentences, tokenised
with the MiniLM vocabulary at max_seq_length 64 and batched as `distill-engine predict` batches
them (`distill_engine.predict.predict_batches`: sorted by length, each batch cut to its longest
sentence rounded up to 16 tokens):
- batch 32: the first `--sentences` (128) dev sentences; batch 1: the first `--single` (32), one each;
- sentences/s and ms per batch: medians of `--reps` (3) passes over the batches, teacher and
  student interleaved pass by pass after one warm-up pass each (a compiling backend builds its
  graphs there), `distill_engine.speed.inference_speed` per pass.

Models (every one with a 2-label classification head):
- `minilm6`: the pre-trained MiniLM-L6-H384 of ../shared/models/all-MiniLM-L6-v2 (6 layers, 384
  wide, 12 heads; its head is random), the teacher of recipes/tinybert_sst2.toml;
- `base12`: a BERT-base shape (12 layers, 768 wide, 12 heads, 3072; random weights), the teacher
  of the TinyBERT paper, whose "7.5x smaller, 9.4x faster" compares TinyBERT4 with it;
- the student: TinyBERT4 (4 layers, 312 wide, 12 heads, 1200), random weights. Speed does not
  depend on the values of the weights, so random weights time what a trained student does.

Each backend runs in its own worker process (one framework per process). Absolute rates move
with the load of a shared machine; the ratios compare models measured in the same command,
interleaved. Prints a table; writes results.json and results.md to --out (default
benchmarks/results/inference; with --quick only when --out is given).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import attrs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import _cpu_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"  # --shared
MINILM = Path("models") / "all-MiniLM-L6-v2"
SST2_DEV = Path("data") / "glue" / "SST-2" / "dev.tsv"
MAX_SEQ_LENGTH = 64
TEACHERS = {  # name: (layers, hidden, heads, intermediate, description)
    "minilm6": (6, 384, 12, 1536, "MiniLM-L6-H384, pre-trained (../shared)"),
    "base12": (12, 768, 12, 3072, "BERT-base shape, random weights"),
}
STUDENT = (4, 312, 12, 1200, "TinyBERT4, random weights")


def say(msg: str = "") -> None:
    print(msg, flush=True)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# --- the worker: one backend, every model ------------------------------------------------------------
def _config(shape, vocab_size: int, positions: int):
    from distill_engine.bert import BertConfig

    layers, hidden, heads, inter, _ = shape
    return BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                      intermediate_size=inter, max_position_embeddings=positions, num_labels=2)


def models(teachers: list[str], shared: Path) -> dict:
    """{name: (BertConfig, state)} of the teachers asked for and the student."""
    import attrs as _attrs

    from distill_engine.bert import init_parameters
    from distill_engine.checkpoint import load_huggingface

    minilm = load_huggingface(shared / MINILM)
    vocab, positions = minilm.config.vocab_size, minilm.config.max_position_embeddings
    out = {}
    for name in teachers:
        if name == "minilm6":
            config = _attrs.evolve(minilm.config, num_labels=2)
            out[name] = (config, {**minilm.state, **init_parameters(config, 1, only={"classifier.weight",
                                                                                     "classifier.bias"})})
        else:
            config = _config(TEACHERS[name], vocab, positions)
            out[name] = (config, init_parameters(config, 1))
    config = _config(STUDENT, vocab, positions)
    out["student"] = (config, init_parameters(config, 2))
    return out


def batches(sentences: list[str], batch_size: int, vocab: Path) -> list[dict]:
    from distill_engine.data import WordPieceTokenizer
    from distill_engine.predict import predict_batches

    data = WordPieceTokenizer(vocab).encode(sentences, None, MAX_SEQ_LENGTH)
    return [batch for _, batch in predict_batches(data, batch_size)]


def worker(backend_name: str, settings: dict) -> dict:
    """Time every model on one backend; returns plain data (printed as JSON by --worker)."""
    from distill_engine.data import get_task, read_task_examples
    from distill_engine.device import Device
    from distill_engine.plugins import get_backend
    from distill_engine.speed import inference_speed

    backend = get_backend(backend_name)
    if settings["threads"] and backend_name == "torch":
        import torch

        torch.set_num_threads(settings["threads"])
    shared = Path(settings["shared"])
    sentences = read_task_examples(shared / SST2_DEV, get_task("sst2")).text_a
    vocab = shared / MINILM / "vocab.txt"
    cases = {32: batches(sentences[: settings["sentences"]], 32, vocab),
             1: batches(sentences[: settings["single"]], 1, vocab)}
    specs = models(settings["teachers"], shared)
    built = {name: backend.load_model(config, state, Device("cpu")) for name, (config, state) in specs.items()}
    result = {"backend": backend_name, "version": backend.version(), "models": {}, "cases": {}}
    for name, (config, state) in specs.items():
        params = int(sum(v.size for v in state.values()))
        embed = int(sum(v.size for k, v in state.items() if k.startswith("embeddings.")))
        result["models"][name] = {"params": params, "non_embedding_params": params - embed, "bytes_fp32": 4 * params,
                                  "shape": [config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
                                            config.intermediate_size]}
    for size, bs in cases.items():
        tokens = int(sum(b["input_ids"].size for b in bs))
        runs = {name: [] for name in built}
        for name, model in built.items():  # warm-up (graphs compiled here)
            inference_speed(model, bs, warmup=0, repeats=1)
        for _ in range(settings["reps"]):
            for name, model in built.items():  # interleaved, pass by pass
                runs[name].append(inference_speed(model, bs, warmup=0, repeats=1))
        result["cases"][str(size)] = {
            "batches": len(bs), "sentences": int(sum(len(b["input_ids"]) for b in bs)), "padded_tokens": tokens,
            "models": {name: {"sentences_per_s": statistics.median(r["sentences_per_s"] for r in rs),
                              "ms_per_batch": statistics.median(r["ms_per_batch"] for r in rs),
                              "passes": [round(r["sentences_per_s"], 2) for r in rs]} for name, rs in runs.items()}}
    return result


# --- the coordinator ------------------------------------------------------------------------------------
@attrs.frozen
class Settings:
    teachers: tuple[str, ...] = ("minilm6", "base12")
    sentences: int = 128
    single: int = 32
    reps: int = 3
    threads: int = 0  # 0: the framework's default (all cores)
    shared: str = str(SHARED)


def run_worker(backend: str, s: Settings) -> dict:
    settings = {**attrs.asdict(s), "teachers": list(s.teachers)}
    cmd = [sys.executable, __file__, "--worker", backend, "--settings", json.dumps(settings)]
    env = dict(os.environ)
    if s.threads:  # before the framework loads: its thread pools, and MindSpore's fused kernels
        env.update(OMP_NUM_THREADS=str(s.threads), DISTILL_ENGINE_MS_KERNEL_THREADS=str(s.threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return {"backend": backend, "error": " / ".join(tail) or f"exit {proc.returncode}"}
    return json.loads(lines[-1])


def ratios(result: dict, teacher: str) -> dict:
    m = result["models"]
    out = {"size": m[teacher]["params"] / m["student"]["params"],
           "non_embedding_size": m[teacher]["non_embedding_params"] / m["student"]["non_embedding_params"]}
    for size, case in result["cases"].items():
        t, st = case["models"][teacher], case["models"]["student"]
        out[f"speedup_b{size}"] = st["sentences_per_s"] / t["sentences_per_s"]
        # the same ratio pass by pass (teacher and student measured back to back): its spread
        per_pass = [b / a for a, b in zip(t["passes"], st["passes"])]
        out[f"speedup_b{size}_range"] = [min(per_pass), max(per_pass)]
    return out


def markdown(doc: dict) -> str:
    s = doc["settings"]
    lines = ["# Inference: TinyBERT4 student vs teacher", "",
             f"Command: `{doc['command']}`  ",
             f"Date: {doc['date']}; wall {doc['wall_s']:.0f} s  ",
             f"Machine: {doc['machine']}  ",
             f"Load average (1, 5, 15 min): {doc['load_start']} at start, {doc['load_end']} at end.  ",
             f"Threads: {s['threads'] or 'each framework default'} (`--threads`).", "",
             f"SST-2 dev sentences (MiniLM vocabulary, max_seq_length {MAX_SEQ_LENGTH}), batched as `distill-engine "
             "predict` batches them (sorted by length, cut to the longest rounded up to 16 tokens): batch 32 over "
             f"the first {s['sentences']}, batch 1 over the first {s['single']}. `Model.predict`; medians of "
             f"{s['reps']} passes, teacher and student interleaved pass by pass after a warm-up pass. The student "
             "(TinyBERT4, 4x312) has random weights: speed does not depend on their values.", ""]
    lines += ["| backend | model | parameters | non-embedding | batch 1: sentences/s | ms/batch | batch 32: "
              "sentences/s | ms/batch |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in doc["results"]:
        if "error" in r:
            lines.append(f"| {r['backend']} | error: {r['error']} | | | | | | |")
            continue
        for name, m in r["models"].items():
            c1, c32 = r["cases"]["1"]["models"][name], r["cases"]["32"]["models"][name]
            label = f"{name} ({'x'.join(map(str, m['shape'][:2]))})"
            lines.append(f"| {r['backend']} | {label} | {m['params'] / 1e6:.1f}M | {m['non_embedding_params'] / 1e6:.1f}M "
                         f"| {c1['sentences_per_s']:.1f} | {c1['ms_per_batch']:.1f} | {c32['sentences_per_s']:.1f} "
                         f"| {c32['ms_per_batch']:.1f} |")
    lines += ["", "Student against each teacher, measured in the same command (speedup: student sentences/s over "
                  "the teacher's; in brackets the range of the pass-by-pass ratios):", "",
              "| backend | teacher | smaller (parameters) | smaller (non-embedding) | faster, batch 1 | faster, batch 32 |",
              "|---|---|---:|---:|---:|---:|"]
    for r in doc["results"]:
        if "error" in r:
            continue
        for teacher in s["teachers"]:
            q = ratios(r, teacher)
            lo1, hi1 = q["speedup_b1_range"]
            lo32, hi32 = q["speedup_b32_range"]
            lines.append(f"| {r['backend']} | {teacher} | {q['size']:.2f}x | {q['non_embedding_size']:.1f}x | "
                         f"**{q['speedup_b1']:.2f}x** ({lo1:.2f}-{hi1:.2f}) | **{q['speedup_b32']:.2f}x** "
                         f"({lo32:.2f}-{hi32:.2f}) |")
    lines += ["", "The TinyBERT paper's figure (TinyBERT4 against BERT-base: 7.5x smaller, 9.4x faster) compares "
                  "with the base12 rows; the MiniLM teacher of recipes/tinybert_sst2.toml is itself small (6x384), "
                  "so the student gains less over it. Backends: " +
              "; ".join(f"{r['backend']} {r.get('version', '')}" for r in doc["results"]) + "."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", help="comma-separated (default: every installed backend but numpy)")
    parser.add_argument("--teachers", default="minilm6,base12", help="minilm6, base12 (default both)")
    parser.add_argument("--sentences", type=int, default=128, help="dev sentences timed at batch 32 (default 128)")
    parser.add_argument("--single", type=int, default=32, help="dev sentences timed at batch 1 (default 32)")
    parser.add_argument("--reps", type=int, default=3, help="timed passes per model (default 3)")
    parser.add_argument("--threads", type=int, default=0, help="threads per framework (OMP_NUM_THREADS, torch, the "
                                                              "MindSpore fused kernels; default: each one's own)")
    parser.add_argument("--quick", action="store_true", help="MiniLM only, 64 + 8 sentences, 2 passes")
    parser.add_argument("--shared", type=Path, default=SHARED, help="the shared data (default: ../shared beside "
                                                                      "the checkout)")
    parser.add_argument("--out", type=Path, help="results folder (default benchmarks/results/inference)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, json.loads(args.settings))), flush=True)
        return 0
    for path in (args.shared / MINILM, args.shared / SST2_DEV):
        if not path.exists():
            print(f"error: needs {path} (the shared data beside the checkout)", file=sys.stderr)
            return 2
    teachers = tuple(t for t in args.teachers.split(",") if t)
    unknown = [t for t in teachers if t not in TEACHERS]
    if unknown or not teachers:
        print(f"error: --teachers: {', '.join(unknown) or 'none'}; choose from {', '.join(TEACHERS)}", file=sys.stderr)
        return 2
    shared = str(args.shared.resolve())
    s = Settings(teachers, args.sentences, args.single, args.reps, args.threads, shared)
    if args.quick:
        s = Settings(("minilm6",), 64, 8, 2, args.threads, shared)
    from distill_engine.plugins import backend_registry

    names = args.backends.split(",") if args.backends else sorted(n for n in backend_registry() if n != "numpy")
    start, load_start = time.time(), loadavg()
    results = []
    for name in names:
        say(f"[{name}] timing {', '.join(s.teachers)} and the student ...")
        results.append(run_worker(name, s))
        if "error" in results[-1]:
            say(f"[{name}] error: {results[-1]['error']}")
    import numpy

    doc = {"command": "python benchmarks/inference.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(start)), "wall_s": time.time() - start,
           "machine": f"{_cpu_name()}, {os.cpu_count()} cores; {platform.platform()}; Python "
                      f"{platform.python_version()}, numpy {numpy.__version__}",
           "load_start": load_start, "load_end": loadavg(), "settings": {**attrs.asdict(s), "teachers": list(s.teachers)},
           "results": results}
    text = markdown(doc)
    say()
    say(text)
    out = args.out if args.out is not None else (None if args.quick else ROOT / "benchmarks" / "results" / "inference")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(doc, indent=1, default=float) + "\n")
        (out / "results.md").write_text(text)
        say(f"written to {out}/results.json and results.md")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
