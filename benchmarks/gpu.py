"""The prepared first run on a GPU (issue #32): what the machine is, whether the engine's numbers
hold there, and how fast its steps are. Under 10 minutes on one GPU:

    python benchmarks/gpu.py                      # on gpu:0 with the torch backend
    python benchmarks/gpu.py --backend mindspore  # MindSpore on GPU, where its GPU plugin loads
    python benchmarks/gpu.py --smoke              # everything shrunk, on the CPU (seconds; the tests run it)

1. Versions, the device's name, compute capability, memory, the precisions the backend serves
   there, and whether TF32 is off for fp32 (it must be: fp32's tolerance is 1e-5, TF32 rounds to 2^-11).
2. The quickstart recipe (recipes/quickstart_sst2.toml: teacher fine-tuning, TD1, TD2) for a few
   steps a phase on the CPU in fp32 and on the device in each precision it serves; every logged
   loss is compared with the CPU's. The first step of the first phase (the same weights, the same
   batch) must agree within the precision's tolerance (distill_engine.testing.conformance
   PRECISION_TOLERANCES); later steps drift by rounding and are printed. Without ../shared (the
   SST-2 files and MiniLM) the recipe runs on a synthetic SST-2-like task with a random
   MiniLM-shaped teacher, and says so.
3. Kill and resume: the tiny pipeline with dropout on is run once uninterrupted and once killed
   (SIGKILL, tests/e2e/kill_at.py) mid-TD1 and resumed; every kept weight must be bit-identical
   (the CUDA generator's path through the run state).
4. Step times at the seeds' shapes (batch 32, length 128): a BERT-base-shaped teacher from random
   weights and the 4x312 TinyBERT student; GD, TD1 and TD2 with the teacher-output cache off (the
   teacher runs each step) and on (its outputs read from a cache built first), and the teacher's
   own fine-tuning step in fp32 and fp16; ms/step and samples/s beside the seeds' figures.

Exit status 0 when every check passed, 1 otherwise. `--json PATH` writes every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distill_engine.bert import BertConfig, init_parameters  # noqa: E402
from distill_engine.device import Device  # noqa: E402
from distill_engine.testing.conformance import PRECISION_TOLERANCES  # noqa: E402

QUICKSTART = ROOT / "recipes" / "quickstart_sst2.toml"
KILL_AT = ROOT / "tests" / "e2e" / "kill_at.py"
# The seeds' figures (docs/devices.md cites them): the MindSpore model zoo's TinyBERT general
# distillation, and Hugging Face's run_glue fine-tuning BERT-base on SST-2.
SEEDS = {
    "gd": "MindSpore zoo GD: 98.7 ms/step on each of 8 V100s; 35.4 ms/step on an Ascend 910",
    "finetune": "Hugging Face run_glue, BERT-base SST-2, Titan RTX: ~129 samples/s fp32, ~255 fp16",
}
# The recipes' default losses per phase (recipe.schema's phase kinds)
PHASE_LOSSES = {
    "gd": [("attention_mse", 1.0, 1.0), ("embedding_mse", 1.0, 1.0), ("hidden_mse", 1.0, 1.0)],
    "td1": [("attention_mse", 1.0, 1.0), ("embedding_mse", 1.0, 1.0), ("hidden_mse", 1.0, 1.0)],
    "td2": [("soft_cross_entropy", 1.0, 1.0)],
}


def say(text: str = "") -> None:
    print(text, flush=True)


# --- 1. the machine ---------------------------------------------------------------------------------
def machine(backend_name: str, device: Device) -> dict:
    from distill_engine.plugins import get_backend

    backend = get_backend(backend_name)
    info = {"python": platform.python_version(), "backend": backend.version(), "device": str(device),
            "precisions": list(backend.precisions(device)) if hasattr(backend, "precisions") else ["fp32"]}
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        info["tf32_matmul"] = bool(torch.backends.cuda.matmul.allow_tf32)
        if device.kind == "gpu" and torch.cuda.is_available():
            props = torch.cuda.get_device_properties(device.index)
            info.update(name=props.name, capability=list(torch.cuda.get_device_capability(device.index)),
                        memory_gib=round(props.total_memory / 2**30, 1))
    except ImportError:
        pass
    try:
        import mindspore

        info["mindspore"] = mindspore.__version__
    except ImportError:
        pass
    for key, value in info.items():
        say(f"  {key:<12} {value}")
    return info


# --- 2. the quickstart in each precision ---------------------------------------------------------------
def shared_data() -> bool:
    """Whether the quickstart's own inputs (../shared beside the checkout) are here."""
    return (QUICKSTART.parent / "../../shared/data/glue/SST-2/train.tsv").resolve().is_file()


