"""Augmenting a task file: resumable in chunks, written atomically, with a manifest beside it.

`run_job` reads the task file, augments its examples chunk by chunk (each chunk's result is its
own file in `<output>.partial/`, written atomically, so a killed job continues where it stopped),
then writes `<output>` in the input's format: every original row, each followed by its new rows
(text_a replaced, then text_b replaced, every other field as in the original), and rows whose
texts equal an original's or an earlier row's dropped. `<output>.manifest.json` records the
inputs' sha256, N, p, K, the seed, the counts and the speed (`seconds`: reading the vectors and the
masked LM and augmenting, for the chunks this call computed); a job whose output and manifest
already match it is not run again (`up_to_date`).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import attrs

from distill_engine.augment.augmenter import Augmenter, AugmentSettings, Counts
from distill_engine.augment.glove import WordVectors, check_vectors_file
from distill_engine.data.tasks import Task, TaskTable, read_task_file, write_task_file
from distill_engine.errors import DataError, DistillError
from distill_engine.io import write_atomically, write_json_atomically, write_text_atomically

ALGORITHM = "tinybert-augment/1"  # bump when the output for the same inputs changes
MANIFEST_FORMAT = "distill-engine-augment"
CHUNK_EXAMPLES = 500


class AugmentStopped(DistillError):
    """A stop was requested between two chunks; the finished chunks stay for the next attempt."""

    exit_code = 130


def manifest_path(output: Path) -> Path:
    return output.with_name(output.name + ".manifest.json")


def partial_dir(output: Path) -> Path:
    return output.with_name(output.name + ".partial")


def sha256(path: Path) -> str:
    """sha256 of a file, or of a directory's files (names and contents, sorted)."""
    from distill_engine.fingerprint import digest_path

    digest = digest_path(str(path))
    if digest is None:
        raise DataError(f"{path}: not found")
    return digest


@attrs.frozen
class AugmentJob:
    """One augmentation: `input` (a file of `task`) to `output`, with GloVe vectors `glove` and
    optionally a masked LM `mlm` (format `mlm_format`, on `backend`/`device`)."""

    input: Path = attrs.field(converter=Path)
    task: Task
    glove: Path = attrs.field(converter=Path)
    output: Path = attrs.field(converter=Path)
    settings: AugmentSettings
    mlm: Path | None = attrs.field(default=None, converter=lambda p: None if p in (None, "") else Path(p))
    mlm_format: str = "huggingface"
    mlm_vocab: Path | None = None
    backend: str = "torch"
    device: str = "cpu"
    batch_size: int = 64
    max_examples: int = 0  # > 0: only the input's first N examples (and their new rows) are written

    def identity(self) -> dict:
        """What decides the output's content (not where it goes nor what computes it)."""
        return {
            "algorithm": ALGORITHM,
            "input_sha256": sha256(self.input),
            "task": self.task.describe(),
            "glove_sha256": sha256(self.glove),
            "mlm_sha256": None if self.mlm is None else sha256(self.mlm),
            "mlm_format": None if self.mlm is None else self.mlm_format,
            "max_examples": self.max_examples,
            **attrs.asdict(self.settings),
        }

    def key(self, identity: dict | None = None) -> str:
        """A short digest of `identity()`: names a cached output."""
        doc = json.dumps(identity or self.identity(), sort_keys=True)
        return hashlib.sha256(doc.encode()).hexdigest()[:20]


def up_to_date(job: AugmentJob, identity: dict | None = None) -> dict | None:
    """The manifest of `job.output` when the output exists and was made by this very job."""
    identity = identity or job.identity()
    mpath = manifest_path(job.output)
    if not job.output.is_file() or not mpath.is_file():
        return None
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return manifest if manifest.get("job") == identity else None


def _write_chunk(path: Path, doc: dict) -> None:
    write_text_atomically(path, json.dumps(doc, ensure_ascii=False))


