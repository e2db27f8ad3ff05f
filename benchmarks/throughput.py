"""Throughput on the real SST-2 length distribution, phase by phase, and the full recipe's projected wall time.

    .venv/bin/python benchmarks/throughput.py                       # full (every backend; 15-20 min on a quiet 2-core machine)
    .venv/bin/python benchmarks/throughput.py --quick               # about a minute: 2 batches, 1 rep
    .venv/bin/python benchmarks/throughput.py --quick --backends torch --phases td1

For each phase of recipes/tinybert_sst2.toml (teacher fine-tuning, TD1, TD2, evaluation) and each
variant (fixed-64 padding, bucketed batches, + teacher cache, + bf16, + torch.compile; MindSpore's
fixed-64, bucketed, + cache; a hand-written torch loop with per-batch dynamic padding), it times K
consecutive batches of the epoch in the engine's own batch order, in interleaved repetitions with
the GEMM peak measured in each, and reports samples/s, tokens/s, ratios taken within a repetition,
the useful-token efficiency, the projected wall time of the full recipe and the issue's targets.
Writes results.json and results.md to --out (default benchmarks/results/throughput). See
benchmarks/README.md ("Real-data throughput").
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import sys
import tempfile
import time
from pathlib import Path

import attrs
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # the checkout's distill_engine

import common  # noqa: E402
from common import (ROOT, Case, Settings, Worker, _cpu_name, _mem_total_gb, discover_backends,  # noqa: E402
                    fresh_log_dir, median, prune_logs, say, sequence_flops, start_watchdog, student_config,
                    teacher_config)
from throughput_workers import (HANDWRITTEN, PHASE_INDEX, PHASE_TITLES, PHASES, RUN_SEED, VARIANT, VARIANTS,  # noqa: E402
                                TSettings, eval_batches, worker_main)

SHARED = ROOT.parent / "shared"
TRAIN = SHARED / "data" / "glue" / "SST-2" / "train.tsv"
DEV = SHARED / "data" / "glue" / "SST-2" / "dev.tsv"
MINILM = SHARED / "models" / "all-MiniLM-L6-v2"

# recipes/tinybert_sst2.toml: epochs and eval_every per phase (read from the recipe at run time, these
# are what the projection falls back to if it cannot be read)
TARGET_HOURS = 3.0
TARGET_BUCKETED_TD1 = 3.0
TARGET_EFFICIENCY = 0.40
TARGET_MS_VS_TORCH = 1.3


# ---------------------------------------------------------------------------------------------
# data and plan (numpy only)


def encode(out_npz: Path, max_seq_length: int) -> dict:
    """SST-2 train and dev through the engine's reader and WordPiece tokenizer, as the runner encodes them."""
    from distill_engine.data import WordPieceTokenizer, get_task, read_task_examples

    task = get_task("sst2")
    tok = WordPieceTokenizer(MINILM / "vocab.txt")
    arrays, sets = {}, {}
    for split, path in (("train", TRAIN), ("dev", DEV)):
        ex = read_task_examples(path, task)
        ds = tok.encode(ex.text_a, ex.text_b, max_seq_length, labels=ex.labels)
        sets[split] = ds
        for name in ("input_ids", "token_type_ids", "attention_mask", "labels"):
            arrays[f"{split}_{name}"] = getattr(ds, name)
    np.savez(out_npz, **arrays)
    return sets


def plan_phase(phase: str, data: dict, s: TSettings) -> dict:
    """Row indices of the batches each repetition times: K consecutive batches of epoch 0 in the
    engine's order (seed = run.seed + phase index, as the runner), from a different start per
    repetition; the same start for fixed and bucketed batches. Evaluation: the whole dev set."""
    from distill_engine.data import batch_order

    if phase == "eval":
        return {"reps": [{} for _ in range(s.reps)]}
    train = data["train"]
    seed = RUN_SEED + PHASE_INDEX[phase]
    fixed = batch_order(train, s.batch_size, shuffle=True, seed=seed, epoch=0, batching="fixed")
    bucketed = batch_order(train, s.batch_size, shuffle=True, seed=seed, epoch=0, batching="bucketed")
    k = min(s.batches, len(fixed))
    rng = np.random.default_rng([seed, 2026])
    starts = rng.choice(len(fixed) - k + 1, size=s.reps, replace=s.reps > len(fixed) - k + 1)
    return {"reps": [{"start": int(o), "fixed": fixed[o:o + k], "bucketed": bucketed[o:o + k]} for o in starts]}