def quickstart_inputs(work: Path, smoke: bool) -> tuple[Path, dict, str]:
    """The recipe, its overrides and a note on what it reads."""
    from distill_engine.testing.fixtures import tiny_config, write_hf_bert, write_sst2_like, write_tiny_recipe

    if smoke:
        return write_tiny_recipe(work / "tiny"), {}, "the tiny fixture pipeline (--smoke)"
    if shared_data():
        return QUICKSTART, {}, "the quickstart's SST-2 and MiniLM from ../shared"
    # MiniLM-L6's shape (384 wide, 6 layers, 12 heads) with random weights; sentences of 5-30 words
    teacher = write_hf_bert(work / "minilm-shaped", tiny_config(hidden_size=384, num_hidden_layers=6,
                                                                num_attention_heads=12, intermediate_size=1536,
                                                                max_position_embeddings=64), seed=0)
    train, dev = write_sst2_like(work / "glue", n_train=3200, n_dev=256, words=(5, 30))
    return QUICKSTART, {"teacher.path": str(teacher), "data.train": str(train), "data.dev": str(dev),
                        "data.vocab": str(teacher / "vocab.txt")}, \
        "../shared is absent: a random MiniLM-shaped teacher on synthetic SST-2-like sentences"


def cli(args: list[str], env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "distill_engine.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


BASELINE = "cpu fp32 (base)"


def train_losses(run: Path) -> dict[tuple[str, int], float]:
    """(phase, step) -> the logged total loss, in the run's order."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {(r["phase"], r["step"]): r["total"] for r in records if r.get("event") == "train"}


def quickstart(backend: str, device: Device, precisions: list[str], work: Path, smoke: bool, steps: int) -> dict:
    from distill_engine.api import run as run_recipe

    recipe, overrides, note = quickstart_inputs(work, smoke)
    say(f"  recipe {recipe.name}: {note}; {steps} steps a phase, every loss logged")
    common = {**overrides, "run.max_steps": steps, "run.log_every": 1, "run.checkpoint_every": 0,
              "run.cache_dir": str(work / "cache")}
    if not smoke:  # the rows the steps read (batches of 32): TD2's teacher cache is built over no more
        common["run.max_examples"] = steps * 32
    others = [(f"{device} {p}", str(device), p) for p in precisions if not (device.kind == "cpu" and p == "fp32")]
    runs = {}
    for label, where, precision in [(BASELINE, "cpu", "fp32")] + others:
        out = work / label.replace(" ", "-").replace(":", "").replace("(", "").replace(")", "")
        start = time.perf_counter()
        try:  # in this process, as `distill-engine run` would run it; its messages to a log
            with open(work / "quickstart.log", "a") as log, contextlib.redirect_stdout(log), \
                    contextlib.redirect_stderr(log):
                run_recipe(recipe, backend, {**common, "run.device": where, "run.precision": precision},
                           output_dir=out)
        except Exception as exc:  # a failed precision is a finding, not the end of the script
            say(f"  {label}: FAILED ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
            runs[label] = {"ok": False, "error": repr(exc)[:2000]}
            continue
        runs[label] = {"losses": train_losses(out), "seconds": round(time.perf_counter() - start, 1),
                       "precision": precision}
    base = runs.get(BASELINE, {}).get("losses")
    results = {"note": note, "runs": {}}
    for label, run in runs.items():
        if "losses" not in run or base is None:
            results["runs"][label] = {"ok": False}
            continue
        tol = PRECISION_TOLERANCES[run["precision"]]
        first = next(iter(base))  # the first phase's first step: the same weights and batch on both
        rel = {k: abs(run["losses"][k] - v) / max(abs(v), 1e-12) for k, v in base.items() if k in run["losses"]}
        first_ok = abs(run["losses"][first] - base[first]) <= tol.atol + tol.rtol * abs(base[first])
        worst = max(rel, key=rel.get)
        say(f"  {label:<14} {run['seconds']:>6.1f} s  first step {run['losses'][first]:.6f} vs cpu {base[first]:.6f} "
            f"({'within' if first_ok else 'OUTSIDE'} rtol {tol.rtol:g} atol {tol.atol:g}); largest drift "
            f"{rel[worst]:.2e} at {worst[0]} step {worst[1]}")
        results["runs"][label] = {"ok": bool(first_ok), "seconds": run["seconds"], "first": run["losses"][first],
                                  "cpu_first": base[first], "worst_relative": rel[worst], "worst_at": list(worst)}
    return results


# --- 3. kill and resume with dropout -----------------------------------------------------------------
def kill_resume(backend: str, device: Device, work: Path) -> dict:
    from distill_engine.testing.fixtures import write_tiny_recipe
    from safetensors.numpy import load_file

    recipe = write_tiny_recipe(work / "resume")
    common = ["run", str(recipe), "--backend", backend, "--no-progress", "--set", f"run.device={device}",
              "--set", "run.checkpoint_every=2", "--set", f"run.cache_dir={work / 'cache'}", "--max-steps", "5"]
    for side in ("student", "teacher"):
        common += ["--set", f"{side}.dropout=0.1", "--set", f"{side}.attention_dropout=0.1"]
    baseline, resumed = work / "resume-baseline", work / "resume-killed"
    done = cli([*common, "--output-dir", str(baseline)])
    kill = {"kind": "record", "match": {"event": "train", "phase": "td1", "step": 3}}
    env = {**os.environ, "KILL_AT": json.dumps(kill)}
    killed = subprocess.run([sys.executable, str(KILL_AT), *common, "--output-dir", str(resumed)], env=env,
                            capture_output=True, text=True, timeout=600, cwd=ROOT)
    again = cli([*common, "--output-dir", str(resumed), "--resume"])
    if done.returncode or again.returncode or killed.returncode != -signal.SIGKILL:
        say(f"  FAILED: baseline {done.returncode}, killed {killed.returncode}, resumed {again.returncode}: "
            f"{(again.stderr or done.stderr or killed.stderr).strip()[-300:]}")
        return {"ok": False}
    differing, compared = [], 0
    for path in sorted(baseline.glob("*/*/model.safetensors")):
        want, got = load_file(str(path)), load_file(str(resumed / path.relative_to(baseline)))
        compared += len(want)
        differing += [f"{path.parent.relative_to(baseline)}:{k}" for k in want if not np.array_equal(want[k], got[k])]
    ok = compared > 0 and not differing
    say(f"  {compared} tensors compared after a SIGKILL at td1 step 3 and --resume: "
        + ("bit-identical" if ok else f"{len(differing)} differ, e.g. {differing[:3]}"))
    return {"ok": ok, "tensors": compared, "differing": differing[:20]}


# --- 4. step times ---------------------------------------------------------------------------------------
# (vocabulary, teacher layers x width x heads x intermediate, student the same, batch, length)
SHAPES = {"smoke": (64, (4, 32, 4, 64), (2, 16, 4, 32), 4, 16),
          "seeds": (30522, (12, 768, 12, 3072), (4, 312, 12, 1200), 32, 128)}  # BERT-base and TinyBERT-4


def shapes(smoke: bool) -> tuple[BertConfig, BertConfig, int, int]:
    vocab, teacher, student, batch, length = SHAPES["smoke" if smoke else "seeds"]

    def config(layers, width, heads, intermediate, **extra):
        return BertConfig(vocab_size=vocab, hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
                          intermediate_size=intermediate, max_position_embeddings=max(length, 16) if smoke else 512,
                          num_labels=2, **extra)

    return (config(*teacher), config(*student, projection="shared", projection_dim=teacher[1]), batch, length)


def timed(step, batches, warmup: int) -> float:
    """Seconds per step over `batches` after `warmup` untimed ones (a step returns floats: the
    host has waited for the device by then)."""
    for b in batches[:warmup]:
        step(b)
    start = time.perf_counter()
    for b in batches[warmup:]:
        step(b)
    return (time.perf_counter() - start) / max(1, len(batches) - warmup)


def step_times(backend_name: str, device: Device, smoke: bool, work: Path, steps: int, warmup: int) -> dict:
    from distill_engine import teacher_cache
    from distill_engine.backend import TrainSpec
    from distill_engine.data.encoded import EncodedDataset
    from distill_engine.graph import build_graph, build_mapping
    from distill_engine.optim import OptimizerSpec
    from distill_engine.plugins import get_backend

    backend = get_backend(backend_name)
    t_cfg, s_cfg, batch, length = shapes(smoke)
    say(f"  teacher {t_cfg.num_hidden_layers}x{t_cfg.hidden_size}, student {s_cfg.num_hidden_layers}x"
        f"{s_cfg.hidden_size}, batch {batch} x length {length}, {warmup} + {steps} steps each")
    teacher = backend.load_model(t_cfg, init_parameters(t_cfg, 1), device)
    s_state = init_parameters(s_cfg, 2)
    rng = np.random.default_rng(0)
    n = (warmup + steps) * batch
    ids = rng.integers(1000 if not smoke else 5, t_cfg.vocab_size, (n, length)).astype(np.int32)
    data = EncodedDataset(input_ids=ids, token_type_ids=np.zeros_like(ids), attention_mask=np.ones_like(ids),
                          labels=rng.integers(0, 2, n))
    batches = [np.arange(i * batch, (i + 1) * batch) for i in range(warmup + steps)]
    lrs = np.full(warmup + steps, 1e-5, np.float32)
    results = {}
    for phase, losses in PHASE_LOSSES.items():
        mapping = build_mapping("uniform", s_cfg.num_hidden_layers, t_cfg.num_hidden_layers)
        graph = build_graph(losses, s_cfg, t_cfg, mapping, where=phase, mask_padding=True)
        cache = None
        for cached in (False, True):
            if cached and cache is None:
                key = teacher_cache.cache_key(t_cfg, {}, data, graph.teacher_taps, "float16")
                start = time.perf_counter()
                cache, _ = teacher_cache.build_or_open(work / "timing-cache" / phase, key, data, t_cfg,
                                                       lambda b: teacher.forward(b).named(), backend=backend_name,
                                                       progress=False, say=lambda _m: None)
                build_s = time.perf_counter() - start
            student = backend.load_model(s_cfg, s_state, device)
            trainer = backend.trainer(student, None if cached else teacher,
                                      TrainSpec(graph, OptimizerSpec(lr=1e-5, clip="per_parameter"), lrs, seed=1))

            def step(rows, trainer=trainer, cached=cached, cache=cache):
                b = data.batch(rows)
                if cached:
                    b.update(cache.outputs(rows, length))
                return trainer.step(b)

            seconds = timed(step, batches, warmup)
            label = f"{phase} cache {'on' if cached else 'off'}"
            results[label] = {"ms_per_step": round(seconds * 1e3, 2), "samples_per_s": round(batch / seconds, 1)}
            if cached:
                results[label]["cache_build_s"] = round(build_s, 1)
            say(f"  {label:<16} {seconds * 1e3:>9.1f} ms/step {batch / seconds:>9.1f} samples/s"
                + (f"  (cache built in {build_s:.1f} s)" if cached else ""))
            del trainer, student
        if hasattr(backend, "release"):
            backend.release()
    # the teacher's own fine-tuning step, beside run_glue's BERT-base figures
    graph = build_graph([("hard_cross_entropy", 1.0, 1.0)], t_cfg, None, None, where="finetune")
    served = backend.precisions(device) if hasattr(backend, "precisions") else ("fp32",)
    for precision in [p for p in ("fp32", "fp16") if p in served]:
        model = backend.load_model(t_cfg, init_parameters(t_cfg, 1), device)
        trainer = backend.trainer(model, None, TrainSpec(graph, OptimizerSpec(lr=1e-5), lrs, seed=1, precision=precision,
                                                         loss_scale=2.0**16 if precision == "fp16" else None))
        seconds = timed(lambda rows, t=trainer: t.step(data.batch(rows)), batches, warmup)
        label = f"finetune {precision}"
        results[label] = {"ms_per_step": round(seconds * 1e3, 2), "samples_per_s": round(batch / seconds, 1)}
        say(f"  {label:<16} {seconds * 1e3:>9.1f} ms/step {batch / seconds:>9.1f} samples/s")
        del trainer, model
    for line in SEEDS.values():
        say(f"  seeds: {line}")
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="everything shrunk, on the CPU: checks the script runs")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--device", default=None, help='default "gpu:0" ("cpu" with --smoke)')
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    parser.add_argument("--skip", action="append", default=[], choices=["quickstart", "resume", "timing"])
    args = parser.parse_args(argv)
    device = Device.parse(args.device or ("cpu" if args.smoke else "gpu:0"))
    steps = 3 if args.smoke else 20
    report, ok = {}, True
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="distill-gpu-") as tmp:
        work = Path(tmp)
        say(f"1. machine ({args.backend} on {device})")
        report["machine"] = machine(args.backend, device)
        precisions = report["machine"]["precisions"]
        if "quickstart" not in args.skip:
            say("2. the quickstart recipe, each precision against the cpu's fp32")
            report["quickstart"] = quickstart(args.backend, device, precisions, work, args.smoke, steps)
            ok &= all(r["ok"] for r in report["quickstart"]["runs"].values())
        if "resume" not in args.skip:
            say("3. kill and resume with dropout on")
            report["resume"] = kill_resume(args.backend, device, work)
            ok &= report["resume"]["ok"]
        if "timing" not in args.skip:
            say("4. step times")
            report["timing"] = step_times(args.backend, device, args.smoke, work, steps=2 if args.smoke else 10,
                                          warmup=1 if args.smoke else 3)
    report["seconds"] = round(time.perf_counter() - start, 1)
    report["ok"] = bool(ok)
    say(f"{'all checks passed' if ok else 'SOME CHECKS FAILED'} in {report['seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
