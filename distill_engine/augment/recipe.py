"""A recipe's [augment] table: the augmentation job a phase with data = "train_aug" reads.

`job_of(recipe, task)` checks the table (before any training, in plan()) and builds the job:
data.train augmented with the table's settings, into `augment.output` or, by default, into the
cache (`run.cache_dir`'s augmented/<digest of the inputs and settings>/), where every run with the
same inputs and settings finds it (an ablation at the same TD budget does not augment again).
"""

from __future__ import annotations

from pathlib import Path

import attrs

from distill_engine.augment.augmenter import AugmentSettings, default_n
from distill_engine.augment.glove import check_vectors_file
from distill_engine.augment.job import AugmentJob
from distill_engine.data.tasks import Task
from distill_engine.errors import DataError, DistillError, RecipeError
from distill_engine.recipe.fields import smaller_cap

AUGMENTED_SPLIT = "train_aug"


def reads_augmented(recipe) -> list[str]:
    """The names of the phases that train on the augmented data."""
    return [p.name for p in recipe.phases if p.data == AUGMENTED_SPLIT]


def _suffix(task: Task) -> str:
    return {"tsv": ".tsv", "csv": ".csv", "jsonl": ".jsonl"}[task.format]


def job_of(recipe, task: Task | None, backend: str) -> AugmentJob | None:
    """The augmentation the recipe asks for, checked; None when no phase reads "train_aug"."""
    phases = reads_augmented(recipe)
    if not phases:
        return None
    a, where = recipe.augment, f"phases ({', '.join(phases)}) read data = \"train_aug\""
    if task is None:
        raise RecipeError(f"{where}, which needs data.task")
    if not isinstance(task, Task):
        # the job reads and rewrites the sequence type's files (texts in columns); another type's
        # examples (a token task's tagged words) would need their own rewriting, not built yet
        from distill_engine.tasks.registry import task_type_of

        raise RecipeError(f"{where}; augmentation rewrites tasks of type sequence, and task {task.name} is of type "
                          f"{task_type_of(task).name} (its augmentation is not built yet)")
    if not recipe.data.train:
        raise RecipeError(f"data.train is empty, and {where} (data.train augmented)")
    if not a.glove:
        raise RecipeError(f"augment.glove is empty, and {where}: give word vectors in GloVe's text format "
                          "(e.g. ../shared/data/glove/glove.6B.50d.100k.txt)")
    try:
        check_vectors_file(a.glove)
    except DataError as exc:
        raise DataError(f"augment.glove: {exc}") from None
    if a.mlm:
        if not Path(a.mlm).exists():
            raise RecipeError(f"augment.mlm: not found: {a.mlm}")
        from distill_engine.augment.mlm import check_masked_lm

        try:
            check_masked_lm(a.mlm, a.mlm_format, a.mlm_vocab or None)
        except DistillError as exc:
            raise type(exc)(f"augment.mlm: {exc}") from None
    settings = AugmentSettings(n=a.n or default_n(task.name), p=a.p, k=a.k, seed=a.seed, glove_rows=a.glove_rows)
    job = AugmentJob(recipe.data.train, task, a.glove, Path("unset"), settings, mlm=a.mlm or None,
                     mlm_format=a.mlm_format, mlm_vocab=Path(a.mlm_vocab) if a.mlm_vocab else None, backend=backend,
                     device=recipe.run.device, batch_size=a.batch_size,
                     max_examples=smaller_cap(a.max_examples, recipe.run.max_examples))
    if a.output:
        output = Path(a.output)
    else:
        from distill_engine.teacher_cache import cache_root

        output = cache_root(recipe.run.cache_dir) / "augmented" / job.key() / f"train_aug{_suffix(task)}"
    return attrs.evolve(job, output=output)