def batch_facts(phase: str, variant: str, rep_plan: dict, data: dict, s: TSettings, model: str) -> dict:
    """Rows, real and padded tokens, real lengths of what one (variant, repetition) processes."""
    from distill_engine.data import padded_length

    v = VARIANT[variant]
    multiple = {"fixed": None, "bucketed": s.pad_to_multiple_of, "dynamic": 1}[v.batching]
    if phase == "eval":
        dev = data["dev"]
        fill = v.batching != "dynamic"
        batches = eval_batches(dev, "fixed" if v.batching == "dynamic" else v.batching, s.eval_batch_size, fill)
        lengths = dev.lengths
    else:
        batches = rep_plan["fixed" if v.batching == "dynamic" else v.batching]
        lengths = data["train"].lengths
        lengths = np.concatenate([lengths[b] for b in batches])
    widths = [s.max_seq_length if multiple is None else padded_length(int(data["dev" if phase == "eval" else "train"]
                                                                           .lengths[b].max()), multiple, s.max_seq_length)
              for b in batches]
    padded = sum(len(b) * w for b, w in zip(batches, widths))
    return {"rows": int(len(lengths)), "real_tokens": int(lengths.sum()), "padded_tokens": int(padded),
            "lengths": lengths, "shapes": sorted({(len(b), w) for b, w in zip(batches, widths)})}


def useful_flops(phase: str, variant: str, model: str, lengths, bs: Settings) -> int:
    """GEMM FLOPs of the real (non-padding) tokens of the phase's work: the trained model's forward
    and backward, the teacher's forward unless its outputs come from the cache."""
    t_cfg = teacher_config("minilm6", bs)
    s_cfg = student_config(Case("td2" if phase == "eval" else phase, "minilm6"), bs)
    if phase == "teacher":
        return sequence_flops("td2", t_cfg, None, lengths)["total"]  # forward with the head + 2x backward
    if phase == "eval":
        return sequence_flops("eval", t_cfg if model == "teacher" else s_cfg, None, lengths)["total"]
    return sequence_flops(phase, s_cfg, None if VARIANT[variant].cache else t_cfg, lengths)["total"]


def recipe_schedule(train_rows: int, batch_size: int, dev_rows: int) -> dict:
    """Steps and evaluations of recipes/tinybert_sst2.toml, read from the recipe through the
    engine's loader (epochs, eval_every), counted as the training loop counts them."""
    from distill_engine.recipe import load_recipe

    recipe = load_recipe(ROOT / "recipes" / "tinybert_sst2.toml")
    phases = {p.name: p for p in recipe.phases}
    per_epoch = math.ceil(train_rows / batch_size)
    out = {"steps_per_epoch": per_epoch, "train_rows": train_rows, "dev_rows": dev_rows, "phases": {}}
    for name in ("teacher", "td1", "td2"):
        p = phases[name]
        steps = math.ceil(p.epochs * per_epoch)
        # the loop evaluates every eval_every steps before the last, then once at the end
        evals = (sum(1 for s in range(1, steps + 1) if p.eval_every and s % p.eval_every == 0 and s < steps) + 1)
        out["phases"][name] = {"epochs": p.epochs, "steps": steps, "eval_every": p.eval_every, "evals": evals}
    out["phases"]["eval"] = {"evals": 1}
    return out


# ---------------------------------------------------------------------------------------------


def units_of(phase: str, impls: list[str], variants: list[str]) -> list[tuple[str, str, str]]:
    """(implementation, variant, model) measured in `phase`; evaluation times the student and the teacher."""
    out = []
    for impl in impls:
        for v in VARIANTS:
            if v.name in variants and impl in v.impls and phase in v.phases:
                for model in (("student", "teacher") if phase == "eval" else ("teacher" if phase == "teacher" else "student",)):
                    out.append((impl, v.name, model))
    return out


