"""The `distill-engine` command: run | validate | backends | losses | tasks | augment | export | predict | report | compare.

Every DistillError becomes one line on stderr ("error: ...") and a non-zero exit; tracebacks are
for bugs, not for bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from distill_engine.errors import DistillError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distill-engine", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, helptext in (("run", "run every phase of a recipe"),
                           ("validate", "check a recipe, its files and models without training")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("recipe", type=Path, help="a recipe .toml file")
        p.add_argument("--backend", default=os.environ.get("DISTILL_ENGINE_BACKEND", "torch"),
                       help="backend plugin to use (see `distill-engine backends`; default torch)")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a recipe field, e.g. --set phases.td2.epochs=1 (repeatable)")
        p.add_argument("--output-dir", help="shortcut for --set run.output_dir=...")
        p.add_argument("--device", help='shortcut for --set run.device=... ("cpu", "gpu:0", "ascend:0")')
        p.add_argument("--nproc", type=_positive_int, metavar="N",
                       help="data-parallel processes on this machine: starts the backend's launcher (torchrun, "
                            "msrun) with N copies of this command" if name == "run" else
                            "check the recipe for N data-parallel processes (batch sizes divide by N)")
        if name == "run":
            p.add_argument("--no-progress", action="store_true", help="no progress bar")
            again = p.add_mutually_exclusive_group()
            again.add_argument("--resume", action="store_true",
                               help="continue the run in the output directory from its last run state "
                                    "(starts it if there is none; the recipe must not change the math)")
            again.add_argument("--overwrite", action="store_true",
                               help="replace the run in the output directory (deletes its checkpoints)")
    sub.add_parser("backends", help="list installed backends with versions and devices")
    sub.add_parser("losses", help="list the loss kinds and their exact formulas")
    sub.add_parser("tasks", help="list the task types, the metrics and the task presets (data.task)")
    a = sub.add_parser("augment", help="TinyBERT's data augmentation of a task file (GloVe neighbours, optionally "
                                       "masked-LM candidates)")
    a.add_argument("input", type=Path, help="the task file to augment (e.g. train.tsv)")
    a.add_argument("--task", required=True,
                   help='a task preset ("sst2"), an inline TOML table defining one (\'{ name = "reviews", '
                        'format = "csv", text_a = "review", label = "verdict", labels = ["bad", "good"] }\') '
                        "or a recipe .toml whose data.task to use")
    a.add_argument("--glove", required=True, type=Path, help="word vectors in GloVe's text format (.txt or .txt.gz)")
    a.add_argument("--mlm", type=Path, help="a BERT with its masked-LM head (Hugging Face BertForMaskedLM directory, "
                                            "or a MindSpore zoo .ckpt with --mlm-format mindspore); without it GloVe "
                                            "serves every word (README, Data augmentation)")
    a.add_argument("--mlm-format", default="huggingface", choices=("huggingface", "mindspore"))
    a.add_argument("--mlm-vocab", type=Path, help="the masked LM's vocab.txt (default: beside the checkpoint)")
    a.add_argument("--n", type=int, help="draws per text (default: the paper's per task: SST-2 and QNLI 20, MNLI "
                                         "and QQP 10, others 30)")
    a.add_argument("--p", type=float, default=0.4, help="probability of replacing each eligible word (default 0.4)")
    a.add_argument("--k", type=int, default=15, help="candidates per word (default 15)")
    a.add_argument("--seed", type=int, default=42, help="seed of the draws (default 42)")
    a.add_argument("--glove-rows", type=int, default=100_000, help="GloVe rows searched, the most frequent first "
                                                                    "(default 100000, the paper's)")
    a.add_argument("--output", required=True, type=Path, help="the augmented file (the input's format); a manifest "
                                                              "is written beside it")
    a.add_argument("--backend", default=os.environ.get("DISTILL_ENGINE_BACKEND", "torch"),
                   help="backend that runs the masked LM (default torch)")
    a.add_argument("--device", default="cpu", help='device of the masked LM ("cpu", "gpu:0", ...)')
    a.add_argument("--batch-size", type=int, default=64, help="masked-LM queries per forward (default 64)")
    a.add_argument("--max-examples", type=int, default=0, help="augment only the first N examples (default: all)")
    a.add_argument("--overwrite", action="store_true", help="replace an output this job did not make")
    a.add_argument("--no-progress", action="store_true", help="no progress bar")
    from distill_engine.export import add_parser as add_export_parser

    add_export_parser(sub)
    from distill_engine.predict import add_arguments as add_predict_arguments

    add_predict_arguments(sub.add_parser("predict", help="classify a task file or texts with a checkpoint (any format); "
                                                         "prints sentences/s"))
    r = sub.add_parser("report", help="write a run's report (RUN_DIR/report/: Markdown summary and plots)")
    r.add_argument("run_dir", type=Path, help="a run directory (run.output_dir)")
    r.add_argument("--no-speed", action="store_true", help="do not time the teacher and student on dev batches")
    r.add_argument("--backend", help="backend that times them (default: the run's)")
    r.add_argument("--device", help='device that times them (default: the run\'s run.device; "cpu", "gpu:0", ...)')
    c = sub.add_parser("compare", help="several runs side by side (OUTPUT/README.md, comparison.json and plots): "
                                       "two backends, or ablations")
    c.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR",
                   help="run directories; the first is the reference the others' training losses are compared with")
    c.add_argument("--output", type=Path, required=True,
                   help="directory to write (new, or an earlier comparison, which is replaced)")
    c.add_argument("--label", action="append", help="a name per run, in order (default: the directories' names)")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number of processes, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number of processes, got {value}")
    return value


def _overrides(args) -> list[str]:
    extra = list(args.overrides)
    if args.output_dir:
        extra.append(f'run.output_dir="{args.output_dir}"')
    if args.device:
        extra.append(f'run.device="{args.device}"')
    return extra


def _load_plan(args, *, join: bool = False):
    """The checked plan. `join`: this process may be one rank of a launched data-parallel run: its
    backend joins the launcher's process group first (distributed.join_process_group)."""
    from distill_engine.device import Device
    from distill_engine.distributed import join_process_group
    from distill_engine.plugins import get_backend
    from distill_engine.recipe import load_recipe
    from distill_engine.runner import plan

    recipe = load_recipe(args.recipe, _overrides(args))
    if not join:
        return plan(recipe, args.backend, world_size=args.nproc)
    args.group = join_process_group(get_backend(args.backend), Device.parse(recipe.run.device))
    return plan(recipe, args.backend, group=args.group)