def _load_chunk(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None  # damaged (cannot happen with atomic writes, but a disk can fail): recompute it


def run_job(job: AugmentJob, *, overwrite: bool = False, progress: bool | None = True,
            should_stop: Callable[[], bool] | None = None, say: Callable[[str], None] = print) -> dict:
    """Run `job` (see the module docstring) and return its manifest."""
    if job.max_examples < 0:
        raise DataError(f"max_examples {job.max_examples}: must be 0 (all) or more")
    table = read_task_file(job.input, job.task)
    if job.max_examples:
        table = attrs.evolve(table, records=table.records[: job.max_examples], lines=table.lines[: job.max_examples])
    table.examples()  # labels checked (file, line, value) before any work
    check_vectors_file(job.glove)
    if job.mlm is not None and not job.mlm.exists():
        raise DataError(f"{job.mlm}: masked-LM checkpoint not found")
    if not len(table):
        raise DataError(f"{job.input}: no examples to augment")
    identity = job.identity()
    done = up_to_date(job, identity)
    if done is not None:
        say(f"augment: {job.output} is up to date ({done['counts']['output_rows']} rows; {manifest_path(job.output).name})")
        return done
    if job.output.exists() and not overwrite:
        raise DataError(f"{job.output} exists and was not made by this job (settings or inputs differ, or no "
                        "manifest beside it); choose another --output or pass --overwrite")
    if job.output.is_dir():
        raise DataError(f"{job.output} is a folder; --output names the augmented file")
    # the vectors and the masked LM are read (and checked) before anything is written; the time
    # in the manifest counts from here (loading included)
    start = time.perf_counter()
    augmenter = _augmenter(job)
    job.output.parent.mkdir(parents=True, exist_ok=True)

    partial = partial_dir(job.output)
    job_file = partial / "job.json"
    if partial.exists():
        try:
            same = json.loads(job_file.read_text()) == identity
        except (OSError, json.JSONDecodeError):
            same = False
        if not same:
            if not job_file.is_file():
                raise DataError(f"{partial} exists and is not an unfinished augmentation; move it away")
            say(f"augment: {partial} holds an unfinished job with other settings or inputs; starting afresh")
            shutil.rmtree(partial)
    partial.mkdir(exist_ok=True)
    write_json_atomically(job_file, identity)

    n = len(table)
    chunks = math.ceil(n / CHUNK_EXAMPLES)
    texts_per = 2 if job.task.is_pair else 1
    chunk_path = [partial / f"chunk-{c:06d}.json" for c in range(chunks)]
    results: list[dict | None] = [_load_chunk(p) if p.is_file() else None for p in chunk_path]
    todo = [c for c in range(chunks) if results[c] is None]
    if todo:
        if len(todo) < chunks:
            say(f"augment: continuing: {chunks - len(todo)} of {chunks} chunks done before")
        from tqdm import tqdm

        # progress None: a bar when stderr is a terminal (tqdm's own rule, as the training loop's)
        bar = tqdm(total=n, initial=sum(min(CHUNK_EXAMPLES, n - c * CHUNK_EXAMPLES) for c in range(chunks)
                                        if results[c] is not None),
                   desc="augment", unit="example", dynamic_ncols=True, leave=False, file=sys.stderr,
                   disable=None if progress is None else not progress)
        try:
            for c in todo:
                if should_stop is not None and should_stop():
                    raise AugmentStopped(f"augmentation stopped after {chunks - len([r for r in results if r is None])}"
                                         f" of {chunks} chunks; the same command continues from there")
                rows = range(c * CHUNK_EXAMPLES, min(n, (c + 1) * CHUNK_EXAMPLES))
                texts, examples, which = [], [], []
                for i in rows:
                    for t, text in enumerate(table.texts(table.records[i])):
                        texts.append(text)
                        examples.append(i)
                        which.append(t)
                new, counts = augmenter.augment(texts, examples, which)
                doc = {"new": [new[j: j + texts_per] for j in range(0, len(new), texts_per)],
                       "counts": attrs.asdict(counts)}
                _write_chunk(chunk_path[c], doc)
                results[c] = doc
                bar.update(len(rows))
        finally:
            bar.close()
    seconds = time.perf_counter() - start
    manifest = _merge(job, table, results, identity, seconds if todo else None, len(todo) * CHUNK_EXAMPLES)
    shutil.rmtree(partial, ignore_errors=True)
    return manifest


def _augmenter(job: AugmentJob) -> Augmenter:
    vectors = WordVectors.load(job.glove, rows=job.settings.glove_rows)
    mlm = None
    if job.mlm is not None:
        from distill_engine.augment.mlm import MaskedLM

        mlm = MaskedLM(job.mlm, job.mlm_format, backend=job.backend, device=job.device,
                       batch_size=job.batch_size, vocab=job.mlm_vocab)
    return Augmenter(vectors, job.settings, mlm)


def _merge(job: AugmentJob, table: TaskTable, results: list[dict], identity: dict, seconds: float | None,
           computed: int) -> dict:
    """Write the output (originals, each followed by its new rows, duplicates dropped) and the manifest."""
    counts = Counts()
    for doc in results:
        counts.add(Counts(**doc["counts"]))
    seen = {tuple(table.texts(r)) for r in table.records}
    records, duplicates, new_rows = [], 0, 0
    per_example = [new for doc in results for new in doc["new"]]
    for record, new in zip(table.records, per_example):
        records.append(record)
        texts = tuple(table.texts(record))
        for t, versions in enumerate(new):
            for text in versions:
                key = texts[:t] + (text,) + texts[t + 1:]
                if key in seen:
                    duplicates += 1
                    continue
                seen.add(key)
                records.append(table.with_texts(record, key))
                new_rows += 1
    write_atomically(job.output, lambda tmp: write_task_file(tmp, table, records))
    manifest = {
        "format": MANIFEST_FORMAT,
        "job": identity,
        "input": str(job.input.resolve()),
        "glove": str(job.glove.resolve()),
        "mlm": None if job.mlm is None else str(job.mlm.resolve()),
        "output": str(job.output.resolve()),
        "counts": {"input_rows": len(table), **attrs.asdict(counts), "new_rows": new_rows,
                   "duplicate_rows_dropped": duplicates, "output_rows": len(records)},
        "seconds": None if seconds is None else round(seconds, 3),
        "examples_per_second": None if not seconds else round(min(computed, len(table)) / seconds, 2),
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json_atomically(manifest_path(job.output), manifest)
    return manifest