def run_phase(phase: str, impls: list[str], variants: list[str], plan: dict, s: TSettings, log_dir: Path) -> dict:
    """Workers for `phase` (the hand-written one also measures the peak), set up, interleaved reps."""
    units = units_of(phase, impls, variants)
    say(f"{PHASE_TITLES[phase]}: starting workers {', '.join(impls)}")
    workers = {name: Worker(name, worker_main, (name, s), log_dir / f"{phase}-{name}.log") for name in impls}
    setup, info = {}, {}
    for name, w in workers.items():
        mine = sorted({v for i, v, _ in units if i == name}, key=[v.name for v in VARIANTS].index)
        if not w.hello.get("ok"):
            err = w.hello.get("error", "failed to start")
            say(f"  {name}: cannot start: {err}")
            setup[name] = {v: {"ok": False, "error": f"cannot start: {err}"} for v in mine}
            continue
        info[name] = w.hello["info"]
        if not mine:
            setup[name] = {}
            continue
        start = time.perf_counter()
        res = w.call(cmd="setup", phase=phase, variants=mine, plan=plan)
        if not res.get("ok"):
            setup[name] = {v: {"ok": False, "error": res.get("error", "setup failed")} for v in mine}
            say(f"  {name}: setup failed: {res.get('error')}")
            continue
        setup[name] = res["variants"]
        say(f"  {name}: {info[name].get('version')}: set up {len(mine)} variant(s) in {time.perf_counter() - start:.0f} s")
        for v, r in res["variants"].items():
            if r.get("ok"):
                first = r.get("first_step_s", {})
                say(f"    {v}: first step per shape " + json.dumps({k: ({a: round(b, 2) for a, b in x.items()} if
                                                                     isinstance(x, dict) else round(x, 2))
                                                                 for k, x in first.items()})
                    + (f"; cache pre-pass {r['prepass_s_per_batch'] * 1e3:.0f} ms/batch" if "prepass_s_per_batch" in r else ""))
            else:
                say(f"    {v}: ERROR {r.get('error', '').splitlines()[0] if r.get('error') else ''}")
    ok_units = [u for u in units if setup.get(u[0], {}).get(u[1], {}).get("ok")]
    times: dict = {u: [] for u in units}
    errors: dict = {}
    peaks, cores = [], {u: [] for u in units}
    for rep in range(s.reps):
        peak = None
        hw = workers.get(HANDWRITTEN)
        if hw is not None and hw.proc.is_alive():
            res = hw.call(cmd="peak", n=s.peak_n, repeats=s.peak_repeats)
            peak = res.get("gflops") if res.get("ok") else None
        peaks.append(peak)
        # the order of the units rotates from one repetition to the next
        order = ok_units[rep % len(ok_units):] + ok_units[:rep % len(ok_units)] if ok_units else []
        for u in order:
            res = workers[u[0]].call(cmd="time", variant=u[1], rep=rep, model=u[2])
            if res.get("ok"):
                times[u].append(res["times"])
                cores[u].append(res["cores_busy"])
            else:
                times[u].append(None)
                errors[u] = res.get("error")
        for u in units:
            if u not in ok_units:
                times[u].append(None)
        say(f"  rep {rep + 1}/{s.reps}: peak {peak or 0:.0f} GFLOP/s; s per rep: " + ", ".join(
            f"{u[0]} {u[1]}{'/' + u[2] if phase == 'eval' else ''} {sum(times[u][-1]):.2f}" if times[u][-1] else
            f"{u[0]} {u[1]} err" for u in order) + f"; load {os.getloadavg()[0]:.2f}")
    rss = {}
    for name, w in workers.items():
        rss[name] = common.WATCHDOG.peak_mb.get(w.proc.pid) if common.WATCHDOG else None
        w.close()
    return {"units": units, "setup": setup, "info": info, "times": times, "errors": errors, "peaks": peaks,
            "cores": cores, "rss_mb": rss}


def analyse(phase: str, g: dict, plan: dict, data: dict, s: TSettings, bs: Settings) -> list[dict]:
    rows = []
    rates: dict = {}  # unit -> per-rep samples/s
    for u in g["units"]:
        impl, variant, model = u
        st = g["setup"].get(impl, {}).get(variant, {})
        row = {"phase": phase, "implementation": impl, "variant": variant, "model": model, "ok": bool(st.get("ok"))}
        if not st.get("ok"):
            row["error"] = st.get("error", "not run")
            rows.append(row)
            continue
        per_rep = []
        for rep, t in enumerate(g["times"][u]):
            if t is None:
                per_rep.append(None)
                continue
            facts = batch_facts(phase, variant, plan["reps"][rep], data, s, model)
            wall = sum(t)
            flops = useful_flops(phase, variant, model, facts["lengths"], bs)
            peak = g["peaks"][rep]
            per_rep.append({"wall_s": wall, "steps": len(t), "step_s": t, "rows": facts["rows"],
                            "real_tokens": facts["real_tokens"], "padded_tokens": facts["padded_tokens"],
                            "shapes": facts["shapes"], "useful_gflop": flops / 1e9, "peak_gflops": peak,
                            "samples_per_s": facts["rows"] / wall, "real_tokens_per_s": facts["real_tokens"] / wall,
                            "padded_tokens_per_s": facts["padded_tokens"] / wall,
                            "efficiency": (flops / wall) / (peak * 1e9) if peak else None})
        good = [r for r in per_rep if r]
        if not good:
            row.update(ok=False, error=g["errors"].get(u, "no timing"))
            rows.append(row)
            continue
        rates[u] = [r["samples_per_s"] if r else None for r in per_rep]
        row.update({
            "reps_timed": len(good), "per_rep": per_rep,
            "samples_per_s": median([r["samples_per_s"] for r in good]),
            "real_tokens_per_s": median([r["real_tokens_per_s"] for r in good]),
            "padded_tokens_per_s": median([r["padded_tokens_per_s"] for r in good]),
            "padding_share": 1 - sum(r["real_tokens"] for r in good) / sum(r["padded_tokens"] for r in good),
            "efficiency": median([r["efficiency"] for r in good]),
            "useful_gflops_per_s": median([r["useful_gflop"] / r["wall_s"] for r in good]),
            "cores_busy": median(g["cores"][u]),
            "first_step_s": st.get("first_step_s"), "build_s": st.get("build_s"),
            "worker_peak_rss_mb": g["rss_mb"].get(impl),
        })
        if isinstance(row["first_step_s"], dict) and model in row["first_step_s"]:
            row["first_step_s"] = row["first_step_s"][model]
        for key in ("prepass_s_per_batch", "prepass_rows_per_s", "prepass_taps", "prepass_first_build_s", "prepass_rows",
                    "cache_bytes", "compiled_frames", "compile_wrap_s"):
            if key in st:
                row[key] = st[key]
        if g["errors"].get(u):
            row["timing_error"] = g["errors"][u]
        rows.append(row)

    def paired(u, ref, invert=False):
        a, b = rates.get(u), rates.get(ref)
        if not a or not b:
            return None
        return median([(y / x if invert else x / y) if (x and y) else None for x, y in zip(a, b)])

    for row in rows:
        if not row.get("ok"):
            continue
        u = (row["implementation"], row["variant"], row["model"])
        base_impl = "torch" if row["implementation"] == HANDWRITTEN else row["implementation"]
        if row["variant"] != "fixed-64":
            row["vs_fixed64"] = paired(u, (base_impl, "fixed-64", row["model"]))
        if row["implementation"] != HANDWRITTEN:
            row["vs_handwritten"] = paired(u, (HANDWRITTEN, "dynamic", row["model"]))
        if row["implementation"] not in ("torch", HANDWRITTEN):
            # time ratio: how many times longer the backend takes than torch on the same variant
            row["vs_torch_time"] = paired(u, ("torch", row["variant"], row["model"]), invert=True)
        twin = [v.name for v in VARIANTS if v.baseline_of == row["variant"]]
        ratio = paired(u, ("torch", twin[0], row["model"])) if twin and row["implementation"] == "torch" else None
        if ratio is not None:  # the new optimiser against the old one, same batches and repetition
            row["vs_loop_optimizer"] = ratio
        if row.get("variant") == "bucketed+compile":
            row["vs_bucketed"] = paired(u, ("torch", "bucketed", row["model"]))
            first = row.get("first_step_s") or {}
            steady = median([r["wall_s"] / r["steps"] for r in row["per_rep"] if r])
            row["compile_startup_s"] = sum(max(t - steady, 0.0) for t in first.values()) if first else None
    return rows


