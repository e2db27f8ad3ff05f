"""The run report's Markdown: teacher and student side by side, each phase's steps, wall time and
dev metrics, the pictures, the backend and versions, and the resolved recipe."""

from __future__ import annotations

import datetime
import json

from distill_engine.fingerprint import flatten
from distill_engine.report.models import ModelFacts
from distill_engine.report.plots import CONFUSION_PICTURE
from distill_engine.report.rundata import RunData
from distill_engine.tasks.classes import ClassCounts, warnings
from distill_engine.teacher_cache import human_bytes


def duration(seconds: float | None) -> str:
    """1:02:03, 2:03 or 4.2 s."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _metrics(dev: dict | None) -> str:
    if not dev:
        return "-"
    shown = []
    for key, value in dev.items():
        if key == "best_step":
            continue
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        if key.startswith("best_") and "best_step" in dev:
            text += f" (step {dev['best_step']})"
        shown.append(f"{key} {text}")
    return ", ".join(shown)


def _when(stamp) -> str:
    if not isinstance(stamp, (int, float)):
        return "-"
    return datetime.datetime.fromtimestamp(stamp, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _ratio(student, teacher, fmt: str = "{:.2f}x") -> str:
    return f" ({fmt.format(student / teacher)})" if student and teacher else ""


def _baseline(counts: ClassCounts, metrics: list[str]) -> dict[str, float]:
    """The majority-class baseline of each metric that scores class ids (a plugin's metric that
    cannot is left out)."""
    out = {}
    for metric in metrics:
        try:
            out.update(counts.baseline([metric]))
        except Exception:  # noqa: BLE001 (not a class-id metric, or not registered here)
            continue
    return out


def _models_table(facts: dict[str, ModelFacts], speeds: dict, speed_note: str, phases=()) -> list[str]:
    teacher, student = facts.get("teacher"), facts.get("student")
    if teacher is None and student is None:
        return ["No teacher or student checkpoint yet."]

    def cell(role, fn):
        fact = facts.get(role)
        return "-" if fact is None else fn(fact)

    def shape(f: ModelFacts) -> str:
        c = f.config
        return "-" if c is None else (f"{c.num_hidden_layers} layers, {c.hidden_size} wide, "
                                      f"{c.num_attention_heads} heads, FFN {c.intermediate_size}")

    def params(f: ModelFacts) -> str:
        if f.parameters is None:
            return "-"
        text = f"{f.parameters:,}"
        if f.ref.role == "student" and teacher is not None and teacher.parameters:
            text += _ratio(f.parameters, teacher.parameters)
        return text

    def size(f: ModelFacts) -> str:
        text = "-" if f.weights_bytes is None else human_bytes(f.weights_bytes)
        if f.ref.role == "student" and teacher is not None:
            text += _ratio(f.weights_bytes, teacher.weights_bytes)
        return text + (f" (`{f.weights_file.name}`)" if f.weights_file is not None else "")

    def speed(role, key, fmt) -> str:
        s = speeds.get(role)
        if s is None:
            return "-"
        text = fmt.format(s[key])
        other = speeds.get("teacher")
        if role == "student" and other:
            text += _ratio(s[key], other[key])
        return text

    metrics = []
    for fact in (teacher, student):
        for key in (fact.ref.dev or {}) if fact is not None else ():
            if key not in metrics:
                metrics.append(key)
    def label(f: ModelFacts) -> str:
        return f"`{f.ref.label}`"

    lines = ["| | teacher | student |", "|---|---|---|",
             f"| checkpoint | {cell('teacher', label)} | {cell('student', label)} |",
             f"| shape | {cell('teacher', shape)} | {cell('student', shape)} |",
             f"| parameters | {cell('teacher', params)} | {cell('student', params)} |",
             f"| weights on disk | {cell('teacher', size)} | {cell('student', size)} |"]
    for metric in metrics:
        def value(f, metric=metric):
            v = (f.ref.dev or {}).get(metric)
            return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)
        lines.append(f"| dev {metric} | {cell('teacher', value)} | {cell('student', value)} |")
    if not metrics:
        lines.append("| dev metrics | not evaluated | not evaluated |")
    counts = next((p.classes for p in reversed(phases) if p.classes is not None), None)
    if counts is not None and metrics:
        base = _baseline(counts, metrics)
        for metric, value in base.items():  # the same dev set for both: one baseline
            lines.append(f'| dev {metric} of always "{counts.labels[counts.majority]}" (majority-class baseline) | '
                         f"{value:.4f} | {value:.4f} |")
    lines.append(f"| inference speed (sentences/s) | {speed('teacher', 'sentences_per_s', '{:,.0f}')} | "
                 f"{speed('student', 'sentences_per_s', '{:,.0f}')} |")
    lines.append(f"| ms per batch | {speed('teacher', 'ms_per_batch', '{:.1f}')} | "
                 f"{speed('student', 'ms_per_batch', '{:.1f}')} |")
    notes = [""] + (["Ratios in brackets are the student's over the teacher's."] if teacher and student else [])
    for fact in (teacher, student):
        if fact is None:
            continue
        if fact.ref.dev_from:
            notes.append(f"The {fact.ref.role}'s dev metrics are those of {fact.ref.dev_from}.")
        if fact.training_only:
            notes.append(f"The {fact.ref.role}'s parameters leave out its projection to the teacher's width "
                         f"(`fit_dense`, {fact.training_only:,} parameters), which only distillation uses; "
                         "the weights file holds it.")
        if fact.note:
            notes.append(f"The {fact.ref.role}: {fact.note}.")
    notes.append(f"Inference speed: {speed_note}.")
    return lines + notes


def _phases_table(run: RunData) -> list[str]:
    lines = ["| phase | kind | status | steps | wall time | dev metrics (at the end) |", "|---|---|---|---:|---:|---|"]
    for p in run.phases:
        kind = p.kind + (f" ({p.target})" if p.kind == "evaluate" else "")
        lines.append(f"| {p.name} | {kind} | {p.status} | {p.steps} | "
                     f"{duration(p.wall_s) if p.status != 'not run' else '-'} | {_metrics(p.dev)} |")
    total = sum(p.wall_s for p in run.phases)
    lines.append(f"| **total** | | | {sum(p.steps for p in run.phases)} | {duration(total)} | |")
    notes = ["", "Wall time: the time between a phase's records in `metrics.jsonl` (building models, teacher-output "
             "caches, evaluations and run states included; the pauses between an interruption and its resume left "
             "out)."]
    counts = next((p for p in run.phases if p.classes is not None), None)
    if counts is not None:
        base = _baseline(counts.classes, counts.metric_names)
        if base:
            notes.append(f'The majority-class baseline (always "{counts.classes.labels[counts.classes.majority]}") '
                         f"scores {', '.join(f'{k} {v:.4f}' for k, v in base.items())} on this dev set.")
    skipped = [p.name for p in run.phases if p.status == "finished" and p.kind in UNTRAINED_HEAD and not p.dev]
    if skipped and any(p.dev for p in run.phases):
        notes.append(f"Not evaluated: {', '.join(skipped)} (a phase that does not train the prediction layer leaves "
                     "the classifier untrained, so its dev metrics would mean nothing).")
    if run.unattributed_s >= 1:
        notes.append(f"Outside the phases (e.g. data augmentation): {duration(run.unattributed_s)}.")
    for p in run.phases:
        s = p.early_stop
        if s:
            notes.append(f"Early stopping ended {p.name} at step {s.get('step')} of {s.get('total')}: dev "
                         f"{s.get('metric')} had not improved on {s.get('best', float('nan')):.4f} (step "
                         f"{s.get('best_step')}) for {s.get('patience')} evaluations (early_stopping_patience).")
    return lines + notes


def _environment(run: RunData) -> list[str]:
    info = run.info
    versions = dict(info.get("versions") or {})
    start = next((r for r in run.records if r["event"] == "start"), {})
    versions.setdefault("backend", start.get("backend_version", "-"))
    rows = [("backend", f"{run.backend or '-'} {versions.get('backend', '')}".strip()),
            ("device", start.get("device", (run.recipe or {}).get("run", {}).get("device", "-"))),
            ("processes", start.get("processes", 1)), ("python", versions.get("python", "-")),
            ("numpy", versions.get("numpy", "-")), ("platform", versions.get("platform", "-")),
            ("resumes", sum(r["event"] == "resume" for r in run.records)),
            ("command", f"`distill-engine {' '.join(info['command'])}`" if info.get("command") else "-")]
    lines = ["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    if not info.get("versions"):
        lines += ["", "(This run's `run.json` predates the versions record: the backend's version is the start "
                      "record's; the others are unknown.)"]
    return lines


def _recipe(run: RunData) -> list[str]:
    if run.recipe is None:
        return ["No `recipe.json` in the run directory."]
    flat = flatten({**{k: v for k, v in run.recipe.items() if k != "phases"}, "phases": run.recipe.get("phases", [])})
    body = "\n".join(f"{key} = {json.dumps(value)}" for key, value in flat.items() if not key.endswith(".#"))
    return ["The resolved recipe (`recipe.json`: every field, defaults filled in, paths absolute):", "",
            "<details><summary>recipe</summary>", "", "```", body, "```", "", "</details>"]


# phase kinds that never train the prediction layer with the built-in losses: not evaluated
UNTRAINED_HEAD = ("general_distill", "task_distill_intermediate")


def degenerate_warnings(run: RunData) -> list[str]:
    """One sentence per evaluation whose model looks degenerate (`tasks.classes.warnings`), as the
    run's output printed them."""
    out = []
    for p in run.phases:
        if p.classes is None:
            continue
        why = warnings(p.classes, p.dev, p.metric_names)
        if why:
            out.append(f"[{p.name}] the {p.model} looks degenerate: {'; '.join(why)}")
    return out


