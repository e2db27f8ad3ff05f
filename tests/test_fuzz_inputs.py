"""Malformed input, generated and hand-written: each case is one `error:` line, exit 2, before training.

Every case starts from the tiny recipe of `distill_engine.testing.fixtures.write_tiny_recipe` (a
real-format teacher, GLUE files and corpus under a temporary folder) and breaks one thing: a field
of the recipe (wrong type, out of range, not finite, unknown key, wrong structure), a `--set`, a
data file (encoding, header, columns, labels, empty, truncated rows) or a checkpoint (config.json
against its tensors, NaN weights). It then calls `distill_engine.cli.main` with `validate` or
`run --backend planonly` (a backend that can be planned against but never trains) and requires
exit code 2, exactly one stderr line starting with `error:`, no traceback and nothing written to
the run directory. The hand-written list also checks that the line names the right field or file.

`python tests/test_fuzz_inputs.py` runs every hand-written case and a fixed set of generated ones
without asserting and prints how many were caught, accepted or escaped as a traceback (the
numbers in the report of the change that added this file).
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import math
import re
import shutil
import sys
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import attrs
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill_engine.cli import main

BACKEND = "planonly"
NAN, INF = float("nan"), float("inf")
PHASES = ("teacher", "gd", "td1", "td2", "eval")  # the tiny recipe's phases, in order


# --------------------------------------------------------------------------- TOML out

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_string(text: str) -> str:
    out = json.dumps(text, ensure_ascii=False)  # JSON's escapes are TOML's, except DEL must be escaped
    return out.replace("\x7f", "\\u007f")


def toml_value(value) -> str:
    if isinstance(value, (datetime.date, datetime.time)):  # datetime is a date too
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML for {type(value).__name__}")


def _toml_key(key: str) -> str:
    return key if _BARE.match(key) else _toml_string(key)


def dump_toml(data: dict) -> str:
    """Every top-level key as one `key = value` line (tables inline): valid TOML for any nesting."""
    return "".join(f"{_toml_key(k)} = {toml_value(v)}\n" for k, v in data.items())


# --------------------------------------------------------------------------- the tiny tree


@attrs.define
class Case:
    """One malformed input: edits to the recipe dict, `--set`s, edits to files under the tree."""

    name: str
    edit: Callable[[dict], None] | None = None  # changes the recipe (a dict read from its TOML)
    sets: tuple[str, ...] = ()
    files: Callable[[Path], None] | None = None  # changes files under the case's folder
    expect: str | tuple[str, ...] = ()  # substrings the error line must hold
    command: str = "validate"
    raw_recipe: bytes | None = None  # the recipe file's bytes as they are (not TOML from a dict)


@attrs.frozen
class Outcome:
    kind: str  # "ok", "accepted", "traceback", "exit-code", "not-one-line", "wrote", "message"
    detail: str


def make_base(root: Path) -> Path:
    """The pristine tiny tree every case copies."""
    from distill_engine.testing.fixtures import write_tiny_recipe

    write_tiny_recipe(root)
    return root


def run_case(case: Case, base: Path, work: Path) -> Outcome:
    """Copy the tree, apply the case, call the CLI, classify what came back."""
    import tomllib

    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(base, work)
    data = tomllib.loads((work / "recipe.toml").read_text())
    data["run"]["output_dir"] = str(work / "run")
    data["phases"][3]["losses"] = [{"kind": "soft_cross_entropy"}]  # td2's loss, written out to be broken
    if case.edit is not None:
        case.edit(data)
    recipe = work / "case.toml"
    recipe.write_bytes(case.raw_recipe if case.raw_recipe is not None else dump_toml(data).encode())
    if case.files is not None:
        case.files(work)
    argv = [case.command, str(recipe), "--backend", BACKEND]
    for s in case.sets:
        argv += ["--set", s]
    if case.command == "run":
        argv.append("--no-progress")
    err, out = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    except Exception as exc:  # noqa: BLE001 - this is exactly what is counted
        tb = traceback.format_exception(exc)
        return Outcome("traceback", f"{type(exc).__name__}: {exc} | {tb[-2].strip() if len(tb) > 1 else ''}")
    text = err.getvalue()
    lines = [line for line in text.splitlines() if line.strip()]
    run_dir = work / "run"
    if code == 0:
        return Outcome("accepted", out.getvalue().strip().splitlines()[0] if out.getvalue().strip() else "")
    if run_dir.exists() and any(run_dir.iterdir()):
        return Outcome("wrote", f"{sorted(p.name for p in run_dir.iterdir())}: {text.strip()}")
    if code != 2:
        return Outcome("exit-code", f"{code}: {text.strip()}")
    if len(lines) != 1 or not lines[0].startswith("error: ") or "Traceback" in text:
        return Outcome("not-one-line", text.strip())
    expect = (case.expect,) if isinstance(case.expect, str) else case.expect
    missing = [e for e in expect if e not in lines[0]]
    if missing:
        return Outcome("message", f"missing {missing!r} in: {lines[0]}")
    return Outcome("ok", lines[0])


# --------------------------------------------------------------------------- helpers for cases


def setp(path: str, value) -> Callable[[dict], None]:
    """An edit setting a dotted path ("phases.2.optimizer.lr"); missing tables are created."""

    def edit(data: dict) -> None:
        node = data
        *parents, leaf = path.split(".")
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if isinstance(node, list):
            node[int(leaf)] = value
        else:
            node[leaf] = value

    return edit


def delp(path: str) -> Callable[[dict], None]:
    def edit(data: dict) -> None:
        node = data
        *parents, leaf = path.split(".")
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        del node[leaf]

    return edit


def rewrite(rel: str, fn: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def files(root: Path) -> None:
        path = root / rel
        path.write_bytes(fn(path.read_bytes()))

    return files


def put(rel: str, content: bytes) -> Callable[[Path], None]:
    def files(root: Path) -> None:
        (root / rel).write_bytes(content)

    return files


def replace_line(lineno: int, new: bytes) -> Callable[[bytes], bytes]:
    def fn(old: bytes) -> bytes:
        lines = old.split(b"\n")
        lines[lineno - 1] = new
        return b"\n".join(lines)

    return fn


def _edit_tensors(rel: str, fn: Callable[[dict], None]) -> Callable[[Path], None]:
    from safetensors.numpy import load_file, save_file

    def files(root: Path) -> None:
        path = root / rel
        tensors = load_file(str(path))
        fn(tensors)
        save_file(tensors, str(path))

    return files


def _nan_tensor(name: str, value=NAN):
    def fn(tensors: dict) -> None:
        arr = tensors[name].copy()
        arr.reshape(-1)[arr.size // 2] = value
        tensors[name] = arr

    return fn


def _edit_json(rel: str, fn: Callable[[dict], object]) -> Callable[[Path], None]:
    """Change a JSON file in place (`fn` edits the parsed object; what it returns is ignored)."""

    def files(root: Path) -> None:
        path = root / rel
        doc = json.loads(path.read_text())
        fn(doc)
        path.write_text(json.dumps(doc))

    return files


def _student_checkpoint(fn: Callable[[Path], None] | None = None, **config) -> Callable[[Path], None]:
    """Write a neutral student checkpoint at <root>/student (then break it with `fn`)."""

    def files(root: Path) -> None:
        from distill_engine.bert import init_parameters
        from distill_engine.checkpoint import save_checkpoint
        from distill_engine.testing.fixtures import tiny_config

        shape = dict(hidden_size=8, num_hidden_layers=2, intermediate_size=16, num_labels=2,
                     projection="shared", projection_dim=16)
        cfg = tiny_config(**{**shape, **config})
        save_checkpoint(root / "student", cfg, init_parameters(cfg, 0))
        if fn is not None:
            fn(root)

    return files


def _without_label_column(old: bytes) -> bytes:
    return b"\n".join(line.split(b"\t")[0] for line in old.split(b"\n"))


# --------------------------------------------------------------------------- hand-written cases

T1 = "phases.td1"  # a --set prefix for the tiny recipe's third phase (index 2)

HAND_WRITTEN: list[Case] = [
    # run
    Case("seed negative", sets=("run.seed=-1",), expect=("run.seed", "0 <=")),
    Case("seed too large", sets=("run.seed=4294967296",), expect="run.seed"),
    Case("seed past int64", sets=("run.seed=99999999999999999999999",), expect="run.seed"),
    Case("seed string", sets=('run.seed="1"',), expect=("run.seed", "expected int")),
    Case("seed float", sets=("run.seed=1.0",), expect="run.seed"),
    Case("seed a date", sets=("run.seed=1979-05-27",), expect=("run.seed", "expected int")),
    Case("key with a line break", edit=setp("run.se\ned", 1), expect=("run.\"se\\ned\": unknown key",)),
    Case("log_every zero", sets=("run.log_every=0",), expect="run.log_every"),
    Case("eval_batch_size zero", sets=("run.eval_batch_size=0",), expect="run.eval_batch_size"),
    Case("eval_batch_size huge", sets=("run.eval_batch_size=10000000000",), expect="run.eval_batch_size"),
    Case("checkpoint_every negative", sets=("run.checkpoint_every=-1",), expect="run.checkpoint_every"),
    Case("checkpoint_minutes nan", sets=("run.checkpoint_minutes=nan",), expect=("run.checkpoint_minutes", "finite")),
    Case("checkpoint_minutes negative", sets=("run.checkpoint_minutes=-1.0",), expect="run.checkpoint_minutes"),
    Case("keep_states zero", sets=("run.keep_states=0",), expect="run.keep_states"),
    Case("divergence_factor inf", sets=("run.divergence_factor=inf",), expect="run.divergence_factor"),
    Case("divergence_factor half", sets=("run.divergence_factor=0.5",), expect="run.divergence_factor"),
    Case("output_dir empty", sets=('run.output_dir=""',), expect="run.output_dir"),
    Case("device empty", sets=('run.device=""',), expect="run.device"),
    Case("device bad index", sets=('run.device="gpu:x"',), expect="run.device"),
    Case("device a list", sets=('run.device=["cpu"]',), expect=("run.device", "expected str")),
    Case("run a scalar", sets=("run=5",), expect=("run", "table")),
    Case("run unknown key", sets=("run.seeed=1",), expect=("run.seeed", "unknown key")),
    # teacher
    Case("teacher dropout nan", sets=("teacher.dropout=nan",), expect="teacher.dropout"),
    Case("teacher attention_dropout 1", sets=("teacher.attention_dropout=1.0",), expect="teacher.attention_dropout"),
    Case("teacher format", sets=('teacher.format="onnx"',), expect="teacher.format"),
    Case("teacher path empty", sets=('teacher.path=""',), expect="teacher.path"),
    Case("teacher path a number", sets=("teacher.path=3",), expect="teacher.path"),
    Case("teacher path NUL", edit=setp("teacher.path", "teach\0er"), expect="teacher.path"),
    # student
    Case("student dropout negative", sets=("student.dropout=-0.1",), expect="student.dropout"),
    Case("student attention_dropout inf", sets=("student.attention_dropout=inf",), expect="student.attention_dropout"),
    Case("student layers zero", sets=("student.layers=0",), expect="student.layers"),
    Case("student layers float", sets=("student.layers=3.0",), expect=("student.layers", "expected int")),
    Case("student hidden negative", sets=("student.hidden_size=-8",), expect="student.hidden_size"),
    Case("student heads do not divide", sets=("student.heads=3",), expect="student.heads"),
    Case("student heads zero", sets=("student.heads=0",), expect="student.heads"),
    Case("student intermediate zero", sets=("student.intermediate_size=0",), expect="student.intermediate_size"),
    Case("student hidden_act", sets=('student.hidden_act="swish"',), expect="student.hidden_act"),
    Case("student init empty", sets=('student.init=""',), expect="student.init"),
    Case("student projection", sets=('student.projection="diag"',), expect="student.projection"),
    Case("student a list", sets=("student=[1, 2]",), expect="student"),
    # data
    Case("max_seq_length one", sets=("data.max_seq_length=1",), expect="data.max_seq_length"),
    Case("max_seq_length huge", sets=("data.max_seq_length=100000",), expect="data.max_seq_length"),
    Case("max_seq_length beyond positions", sets=("data.max_seq_length=64",), expect="data.max_seq_length"),
    Case("task unknown", sets=('data.task="sst3"',), expect="data.task"),
    Case("padding", sets=('data.padding="short"',), expect="data.padding"),
    Case("lowercase string", sets=('data.lowercase="yes"',), expect=("data.lowercase", "expected bool")),
    Case("train NUL", edit=setp("data.train", "glue/tr\0ain.tsv"), expect="data.train"),
    Case("train a folder", sets=(f"data.train=\"{'.'}\"",), expect="data.train"),
    # losses
    Case("loss weight negative", sets=("phases.td2.losses.0.weight=-1",), expect="phases[3].losses[0].weight"),
    Case("loss weight a string", sets=("phases.td2.losses.0.weight='1'",), expect="phases[3].losses[0].weight"),
    Case("loss weight nan", sets=("phases.td2.losses=[{kind='soft_cross_entropy', weight=nan}]",),
         expect="phases[3].losses[0].weight"),
    Case("loss temperature zero", sets=("phases.td2.losses=[{kind='soft_cross_entropy', temperature=0}]",),
         expect="phases[3].losses[0].temperature"),
    Case("loss temperature inf", sets=("phases.td2.losses=[{kind='soft_cross_entropy', temperature=inf}]",),
         expect="phases[3].losses[0].temperature"),
    Case("loss kind missing", sets=("phases.td2.losses=[{weight=1.0}]",), expect="phases[3].losses[0].kind"),
    Case("losses a table", sets=(f"{T1}.losses={{kind='attention_mse'}}",), expect=("phases[2].losses", "array")),
    Case("losses of strings", sets=(f"{T1}.losses=['attention_mse']",), expect="phases[2].losses[0]"),
    Case("losses a string", sets=(f'{T1}.losses="attention_mse"',), expect="phases[2].losses"),
    # mapping
    Case("mapping layer zero", sets=(f"{T1}.mapping={{strategy='explicit', layers=[0, 4]}}",),
         expect="phases[2].mapping.layers"),
    Case("mapping layers a table", sets=(f"{T1}.mapping={{strategy='explicit', layers={{a=1}}}}",),
         expect=("phases[2].mapping.layers", "array")),
    Case("mapping layers floats", sets=(f"{T1}.mapping={{strategy='explicit', layers=[1.5, 4]}}",),
         expect="phases[2].mapping.layers[0]"),
    Case("mapping strategy", sets=(f"{T1}.mapping.strategy='every_other'",), expect="phases[2].mapping.strategy"),
    # optimizer
    Case("lr zero", sets=(f"{T1}.optimizer.lr=0",), expect=("phases[2].optimizer.lr", "0 <")),
    Case("lr nan", sets=(f"{T1}.optimizer.lr=nan",), expect=("phases[2].optimizer.lr", "finite")),
    Case("lr negative", sets=(f"{T1}.optimizer.lr=-1e-3",), expect="phases[2].optimizer.lr"),
    Case("lr a list", sets=(f"{T1}.optimizer.lr=[1e-3]",), expect="phases[2].optimizer.lr"),
    Case("lr too large int", sets=(f"{T1}.optimizer.lr={10**400}",), expect="phases[2].optimizer.lr"),
    Case("beta one", sets=(f"{T1}.optimizer.betas=[0.9, 1.0]",), expect="phases[2].optimizer.betas[1]"),
    Case("betas one value", sets=(f"{T1}.optimizer.betas=[0.9]",), expect=("phases[2].optimizer.betas", "2 values")),
    Case("betas three values", sets=(f"{T1}.optimizer.betas=[0.9, 0.99, 0.999]",), expect="phases[2].optimizer.betas"),
    Case("betas a number", sets=(f"{T1}.optimizer.betas=0.9",), expect="phases[2].optimizer.betas"),
    Case("eps zero", sets=(f"{T1}.optimizer.eps=0",), expect="phases[2].optimizer.eps"),
    Case("weight_decay negative", sets=(f"{T1}.optimizer.weight_decay=-0.1",),
         expect="phases[2].optimizer.weight_decay"),
    Case("max_grad_norm zero", sets=(f"{T1}.optimizer.max_grad_norm=0",), expect="phases[2].optimizer.max_grad_norm"),
    Case("clip", sets=(f"{T1}.optimizer.clip='l2'",), expect="phases[2].optimizer.clip"),
    Case("optimizer a number", sets=(f"{T1}.optimizer=3",), expect=("phases[2].optimizer", "table")),
    # schedule
    Case("warmup above one", sets=(f"{T1}.schedule.warmup_fraction=1.5",), expect="phases[2].schedule.warmup_fraction"),
    Case("power zero", sets=(f"{T1}.schedule.power=0",), expect="phases[2].schedule.power"),
    Case("end_lr negative", sets=(f"{T1}.schedule.end_lr_fraction=-0.5",), expect="phases[2].schedule.end_lr_fraction"),
    Case("schedule kind", sets=(f"{T1}.schedule.kind='cosine'",), expect="phases[2].schedule.kind"),
    # phase counts
    Case("epochs negative", sets=(f"{T1}.epochs=-1",), expect="phases[2].epochs"),
    Case("epochs inf", sets=(f"{T1}.epochs=inf",), expect="phases[2].epochs"),
    Case("epochs huge", sets=(f"{T1}.epochs=1e300",), expect="phases[2].epochs"),
    Case("no epochs no steps", sets=(f"{T1}.epochs=0",), expect=("phases[2]", "max_steps")),
    Case("max_steps negative", sets=(f"{T1}.max_steps=-5",), expect="phases[2].max_steps"),
    Case("max_steps huge", sets=(f"{T1}.max_steps={2**62}",), expect="phases[2].max_steps"),
    Case("batch_size zero", sets=(f"{T1}.batch_size=0",), expect="phases[2].batch_size"),
    Case("batch_size float", sets=(f"{T1}.batch_size=1e3",), expect=("phases[2].batch_size", "expected int")),
    Case("max_examples negative", sets=(f"{T1}.max_examples=-1",), expect="phases[2].max_examples"),
    Case("eval_every negative", sets=(f"{T1}.eval_every=-1",), expect="phases[2].eval_every"),
    Case("loss_scale nan", sets=(f"{T1}.loss_scale=nan",), expect="phases[2].loss_scale"),
    Case("loss_scale half", sets=(f"{T1}.loss_scale=0.5",), expect="phases[2].loss_scale"),
    Case("loss_scale_window zero", sets=(f"{T1}.loss_scale_window=0",), expect="phases[2].loss_scale_window"),
    Case("keep_best int", sets=(f"{T1}.keep_best=1",), expect=("phases[2].keep_best", "expected bool")),
    # phase names and references
    Case("name escapes", sets=(f"{T1}.name='../../escape'",), expect="phases[2].name"),
    Case("name absolute", sets=(f"{T1}.name='/tmp/abs'",), expect="phases[2].name"),
    Case("name empty", sets=(f"{T1}.name=''",), expect="phases[2].name"),
    Case("name dot", sets=(f"{T1}.name='.'",), expect="phases[2].name"),
    Case("name hidden", sets=(f"{T1}.name='.cache'",), expect="phases[2].name"),
    Case("name reserved", sets=(f"{T1}.name='state'",), expect=("phases[2].name", "reserved")),
    Case("name a number", sets=(f"{T1}.name=7",), expect="phases[2].name"),
    Case("name duplicate", sets=(f"{T1}.name='gd'",), expect=("phases[2].name", "duplicate")),
    Case("name missing", edit=delp("phases.2.name"), expect="phases[2].name"),
    Case("kind", sets=(f"{T1}.kind='distill'",), expect="phases[2].kind"),
    Case("data split", sets=(f"{T1}.data='test'",), expect="phases[2].data"),
    Case("target", sets=("phases.eval.target='both'",), expect="phases[4].target"),
    Case("student_from", sets=(f"{T1}.student_from='nope'",), expect="phases[2] (td1).student_from"),
    Case("student_from later", sets=(f"{T1}.student_from='td2'",), expect="phases[2] (td1).student_from"),
    Case("phase unknown key", sets=(f"{T1}.bogus=1",), expect=("phases[2].bogus", "unknown key")),
    Case("phases empty", sets=("phases=[]",), expect="phases"),
    Case("phases a table", sets=("phases={a=1}",), expect="phases"),
    Case("phase a number", sets=(f"{T1}=3",), expect=("phases[2]", "table")),
    Case("gd on GLUE train without task", edit=lambda d: (d["data"].update(task=""), d.update(
        phases=[{**d["phases"][1], "data": "train"}])), expect=("phases[0] (gd)", "data.task")),
    # --set itself
    Case("set into a scalar", sets=("run.seed.x=1",), expect=("run.seed", "not a table")),
    Case("set index out of range", sets=("phases.99.epochs=1",), expect="index 99"),
    Case("set no equals", sets=("run.seed",), expect="KEY=VALUE"),
    Case("set empty key", sets=("=1",), expect="empty key"),
    Case("set unknown phase", sets=("phases.td9.epochs=1",), expect='"td9"'),
    Case("set two assignments in one", sets=("run.seed=1\nrun.log_every=0",), expect="run.seed"),
    Case("set into a string", sets=("student.init.x=1",), expect="student.init"),
    # the recipe file
    Case("recipe not UTF-8", raw_recipe=b"[run]\nseed = 1\n# \xff\xfe\n", expect=("case.toml:3", "UTF-8")),
    Case("recipe not TOML", raw_recipe=b"[run\nseed = 1\n", expect=("case.toml", "TOML")),
    Case("recipe no phases", raw_recipe=b"[run]\nseed = 1\n", expect=("case.toml", "phases")),
    Case("lr nan in the file", edit=setp("phases.2.optimizer.lr", NAN), expect="phases[2].optimizer.lr"),
    Case("max_steps huge in the file", edit=setp("phases.1.max_steps", 10**30), expect="phases[1].max_steps"),
    # data files
    Case("train not UTF-8", files=rewrite("glue/train.tsv", replace_line(5, b"good \xff movie\t1")),
         expect=("train.tsv:5", "UTF-8")),
    Case("dev not UTF-8", files=rewrite("glue/dev.tsv", replace_line(3, b"bad \xc3( film\t0")), expect="dev.tsv:3"),
    Case("train bad label", files=rewrite("glue/train.tsv", replace_line(3, b"good movie\t2")),
         expect=("train.tsv:3", "label")),
    Case("train label text", files=rewrite("glue/train.tsv", replace_line(4, b"good movie\tpositive")),
         expect="train.tsv:4"),
    Case("train empty", files=put("glue/train.tsv", b""), expect=("train.tsv", "empty")),
    Case("train blank lines", files=put("glue/train.tsv", b"\n\n\n"), expect="train.tsv"),
    Case("train header only", files=put("glue/train.tsv", b"sentence\tlabel\n"), expect=("train.tsv", "no examples")),
    Case("train row without tab", files=rewrite("glue/train.tsv", replace_line(4, b"good movie 1")),
         expect="train.tsv:4"),
    Case("train no sentence column", files=rewrite("glue/train.tsv", replace_line(1, b"text\tlabel")),
         expect=("train.tsv", "sentence")),
    Case("train no label column", files=rewrite("glue/train.tsv", _without_label_column),
         expect=("train.tsv", "label")),
    Case("dev no label column", files=rewrite("glue/dev.tsv", _without_label_column), expect=("dev.tsv", "label")),
    Case("dev without labels and no phase evaluating", files=rewrite("glue/dev.tsv", _without_label_column),
         edit=lambda d: d.update(phases=[{**p, "eval_every": 0} for p in d["phases"][:3]]),
         expect=("data.dev", "label")),
    Case("dev binary", files=put("glue/dev.tsv", bytes(range(256)) * 4), expect="dev.tsv"),
    Case("train truncated row", files=rewrite("glue/train.tsv", lambda b: b[: b.index(b"\t", 40) + 1]),
         expect="train.tsv:"),
    Case("test split broken", edit=setp("data.test", "glue/test.tsv"),
         files=put("glue/test.tsv", b"id\tsentence\n1\tgood\n2 bad\n"), expect="test.tsv:3"),
    Case("corpus not UTF-8", files=rewrite("corpus.txt", replace_line(3, b"the \xff movie")),
         expect=("corpus.txt:3", "UTF-8")),
    Case("corpus empty", files=put("corpus.txt", b""), expect="corpus.txt"),
    Case("corpus blank", files=put("corpus.txt", b"\n  \n\n"), expect="corpus.txt"),
    Case("fewer rows than a batch with drop_last", sets=("phases.teacher.drop_last=true",),
         files=put("glue/train.tsv", b"sentence\tlabel\ngood\t1\nbad\t0\n"), expect=("phases[0] (teacher)", "steps")),
    Case("vocab without [UNK]", files=rewrite("teacher/vocab.txt", lambda b: b.replace(b"[UNK]\n", b"")),
         expect=("vocab.txt", "[UNK]")),
    Case("vocab not UTF-8", files=rewrite("teacher/vocab.txt", lambda b: b + b"\xff\n"), expect="vocab.txt"),
    Case("vocab larger than the model", files=rewrite("teacher/vocab.txt", lambda b: b + b"extra1\nextra2\n"),
         expect=("vocab.txt", "vocab_size")),
    # checkpoints
    Case("teacher config wider than its tensors",
         files=_edit_json("teacher/config.json", lambda d: d.update(hidden_size=32)),
         expect=("teacher.path", "config.json and the tensors disagree", "another shape")),
    Case("teacher config not JSON", files=put("teacher/config.json", b"{hidden_size: 16"), expect="config.json"),
    Case("teacher config not UTF-8", files=put("teacher/config.json", b'{"a": "\xff"}'), expect="config.json"),
    Case("teacher config a list", files=put("teacher/config.json", b"[1, 2]"), expect="config.json"),
    Case("teacher config without hidden_size", files=_edit_json("teacher/config.json", lambda d: d.pop("hidden_size")),
         expect=("config.json", "hidden_size")),
    Case("teacher config hidden_size a string",
         files=_edit_json("teacher/config.json", lambda d: d.update(hidden_size="16")),
         expect=("config.json", "hidden_size")),
    Case("teacher config zero layers",
         files=_edit_json("teacher/config.json", lambda d: d.update(num_hidden_layers=0)),
         expect=("config.json", "num_hidden_layers")),
    Case("teacher config dropout 2",
         files=_edit_json("teacher/config.json", lambda d: d.update(hidden_dropout_prob=2.0)),
         expect=("config.json", "hidden_dropout_prob")),
    Case("teacher NaN weight", files=_edit_tensors("teacher/model.safetensors",
                                                   _nan_tensor("bert.encoder.layer.1.attention.self.query.weight")),
         expect=("teacher.path", "damaged")),
    Case("teacher inf weight", files=_edit_tensors("teacher/model.safetensors",
                                                   _nan_tensor("bert.embeddings.LayerNorm.weight", INF)),
         expect=("teacher.path", "damaged")),
    Case("teacher missing tensor", files=_edit_tensors(
        "teacher/model.safetensors", lambda t: t.pop("bert.encoder.layer.3.output.dense.weight")),
         expect=("teacher.path", "missing tensors: encoder.layer.3.output.dense.weight")),
    Case("teacher extra tensor", files=_edit_tensors(
        "teacher/model.safetensors",
        lambda t: t.update({"bert.encoder.layer.9.output.dense.weight": np.zeros((2, 2), np.float32)})),
         expect=("teacher.path", "unexpected")),
    Case("teacher weights truncated", files=rewrite("teacher/model.safetensors", lambda b: b[: len(b) // 2]),
         expect="model.safetensors"),
    Case("teacher path a file", edit=setp("teacher.path", "corpus.txt"), expect="teacher.path"),
    Case("student.init config disagrees with tensors", edit=setp("student.init", "student"),
         files=_student_checkpoint(_edit_json("student/manifest.json", lambda d: d["config"].update(hidden_size=16))),
         expect=("student.init", "manifest.json and the tensors disagree")),
    Case("student.init NaN", edit=setp("student.init", "student"),
         files=_student_checkpoint(_edit_tensors("student/model.safetensors", _nan_tensor("pooler.dense.weight"))),
         expect=("student.init", "damaged")),
    Case("student.init manifest not JSON", edit=setp("student.init", "student"),
         files=_student_checkpoint(put("student/manifest.json", b"{")), expect="manifest.json"),
    Case("student.init manifest config a list", edit=setp("student.init", "student"),
         files=_student_checkpoint(_edit_json("student/manifest.json", lambda d: d.update(config=[1]))),
         expect="manifest.json"),
    Case("student.init manifest config without layers", edit=setp("student.init", "student"),
         files=_student_checkpoint(_edit_json("student/manifest.json", lambda d: d["config"].pop("num_hidden_layers"))),
         expect=("manifest.json", "num_hidden_layers")),
]
# and the same inputs through `run`: nothing may be written or trained
RUN_CASES = [attrs.evolve(c, name=c.name + " (run)", command="run") for c in HAND_WRITTEN[::3]]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return make_base(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(autouse=True)
def _planonly(planonly):
    return planonly


def test_the_tiny_recipe_itself_is_fine(base, tmp_path):
    assert run_case(Case("none"), base, tmp_path / "w") .kind == "accepted"


@pytest.mark.parametrize("case", HAND_WRITTEN + RUN_CASES, ids=lambda c: c.name)
def test_hand_written_malformed_input(case, base, tmp_path):
    outcome = run_case(case, base, tmp_path / "w")
    assert outcome.kind == "ok", f"{case.name}: {outcome.kind}: {outcome.detail}"


# --------------------------------------------------------------------------- generated cases

# (lowest allowed, highest allowed) of every integer field; None: unbounded on that side
INT_RANGES = {
    "run.seed": (0, 2**32 - 1), "run.log_every": (1, 2**31 - 1), "run.eval_batch_size": (1, 65536),
    "run.checkpoint_every": (0, 2**31 - 1), "run.keep_states": (1, 1000),
    "student.layers": (1, 256), "student.hidden_size": (1, 32768), "student.heads": (1, 1024),
    "student.intermediate_size": (1, 131072), "data.max_seq_length": (3, 8192), "data.pad_to_multiple_of": (1, 8192),
    "phases.N.max_steps": (0, 10**8), "phases.N.batch_size": (1, 65536), "phases.N.max_examples": (0, 2**31 - 1),
    "phases.N.eval_every": (0, 2**31 - 1), "phases.N.loss_scale_window": (1, 2**31 - 1),
}
# float fields: (low, low included, high, high included); out-of-range values are drawn outside
FLOAT_RANGES = {
    "run.checkpoint_minutes": (0.0, True, 1e6, True),
    "teacher.dropout": (0.0, True, 1.0, False), "teacher.attention_dropout": (0.0, True, 1.0, False),
    "student.dropout": (0.0, True, 1.0, False), "student.attention_dropout": (0.0, True, 1.0, False),
    "phases.N.optimizer.lr": (0.0, False, 1.0, True), "phases.N.optimizer.eps": (0.0, False, 1.0, True),
    "phases.N.optimizer.weight_decay": (0.0, True, 1.0, True),
    "phases.N.optimizer.max_grad_norm": (0.0, False, 1e6, True),
    "phases.N.schedule.warmup_fraction": (0.0, True, 1.0, True), "phases.N.schedule.power": (0.0, False, 100.0, True),
    "phases.N.schedule.end_lr_fraction": (0.0, True, 1.0, True), "phases.N.epochs": (0.0, True, 1e4, True),
    "phases.3.losses.0.weight": (0.0, True, 1e6, True), "phases.3.losses.0.temperature": (1e-3, True, 1e3, True),
}
# fields whose allowed set is "0 (off) or a range": values strictly between are bad
GAPPED = {"run.divergence_factor": (0.0, 1.0), "phases.N.loss_scale": (0.0, 1.0)}
STRINGS = ("run.output_dir", "run.device", "teacher.path", "student.init", "student.hidden_act", "data.task",
           "data.train", "data.dev", "data.corpus", "data.vocab", "phases.N.name", "phases.N.student_from")
LITERALS = ("teacher.format", "student.format", "student.projection", "data.padding", "data.batching", "phases.N.kind",
            "phases.N.data", "phases.N.target", "phases.N.mapping.strategy", "phases.N.optimizer.clip",
            "phases.N.schedule.kind", "phases.3.losses.0.kind")
BOOLS = ("data.lowercase", "phases.N.drop_last", "phases.N.keep_best", "run.train_pad_embedding",
         "phases.N.optimizer.bias_correction")
TABLES = ("run", "teacher", "student", "data", "phases.N", "phases.N.optimizer", "phases.N.schedule",
          "phases.N.mapping", "phases.3.losses.0")
LISTS = ("phases", "phases.N.losses", "phases.N.mapping.layers", "phases.N.optimizer.betas")

_phase = st.integers(0, 3)  # a training phase of the tiny recipe
_scalar_junk = st.one_of(st.text(max_size=5), st.booleans(), st.lists(st.integers(), max_size=2),
                         st.dictionaries(st.sampled_from("abc"), st.integers(), max_size=2), st.dates())
_nonfinite = st.sampled_from([NAN, INF, -INF])


def _concrete(path: str, i: int) -> str:
    return path.replace(".N.", f".{i}.").replace(".N", f".{i}")


def _float_outside(lo: float, lo_in: bool, hi: float, hi_in: bool):
    below = st.floats(max_value=lo, exclude_max=lo_in, allow_nan=False, allow_infinity=False)
    above = st.floats(min_value=hi, exclude_min=hi_in, allow_nan=False, allow_infinity=False)
    return st.one_of(below, above, _nonfinite)


def _int_outside(lo: int | None, hi: int | None):
    parts = [st.integers(max_value=lo - 1)] if lo is not None else []
    if hi is not None:
        parts.append(st.integers(min_value=hi + 1))
    return st.one_of(*parts, st.floats(allow_nan=True), _scalar_junk)


@st.composite
def bad_field(draw):
    """(dotted path with phase index, bad value) for one leaf or table of the recipe."""
    group = draw(st.sampled_from(["int", "float", "gap", "str", "literal", "bool", "table", "list", "unknown"]))
    i = draw(_phase)
    if group == "int":
        path = draw(st.sampled_from(sorted(INT_RANGES)))
        value = draw(_int_outside(*INT_RANGES[path]))
    elif group == "float":
        path = draw(st.sampled_from(sorted(FLOAT_RANGES)))
        value = draw(st.one_of(_float_outside(*FLOAT_RANGES[path]), _scalar_junk))
    elif group == "gap":
        path = draw(st.sampled_from(sorted(GAPPED)))
        lo, hi = GAPPED[path]
        value = draw(st.one_of(st.floats(min_value=lo, max_value=hi, exclude_min=True, exclude_max=True),
                               st.floats(max_value=lo, exclude_max=True, allow_infinity=False), _nonfinite))
    elif group == "str":
        path = draw(st.sampled_from(STRINGS))
        value = draw(st.one_of(st.integers(), st.floats(), st.booleans(), st.lists(st.text(max_size=3), max_size=2),
                               st.just(""), st.just("a\0b")))
    elif group == "literal":
        path = draw(st.sampled_from(LITERALS))
        value = draw(st.one_of(st.text(max_size=8).filter(lambda s: s not in _LITERAL_VALUES), st.integers(),
                               st.booleans()))
    elif group == "bool":
        path = draw(st.sampled_from(BOOLS))
        value = draw(st.one_of(st.integers(), st.text(max_size=4), st.floats()))
    elif group == "table":
        path = draw(st.sampled_from(TABLES))
        value = draw(st.one_of(st.integers(), st.text(max_size=4), st.lists(st.integers(), max_size=2)))
    elif group == "list":
        path = draw(st.sampled_from(LISTS))
        value = draw(st.one_of(st.integers(), st.text(max_size=4), st.dictionaries(st.sampled_from("ab"), st.integers(),
                                                                                    min_size=1, max_size=2)))
    else:
        table = draw(st.sampled_from(TABLES))
        key = draw(st.one_of(st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=8),
                             st.text(min_size=1, max_size=6)))  # any key (quoted in TOML): "a b", "x\ny", ...
        if key in _ALL_KEYS:
            key += "_x"
        path, value = f"{table}.{key}", draw(st.integers())
    return _concrete(path, i), value


_LITERAL_VALUES = {"huggingface", "neutral", "mindspore", "shared", "per_entry", "paper", "none", "max_length", "longest",
                   "fixed", "bucketed", "teacher_finetune", "general_distill", "task_distill_intermediate",
                   "task_distill_prediction", "evaluate", "train", "dev", "corpus", "student", "teacher", "uniform",
                   "top", "bottom", "explicit", "global_norm", "per_parameter", "linear", "polynomial", "constant",
                   "attention_mse", "embedding_mse", "hidden_mse", "soft_cross_entropy", "hard_cross_entropy", "mse"}
_ALL_KEYS = {p.rsplit(".", 1)[-1] for p in [*INT_RANGES, *FLOAT_RANGES, *GAPPED, *STRINGS, *LITERALS, *BOOLS, *TABLES,
                                              *LISTS]} | {"kind", "name", "layers", "losses", "format", "test",
                                                          "drop_last", "keep_best", "optimizer", "schedule", "mapping"}


def _valid_phase_name_change(path: str, value) -> bool:
    """A few generated values are fine after all (a fresh phase name; a student_from naming an earlier phase)."""
    leaf = path.rsplit(".", 1)[-1]
    if leaf == "name" and isinstance(value, str):
        return bool(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]*", value)) and value not in PHASES and \
            value.lower() != "state" and len(value) <= 64
    if leaf == "student_from" and isinstance(value, str):
        i = int(path.split(".")[1])
        return value in ("previous", "init", *PHASES[:i])
    return leaf == "vocab" and value == ""  # the default: the teacher's vocab


def _as_set(path: str, value) -> str | None:
    """The same change as a --set, when TOML can write the value inline."""
    try:
        return f"{path}={toml_value(value)}"
    except TypeError:
        return None


@st.composite
def recipe_case(draw) -> Case:
    path, value = draw(bad_field())
    if _valid_phase_name_change(path, value):
        value = 12345  # not a string: always wrong
    # a --set addresses plain dotted keys only; other keys and NUL characters go through the file
    via_set = draw(st.booleans()) and "\0" not in str(value) and re.fullmatch(r"[A-Za-z0-9_.-]+", path)
    command = draw(st.sampled_from(["validate", "run"]))
    if via_set:
        return Case(f"--set {path}", sets=(_as_set(path, value),), command=command)
    return Case(f"file {path}", edit=setp(path, value), command=command)


@st.composite
def bad_set(draw) -> Case:
    """A --set that is malformed itself."""
    kind = draw(st.sampled_from(["no_equals", "empty_key", "index", "into_scalar", "unknown_phase", "wrong_type"]))
    if kind == "no_equals":
        text = draw(st.sampled_from(["run.seed", "phases.td1.epochs", "x"]))
    elif kind == "empty_key":
        text = draw(st.sampled_from(["=1", ".=1", "[]=1", " =1", "..=x"]))
    elif kind == "index":
        text = f"phases.{draw(st.integers(5, 10**6))}.epochs=1"
    elif kind == "into_scalar":
        text = draw(st.sampled_from(["run.seed.x=1", "phases.td1.epochs.a=1", "student.init.b=2",
                                     "phases.0.name.x=1", "data.task.a.b=1"]))
    elif kind == "unknown_phase":
        text = f"phases.{draw(st.sampled_from(['td3', 'TD1', 'teacher2', 'eval_']))}.epochs=1"
    else:
        path = draw(st.sampled_from(["run.seed", "phases.td1.batch_size", "student.layers", "phases.td2.epochs",
                                     "phases.teacher.optimizer.lr", "data.max_seq_length"]))
        value = draw(st.sampled_from(["abc", "true", "[1]", "{a=1}", '"3"', "1.5.2", "", "inf", "nan"]))
        text = f"{path}={value}"
    return Case(f"bad --set {text}", sets=(text,), command=draw(st.sampled_from(["validate", "run"])))


_GLUE = ("glue/train.tsv", "glue/dev.tsv")


@st.composite
def data_case(draw) -> Case:
    """A data file broken in one way."""
    rel = draw(st.sampled_from([*_GLUE, "corpus.txt"]))
    kinds = ["bad_bytes", "empty", "blank"] + (["bad_label", "no_tab", "header", "truncate", "header_only"]
                                               if rel != "corpus.txt" else [])
    kind = draw(st.sampled_from(kinds))
    line = draw(st.integers(2, 30))
    if kind == "bad_bytes":
        junk = draw(st.sampled_from([b"\xff", b"\xc3(", b"\xe2\x82", b"\x80abc", b"\xf0\x28\x8c\x28"]))
        fn = rewrite(rel, lambda b: _insert_in_line(b, line, junk))
    elif kind == "empty":
        fn = put(rel, b"")
    elif kind == "blank":
        fn = put(rel, draw(st.sampled_from([b"\n", b"\n\n\n", b"  \n\t\n", b"\r\n"])))
    elif kind == "bad_label":
        label = draw(st.text(st.characters(codec="utf-8", exclude_characters="\t\r\n"), max_size=5)
                     .filter(lambda s: s.strip() not in ("0", "1")))
        fn = rewrite(rel, lambda b: _set_label(b, line, label.encode()))
    elif kind == "no_tab":
        fn = rewrite(rel, lambda b: _set_line(b, line, lambda row: row.replace(b"\t", b" ")))
    elif kind == "header":
        header = draw(st.sampled_from([b"sentence", b"label", b"text\tlabel", b"sentence\tlabels", b"Sentence\tLabel",
                                       b"label\tsentence\tlabel2x"]))
        fn = rewrite(rel, replace_line(1, header))
        if header == b"label\tsentence\tlabel2x":  # columns swapped: labels are then read from "label"
            fn = rewrite(rel, replace_line(1, b"label"))
    elif kind == "header_only":
        fn = put(rel, b"sentence\tlabel\n")
    else:  # cut a row short: in the middle of its text, or right after the tab (no label)
        after_tab = draw(st.booleans())
        fn = rewrite(rel, lambda b: _cut_row(b, line, after_tab))
    return Case(f"{rel} {kind}", files=fn, command=draw(st.sampled_from(["validate", "run"])))


def _set_line(data: bytes, lineno: int, fn) -> bytes:
    lines = data.split(b"\n")
    lineno = min(lineno, len(lines) - 1)
    lines[lineno - 1] = fn(lines[lineno - 1])
    return b"\n".join(lines)


def _insert_in_line(data: bytes, lineno: int, junk: bytes) -> bytes:
    return _set_line(data, lineno, lambda row: row[: len(row) // 2] + junk + row[len(row) // 2:] if row else junk)


def _set_label(data: bytes, lineno: int, label: bytes) -> bytes:
    return _set_line(data, max(lineno, 2), lambda row: row.rsplit(b"\t", 1)[0] + b"\t" + label)


def _cut_row(data: bytes, lineno: int, after_tab: bool) -> bytes:
    lines = data.split(b"\n")
    lineno = max(2, min(lineno, len(lines) - 1))
    row = lines[lineno - 1]
    cut = row.index(b"\t") + 1 if after_tab else max(1, row.index(b"\t") // 2)
    return b"\n".join(lines[: lineno - 1] + [row[:cut]])


@st.composite
def checkpoint_case(draw) -> Case:
    kind = draw(st.sampled_from(["config_shape", "config_type", "nan", "drop", "extra"]))
    command = draw(st.sampled_from(["validate", "run"]))
    if kind == "config_shape":
        key = draw(st.sampled_from(["hidden_size", "intermediate_size", "num_hidden_layers", "vocab_size",
                                    "max_position_embeddings", "type_vocab_size"]))
        original = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 4, "vocab_size": 31,
                    "max_position_embeddings": 32, "type_vocab_size": 2}[key]
        value = draw(st.integers(1, 64)) * (4 if key == "hidden_size" else 1)  # hidden: still divisible by 4 heads
        if value == original:
            value += 4
        return Case(f"config {key}={value}", files=_edit_json("teacher/config.json", lambda d: d.update({key: value})),
                    command=command)
    if kind == "config_type":
        key = draw(st.sampled_from(["hidden_size", "num_attention_heads", "layer_norm_eps", "hidden_dropout_prob",
                                    "vocab_size"]))
        value = draw(st.one_of(st.text(max_size=3), st.lists(st.integers(), max_size=2), st.just(None),
                               st.sampled_from([-1, 0, 1e9 + 0.5])))
        if key == "layer_norm_eps" and isinstance(value, float):
            value = -1.0
        if key == "hidden_dropout_prob" and value == 0:
            value = 2  # 0 is a fine dropout
        return Case(f"config {key}={value!r}",
                    files=_edit_json("teacher/config.json", lambda d: d.update({key: value})),
                    command=command)
    names = ["bert.embeddings.word_embeddings.weight", "bert.encoder.layer.0.attention.self.key.bias",
             "bert.encoder.layer.2.intermediate.dense.weight", "bert.pooler.dense.weight"]
    name = draw(st.sampled_from(names))
    if kind == "nan":
        value = draw(_nonfinite)
        return Case(f"{name}={value}", files=_edit_tensors("teacher/model.safetensors", _nan_tensor(name, value)),
                    command=command)
    if kind == "drop":
        return Case(f"no {name}", files=_edit_tensors("teacher/model.safetensors", lambda t: t.pop(name)),
                    command=command)
    shape = draw(st.lists(st.integers(1, 3), min_size=1, max_size=2))
    return Case(f"{name} reshaped {shape}",
                files=_edit_tensors("teacher/model.safetensors",
                                    lambda t: t.update({name: np.ones(shape, np.float32)})), command=command)


ANY_CASE = st.one_of(recipe_case(), recipe_case(), bad_set(), data_case(), checkpoint_case())
FUZZ = settings(max_examples=800, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@FUZZ
@given(case=ANY_CASE)
def test_generated_malformed_input(case, base, tmp_path):
    outcome = run_case(attrs.evolve(case, expect=()), base, tmp_path / "w")
    assert outcome.kind == "ok", f"{case.name}: {outcome.kind}: {outcome.detail}"


# --------------------------------------------------------------------------- counting (not a test)


def count(examples: int = 400) -> dict:
    """Run every hand-written case and `examples` generated ones; tally the outcomes."""
    import tempfile

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import PlanOnlyPlugin

    from distill_engine import plugins

    plugins.set_autoload(False)
    plugins.pm.register(PlanOnlyPlugin(), name="planonly")
    plugins._instances.clear()
    tally: dict[str, Counter] = {"hand-written": Counter(), "generated": Counter()}
    bad: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = make_base(Path(tmp) / "base")

        for case in HAND_WRITTEN + RUN_CASES:
            outcome = run_case(case, root, Path(tmp) / "w")
            tally["hand-written"][outcome.kind] += 1
            if outcome.kind != "ok":
                bad.append(f"  [{outcome.kind}] {case.name}: {outcome.detail[:160]}")

        @settings(FUZZ, max_examples=examples)
        @given(case=ANY_CASE)
        def generated(case):
            outcome = run_case(attrs.evolve(case, expect=()), root, Path(tmp) / "w")
            tally["generated"][outcome.kind] += 1
            if outcome.kind != "ok":
                bad.append(f"  [{outcome.kind}] generated {case.name} {case.sets}: {outcome.detail[:160]}")

        generated()
    return {"tally": tally, "bad": bad}


if __name__ == "__main__":
    result = count(int(sys.argv[1]) if len(sys.argv) > 1 else 400)
    for line in result["bad"]:
        print(line)
    for group, tally in result["tally"].items():
        print(f"{group}: {sum(tally.values())} cases: {dict(tally)}")