def find(rows, phase, impl, variant, model=None):
    for r in rows:
        if (r["phase"], r["implementation"], r["variant"]) == (phase, impl, variant) and \
                (model is None or r["model"] == model) and r.get("ok"):
            return r
    return None


def project(rows: list[dict], sched: dict, impl: str, config: dict) -> dict:
    """Wall time of the full recipe from measured rates. `config`: the variant per phase ("teacher",
    "td1", "td2", "eval") and whether the teacher-cache pre-pass is added."""
    parts, missing = {}, []
    n, dev = sched["train_rows"], sched["dev_rows"]
    for phase in ("teacher", "td1", "td2"):
        r = find(rows, phase, impl, config[phase])
        if r is None:
            missing.append(f"{phase} {config[phase]}")
            continue
        parts[phase] = sched["phases"][phase]["epochs"] * n / r["samples_per_s"]
    student_evals = sched["phases"]["td1"]["evals"] + sched["phases"]["td2"]["evals"] + sched["phases"]["eval"]["evals"]
    teacher_evals = sched["phases"]["teacher"]["evals"]
    for model, count in (("student", student_evals), ("teacher", teacher_evals)):
        r = find(rows, "eval", impl, config["eval"], model)
        if r is None:
            missing.append(f"eval {config['eval']} ({model})")
            continue
        parts[f"evaluation ({model}, {count} dev passes)"] = count * dev / r["samples_per_s"]
    for phase in config.get("prepass", ()):
        what = {"td1": "TD1 taps", "td2": "TD2 logits"}[phase]
        r = find(rows, phase, impl, config[phase])
        if r is None or "prepass_s_per_batch" not in r:
            missing.append(f"cache pre-pass ({what})")
            continue
        parts[f"teacher-cache pre-pass ({what})"] = sched["steps_per_epoch"] * r["prepass_s_per_batch"]
    return {"implementation": impl, "config": config, "parts_s": parts, "total_s": sum(parts.values()) if not missing
            else None, "missing": missing}


SCENARIOS = (
    ("today (torch, fixed-64, no cache, fp32)", "torch",
     {"teacher": "fixed-64", "td1": "fixed-64", "td2": "fixed-64", "eval": "fixed-64"}),
    ("after (torch, bucketed + cache, fp32)", "torch",
     {"teacher": "bucketed", "td1": "bucketed+cache", "td2": "bucketed+cache", "eval": "bucketed", "prepass": ("td1", "td2")}),
    # recipes/tinybert_sst2.toml as main has it now: bucketed batches, td1 with mask_padding = false
    # (so it cannot use the cache and runs its teacher every step), td2 reading cached logits
    ("recipe as it stands (torch, bucketed, TD2 cached)", "torch",
     {"teacher": "bucketed", "td1": "bucketed", "td2": "bucketed+cache", "eval": "bucketed", "prepass": ("td2",)}),
    ("after (torch, bucketed + cache + bf16)", "torch",
     {"teacher": "bucketed+cache+bf16", "td1": "bucketed+cache+bf16", "td2": "bucketed+cache+bf16", "eval": "bucketed",
      "prepass": ("td1", "td2")}),
    ("hand-written loop, dynamic padding", HANDWRITTEN,
     {"teacher": "dynamic", "td1": "dynamic", "td2": "dynamic", "eval": "dynamic"}),
    ("MindSpore today (fixed-64)", "mindspore",
     {"teacher": "fixed-64", "td1": "fixed-64", "td2": "fixed-64", "eval": "fixed-64"}),
    ("MindSpore after (bucketed + cache)", "mindspore",
     {"teacher": "bucketed", "td1": "bucketed+cache", "td2": "bucketed+cache", "eval": "bucketed", "prepass": ("td1", "td2")}),
)