def cmd_backends(_args) -> int:
    from distill_engine.plugins import backend_registry, get_backend

    entries = backend_registry()
    if not entries:
        print("no backends installed (pip install -e backends/torch, or backends/mindspore)")
        return 1
    for name, entry in sorted(entries.items()):
        try:
            backend = get_backend(name)
            devices = ", ".join(str(d) for d in backend.available_devices())
            print(f"{name:<10} {backend.version():<32} devices: {devices}  ({entry.description})")
        except DistillError as exc:
            print(f"{name:<10} unavailable: {exc}")
    return 0


def cmd_losses(_args) -> int:
    from distill_engine.graph import MASKED_FORMULA
    from distill_engine.losses import implemented_on, loss_definitions
    from distill_engine.losses.registry import owner

    for d in loss_definitions().values():
        needs = ", ".join(x for x, on in (("teacher", d.needs_teacher), ("labels", d.needs_labels)) if on)
        print(f"{d.name}\n    {d.summary}: reads {d.reads}{' (' + (d.mapping or 'phase') + ' mapping)' if d.reads in ('attention', 'values', 'hidden') else ''}"
              f"{'; needs ' + needs if needs else ''}; from plugin {owner(d.name)}; "
              f"backends: {', '.join(implemented_on(d.name)) or 'none'}")
        print(f"    {d.formula}")
        for param in d.params:
            print(f"    parameter {param.describe()}")
    print(f"mask_padding\n    {MASKED_FORMULA}")
    return 0


def cmd_tasks(_args) -> int:
    from distill_engine.data import TASKS
    from distill_engine.tasks.metrics import METRICS
    from distill_engine.tasks.registry import TASK_TYPES

    def show(column) -> str:
        return "-" if column is None else (f"column {column}" if isinstance(column, int) else json.dumps(column))

    print("Task types (data.task.type; a plugin adds one through register_task_types):")
    for name, task_type in TASK_TYPES.all().items():
        presets = ", ".join(task_type.presets()) or "none"
        print(f"{name}\n    {task_type.description}\n    head {task_type.head}; presets: {presets}; "
              f"from plugin {TASK_TYPES.owner(name)}")
    print("\nMetrics (a task's metrics = [...]; the first ranks checkpoints; a plugin adds one through "
          "register_metrics):")
    for name, metric in METRICS.all().items():
        print(f"{name}\n    {metric.summary}; scores {metric.applies_to}; from plugin {METRICS.owner(name)}")
    print("\nPresets of data.task (a recipe may define its own: data.task = { name, format, text_a, text_b, label, "
          "labels, metrics, header }; README, Your own task):")
    for task in TASKS.values():
        labels = ", ".join(task.labels) if task.labels else "regression (a real-valued score)"
        header = "" if task.header else "  (no header: columns by index)"
        print(f"{task.name}\n    format {task.format}{header}; text_a {show(task.text_a)}, text_b {show(task.text_b)}, "
              f"label {show(task.label)}\n    labels: {labels}\n    metrics: {', '.join(task.metrics)}")
    return 0


