"""Fingerprints of a run: what in a resolved recipe and its input files decides the numbers.

A resumed run must compute what the interrupted one would have. `math_view` keeps the recipe
fields that change the math (everything but where and how often the run writes, and the device);
`input_digests` hashes the files the run reads (checkpoints, data, vocab). Both go into run.json
at the start; `--resume` compares them with the recipe it is given and names every difference.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

# Fields that change where and how often a run writes, how it guards itself, or where it runs,
# but not what it computes: they may change between an interrupted run and its resume.
# (run.device moves a run to another machine: the numbers then agree up to float rounding.)
NON_MATH_FIELDS = frozenset({
    "run.output_dir", "run.log_every", "run.checkpoint_every", "run.checkpoint_minutes", "run.keep_states",
    "run.divergence_factor", "run.device", "run.cache_dir", "run.tensorboard", "augment.output", "augment.batch_size",
    # whether a Hub name may be downloaded: the files read are compared by their digests
    "run.hub_download",
})
# Math fields added to the schema after runs were written with it, each with the value that
# computes what the older code did: a run started before the field existed has no value for it
# in its recipe.json, and resuming it with this value is no change.
ADDED_FIELDS = {"data.batching": "fixed", "data.pad_to_multiple_of": 16, "run.cache_dtype": "float16",
                "run.precision": "fp32",
                # the run-wide caps (--max-steps, --max-examples): off in a run from before them
                "run.max_steps": 0, "run.max_examples": 0,
                # a run from before it trained the [PAD] embedding row
                "run.train_pad_embedding": True,
                # the classifier head's input (the engine's heads were all classifier(relu(pooled)))
                "student.classifier_activation": "relu", "teacher.classifier_activation": "relu",
                # [augment] (a run from before it read no augmented data: its defaults change nothing)
                "augment.glove_rows": 100_000, "augment.max_examples": 0, "augment.mlm_format": "huggingface", "augment.n": 0,
                "augment.p": 0.4, "augment.k": 15, "augment.seed": 42}
# The same for fields of every phase (phases[i].<field>, dotted below it). A run from before the
# teacher-output cache ran its teacher every step: "off" (a resume under the new default "auto"
# names the field). Adam was always bias-corrected before optimizer.bias_correction existed.
ADDED_PHASE_FIELDS = {"mask_padding": False, "teacher_cache": "off", "optimizer.bias_correction": True,
                      # a run from before early stopping never stopped early
                      "early_stopping_patience": 0}
# Input files whose contents decide the numbers (paths resolved by the recipe loader).
INPUT_FIELDS = ("teacher.path", "student.init", "data.train", "data.dev", "data.test", "data.corpus", "data.vocab",
                "augment.glove", "augment.mlm", "augment.mlm_vocab")


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}, "phases": [{"x": 2}]} -> {"a.b": 1, "phases[0].x": 2} (scalars and lists of scalars)."""
    out: dict[str, Any] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(data, (list, tuple)) and any(isinstance(v, (dict, list, tuple)) for v in data):
        for i, value in enumerate(data):
            out.update(flatten(value, f"{prefix}[{i}]"))
        out[f"{prefix}.#"] = len(data)  # a phase added or removed is a difference too
    else:
        out[prefix] = list(data) if isinstance(data, tuple) else data
    return out


def _with_loss_parameters(recipe_dict: dict) -> dict:
    """The recipe with each loss table holding exactly its kind's parameters (defaults filled).

    Before losses were plugins every loss table carried `temperature` (1.0 unless set), read only
    by soft_cross_entropy: a resumed run from then has it on attention_mse too, and no parameter a
    kind gained later. Neither changes what that run computed."""
    from distill_engine.losses import loss_definitions

    definitions = loss_definitions()
    phases = []
    for phase in recipe_dict.get("phases") or []:
        if isinstance(phase, dict) and isinstance(phase.get("losses"), list):
            losses = []
            for loss in phase["losses"]:
                d = definitions.get(loss.get("kind")) if isinstance(loss, dict) else None
                if d is not None:
                    loss = {k: v for k, v in loss.items() if k in ("kind", "weight", "mapping") or d.param(k)}
                    loss = {**{p.name: p.default for p in d.params}, **loss}
                losses.append(loss)
            phase = {**phase, "losses": losses}
        phases.append(phase)
    return {**recipe_dict, "phases": phases} if "phases" in recipe_dict else recipe_dict


def math_view(recipe_dict: dict) -> dict[str, Any]:
    """The flattened recipe without the fields that do not change the numbers. Input paths are
    left out too: their files' contents are compared instead (`input_digests`), so moving the
    data to another folder does not block a resume."""
    return {k: v for k, v in flatten(_with_loss_parameters(recipe_dict)).items()
            if k not in NON_MATH_FIELDS and k not in INPUT_FIELDS}


def _digest_file(path: Path, h) -> None:
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)


def digest_path(path: str) -> str | None:
    """sha256 of a file, or of a directory's files (names and contents, sorted); None when absent."""
    if not path or path == "random":
        return None
    p = Path(path)
    h = hashlib.sha256()
    if p.is_file():
        _digest_file(p, h)
    elif p.is_dir():
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            h.update(str(f.relative_to(p)).encode() + b"\0")
            _digest_file(f, h)
    else:
        return None
    return h.hexdigest()


def input_digests(recipe_dict: dict) -> dict[str, str | None]:
    """{dotted field: sha256 of what it points at} for every input path of the recipe."""
    flat = flatten(recipe_dict)
    return {field: digest_path(flat.get(field) or "") for field in INPUT_FIELDS}


def fingerprint(recipe_dict: dict, digests: dict[str, str | None], backend: str) -> str:
    """One short hex id for the math of a run: recipe (math fields), input contents, backend."""
    doc = json.dumps({"recipe": math_view(recipe_dict), "inputs": digests, "backend": backend},
                     sort_keys=True, default=str)
    return hashlib.sha256(doc.encode()).hexdigest()[:16]


def _show(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _named(key: str, *views: dict) -> str:
    """'phases[2].lr' -> 'phases[2] (td2).lr': the phase's name, as users write it in --set."""
    if not key.startswith("phases["):
        return key
    head, _, rest = key.partition("]")
    name = next((v.get(f"{head}].name") for v in views if v.get(f"{head}].name")), None)
    return f"{head}] ({name}){rest}" if name else key


def differences(old_recipe: dict, old_digests: dict, new_recipe: dict, new_digests: dict) -> list[str]:
    """Human-readable differences that change the math, e.g. 'phases[1].optimizer.lr (5e-05 -> 0.0001)'."""
    def with_added(view: dict) -> dict:
        added = {f"phases[{i}].{field}": value for i in range(int(view.get("phases.#", 0)))
                 for field, value in ADDED_PHASE_FIELDS.items()}
        return {**ADDED_FIELDS, **added, **view}

    old, new = with_added(math_view(old_recipe)), with_added(math_view(new_recipe))
    out = []
    for key in sorted(set(old) | set(new)):
        if old.get(key, "<unset>") != new.get(key, "<unset>"):
            out.append(f"{_named(key, new, old)} ({_show(old.get(key, '<unset>'))} -> {_show(new.get(key, '<unset>'))})")
    for field in INPUT_FIELDS:
        if old_digests.get(field) != new_digests.get(field):
            what = "is new" if old_digests.get(field) is None else (
                "is gone" if new_digests.get(field) is None else "holds other contents")
            out.append(f"{field} ({what} since the run started)")
    return out