def hms(seconds) -> str:
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def targets(rows: list[dict], projections: dict) -> list[dict]:
    out = []
    after = projections.get("after (torch, bucketed + cache, fp32)", {})
    bf16 = projections.get("after (torch, bucketed + cache + bf16)", {})
    total = after.get("total_s")
    detail = f"after, fp32: {hms(total)}" + (f" (missing: {', '.join(after.get('missing', []))})" if after.get("missing") else "")
    detail += f"; with bf16: {hms(bf16.get('total_s'))}" if bf16.get("total_s") else "; bf16: not measured"
    today = projections.get("today (torch, fixed-64, no cache, fp32)", {}).get("total_s")
    detail += f"; today: {hms(today)}"
    best = min([t for t in (total, bf16.get("total_s")) if t], default=None)
    out.append({"target": f"full SST-2 pipeline projected at or under {TARGET_HOURS:g} h with torch",
                "met": best is not None and best <= TARGET_HOURS * 3600, "detail": detail})
    r = find(rows, "td1", "torch", "bucketed")
    rc = find(rows, "td1", "torch", "bucketed+cache")
    ratio = r.get("vs_fixed64") if r else None
    detail = f"bucketed {ratio:.2f}x" if ratio else "bucketed: not measured"
    if rc and rc.get("vs_fixed64"):
        detail += f"; bucketed + cache {rc['vs_fixed64']:.2f}x"
    out.append({"target": f"bucketed at least {TARGET_BUCKETED_TD1:g}x faster than fixed-64 on TD1 (torch, samples/s)",
                "met": ratio is not None and ratio >= TARGET_BUCKETED_TD1, "detail": detail})
    eff = {}
    for phase, variant in (("teacher", "bucketed"), ("td1", "bucketed+cache"), ("td2", "bucketed+cache")):
        r = find(rows, phase, "torch", variant)
        eff[f"{phase} {variant}"] = r.get("efficiency") if r else None
    measured = {k: v for k, v in eff.items() if v is not None}
    out.append({"target": f"useful-token efficiency at least {TARGET_EFFICIENCY:.0%} of the GEMM peak in fp32 "
                          "(torch, the 'after' variant of every training phase)",
                "met": bool(measured) and len(measured) == len(eff) and min(measured.values()) >= TARGET_EFFICIENCY,
                "detail": ", ".join(f"{k}: {v:.1%}" if v is not None else f"{k}: not measured" for k, v in eff.items())})
    ms = [r for r in rows if r["implementation"] == "mindspore"]
    if ms:
        ratios = {f"{r['phase']} {r['variant']}{' (' + r['model'] + ')' if r['phase'] == 'eval' else ''}":
                  r.get("vs_torch_time") for r in ms}
        bad = [k for k, v in ratios.items() if v is None or v > TARGET_MS_VS_TORCH]
        out.append({"target": f"MindSpore within {TARGET_MS_VS_TORCH}x of torch on the same real-data phases "
                              "(time ratio, same variant)",
                    "met": not bad, "detail": ", ".join(f"{k}: {v:.2f}x" if v else f"{k}: not measured"
                                                        for k, v in ratios.items())})
    return out


def fmt(v, spec, empty="–"):
    return empty if v is None else format(v, spec)


