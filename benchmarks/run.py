"""Benchmark every installed backend against a hand-written PyTorch loop and the machine's GEMM peak.

    .venv/bin/python benchmarks/run.py                     # full: both teachers, batch 32, length 128
    .venv/bin/python benchmarks/run.py --quick             # CI: batch 4, length 64, MiniLM teacher only
    .venv/bin/python benchmarks/run.py --quick --backends torch --reps 1

Writes results.json and results.md to --out (default benchmarks/results). See benchmarks/README.md
for what each column means and how the peak and the FLOPs are computed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import sys
import time
from pathlib import Path

import attrs

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import (CTX, PHASE_TITLES, PHASES, TEACHERS, Case, Settings, Worker, _cpu_name, _mem_total_gb,  # noqa: E402
                    cases, discover_backends, fresh_log_dir, median, prune_logs, say, start_watchdog, student_config,
                    step_flops, teacher_config)
from workers import HANDWRITTEN, memory_main, worker_main  # noqa: E402

CHECK_TOLERANCE = 1e-3  # relative; float32 with a different order of operations agrees to ~1e-6

TARGET_VS_HAND = 0.95
TARGET_PEAK_FRACTION = 0.50
TARGET_MS_VS_TORCH = 1.5


def measure_memory(impl: str, key: str, settings: Settings, log_dir: Path) -> dict:
    conn, child = CTX.Pipe()
    proc = CTX.Process(target=memory_main, args=(child, impl, key, settings, 1, str(log_dir / f"memory-{impl}.log")),
                       daemon=True)
    proc.start()
    child.close()
    if common.WATCHDOG is not None:
        common.WATCHDOG.watch(proc.pid, f"{impl} memory probe")
    try:
        res = conn.recv()
    except (EOFError, ConnectionError):
        proc.join(5)
        res = {"ok": False, "error": common.WATCHDOG.reason(proc.pid, proc.exitcode) if common.WATCHDOG
               else "memory probe died"}
    proc.join(60)
    if common.WATCHDOG is not None:
        common.WATCHDOG.unwatch(proc.pid)
    return res


# ---------------------------------------------------------------------------------------------


def rel_diff(a: dict, b: dict) -> float | None:
    """Largest relative difference between two check results (loss terms, or logits)."""
    if not a or not b:
        return None
    worst = 0.0
    for k in set(a) & set(b):
        x, y = a[k], b[k]
        if isinstance(x, list):
            import numpy as np

            x, y = np.asarray(x), np.asarray(y)
            worst = max(worst, float(np.max(np.abs(x - y)) / max(float(np.max(np.abs(y))), 1e-12)))
        else:
            worst = max(worst, abs(x - y) / max(abs(y), 1e-12))
    return worst


def analyse(settings: Settings, impls: list[str], all_cases: list[Case], setup: dict, times: dict,
            peaks_by_case: dict, teacher_checks: dict, memory: dict) -> list[dict]:
    rows = []
    for impl in impls:
        for case in all_cases:
            key = case.key
            s = setup.get(impl, {}).get(key, {})
            row = {"implementation": impl, "case": key, "phase": case.phase, "teacher": case.teacher,
                   "ok": bool(s.get("ok")), "batch_size": settings.batch_size, "length": settings.length}
            if not s.get("ok"):
                row["error"] = s.get("error", "not run")
                rows.append(row)
                continue
            per_rep = [None if t is None else statistics.fmean(t) for t in times.get(impl, {}).get(key, [])]
            good = [t for t in per_rep if t is not None]
            if not good:
                row.update(ok=False, error=times.get("errors", {}).get((impl, key), "no timing"))
                rows.append(row)
                continue
            failed = [times.get("errors", {}).get((impl, key))] if len(good) < len(per_rep) else []
            row["reps_timed"] = len(good)
            if failed:
                row["timing_error"] = failed[0]
            med = statistics.median(good)
            s_cfg = student_config(case, settings)
            t_cfg = teacher_config(case.teacher, settings) if case.teacher else None
            flops = step_flops(case.phase, s_cfg, t_cfg, settings.batch_size, settings.length)
            row.update({
                "step_s_median": med, "step_s_min": min(good), "step_s_max": max(good), "step_s_per_rep": per_rep,
                "samples_per_s": settings.batch_size / med,
                "first_step_s": s["warmup_s"][0], "warmup_s": s["warmup_s"], "build_s": s.get("build_s"),
                "flops": flops, "gflops_per_s": flops["total"] / med / 1e9,
            })
            row["fraction_of_peak"] = median([
                (flops["total"] / t) / (p * 1e9) if (t and p) else None
                for t, p in zip(per_rep, peaks_by_case.get(key, []))])
            if impl != HANDWRITTEN and HANDWRITTEN in times and key in times[HANDWRITTEN]:
                hand = [None if t is None else statistics.fmean(t) for t in times[HANDWRITTEN][key]]
                row["ratio_vs_handwritten"] = median([h / t if (h and t) else None for h, t in zip(hand, per_rep)])
                ref = setup.get(HANDWRITTEN, {}).get(key, {}).get("check")
                if ref and s.get("check"):
                    row["check_rel_diff_vs_handwritten"] = rel_diff(s["check"], ref)
            if impl not in ("torch", HANDWRITTEN) and "torch" in times and key in times["torch"]:
                tor = [None if t is None else statistics.fmean(t) for t in times["torch"][key]]
                row["ratio_vs_torch_time"] = median([t / b if (t and b) else None for t, b in zip(per_rep, tor)])
            tc = teacher_checks.get((impl, key))
            if tc is not None:
                row["teacher_graph_free"] = tc.get("graph_free") if tc.get("ok") else None
                row["teacher_check_detail"] = tc.get("detail") or tc.get("error")
            m = memory.get((impl, key))
            if m is not None:
                if m.get("ok"):
                    row["peak_rss_mb"] = m["peak_rss_mb"]
                    row["memory"] = {k: v for k, v in m.items() if k != "ok"}
                else:
                    row["peak_rss_error"] = m.get("error")
            rows.append(row)
    return rows


def targets(rows: list[dict], impls: list[str]) -> list[dict]:
    out = []
    if "torch" in impls:
        torch_rows = [r for r in rows if r["implementation"] == "torch"]
        bad = [r for r in torch_rows if r.get("ratio_vs_handwritten") is None
               or r["ratio_vs_handwritten"] < TARGET_VS_HAND]
        ratios = [r["ratio_vs_handwritten"] for r in torch_rows if r.get("ratio_vs_handwritten") is not None]
        detail = (f"worst {min(ratios):.3f}x" if ratios else "no ratio measured") + (
            "; below target or not measured: " + ", ".join(
                f"{r['case']} ({r['ratio_vs_handwritten']:.3f}x)" if r.get("ratio_vs_handwritten") is not None
                else f"{r['case']} (n/a)" for r in bad) if bad else "")
        out.append({"target": f"PyTorch backend >= {TARGET_VS_HAND}x the hand-written loop on every phase",
                    "met": not bad and bool(torch_rows), "detail": detail})
        gd = [r for r in torch_rows if r["phase"] == "gd" and r["ok"]]
        if gd:
            fr = {r["case"]: r.get("fraction_of_peak") for r in gd}
            out.append({"target": f"PyTorch backend GD step >= {TARGET_PEAK_FRACTION:.0%} of the measured float32 GEMM peak",
                        "met": all((v or 0) >= TARGET_PEAK_FRACTION for v in fr.values()),
                        "detail": ", ".join(f"{k}: {v:.1%}" for k, v in fr.items() if v is not None)})
    tc = [r for r in rows if r["ok"] and r["phase"] != "eval" and r["implementation"] != HANDWRITTEN]
    if tc:
        out.append({"target": "The teacher's forward never records a graph for gradients (every backend, every phase)",
                    "met": all(r.get("teacher_graph_free") is True for r in tc),
                    "detail": ", ".join(f"{r['implementation']} {r['case']}: {r.get('teacher_graph_free')}" for r in tc)})
    for impl in impls:
        if impl in ("torch", HANDWRITTEN):
            continue
        mine = [r for r in rows if r["implementation"] == impl and r["phase"] != "eval"]
        if not mine:
            continue
        bad = [r for r in mine if not r["ok"] or (r.get("ratio_vs_torch_time") or 1e9) > TARGET_MS_VS_TORCH]
        detail = ", ".join(f"{r['case']}: {r['ratio_vs_torch_time']:.2f}x" if r.get("ratio_vs_torch_time") else
                           f"{r['case']}: not measured ({'error, see its row' if r.get('error') else 'n/a'})"
                           for r in mine)
        out.append({"target": f"{impl} backend step time within {TARGET_MS_VS_TORCH}x of the PyTorch backend",
                    "met": bool(mine) and not bad, "detail": detail})
    return out


def notes(result: dict) -> list[str]:
    """Warnings about the measurement itself (a busy machine, idle workers that were not idle)."""
    out = []
    s, m = result["settings"], result["machine"]
    busy = [r for r in result["results"] if r["ok"] and r.get("cores_busy") is not None
            and r["implementation"] in (HANDWRITTEN, "torch") and r["phase"] != "eval"]
    starved = [r for r in busy if r["cores_busy"] < 0.75 * s["threads"]]
    if starved or max(m["loadavg_start"][0], m["loadavg_end"][0]) > 0.5 * m["cores"]:
        rows_note = (f": {len(starved)} of {len(busy)} torch training rows ran with under {0.75 * s['threads']:.1f} "
                     f"of {s['threads']} cores busy" if busy else "")
        out.append(f"The machine was shared with other work (load average {m['loadavg_start'][0]:.1f} at start, "
                   f"{m['loadavg_end'][0]:.1f} at end, {m['cores']} cores){rows_note}. Absolute times and "
                   "fractions of peak are noisy; ratios are paired within a repetition and less affected."
                   + (" A torch step whose team of threads cannot all run at once stalls in OpenMP barriers and "
                      "runs several times slower than its share of the CPU would explain: compare the fastest "
                      "repetition (in brackets), or rerun on a quiet machine." if starved and s["threads"] > 1 else ""))
    peaks = [p for p in m["peak_gflops_per_rep"] if p]
    if len(peaks) > 1 and max(peaks) > 1.5 * min(peaks):
        out.append(f"The measured GEMM peak varied from {min(peaks):.0f} to {max(peaks):.0f} GFLOP/s between "
                   "repetitions (other work on the machine).")
    for r in result["results"]:
        timed = sum(t is not None for t in r.get("step_s_per_rep", []))
        if r.get("ok") and timed < len(r.get("step_s_per_rep", [])):
            out.append(f"{r['implementation']} {r['case']}: only {timed} of {len(r['step_s_per_rep'])} repetitions "
                       f"timed ({r.get('timing_error') or 'the worker stopped'}).")
    for name, info in result["implementations"].items():
        idle, wall = info.get("idle_workers_cpu_s_while_timed") or 0.0, info.get("timed_wall_s") or 0.0
        if wall and idle > 0.01 * wall:
            out.append(f"While {name} was timed, the idle workers used {idle:.1f} CPU s ({idle / wall:.1%} of its timed "
                       "wall time): they were not idle.")
    return out


def fmt(v, spec, empty="–"):
    return empty if v is None else format(v, spec)


def markdown(result: dict) -> str:
    s = result["settings"]
    m = result["machine"]
    lines = [
        "# distill-engine benchmark",
        "",
        f"Command: `{result['command']}`  ",
        f"Date: {result['date']}; wall time {result['wall_s']:.0f} s  ",
        f"Machine: {m['cpu']}, {m['cores']} cores, {s['threads']} threads per framework; load average "
        f"{m['loadavg_start'][0]:.2f} at start, {m['loadavg_end'][0]:.2f} at end  ",
        f"Measured float32 GEMM peak (torch.matmul {s['peak_n']}x{s['peak_n']}, median of {s['peak_repeats']} at the "
        f"start of every repetition): median {fmt(m['peak_gflops_median'], '.1f')} GFLOP/s, range "
        f"{fmt(min((p for p in m['peak_gflops_per_rep'] if p), default=None), '.1f')}–"
        f"{fmt(max((p for p in m['peak_gflops_per_rep'] if p), default=None), '.1f')} over "
        f"{len(m['peak_gflops_per_rep'])} repetitions  ",
        f"Shapes: batch {s['batch_size']}, length {s['length']}; student 4/312/12/1200; teachers "
        + ", ".join(f"{t} = {TEACHERS[t][4]}" for t in s["teachers"]) + f"; {s['reps']} interleaved repetitions "
        f"of {s['steps']} timed step(s) after {s['warmup']} warm-up step(s); medians over repetitions.",
        "",
        "| backend | teacher | phase | step ms median (min) | samples/s | vs hand-written | vs torch (time) "
        "| GFLOP/step | GFLOP/s | % of peak | cores busy | peak RSS MiB | first step s | teacher graph-free "
        "| same math as hand-written |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|:---:|",
    ]
    for r in result["results"]:
        phase = PHASE_TITLES[r["phase"]]
        teacher = r["teacher"] or "–"
        if not r["ok"]:
            err = (r.get("error") or "").splitlines()[0][:120].replace("|", "/")
            lines.append(f"| {r['implementation']} | {teacher} | {phase} | error: {err} |" + " |" * 11)
            continue
        rd = r.get("check_rel_diff_vs_handwritten")
        same = "–" if rd is None else (f"yes ({rd:.0e})" if rd <= CHECK_TOLERANCE else f"NO ({rd:.1e})")
        timed = sum(t is not None for t in r.get("step_s_per_rep", []))
        reps_note = f" [{timed}/{len(r['step_s_per_rep'])} reps]" if timed < len(r.get("step_s_per_rep", [])) else ""
        tg = r.get("teacher_graph_free")
        tg = "–" if r["phase"] == "eval" or (tg is None and "teacher_check_detail" not in r) else \
            {True: "yes", False: "NO", None: "?"}[tg]
        lines.append(
            f"| {r['implementation']} | {teacher} | {phase} | {r['step_s_median'] * 1e3:.0f} ({r['step_s_min'] * 1e3:.0f})"
            f"{reps_note} "
            f"| {r['samples_per_s']:.1f} | {fmt(r.get('ratio_vs_handwritten'), '.3f')} "
            f"| {fmt(r.get('ratio_vs_torch_time'), '.2f')} | {r['flops']['total'] / 1e9:.1f} | {r['gflops_per_s']:.1f} "
            f"| {fmt(r.get('fraction_of_peak'), '.1%')} | {fmt(r.get('cores_busy'), '.2f')} "
            f"| {fmt(r.get('peak_rss_mb'), '.0f')} | {r['first_step_s']:.1f} | {tg} | {same} |")
    if result.get("notes"):
        lines += ["", "Notes:", ""] + [f"- {n}" for n in result["notes"]]
    lines += ["", "Targets:", ""]
    for t in result["targets"]:
        lines.append(f"- {'MET' if t['met'] else 'MISSED'}: {t['target']} ({t['detail']})")
    if result["errors"]:
        lines += ["", "Errors:", ""]
        for name, err in result["errors"].items():
            lines.append(f"- {name}: {err.splitlines()[0] if err else ''}")
    lines += ["", "Columns: see benchmarks/README.md. \"vs hand-written\" = hand-written step time / backend step "
              "time, paired per repetition (>= 0.95 is the target); \"vs torch (time)\" = backend step time / "
              "PyTorch backend step time (<= 1.5 is the target); \"% of peak\" = (GEMM FLOPs per step / step time) / "
              "GEMM peak of the same repetition.", ""]
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Benchmark distill-engine backends against a hand-written PyTorch loop.")
    p.add_argument("--quick", action="store_true",
                   help="CI mode: batch 4, length 64, MiniLM teacher, 3 reps, 1 thread, no memory probes")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--backends", help="comma-separated backend names (default: every installed one except numpy)")
    p.add_argument("--teachers", help=f"comma-separated, from {', '.join(TEACHERS)}")
    p.add_argument("--phases", help=f"comma-separated, from {', '.join(PHASES)}")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--length", type=int)
    p.add_argument("--reps", type=int, help="interleaved repetitions (median reported)")
    p.add_argument("--steps", type=int, help="timed steps per implementation and case in each repetition")
    p.add_argument("--warmup", type=int, help="untimed steps before the first repetition (covers compilation)")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads for torch, OMP_NUM_THREADS for every worker (default: all cores; 1 with --quick)")
    p.add_argument("--memory", action=argparse.BooleanOptionalAction, default=None,
                   help="peak-RSS probes in fresh processes (default: on, off with --quick)")
    p.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                   help="compare each backend's no-dropout objective with the hand-written loop's")
    p.add_argument("--minilm", default=None, help="MiniLM directory (default ../shared/models/all-MiniLM-L6-v2)")
    p.add_argument("--fresh-workers", choices=("case", "run"), default=None,
                   help="start a fresh set of workers for every case (default) or once for the run (default with --quick)")
    p.add_argument("--max-rss-gb", type=float, default=round(_mem_total_gb() * 0.5, 1),
                   help="stop a worker whose resident memory passes this (default: half the machine's memory)")
    return p.parse_args(argv)


def settings_from(args) -> Settings:
    # --quick runs one thread per framework: on a shared CI runner an OpenMP team larger than the free
    # cores stalls in its barriers (a 16x slower step was measured on a busy 2-core machine)
    base = Settings(batch_size=4, length=64, teachers=("minilm6",), warmup=1, steps=2, reps=3, peak_n=1024,
                    peak_repeats=3, threads=1) if args.quick else Settings(threads=os.cpu_count() or 1)
    over = {}
    for field, value in (("batch_size", args.batch_size), ("length", args.length), ("reps", args.reps),
                         ("steps", args.steps), ("warmup", args.warmup), ("threads", args.threads),
                         ("minilm", args.minilm)):
        if value is not None:
            over[field] = value
    if args.teachers:
        over["teachers"] = tuple(t.strip() for t in args.teachers.split(",") if t.strip())
        unknown = set(over["teachers"]) - set(TEACHERS)
        if unknown:
            raise SystemExit(f"error: unknown teacher(s) {', '.join(sorted(unknown))}; choose from {', '.join(TEACHERS)}")
    if args.phases:
        over["phases"] = tuple(t.strip() for t in args.phases.split(",") if t.strip())
        unknown = set(over["phases"]) - set(PHASES)
        if unknown:
            raise SystemExit(f"error: unknown phase(s) {', '.join(sorted(unknown))}; choose from {', '.join(PHASES)}")
    over["check"] = args.check
    return attrs.evolve(base, **over)


def run_group(group: list[Case], backends: list[str], settings: Settings, log_dir: Path, errors: dict) -> dict:
    """Start a worker per implementation, build + check + warm up (+ probe the teacher) `group`, time
    it in interleaved repetitions, stop the workers."""
    keys = [c.key for c in group]
    impls, workers, setup, info = [], {}, {}, {}
    say(f"cases {', '.join(keys)}: starting workers {', '.join([HANDWRITTEN, *backends])}")
    started_workers = {name: Worker(name, worker_main, (name, settings), log_dir / f"worker-{name}.log")
                       for name in [HANDWRITTEN, *backends]}
    # 1. build, check, warm up (one worker after another)
    for name, w in started_workers.items():
        impls.append(name)
        if not w.hello.get("ok"):
            err = w.hello.get("error", "failed to start")
            say(f"{name}: cannot start: {err}")
            setup[name] = {k: {"ok": False, "error": f"cannot start: {err}"} for k in keys}
            w.close()
            continue
        info[name] = w.hello["info"]
        say(f"{name}: {info[name].get('version')}; building {len(keys)} cases, warm-up")
        res = w.call(cmd="setup", keys=keys)
        if not res.get("ok"):
            err = res.get("error", "setup failed")
            say(f"{name}: setup failed: {err}")
            setup[name] = {k: {"ok": False, "error": err} for k in keys}
            w.close()
            continue
        setup[name] = res["cases"]
        for key, r in res["cases"].items():
            if r.get("ok"):
                say(f"  {name} {key}: built in {r['build_s']:.1f} s, first step {r['warmup_s'][0]:.2f} s")
            else:
                say(f"  {name} {key}: ERROR {r.get('error')}")
        workers[name] = w

    # 2. interleaved repetitions: each measures the peak, then every case on every implementation in turn
    times: dict = {name: {k: [] for k in keys} for name in impls}
    times["errors"] = {}
    peaks: list = []
    idle_cpu = {name: 0.0 for name in impls}  # CPU the *other* workers used while `name` was timed
    timed_wall = {name: 0.0 for name in impls}
    cores_busy: dict = {name: {} for name in impls}
    for rep in range(settings.reps):
        peak = None
        if HANDWRITTEN in workers:
            res = workers[HANDWRITTEN].call(cmd="peak", n=settings.peak_n, repeats=settings.peak_repeats)
            peak = res.get("gflops") if res.get("ok") else None
        peaks.append(peak)
        line = []
        for case in group:
            order = impls[rep % len(impls):] + impls[:rep % len(impls)] if impls else []
            for name in order:
                if not setup[name].get(case.key, {}).get("ok"):
                    times[name][case.key].append(None)
                    continue
                others = [w for n, w in workers.items() if n != name]
                idle_before = sum(w.cpu_s() for w in others)
                res = workers[name].call(cmd="time", key=case.key, steps=settings.steps)
                idle_cpu[name] += sum(w.cpu_s() for w in others) - idle_before
                if res.get("ok"):
                    times[name][case.key].append(res["times"])
                    cores_busy[name].setdefault(case.key, []).append(res["cores_busy"])
                    timed_wall[name] += sum(res["times"])
                else:
                    times[name][case.key].append(None)
                    times["errors"][(name, case.key)] = res.get("error")
            line.append(case.key + " " + "/".join(
                f"{statistics.fmean(times[n][case.key][-1]) * 1e3:.0f}" if times[n][case.key][-1] else "err"
                for n in impls))
        say(f"rep {rep + 1}/{settings.reps}: peak {fmt(peak, '.1f')} GFLOP/s; ms/step ({'/'.join(impls)}): "
            + "; ".join(line) + f"; load {os.getloadavg()[0]:.2f}")

    # 3. whether the teacher recorded a graph (probed in the last warm-up step)
    teacher_checks = {(name, key): r["teacher_check"] for name in impls for key, r in setup[name].items()
                      if "teacher_check" in r}
    worker_rss = {name: workers[name].close().get("peak_rss_mb") if name in workers else None for name in impls}
    return {"impls": impls, "setup": setup, "info": info, "times": times, "peaks": peaks, "idle_cpu": idle_cpu,
            "timed_wall": timed_wall, "cores_busy": cores_busy, "teacher_checks": teacher_checks,
            "worker_rss": worker_rss}


def main(argv=None) -> int:
    args = parse_args(argv)
    settings = settings_from(args)
    # SIGTERM exits like Ctrl-C: multiprocessing then terminates the (daemonic) workers
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    start_watchdog(args.max_rss_gb * 1024)
    memory_on = args.memory if args.memory is not None else not args.quick
    started = time.perf_counter()
    out = args.out
    log_dir = fresh_log_dir(out)
    os.environ["OMP_NUM_THREADS"] = str(settings.threads)  # inherited by every worker
    os.environ["MKL_NUM_THREADS"] = str(settings.threads)

    wanted = [b.strip() for b in args.backends.split(",")] if args.backends else None
    backends, errors = discover_backends(wanted)
    all_cases = cases(settings)
    keys = [c.key for c in all_cases]
    loadavg_start = os.getloadavg()
    say(f"settings: {attrs.asdict(settings)}; backends: {', '.join(backends) or 'none'}; cases: {', '.join(keys)}")
    if loadavg_start[0] > 0.5 * (os.cpu_count() or 1):
        say(f"note: load average {loadavg_start[0]:.2f} on {os.cpu_count()} cores: other work is running, figures will be noisy")

    # 1-3 case by case, with fresh workers for each (full runs): only one case's models (and, for
    # MindSpore, its compiled graphs and memory pools) are in memory at a time. --quick keeps one set
    # of workers for every case (small models; saves the start-up of a set of workers per case).
    fresh = args.fresh_workers or ("run" if args.quick else "case")
    groups = [[c] for c in all_cases] if fresh == "case" else [all_cases]
    impls, setup, info, times, peaks_by_case, teacher_checks = [], {}, {}, {}, {}, {}
    idle_cpu, timed_wall, cores_busy, worker_rss, peaks, worker_rss_by_case = {}, {}, {}, {}, [], {}
    for group in groups:
        g = run_group(group, backends, settings, log_dir, errors)
        for name in g["impls"]:
            if name not in impls:
                impls.append(name)
            setup.setdefault(name, {}).update(g["setup"][name])
            if name in g["info"]:
                info[name] = g["info"][name]
            times.setdefault(name, {}).update(g["times"][name])
            cores_busy.setdefault(name, {}).update(g["cores_busy"][name])
            idle_cpu[name] = idle_cpu.get(name, 0.0) + g["idle_cpu"][name]
            timed_wall[name] = timed_wall.get(name, 0.0) + g["timed_wall"][name]
            worker_rss[name] = max(worker_rss.get(name) or 0.0, g["worker_rss"][name] or 0.0)
            for case in group:
                worker_rss_by_case[(name, case.key)] = g["worker_rss"][name]
        times.setdefault("errors", {}).update(g["times"]["errors"])
        teacher_checks.update(g["teacher_checks"])
        peaks += g["peaks"]
        for case in group:
            peaks_by_case[case.key] = g["peaks"]

    # 4. peak RSS, one fresh process per (implementation, case)
    memory = {}
    if memory_on:
        for name in impls:
            for case in all_cases:
                if setup[name].get(case.key, {}).get("ok"):
                    memory[(name, case.key)] = m = measure_memory(name, case.key, settings, log_dir)
                    say(f"memory {name} {case.key}: " + (f"peak RSS {m['peak_rss_mb']:.0f} MiB" if m.get("ok")
                                                         else f"ERROR {m.get('error')}"))

    rows = analyse(settings, impls, all_cases, setup, times, peaks_by_case, teacher_checks, memory)
    for row in rows:
        row["cores_busy"] = median(cores_busy.get(row["implementation"], {}).get(row["case"], []))
        # ru_maxrss of the timing worker: this case built, checked (no-dropout objective), warmed up, timed
        row["worker_peak_rss_mb"] = worker_rss_by_case.get((row["implementation"], row["case"]))
    result = {
        "command": " ".join([".venv/bin/python", "benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "wall_s": time.perf_counter() - started,
        "settings": attrs.asdict(settings),
        "memory_probes": memory_on,
        "max_rss_gb": args.max_rss_gb,
        "fresh_workers": fresh,
        "machine": {
            "cpu": _cpu_name(), "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "loadavg_start": loadavg_start, "loadavg_end": os.getloadavg(),
            "peak_gflops_per_rep": peaks, "peak_gflops_median": median(peaks),
            "peak_gflops_per_case_rep": peaks_by_case,
        },
        "implementations": {name: {**info.get(name, {}), "worker_peak_rss_mb": worker_rss.get(name),
                                   "idle_workers_cpu_s_while_timed": idle_cpu[name], "timed_wall_s": timed_wall[name]}
                            for name in impls},
        "errors": errors,
        "results": rows,
        "teacher_configs": {t: attrs.asdict(teacher_config(t, settings)) for t in settings.teachers},
    }
    result["targets"] = targets(rows, impls)
    result["notes"] = notes(result)
    prune_logs(log_dir)
    (out / "results.json").write_text(json.dumps(result, indent=2, default=str))
    (out / "results.md").write_text(markdown(result))
    print(markdown(result))
    say(f"wrote {out / 'results.json'} and {out / 'results.md'} in {result['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