def cmd_augment(args) -> int:
    from distill_engine.augment.augmenter import AugmentSettings, default_n
    from distill_engine.augment.job import AugmentJob, AugmentStopped, run_job

    from distill_engine.recipe.task_argument import parse_task_argument

    task = parse_task_argument(args.task)
    settings = AugmentSettings(n=default_n(task.name) if args.n is None else args.n, p=args.p, k=args.k,
                               seed=args.seed, glove_rows=args.glove_rows)
    job = AugmentJob(args.input, task, args.glove, args.output, settings, mlm=args.mlm, mlm_format=args.mlm_format,
                     mlm_vocab=args.mlm_vocab, backend=args.backend, device=args.device, batch_size=args.batch_size,
                     max_examples=args.max_examples)
    try:
        m = run_job(job, overwrite=args.overwrite, progress=not args.no_progress)
    except KeyboardInterrupt:
        raise AugmentStopped("augmentation interrupted; the finished chunks are kept: the same command "
                             "continues from there") from None
    c = m["counts"]
    speed = f", {m['examples_per_second']:g} examples/s" if m.get("examples_per_second") else ""
    print(f"augment: {c['input_rows']} rows -> {c['output_rows']} rows in {args.output} ({c['new_rows']} new; "
          f"N={settings.n}, p={settings.p:g}, K={settings.k}, seed {settings.seed}; "
          f"{c['eligible_words']} eligible words: {c['mlm_words']} by masked LM, {c['glove_words']} by GloVe, "
          f"{c['words_without_candidates']} without candidates{speed})")
    return 0


def cmd_predict(args) -> int:
    from distill_engine.predict import command

    return command(args)


def _term_layers(term) -> tuple[tuple[int, int], ...] | None:
    """The (student, teacher) layers, 1-based, a term compares; None for the embeddings and logits."""
    reads = term.definition.reads
    if reads in ("attention", "values"):
        return tuple((s + 1, t + 1) for s, t in term.pairs)
    if reads == "hidden":
        return tuple(term.pairs)
    return None


def _describe_terms(graph) -> str:
    """"1*hidden_mse, 1*minilm_attention (layers 4->6) mapping (2, 3, 5, 6)": each term, its layers
    where they are not the phase's mapping, and the phase's mapping where a term follows it."""
    parts, follows = [], False
    for term in graph.terms:
        layers = _term_layers(term)
        text = f"{term.weight:g}*{term.name}"
        if layers is not None and graph.mapping is not None:
            if layers == graph.mapping.layer_pairs:
                follows = True
            else:
                text += " (layers " + ", ".join(f"{s}->{t}" for s, t in layers) + ")"
        parts.append(text)
    mapping = f" mapping {graph.mapping.teacher_layer_of}" if follows else ""
    return ", ".join(parts) + mapping


def cmd_validate(args) -> int:
    from distill_engine.rundir import check_output_dir

    p = _load_plan(args)
    check_output_dir(Path(p.recipe.run.output_dir))
    print(f"recipe {args.recipe}: OK ({p.backend.name} on {p.device}; teacher "
          f"{p.teacher_config.num_hidden_layers}x{p.teacher_config.hidden_size}, student "
          f"{p.student_config.num_hidden_layers}x{p.student_config.hidden_size})")
    for phase in p.phases:
        terms = _describe_terms(phase.graph) if phase.graph else "-"
        print(f"  {phase.spec.name:<14} {phase.spec.kind:<26} {terms}")
    if p.augment is not None:
        from distill_engine.augment.job import up_to_date

        job, s = p.augment, p.augment.settings
        state = "up to date" if up_to_date(job) else "computed before the first phase"
        print(f"  augment        data.train -> {job.output} (N={s.n}, p={s.p:g}, K={s.k}, seed {s.seed}, "
              f"{'masked LM ' + str(job.mlm) if job.mlm else 'GloVe only'}): {state}")
    _report_cache(p)
    return 0


def _report_cache(p) -> None:
    """What the teacher-output cache will take, or why a phase does not use it; refuses a cache that
    does not fit on its disk."""
    from distill_engine import teacher_cache
    from distill_engine.runner import Runner

    runner = Runner(p)
    root = teacher_cache.cache_root(p.recipe.run.cache_dir)
    needs = runner.cache_needs()
    for phase, needed, reused in needs:
        if reused is not None:
            print(f"  teacher cache  {phase.spec.name}: reuses {reused}")
        else:
            print(f"  teacher cache  {phase.spec.name}: {teacher_cache.human_bytes(needed)} "
                  f"({p.recipe.run.cache_dtype}) to build in {root}")
    for phase in p.phases:
        if phase.graph is not None and phase.graph.needs_teacher and not phase.cached:
            print(f"  teacher cache  {phase.spec.name}: not used: {phase.cache_note}")
    runner.check_cache_room(needs)