def markdown(result: dict) -> str:
    s, m = result["settings"], result["machine"]
    peaks = [p for p in m["peak_gflops_per_rep"] if p]
    lines = [
        "# distill-engine real-data throughput (SST-2)", "",
        f"Command: `{result['command']}`  ",
        f"Date: {result['date']}; wall time {result['wall_s']:.0f} s  ",
        f"Machine: {m['cpu']}, {m['cores']} cores, {s['threads']} threads per framework; load average "
        f"{m['loadavg_start'][0]:.2f} at start, {m['loadavg_end'][0]:.2f} at end  ",
        f"float32 GEMM peak (torch.matmul {s['peak_n']}^2, at the start of every repetition): median "
        f"{fmt(median(peaks), '.1f')}, range {fmt(min(peaks, default=None), '.1f')}–{fmt(max(peaks, default=None), '.1f')} "
        "GFLOP/s  ",
        f"Data: SST-2 train ({result['schedule']['train_rows']} sentences) and dev ({result['schedule']['dev_rows']}), "
        f"max_seq_length {s['max_seq_length']}, batch {s['batch_size']} (evaluation {s['eval_batch_size']}); per "
        f"repetition {s['batches']} consecutive batches of the epoch (evaluation: one dev pass), {s['reps']} "
        "interleaved repetitions, medians; ratios paired within a repetition.", "",
        "| phase | implementation | variant | samples/s | real tokens/s | padded tokens/s | padding | vs fixed-64 "
        "| vs hand-written | vs torch (time) | useful GFLOP/s | efficiency | cores busy | first step per shape s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in result["results"]:
        phase = PHASE_TITLES[r["phase"]] + (f" ({r['model']})" if r["phase"] == "eval" else "")
        if not r.get("ok"):
            err = (r.get("error") or "").strip().splitlines()
            err = (err[-1] if err and err[-1].startswith(("NotImplementedError", "RuntimeError")) else
                   (err[0] if err else "")).replace("|", "/")[:220]
            lines.append(f"| {phase} | {r['implementation']} | {r['variant']} | error: {err} |" + " |" * 10)
            continue
        first = r.get("first_step_s") or {}
        first_txt = ", ".join(f"{k.strip('()').replace(', ', 'x')}: {v:.1f}" for k, v in first.items()) if isinstance(first, dict) else ""
        lines.append(
            f"| {phase} | {r['implementation']} | {r['variant']} | {r['samples_per_s']:.1f} | {r['real_tokens_per_s']:.0f} "
            f"| {r['padded_tokens_per_s']:.0f} | {r['padding_share']:.0%} | {fmt(r.get('vs_fixed64'), '.2f')} "
            f"| {fmt(r.get('vs_handwritten'), '.2f')} | {fmt(r.get('vs_torch_time'), '.2f')} "
            f"| {r['useful_gflops_per_s']:.1f} | {fmt(r.get('efficiency'), '.1%')} | {fmt(r.get('cores_busy'), '.2f')} "
            f"| {first_txt} |")
    lines += ["", "Teacher-cache pre-pass (distill_engine.teacher_cache.build_or_open over the timed rows, float16; "
              "the second of two builds, measured during set-up, not interleaved):", ""]
    for r in result["results"]:
        if r.get("ok") and "prepass_s_per_batch" in r:
            lines.append(f"- {r['implementation']} {PHASE_TITLES[r['phase']]} ({', '.join(r['prepass_taps'])}): "
                         f"{r['prepass_rows_per_s']:.0f} sentences/s ({r['prepass_s_per_batch'] * 1e3:.0f} ms per "
                         f"{s['batch_size']} sentences) over {r['prepass_rows']} sentences, "
                         f"{r['cache_bytes'] / r['prepass_rows'] / 1024:.0f} KiB per sentence on disk; first build "
                         f"(graph compilations included) {r['prepass_first_build_s']:.1f} s")
    comp = [r for r in result["results"] if r["variant"] == "bucketed+compile"]
    if comp:
        lines += ["", "torch.compile of the student (dynamic=True), against torch bucketed:", ""]
        for r in comp:
            if r.get("ok"):
                lines.append(f"- {PHASE_TITLES[r['phase']]}: {fmt(r.get('vs_bucketed'), '.2f')}x the samples/s of "
                             f"bucketed (paired per repetition); start-up (the first step of each batch shape less a "
                             f"steady step): {fmt(r.get('compile_startup_s'), '.0f')} s; dynamo frames "
                             f"{r.get('compiled_frames')}")
            else:
                lines.append(f"- {PHASE_TITLES[r['phase']]}: error: {(r.get('error') or '').strip().splitlines()[-1][:300]}")
    base = [r for r in result["results"] if r.get("vs_loop_optimizer")]
    if base:
        lines += ["", "The engine's optimiser (fused AdamW/BertAdam, foreach clipping; distill_engine_torch.optim) "
                  "against the per-tensor update before it (the \"+loop-opt\" variants, --optimizer-baseline), samples/s "
                  "paired per repetition:", ""]
        for r in base:
            lines.append(f"- torch {PHASE_TITLES[r['phase']]} {r['variant']}: {r['vs_loop_optimizer']:.2f}x")
    sched = result["schedule"]
    lines += ["", f"Projected wall time of recipes/tinybert_sst2.toml on this machine ({sched['steps_per_epoch']} steps "
              "per epoch; " + ", ".join(f"{k} {v['epochs']:g} epochs, {v['evals']} evaluation(s)"
                                                 for k, v in sched["phases"].items() if k != "eval")
              + ", 1 final evaluation), from the measured median rates:", "",
              "| scenario | teacher | TD1 | TD2 | evaluations | cache pre-pass | total |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, p in result["projections"].items():
        parts = p["parts_s"]
        ev = sum(v for k, v in parts.items() if k.startswith("evaluation"))
        pre = sum(v for k, v in parts.items() if k.startswith("teacher-cache"))
        total = hms(p["total_s"]) if p["total_s"] is not None else "incomplete: " + ", ".join(p["missing"])[:120]
        lines.append(f"| {name} | {hms(parts.get('teacher'))} | {hms(parts.get('td1'))} | {hms(parts.get('td2'))} "
                     f"| {hms(ev) if ev else '–'} | {hms(pre) if pre else '–'} | {total} |")
    lines += ["", "Targets:", ""]
    for t in result["targets"]:
        lines.append(f"- {'PASS' if t['met'] else 'MISS'}: {t['target']} ({t['detail']})")
    if result.get("notes"):
        lines += ["", "Notes:", ""] + [f"- {n}" for n in result["notes"]]
    lines += ["", "Columns: see benchmarks/README.md (\"Real-data throughput\"). vs fixed-64 and vs hand-written are "
              "samples/s ratios (above 1: faster); vs torch (time) is MindSpore's time over torch's on the same "
              "variant; efficiency = GEMM FLOPs of the real tokens per second / GEMM peak of the same repetition.", ""]
    return "\n".join(lines)


def notes(result: dict) -> list[str]:
    out = []
    m = result["machine"]
    if max(m["loadavg_start"][0], m["loadavg_end"][0]) > 0.5 * m["cores"]:
        out.append(f"The machine was busy (load average {m['loadavg_start'][0]:.1f} at start, {m['loadavg_end'][0]:.1f} "
                   "at end): absolute rates and efficiencies are noisy, ratios less so.")
    peaks = [p for p in m["peak_gflops_per_rep"] if p]
    if len(peaks) > 1 and max(peaks) > 1.5 * min(peaks):
        out.append(f"The GEMM peak varied from {min(peaks):.0f} to {max(peaks):.0f} GFLOP/s between repetitions.")
    if result.get("teacher_cache_source"):
        out.append(result["teacher_cache_source"])
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="about a minute: 2 batches, 1 rep, 1 thread, 1024^2 peak")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "throughput")
    p.add_argument("--backends", help="comma-separated engine backends (default: every installed one except numpy)")
    p.add_argument("--phases", help=f"comma-separated, from {', '.join(PHASES)}")
    p.add_argument("--variants", help=f"comma-separated, from {', '.join(v.name for v in VARIANTS)}")
    p.add_argument("--optimizer-baseline", action="store_true",
                   help="also time each torch training variant with the per-tensor optimiser of the engine before the "
                        "fused one (its \"+loop-opt\" twin) and report the ratio")
    p.add_argument("--reps", type=int, help="interleaved repetitions (default 3; 1 with --quick)")
    p.add_argument("--batches", type=int, help="consecutive batches timed per repetition (default 4; 2 with --quick)")
    p.add_argument("--warmup", type=int, help="extra untimed steps after one step per batch shape (default 2)")
    p.add_argument("--threads", type=int, help="torch threads, OMP/MKL_NUM_THREADS (default: all cores; 1 with --quick)")
    p.add_argument("--max-rss-gb", type=float, default=round(_mem_total_gb() * 0.5, 1),
                   help="stop a worker whose resident memory passes this (default: half the machine's memory)")
    p.add_argument("--render", type=Path, metavar="RESULTS_JSON",
                   help="measure nothing: recompute the projections and targets of an earlier results.json "
                        "(after a change to the scenarios) and rewrite it and its results.md")
    return p.parse_args(argv)


