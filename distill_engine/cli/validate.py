"""`distill-engine validate RECIPE`: check a recipe, its files and models without training."""

from __future__ import annotations

from pathlib import Path

from distill_engine.cli.run import add_recipe_arguments, load_plan


def add_parser(sub) -> None:
    p = sub.add_parser("validate", help="check a recipe, its files and models without training")
    add_recipe_arguments(p, "validate")
    p.add_argument("--time-steps", type=_at_least_one, metavar="K",
                   help="time K real training steps of every phase (and two evaluation batches) on the first "
                        "batches of its data, and estimate each phase's time from them")


def _at_least_one(text: str) -> int:
    from distill_engine.cli.run import _positive_int

    return _positive_int(text)


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


def _report_hub_names(recipe) -> None:
    """Which checkpoint fields were read from the Hugging Face cache, and which revision."""
    from distill_engine.hub import HUB_FIELDS, cached_name

    for field, _ in HUB_FIELDS:
        table, _, leaf = field.partition(".")
        path = getattr(getattr(recipe, table), leaf)
        name = cached_name(path) if path else None
        if name:
            print(f"  {field:<14} {name} from the Hugging Face cache: {path}")


def command(args) -> int:
    from distill_engine.rundir import check_output_dir

    p = load_plan(args)
    check_output_dir(Path(p.recipe.run.output_dir))
    print(f"recipe {args.recipe}: OK ({p.backend.name} on {p.device}; teacher "
          f"{p.teacher_config.num_hidden_layers}x{p.teacher_config.hidden_size}, student "
          f"{p.student_config.num_hidden_layers}x{p.student_config.hidden_size})")
    _report_hub_names(p.recipe)
    for phase in p.phases:
        terms = _describe_terms(phase.graph) if phase.graph else "-"
        print(f"  {phase.spec.name:<14} {phase.spec.kind:<26} {terms}")
    if p.augment is not None:
        from distill_engine.augment.job import up_to_date

        job, s = p.augment, p.augment.settings
        state = "up to date" if up_to_date(job) else "computed before the first phase"
        print(f"  augment        data.train -> {job.output} (N={s.n}, p={s.p:g}, K={s.k}, seed {s.seed}, "
              f"{'masked LM ' + str(job.mlm) if job.mlm else 'GloVe only'}): {state}")
    from distill_engine.runner import Runner

    runner = Runner(p)
    _report_sizes(runner, args.time_steps)
    _report_cache(runner)
    return 0


def _report_sizes(runner, time_steps: int | None) -> None:
    """Each phase's examples, steps, dev evaluations and, with --time-steps, its estimated time."""
    from distill_engine.estimate import estimate, human_seconds, phase_sizes, time_phase

    p = runner.plan
    run = p.recipe.run
    caps = [f"{flag} {value}" for flag, value in (("--max-steps", run.max_steps), ("--max-examples", run.max_examples))
            if value]
    total, timed = 0.0, True
    for size in phase_sizes(runner):
        spec = size.phase.spec
        bound = "at most " if size.at_most else ""
        if spec.kind == "evaluate":
            text = f"{size.examples} examples of data.dev"
        else:
            source = {"corpus": "sequences packed from data.corpus",
                      "train_aug": "examples of data.train augmented"}.get(spec.data, f"examples of data.{spec.data}")
            text = f"{bound}{size.examples} {source}, batch {spec.batch_size}, {bound}{size.steps} steps"
            if size.evaluations:
                text += f", {size.evaluations} dev evaluation{'s' if size.evaluations > 1 else ''}"
        if time_steps:
            timing = time_phase(runner, size.phase, time_steps)
            seconds = estimate(size, timing, run.eval_batch_size)
            total += seconds
            pace = (f"{timing.step_s:.3g} s/step over {timing.timed_steps} timed steps, first {timing.first_step_s:.3g} s"
                    if spec.kind != "evaluate" else f"{timing.eval_batch_s:.3g} s per batch of {run.eval_batch_size}")
            text += f"; time ~{human_seconds(seconds)} ({pace})"
        else:
            timed = False
        print(f"  size           {spec.name}: {text}")
    if timed:
        print(f"  time           ~{human_seconds(total)} for the phases on {p.device} at this machine's load now "
              "(augmentation and teacher-cache building not included)")
    else:
        print("  time           not estimated: --time-steps K times K steps of every phase and estimates from them")
    if caps:
        print(f"  capped by      {', '.join(caps)} (recorded in the run's recipe.json: a resume needs the same caps)")


def _report_cache(runner) -> None:
    """What the teacher-output cache will take, or why a phase does not use it; refuses a cache that
    does not fit on its disk."""
    from distill_engine import teacher_cache

    p = runner.plan
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