def _by_class(run: RunData, pictures: list[tuple[str, str]]) -> list[str]:
    evaluated = [p for p in run.phases if p.classes is not None]
    if not evaluated:
        return []
    out = ["## Dev results by class", "",
           "Each evaluation a phase ended with (of the checkpoint it handed on), class by class: precision, recall "
           "and F1 of the class, its dev examples (gold) and how often the model predicted it."]
    for p in evaluated:
        best = (p.dev or {}).get("best_step")
        what = f"the {p.model}" + (f", its best checkpoint (step {best})" if best is not None else "")
        out += ["", f"**{p.name}** ({what}):", "", "| class | precision | recall | F1 | gold | predicted |",
                "|---|---:|---:|---:|---:|---:|"]
        for c in p.classes.per_class():
            out.append(f"| {c['label']} | {c['precision']:.4f} | {c['recall']:.4f} | {c['f1']:.4f} | "
                       f"{c['support']:,} | {c['predicted']:,} |")
    if any(name == CONFUSION_PICTURE for name, _ in pictures):
        out += ["", f"![Confusion matrices]({CONFUSION_PICTURE})"]
    return out + [""]


def render(run: RunData, facts: dict[str, ModelFacts], speeds: dict, speed_note: str,
           pictures: list[tuple[str, str]], picture_note: str) -> str:
    """The whole report/README.md."""
    info = run.info
    last = run.records[-1].get("time") if run.records else None
    out = [f"# Run report: {run.path.name}", "",
           f"Run `{info.get('id', '-')}`, status **{run.status}**, backend {run.backend or '-'}, seed "
           f"{info.get('seed', '-')}, started {_when(info.get('created'))}; last record {_when(last)}. "
           "Written by `distill-engine report` from the run directory.", ""]
    if run.status != "finished":
        out += [f"The run is not finished (status {run.status}{': ' + info['error'] if info.get('error') else ''}): "
                "this report covers the phases and steps it logged so far.", ""]
    if run.damaged_lines:
        out += [f"`metrics.jsonl` has {run.damaged_lines} line(s) that are not whole records (skipped).", ""]
    for warning in degenerate_warnings(run):
        out += [f"> **Warning:** {warning}.", ""]
    out += ["## Teacher and student", "", *_models_table(facts, speeds, speed_note, run.phases), "",
            "## Phases", "", *_phases_table(run), "", *_by_class(run, pictures), "## Pictures", ""]
    shown = [(name, caption) for name, caption in pictures if name != CONFUSION_PICTURE]  # under "by class"
    if shown:
        out += [f"![{caption}]({name})\n" for name, caption in shown]
    else:
        out += [picture_note or "No pictures: the run logged no training step or evaluation yet.", ""]
    out += ["## Backend and versions", "", *_environment(run), "", "## Recipe", "", *_recipe(run), ""]
    return "\n".join(out)