def render(path: Path) -> int:
    """Projections, targets and the table again from the measured rows of `path` (results.json)."""
    result = json.loads(path.read_text())
    rows, impls = result["results"], [HANDWRITTEN, *result["implementations"]]
    variants = sorted({r["variant"] for r in rows})
    result["projections"] = {name: project(rows, result["schedule"], impl, cfg) for name, impl, cfg in SCENARIOS
                             if impl in impls and all(cfg[p] in variants for p in ("teacher", "td1", "td2", "eval"))}
    result["targets"] = targets(rows, result["projections"])
    result["notes"] = notes(result)
    path.write_text(json.dumps(result, indent=2, default=str))
    (path.parent / "results.md").write_text(markdown(result))
    print(markdown(result))
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.render:
        return render(args.render)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    for path in (TRAIN, DEV, MINILM / "config.json"):
        if not path.is_file():
            raise SystemExit(f"error: {path} is missing: this benchmark needs the real SST-2 data and MiniLM "
                             "(see ../shared/data/README.md)")
    phases = [x.strip() for x in args.phases.split(",")] if args.phases else list(PHASES)
    # --quick leaves the torch.compile trial out unless --variants asks for it: compiling alone takes minutes
    variants = [x.strip() for x in args.variants.split(",")] if args.variants else \
        [v.name for v in VARIANTS if not (args.quick and v.compile) and not v.baseline_of]
    if args.optimizer_baseline:  # each chosen variant's old-optimiser twin, timed beside it
        variants += [v.name for v in VARIANTS if v.baseline_of in variants and v.name not in variants]
    for bad, allowed, what in ((set(phases) - set(PHASES), PHASES, "phase"),
                               (set(variants) - set(VARIANT), list(VARIANT), "variant")):
        if bad:
            raise SystemExit(f"error: unknown {what}(s) {', '.join(sorted(bad))}; choose from {', '.join(allowed)}")
    start_watchdog(args.max_rss_gb * 1024)
    started = time.perf_counter()
    out = args.out
    log_dir = fresh_log_dir(out)
    tmp = Path(tempfile.mkdtemp(prefix="distill-throughput-"))
    npz = tmp / "sst2.npz"
    threads = args.threads or (1 if args.quick else os.cpu_count() or 1)
    base = dict(reps=1, batches=2, warmup=0, peak_n=1024, peak_repeats=3) if args.quick else {}
    over = {k: v for k, v in (("reps", args.reps), ("batches", args.batches), ("warmup", args.warmup)) if v is not None}
    s = TSettings(data_npz=str(npz), threads=threads, minilm=str(MINILM), **{**base, **over})
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)  # inherited by every worker
    t0 = time.perf_counter()
    data = encode(npz, s.max_seq_length)
    say(f"encoded SST-2 train {len(data['train'])} / dev {len(data['dev'])} at {s.max_seq_length} in "
        f"{time.perf_counter() - t0:.1f} s; settings {attrs.asdict(s)}")
    wanted = [b.strip() for b in args.backends.split(",")] if args.backends else None
    backends, skipped = discover_backends(wanted)
    impls = [HANDWRITTEN, *backends]  # the hand-written worker always runs: it measures the peak
    bs = Settings(teachers=("minilm6",), minilm=str(MINILM))
    loadavg_start = os.getloadavg()
    rows, peaks, info, plans = [], [], {}, {}
    sched = recipe_schedule(len(data["train"]), s.batch_size, len(data["dev"]))
    for i, phase in enumerate(phases):
        plans[phase] = plan = plan_phase(phase, data, s)
        g = run_phase(phase, impls, variants, plan, s, log_dir)
        info.update(g["info"])
        peaks += g["peaks"]
        rows += analyse(phase, g, plan, data, s, bs)
        # the results so far are written after every phase: a run stopped later still leaves them
        write_results(out, dict(argv=argv, started=started, s=s, loadavg_start=loadavg_start, peaks=peaks, info=info,
                                skipped=skipped, plans=plans, sched=sched, rows=rows, impls=impls, variants=variants),
                      final=i == len(phases) - 1)
    npz.unlink(missing_ok=True)
    tmp.rmdir()
    say(f"wrote {out / 'results.json'} and {out / 'results.md'} in {time.perf_counter() - started:.0f} s")
    return 0


