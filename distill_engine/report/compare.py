"""Several runs side by side: `distill-engine compare RUN_DIR RUN_DIR ... --output DIR`.

What one recipe gives on two backends, or an ablation against the full pipeline: each run's
teacher and student dev metric and their ratio, the recipe fields that differ between the runs,
each phase's steps, wall time and dev metrics, how
far each run's training loss is from the first run's at the steps both logged (the backends'
parity, step for step), and two kinds of picture: every dev evaluation of every run over the global
step, and each training phase's total loss, a line per run.

Like with like: every run is shown on one metric, the first run's first metric when every run
recorded it (else the first one they all recorded). Runs that share no metric (an MRPC run ranked
by F1 beside an SST-2 one by accuracy) are said to be so in one line; each row then shows its own
metric and no two metrics share an axis.

Reads the run directories only (`rundata.read_run`); writes DIR atomically. DIR must not exist or
must hold an earlier comparison (its `comparison.json`): a directory of anything else is never
replaced.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from distill_engine.fingerprint import flatten
from distill_engine.io import write_directory_atomically
from distill_engine.report.markdown import duration
from distill_engine.report.rundata import RunData, read_run
from distill_engine.rundir import RunDirError

COMPARE_FILE = "README.md"
# recipe fields that differ between any two runs and say nothing about them
RECIPE_NOISE = frozenset({"run.output_dir"})
MARKER = "comparison.json"


def _primary(dev: dict | None) -> str | None:
    """The first metric of a dev dict (the task's main one), without best_* and best_step."""
    return next((k for k in dev or {} if not k.startswith("best_") and k != "best_step"), None)


def _student(run: RunData) -> tuple[dict | None, str]:
    """The student's dev metrics and where they come from: the last evaluate phase that scored the
    student, else the manifest of the checkpoint the run has handed on so far (e.g. td1/final of a
    run still in td2)."""
    scored = [p for p in run.phases if p.kind == "evaluate" and p.target == "student" and p.dev]
    if scored:
        return scored[-1].dev, f"phase {scored[-1].name}"
    if run.student is not None:
        return run.student.dev, run.student.dev_from
    return None, ""


def _value(dev: dict | None, metric: str | None) -> float | None:
    value = (dev or {}).get(metric) if metric else None
    return float(value) if isinstance(value, (int, float)) else None


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _loss_gaps(reference: RunData, other: RunData) -> list[dict]:
    """Per training phase both runs logged: the relative gap |other - ref| / |ref| of the total loss
    at every step both logged (the largest, where, and the median)."""
    out = []
    for phase in reference.phases:
        if phase.kind == "evaluate":
            continue
        ref = reference.train_series(phase.name).get("total")
        oth = other.train_series(phase.name).get("total")
        if not ref or not oth:
            continue
        theirs = dict(zip(*oth))
        common = [(s, v, theirs[s]) for s, v in zip(*ref) if s in theirs and v != 0]
        if not common:
            continue
        gaps = np.array([abs(b - a) / abs(a) for _, a, b in common])
        worst = int(gaps.argmax())
        out.append({"phase": phase.name, "steps": len(common), "max_rel_gap": float(gaps[worst]),
                    "at_step": common[worst][0], "median_rel_gap": float(np.median(gaps)),
                    "last_step": common[-1][0], "last_rel_gap": float(gaps[-1])})
    return out


def _metrics_of(run: RunData) -> list[str]:
    """The dev metrics a run records, its first (the one it ranks checkpoints by) first."""
    student_dev, _ = _student(run)
    teacher_dev = run.teacher.dev if run.teacher is not None else None
    out: list[str] = []
    for dev in (student_dev, teacher_dev, *(p.dev for p in run.phases), *(e.metrics for e in run.evaluations)):
        out += [k for k in dev or {} if not k.startswith("best_") and k != "best_step" and k not in out]
    return out


def common_metric(runs: Sequence[RunData]) -> str | None:
    """The one metric every run is compared on: the first run's first metric if every run records
    it, else the first (in the first run's order) that every run records; None when the runs share
    none (then no score is compared across runs). Runs that record no metric at all are left out
    of the choice."""
    recorded = [m for m in (_metrics_of(run) for run in runs) if m]
    if not recorded:
        return None
    return next((m for m in recorded[0] if all(m in other for other in recorded[1:])), None)


def _baseline(run: RunData, metric: str | None) -> float | None:
    """The majority-class baseline's `metric` on the run's dev set (from the confusion matrix its
    last classified evaluation recorded); None without one, or for a metric that cannot score class
    ids."""
    counts = next((p.classes for p in reversed(run.phases) if p.classes is not None), None)
    if counts is None or metric is None:
        return None
    try:
        return counts.baseline([metric])[metric]
    except Exception:  # noqa: BLE001 (a plugin's metric of another kind, or one not registered here)
        return None


def _flat_recipe(run: RunData) -> dict:
    """The resolved recipe as dotted fields, phases by name ("phases.td2.optimizer.lr"), so that a
    phase added to one run does not shift every later phase's fields."""
    recipe = dict(run.recipe or {})
    phases = recipe.pop("phases", None) or []
    flat = flatten({**recipe, "phases": {str(p.get("name", i)): p for i, p in enumerate(phases)}})
    return {k: v for k, v in flat.items() if not k.endswith(".#") and k not in RECIPE_NOISE}


def recipe_differences(runs: Sequence[RunData], labels: Sequence[str]) -> list[dict] | None:
    """Every recipe field whose value is not the same in all runs: {"field", "values": {label: value
    or None when the run's recipe has no such field}}; [] when the recipes agree; None when fewer
    than two runs have a recipe.json (those without one are left out)."""
    flats = {label: _flat_recipe(run) for label, run in zip(labels, runs) if run.recipe is not None}
    if len(flats) < 2:
        return None
    fields: list[str] = []
    for flat in flats.values():
        fields += [k for k in flat if k not in fields]
    out = []
    for field in fields:
        values = {label: flat.get(field) for label, flat in flats.items()}
        if len({json.dumps(v, sort_keys=True) for v in values.values()}) > 1:
            out.append({"field": field, "values": values})
    return out


def summarize(runs: Sequence[RunData], labels: Sequence[str]) -> dict:
    """The comparison's numbers (also written as comparison.json)."""
    rows = []
    common = common_metric(runs)
    for label, run in zip(labels, runs):
        student_dev, source = _student(run)
        teacher_dev = run.teacher.dev if run.teacher is not None else None
        # like with like: every run on the common metric; without one, each on its own
        metric = common if common is not None else (_primary(student_dev) or _primary(teacher_dev))
        student, teacher = _value(student_dev, metric), _value(teacher_dev, metric)
        rows.append({"label": label, "path": str(run.path), "backend": run.backend, "status": run.status,
                     "metric": metric, "teacher": teacher, "student": student, "student_from": source,
                     "baseline": _baseline(run, metric),
                     "ratio": student / teacher if student is not None and teacher else None,
                     "steps": sum(p.steps for p in run.phases),
                     "wall_s": sum(p.wall_s for p in run.phases),
                     "phases": [{"name": p.name, "kind": p.kind, "status": p.status, "steps": p.steps,
                                 "wall_s": p.wall_s, "dev": p.dev} for p in run.phases]})
    gaps = {label: _loss_gaps(runs[0], run) for label, run in zip(labels[1:], runs[1:])}
    own = {label: (_metrics_of(run) or [None])[0] for label, run in zip(labels, runs)}
    return {"format": "distill-engine-comparison", "reference": labels[0], "metric": common,
            "ranked_by": own, "runs": rows, "loss_gaps": gaps,
            "recipe_differences": recipe_differences(runs, labels)}


def _metric_lines(summary: dict) -> list[str]:
    """What the runs are compared on, in one line (two when a run ranks by another metric)."""
    common, own = summary["metric"], {k: v for k, v in summary["ranked_by"].items() if v is not None}
    if not own:
        return ["No run recorded a dev metric."]
    if common is None:
        return ["**The runs are scored by different metrics, none recorded by all** ("
                + "; ".join(f"`{label}`: {metric}" for label, metric in own.items())
                + "): each row shows its run's own metric, and no score is compared across runs (the dev "
                  "picture gives each metric its own panel)."]
    lines = [f"Every run is compared on **{common}**."]
    other = [f"`{label}` ranks its checkpoints by {metric}" for label, metric in own.items() if metric != common]
    if other:
        lines[0] += (f" ({'; '.join(other)}: the {common} it also recorded is shown, so like is compared with "
                     "like.)")
    return lines


def _recipe_lines(summary: dict) -> list[str]:
    diffs, labels = summary["recipe_differences"], [r["label"] for r in summary["runs"]]
    if diffs is None:
        return ["Fewer than two of the runs have a `recipe.json`: no recipe differences to show."]
    if not diffs:
        return ["The runs' recipes are the same (`recipe.json`, `run.output_dir` aside)."]
    shown = [label for label in labels if label in diffs[0]["values"]]
    lines = ["The recipe fields whose values differ (`recipe.json`: resolved, defaults filled in; "
             "`run.output_dir` left out; - : the run's recipe has no such field).", "",
             "| field | " + " | ".join(f"`{label}`" for label in shown) + " |", "|---|" + "---|" * len(shown)]
    for d in diffs:
        lines.append(f"| `{d['field']}` | " + " | ".join(_show(d["values"].get(label)) for label in shown) + " |")
    return lines


def _show(value) -> str:
    if value is None:
        return "-"
    text = json.dumps(value)
    return (text if len(text) <= 60 else text[:57] + "...").replace("|", "\\|")


def _markdown(summary: dict, pictures: list[tuple[str, str]], picture_note: str) -> str:
    rows = summary["runs"]
    lines = ["# Runs compared", "",
             "Written by `distill-engine compare`: " + ", ".join(f"`{r['label']}` ({r['path']})" for r in rows) + ".",
             "", *_metric_lines(summary), "", "| run | backend | status | metric | teacher | student (scored by) | "
             "student / teacher | majority-class baseline | steps | wall time |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio = "-" if r["ratio"] is None else f"{100 * r['ratio']:.1f} %"
        student = _cell(r["student"]) + (f" ({r['student_from']})" if r["student"] is not None else "")
        lines.append(f"| {r['label']} | {r['backend'] or '?'} | {r['status']} | {r['metric'] or '-'} | "
                     f"{_cell(r['teacher'])} | {student} | {ratio} | {_cell(r['baseline'])} | {r['steps']:,} | "
                     f"{duration(r['wall_s'])} |")
    names = []
    for r in rows:
        names += [p["name"] for p in r["phases"] if p["name"] not in names]
    lines += ["", "## Phases", "", "Steps, wall time and dev metrics at the phase's end (best_* where the best was kept).",
              "", "| phase | " + " | ".join(r["label"] for r in rows) + " |", "|---|" + "---|" * len(rows)]
    for name in names:
        cells = []
        for r in rows:
            p = next((p for p in r["phases"] if p["name"] == name), None)
            if p is None or p["status"] == "not run":
                cells.append("-" if p is None else "not run")
                continue
            metric = summary["metric"] if summary["metric"] in (p["dev"] or {}) else _primary(p["dev"])
            dev = f", {metric} {p['dev'][metric]:.4f}" if metric else ""
            best = (p["dev"] or {}).get(f"best_{metric}")
            best_text = f" (best {best:.4f} at {p['dev'].get('best_step')})" if isinstance(best, float) else ""
            status = "" if p["status"] == "finished" else f", {p['status']}"
            cells.append(f"{p['steps']:,} steps, {duration(p['wall_s'])}{dev}{best_text}{status}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "## Recipe differences", "", *_recipe_lines(summary)]
    if summary["loss_gaps"]:
        lines += ["", f"## Training loss against `{summary['reference']}`", "",
                  "The relative gap |run - reference| / |reference| of the total loss at every step both logged.",
                  "", "| run | phase | steps compared | median gap | largest gap (step) | gap at the last step |",
                  "|---|---|---:|---:|---:|---:|"]
        for label, gaps in summary["loss_gaps"].items():
            if not gaps:
                lines.append(f"| {label} | - | 0 | - | - | - |")
            for g in gaps:
                lines.append(f"| {label} | {g['phase']} | {g['steps']:,} | {100 * g['median_rel_gap']:.2f} % | "
                             f"{100 * g['max_rel_gap']:.2f} % ({g['at_step']:,}) | "
                             f"{100 * g['last_rel_gap']:.2f} % ({g['last_step']:,}) |")
    if pictures or picture_note:
        lines += ["", "## Pictures", ""]
        lines += [f"![{caption}]({name})\n" for name, caption in pictures]
        if picture_note:
            lines.append(picture_note)
    return "\n".join(lines) + "\n"


def _draw(runs: Sequence[RunData], labels: Sequence[str], directory: Path) -> list[tuple[str, str]]:
    from distill_engine.report.plots import LOG_SPAN, SMOOTH_ABOVE, _figure, _moving_average

    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray"]
    out = []
    # like with like: one axis for the common metric; without one, a panel per metric, so that
    # no two metrics ever share an axis
    common = common_metric(runs)
    chosen = {label: common or (_metrics_of(run) or [None])[0] for label, run in zip(labels, runs)}
    panels = [m for m in dict.fromkeys(chosen.values()) if m is not None]
    if panels:
        figure = _figure(9.0, 4.2 * len(panels))
        axes = figure.subplots(len(panels), 1, squeeze=False).ravel()
    drawn = set()
    for k, (label, run) in enumerate(zip(labels, runs)):
        color = colors[k % len(colors)]
        dev, source = _student(run)
        metric = chosen[label]
        if metric is None:
            continue
        ax = axes[panels.index(metric)]
        points = [(e.global_step, e.metrics[metric]) for e in run.evaluations if metric in e.metrics]
        if points:
            x, y = zip(*points)
            ax.plot(x, y, marker="o", markersize=3, linewidth=1.2, color=color, label=label)
            drawn.add(metric)
        final = _value(dev, metric) if source.startswith("phase ") else None  # a final score, not td1's
        if final is not None:
            ax.plot([sum(p.steps for p in run.phases)], [final], marker="*", markersize=11, color=color,
                    linestyle="none")
            drawn.add(metric)
    if drawn:
        for ax, metric in zip(axes, panels):
            ax.set_title(f"Dev {metric} of each run (stars: the student's final score)", fontsize=11)
            ax.set_xlabel("global step (the steps of all phases, in order)")
            ax.set_ylabel(f"dev {metric}")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8, loc="best")
        figure.savefig(directory / "dev.png")
        out.append(("dev.png", "Dev evaluations of each run"))
    names = []
    for run in runs:
        names += [p.name for p in run.phases if p.kind != "evaluate" and p.name not in names]
    for name in names:
        series = [(label, run.train_series(name).get("total")) for label, run in zip(labels, runs)]
        series = [(label, s, colors[k % len(colors)]) for k, (label, s) in enumerate(series) if s]
        if not series:
            continue
        figure = _figure(9.0, 4.0)
        ax = figure.subplots()
        for label, (steps, values), color in series:
            x, y = np.asarray(steps), np.asarray(values, np.float64)
            if len(x) > SMOOTH_ABOVE:
                y = _moving_average(y, max(3, len(x) // 25))
            ax.plot(x, y, color=color, linewidth=1.3, label=label)
        positive = [v for _, (_, values), _ in series for v in values if v > 0]
        if positive and max(positive) / min(positive) >= LOG_SPAN:  # the run report's rule for its panels
            ax.set_yscale("log")
        ax.set_title(f"Phase {name}: total training loss of each run"
                     + (" (moving averages)" if any(len(s[1][0]) > SMOOTH_ABOVE for s in series) else ""), fontsize=11)
        ax.set_xlabel("step (in this phase)")
        ax.set_ylabel("loss")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        figure.savefig(directory / f"losses-{name}.png")
        out.append((f"losses-{name}.png", f"Phase {name}: total training loss of each run"))
    return out


def _labels(run_dirs: Sequence[Path], labels: Sequence[str] | None) -> list[str]:
    if labels:
        if len(labels) != len(run_dirs):
            raise RunDirError(f"{len(labels)} --label value(s) for {len(run_dirs)} run directories; give one a run "
                              "or none")
        out = list(labels)
    else:
        out = [Path(d).resolve().name for d in run_dirs]
    seen = set()
    for label in out:
        if label in seen:
            raise RunDirError(f"two runs are labelled {label!r}; name them with --label (one a run, in order)")
        seen.add(label)
    return out


def write_comparison(run_dirs: Sequence[Path], output: Path, labels: Sequence[str] | None = None
                     ) -> tuple[Path, list[str]]:
    """Compare the runs in `run_dirs` (the first is the reference of the loss gaps) into `output`;
    returns the Markdown file and the warnings to show. Bad input is a RunDirError before anything
    is written."""
    from distill_engine.report import NO_MATPLOTLIB

    run_dirs = [Path(d) for d in run_dirs]
    if len(run_dirs) < 2:
        raise RunDirError("compare needs two run directories or more")
    resolved = [d.resolve() for d in run_dirs]
    if len(set(resolved)) != len(resolved):
        raise RunDirError("the same run directory is given twice")
    names = _labels(run_dirs, labels)
    runs = [read_run(d) for d in run_dirs]
    output = Path(output)
    if output.exists() and not (output / MARKER).is_file():
        raise RunDirError(f"{output} exists and holds no earlier comparison ({MARKER}); it is not replaced: "
                          "give --output a new directory")
    if any(output.resolve() == d for d in resolved):
        raise RunDirError(f"{output} is one of the runs compared; give --output a directory of its own")
    summary = summarize(runs, names)
    warnings: list[str] = []

    def fill(tmp: Path) -> None:
        note = ""
        try:
            pictures = _draw(runs, names, tmp)
        except ImportError:
            pictures, note = [], NO_MATPLOTLIB + "."
            warnings.append(NO_MATPLOTLIB)
        (tmp / COMPARE_FILE).write_text(_markdown(summary, pictures, note), encoding="utf-8")
        (tmp / MARKER).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")

    try:
        path = write_directory_atomically(output, fill)
    except OSError as exc:
        raise RunDirError(f"{output}: cannot write the comparison ({exc.strerror or exc})") from None
    return path / COMPARE_FILE, warnings