def _without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def cmd_launch(args) -> int:
    """`run --nproc N`: check the recipe once here (one error, not N), then run the backend's
    launcher with N copies of the command without --nproc, forwarding SIGTERM to it (Ctrl-C
    reaches it directly), and exit with its code. When it fails, the backend may name the rank
    that failed first from the launcher's logs (`Backend.launch_failure`, optional)."""
    import collections
    import signal
    import subprocess

    from distill_engine.distributed import NPROC_ENV

    from distill_engine.rundir import LAUNCHER_LOGS, RunDirectory

    p = _load_plan(args)
    RunDirectory(p.recipe.run.output_dir).check_mode("resume" if args.resume else "overwrite" if args.overwrite else "new")
    launch = getattr(p.backend, "launch_command", None)
    if not callable(launch):
        raise DistillError(f'--nproc {args.nproc}: backend "{p.backend.name}" has no data-parallel launcher '
                           "(it implements no launch_command)")
    if p.augment is not None:  # augment here, once, rather than in rank 0 while the others wait on it
        from distill_engine.augment.job import run_job

        run_job(p.augment, progress=not args.no_progress, say=lambda text: print(text, file=sys.stderr, flush=True))
    log_dir = Path(p.recipe.run.output_dir) / LAUNCHER_LOGS
    command = launch(args.nproc, _without_nproc(args.argv), str(log_dir))
    print(f"launching {args.nproc} processes: {shlex.join(command)}", file=sys.stderr, flush=True)
    env = {**os.environ, NPROC_ENV: str(args.nproc)}  # the ranks' resume hint says --nproc N again
    # the launcher's stderr passes through here (and its last lines are kept for launch_failure)
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True, errors="replace")
    signal.signal(signal.SIGTERM, lambda signum, _frame: proc.send_signal(signum))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal sends Ctrl-C to the launcher and ranks too
    tail: collections.deque[str] = collections.deque(maxlen=400)
    for line in proc.stderr:
        sys.stderr.write(line)
        sys.stderr.flush()
        tail.append(line)
    code = proc.wait()
    if code != 0:
        explain = getattr(p.backend, "launch_failure", None)
        why = explain(str(log_dir), list(tail)) if callable(explain) else None
        if why:
            print(f"error: {why}", file=sys.stderr, flush=True)
    return 128 - code if code < 0 else code


def cmd_run(args) -> int:
    from distill_engine.runner import Runner

    if args.nproc and args.nproc > 1:
        return cmd_launch(args)
    p = _load_plan(args, join=True)
    mode = "resume" if args.resume else "overwrite" if args.overwrite else "new"
    runner = Runner(p, progress=False if args.no_progress else None, mode=mode, command=args.argv)
    runner.run()
    if not runner.finished_before and runner.primary:
        print(f"run written to {p.recipe.run.output_dir}")
    return 0


def cmd_export(args) -> int:
    from distill_engine.export import main as export_main

    return export_main(args)
def cmd_report(args) -> int:
    from distill_engine.device import Device
    from distill_engine.plugins import get_backend
    from distill_engine.report import write_report

    path, warnings = write_report(args.run_dir, speed=not args.no_speed,
                                  backend=get_backend(args.backend) if args.backend else None,
                                  device=Device.parse(args.device) if args.device else None)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"report written to {path}")
    return 0


def cmd_compare(args) -> int:
    from distill_engine.report.compare import write_comparison

    path, warnings = write_comparison(args.run_dirs, args.output, args.label)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"comparison written to {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # to print the command that resumes
    args.group = None  # set by a rank of a data-parallel run
    handler = {"run": cmd_run, "validate": cmd_validate, "backends": cmd_backends, "losses": cmd_losses,
               "tasks": cmd_tasks, "augment": cmd_augment, "export": cmd_export,
               "predict": cmd_predict, "report": cmd_report, "compare": cmd_compare}[args.command]
    from distill_engine.interrupt import RunInterrupted

    try:
        return handler(args)
    except RunInterrupted as exc:  # not an error: the run stopped where it was asked to
        print(str(exc), file=sys.stderr)
        return exc.exit_code
    except DistillError as exc:
        group = args.group
        rank = f"[rank {group.rank} of {group.world_size}] " if group is not None and group.world_size > 1 else ""
        print(f"error: {rank}{exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