def write_results(out: Path, st: dict, final: bool) -> dict:
    """results.json and results.md from the rows measured so far (printed at the end of the run)."""
    argv, s, rows, impls, variants, sched = st["argv"], st["s"], st["rows"], st["impls"], st["variants"], st["sched"]
    loadavg_start, started, peaks, info, skipped, plans = (st["loadavg_start"], st["started"], st["peaks"], st["info"],
                                                            st["skipped"], st["plans"])
    projections = {name: project(rows, sched, impl, cfg) for name, impl, cfg in SCENARIOS
                   if impl in impls and all(cfg[p] in variants for p in ("teacher", "td1", "td2", "eval"))}
    result = {
        "command": " ".join([".venv/bin/python", "benchmarks/throughput.py", *(argv if argv is not None else sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "wall_s": time.perf_counter() - started,
        "settings": {k: v for k, v in attrs.asdict(s).items() if k != "data_npz"},
        "machine": {"cpu": _cpu_name(), "cores": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "loadavg_start": loadavg_start, "loadavg_end": os.getloadavg(),
                    "peak_gflops_per_rep": peaks},
        "implementations": info, "skipped_backends": skipped,
        "plans": {p: [{"start": r.get("start")} for r in pl["reps"]] for p, pl in plans.items()},
        "schedule": sched, "results": rows, "projections": projections,
        "teacher_cache_source": (
            "The cache variants build distill_engine.teacher_cache's on-disk float16 cache over the timed rows "
            "(graph with mask_padding = true, which the cache needs; trainer built with no teacher model, as the "
            "runner builds a cached phase) and read every timed batch's teacher outputs through "
            "TeacherCache.outputs inside the timed step; fixed-64 and bucketed run the recipe's mask_padding = false."),
    }
    result["targets"] = targets(rows, projections)
    result["notes"] = notes(result)
    for row in rows:  # lengths arrays are not JSON; shapes are tuples
        for r in row.get("per_rep", []) or []:
            if r:
                r["shapes"] = [list(x) for x in r["shapes"]]
    if final:
        prune_logs(out / "logs")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({**result, "complete": final}, indent=2, default=str))
    md = markdown(result)
    (out / "results.md").write_text(md if final else md + "\n(incomplete: the run is still going or was stopped)\n")
    if final:
        print(md)
    return result


if __name__ == "__main__":
    sys.exit(main())
