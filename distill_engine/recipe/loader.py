"""Recipe loading: TOML in, `--set` overrides, path resolution, the one cattrs converter, clear errors.

Every failure is a `RecipeError` naming the dotted path of the field ("phases[2].optimizer.lr")
and, for an unknown key, the nearest valid key. The converter is strict about shapes as well as
scalars: a table must be a table, an array an array (of the right length for a pair such as
`betas`), and the schema's validators (ranges, names) report through the same path machinery.
"""

from __future__ import annotations

import copy
import json
import re
import tomllib
import typing
from pathlib import Path
from typing import Any

import attrs
import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError
from cattrs.gen import make_dict_structure_fn

from distill_engine.data.tasks import Task
from distill_engine.data.textfile import read_text
from distill_engine.errors import FieldError, RecipeError, did_you_mean
from distill_engine.hub import HUB_FIELDS, looks_like_repo_id
from distill_engine.recipe.fields import show
from distill_engine.recipe.schema import INPUT_PATH_FIELDS, LOSS_FIELDS, LossSpec, Recipe


def _kind(value: Any) -> str:
    """What a TOML value is, in the user's words."""
    if isinstance(value, dict):
        return "table"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def _strict(kind: type, accepts: tuple[type, ...]):
    def structure(value: Any, _type: Any) -> Any:
        # bool is an int in Python; a recipe's `true` is never a number (and vice versa).
        if isinstance(value, bool) and kind is not bool or not isinstance(value, accepts):
            raise TypeError(f"expected {kind.__name__}, got {_kind(value)} {show(value)}")
        try:
            return kind(value)
        except OverflowError:  # an integer beyond float's range
            raise ValueError(f"{show(value)} is out of range for a {kind.__name__}") from None

    return structure


def _is_tuple(t: Any) -> bool:
    return typing.get_origin(t) is tuple


def _structure_tuple(value: Any, t: Any) -> tuple:
    """A TOML array into a tuple: homogeneous (`tuple[int, ...]`) or of fixed length (`tuple[float, float]`)."""
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"expected an array, got {_kind(value)} {show(value)}")
    args = typing.get_args(t)
    if len(args) == 2 and args[1] is Ellipsis:
        types = [args[0]] * len(value)
    else:
        if len(value) != len(args):
            raise ValueError(f"expected an array of {len(args)} values, got {len(value)}")
        types = list(args)
    out, errors = [], []
    for i, (item, item_type) in enumerate(zip(value, types)):
        try:
            out.append(CONVERTER.structure(item, item_type))
        except Exception as exc:  # collected and reported per index, like cattrs' own
            exc.add_note(f"Structuring {t} @ index {i}")
            errors.append(exc)
    if errors:
        raise IterableValidationError(f"While structuring {t}", errors, t)
    return tuple(out)


def _structure_table(cls: type):
    """A TOML table into an attrs class; anything but a table is one clear error."""
    inner = make_dict_structure_fn(cls, CONVERTER)

    def structure(value: Any, t: Any) -> Any:
        if not isinstance(value, dict):
            raise TypeError(f"expected a table, got {_kind(value)} {show(value)}")
        return inner(value, t)

    return structure


def make_converter() -> cattrs.Converter:
    """The converter for recipes: extra keys forbidden, scalars checked strictly (no 1.5 -> 1),
    tables and arrays checked for what they are."""
    conv = cattrs.Converter(forbid_extra_keys=True)
    conv.register_structure_hook(int, _strict(int, (int,)))
    conv.register_structure_hook(float, _strict(float, (int, float)))
    conv.register_structure_hook(str, _strict(str, (str,)))
    conv.register_structure_hook(bool, _strict(bool, (bool,)))
    conv.register_structure_hook_func(lambda t: typing.get_origin(t) is typing.Literal, _structure_literal)
    conv.register_structure_hook_func(_is_tuple, _structure_tuple)
    conv.register_structure_hook_factory(attrs.has, _structure_table)
    conv.register_structure_hook(str | Task, _structure_task)
    conv.register_unstructure_hook(str | Task, _unstructure_task)
    conv.register_structure_hook(str | int, _structure_column)
    conv.register_structure_hook(str | int | None, _structure_column)
    conv.register_structure_hook(LossSpec, _structure_loss)
    conv.register_unstructure_hook(LossSpec, _unstructure_loss)
    return conv


def _structure_loss(value: Any, _type: Any) -> LossSpec:
    """A loss table: kind, weight and mapping, and the kind's parameters beside them
    (`{kind = "kl_divergence", temperature = 4.0}`), checked against its definition."""
    if not isinstance(value, dict):
        raise TypeError(f"expected a table, got {_kind(value)} {show(value)}")
    fields = {k: v for k, v in value.items() if k in LOSS_FIELDS}
    params = {k: v for k, v in value.items() if k not in LOSS_FIELDS}
    return _LOSS_TABLE({**fields, "params": params}, LossSpec)


def _unstructure_loss(loss: LossSpec) -> dict:
    """The loss's table as a recipe writes it, with every parameter of its kind (defaults filled)."""
    out: dict[str, Any] = {"kind": loss.kind, "weight": loss.weight}
    if loss.mapping is not None:
        out["mapping"] = CONVERTER.unstructure(loss.mapping)
    out.update(loss.resolved_params())
    return out


def _structure_task(value: Any, _type: Any) -> Any:
    """data.task: a preset's name, or a table defining a task of the type its `type` key names
    (default "sequence", whose definition is `Task`; a task-type plugin brings its own class)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        from distill_engine.tasks.registry import split_type

        try:
            task_type, table = split_type(value)
        except RecipeError as exc:
            raise FieldError("type", str(exc).removeprefix("type: ")) from None
        return CONVERTER.structure(table, task_type.definition)
    raise TypeError(f"expected a task name or a table defining one, got {_kind(value)} {show(value)}")


def _unstructure_task(value: Any) -> Any:
    """data.task as a recipe writes it: a name, or the definition's table with its `type` when that
    is not the default (so a sequence task's resolved recipe, and its fingerprint, stay as they were)."""
    if isinstance(value, str):
        return value
    from distill_engine.tasks.registry import DEFAULT_TYPE, task_type_of

    table = CONVERTER.unstructure(value, type(value))
    name = task_type_of(value).name
    return table if name == DEFAULT_TYPE else {"type": name, **table}


def _structure_column(value: Any, _type: Any) -> Any:
    """A task's column: a name (string) or a 0-based index (the validator checks the range)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(f"expected a column name (string) or a 0-based index, got {_kind(value)} {show(value)}")
    return value


def _structure_literal(value: Any, literal: Any) -> Any:
    choices = typing.get_args(literal)
    if isinstance(value, (dict, list)) or value not in choices or isinstance(value, bool):
        names = [str(c) for c in choices]
        raise ValueError(f"{show(value)} is not one of {', '.join(names)}{did_you_mean(str(value), names)}")
    return value


CONVERTER = make_converter()
_LOSS_TABLE = make_dict_structure_fn(LossSpec, CONVERTER)


def _field_names(cls: type) -> list[str]:
    return [f.name for f in attrs.fields(cls)] if attrs.has(cls) else []


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _key(key: str) -> str:
    """A key as the user would write it in TOML: bare, or quoted when it must be."""
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


def _messages(exc: BaseException, path: str) -> list[str]:
    """Flatten a cattrs exception group into '<path>: <problem>' lines."""
    if isinstance(exc, ForbiddenExtraKeysError):
        names = _field_names(exc.cl)
        return [f"{path}.{_key(key)}: unknown key{did_you_mean(key, names)}; valid keys: {', '.join(names)}"
                for key in sorted(exc.extra_fields)]
    if isinstance(exc, FieldError):
        return [f"{path}.{exc.field}: {exc.message}"]
    if isinstance(exc, (ClassValidationError, IterableValidationError)):
        out = []
        for sub in exc.exceptions:
            note = next((n for n in getattr(sub, "__notes__", []) if isinstance(n, str)), "")
            sub_path = path
            if "@ attribute " in note:
                sub_path = f"{path}.{note.rsplit('@ attribute ', 1)[1]}"
            elif "@ index " in note:
                sub_path = f"{path}[{note.rsplit('@ index ', 1)[1]}]"
            out.extend(_messages(sub, sub_path))
        return out
    if isinstance(exc, KeyError):
        return [f"{path}: required key is missing"]
    return [f"{path}: {exc}"]


def structure(data: dict, source: str = "recipe") -> Recipe:
    """Turn a plain dict into a `Recipe`, or raise one RecipeError listing every problem."""
    phases = data.get("phases")
    if isinstance(phases, dict):
        raise RecipeError(f"{source}: phases: expected an array of tables ([[phases]]), got a table")
    if not isinstance(phases, list) or not phases:
        raise RecipeError(f"{source}: a recipe needs at least one [[phases]] table")
    try:
        return CONVERTER.structure(data, Recipe)
    except (ClassValidationError, IterableValidationError, ForbiddenExtraKeysError, FieldError) as exc:
        lines = _messages(exc, "recipe")
        raise RecipeError(f"{source}: " + "; ".join(line.removeprefix("recipe.") for line in lines)) from None


def parse_value(text: str) -> Any:
    """A --set value is read as a TOML value (numbers, booleans, strings, arrays); bare words are
    strings, and so is anything that is not exactly one TOML value (e.g. "1\nx = 2")."""
    try:
        doc = tomllib.loads(f"v = {text}")
    except tomllib.TOMLDecodeError:
        return text
    return doc["v"] if list(doc) == ["v"] else text


# What a --set value starts with when it means a TOML string, array or table: such a value that
# does not parse is a mistake (`run.output_dir="abc` lost its closing quote), never a bare word.
_TOML_OPENERS = {'"': ("a quoted string", "close the quote"), "'": ("a quoted string", "close the quote"),
                 "[": ("an array", "close the array with ]"), "{": ("an inline table", "close the table with }")}


def _override_value(key: str, raw: str) -> Any:
    value = parse_value(raw)
    opener = raw.strip()[:1]
    if opener in _TOML_OPENERS and isinstance(value, str) and value == raw:
        try:
            tomllib.loads(f"v = {raw}")
            why = "more than one value"
        except tomllib.TOMLDecodeError as exc:
            why = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", str(exc)).lower()
        what, fix = _TOML_OPENERS[opener]
        raise RecipeError(f"--set {key}={raw}: the value starts {what} ({opener}) but is not valid TOML ({why}); "
                          f"{fix}, or write a bare word without {opener}")
    return value


def _split_path(dotted: str) -> list[str]:
    return [part for part in dotted.replace("[", ".").replace("]", "").split(".") if part]


def apply_override(data: dict, assignment: str) -> str:
    """Apply one "a.b.c=value" to `data` in place; list items are addressed by index or, for
    phases, by name ("phases.td2.epochs=1"). Returns the dotted path that was set."""
    if "=" not in assignment:
        raise RecipeError(f'--set "{assignment}": expected KEY=VALUE, e.g. run.seed=1')
    key, raw = assignment.split("=", 1)
    parts = _split_path(key.strip())
    if not parts:
        raise RecipeError(f'--set "{assignment}": empty key')
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if part.isdigit():
                index = int(part)
            else:
                names = [item.get("name") for item in node if isinstance(item, dict)]
                if part not in names:
                    raise RecipeError(f'--set {key}: no item "{part}" in {".".join(parts[:i])}'
                                      f"{did_you_mean(part, [n for n in names if n])}; "
                                      f"items: {', '.join(str(n) for n in names)}")
                index = names.index(part)
            if not 0 <= index < len(node):
                raise RecipeError(f"--set {key}: index {index} out of range ({len(node)} items)")
            if last:
                node[index] = _override_value(key.strip(), raw)
            else:
                node = node[index]
        elif isinstance(node, dict):
            if last:
                node[part] = _override_value(key.strip(), raw)
            else:
                node = node.setdefault(part, {})
        else:
            raise RecipeError(f"--set {key}: {'.'.join(parts[:i])} is a value ({_kind(node)} {show(node)}), "
                              "not a table")
    return ".".join(parts)


HUB_CHECKPOINT_FIELDS = tuple(field for field, _ in HUB_FIELDS)


def _resolve_path(data: dict, dotted: str, base: Path) -> None:
    node = data
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            return
    value = node.get(leaf)
    if not isinstance(value, str) or not value or value == "random" or "\0" in value:
        return  # not a path (the schema reports a wrong type or a NUL with the field's name)
    try:
        path = Path(value).expanduser()
    except RuntimeError as exc:  # "~user" for a user that does not exist
        raise RecipeError(f"{dotted}: cannot expand {value!r} ({exc})") from None
    if not path.is_absolute():
        local = (base / path).resolve()
        if dotted in HUB_CHECKPOINT_FIELDS and not local.exists() and looks_like_repo_id(value):
            return  # no such path here: left as written, a Hugging Face Hub name (plan() resolves it, hub.py)
        node[leaf] = str(local)


def load_recipe_dict(path: Path) -> dict:
    """Read a TOML recipe into a dict with its input paths made absolute (relative to its folder)."""
    path = Path(path)
    text = read_text(path, "recipe file", error=RecipeError)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{path}: not valid TOML: {exc}") from None
    for dotted in INPUT_PATH_FIELDS:
        _resolve_path(data, dotted, path.resolve().parent)
    return data


def overridden(data: dict, overrides: list[str] = (), cwd: Path | None = None) -> dict:
    """A copy of recipe data with `--set` assignments applied (input paths they set made
    absolute, relative to `cwd`)."""
    data = copy.deepcopy(data)
    for assignment in overrides:
        dotted = apply_override(data, assignment)
        if dotted in INPUT_PATH_FIELDS:
            _resolve_path(data, dotted, Path(cwd or Path.cwd()))
    return data


# Fields whose default changed, each with the default a run was started with before: a recipe
# that leaves such a field unset, resumed (`run --resume`) in a run directory started before the
# change, resumes with the value that run recorded (its recipe.json holds every field), so an
# interrupted run finishes as it began instead of being refused for a difference nobody wrote.
CHANGED_DEFAULTS = {
    # TinyBERT's classifier(relu(pooled)) until Hugging Face's classifier(pooled) became the default
    # (#33: a default recipe's student must export to transformers)
    "teacher.classifier_activation": "relu", "student.classifier_activation": "relu",
}


def _lookup(data: dict, dotted: str) -> tuple[bool, Any]:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def started_defaults(data: dict, output_dir: Path) -> tuple[dict, list[str]]:
    """`data` with each CHANGED_DEFAULTS field it leaves unset given the value the run in
    `output_dir` was started with (its recipe.json; the old default when that predates the field),
    and a note for each one that differs from today's default. No run there, or a recipe.json that
    does not read: `data` unchanged (the runner reports what it finds)."""
    try:
        old = json.loads((Path(output_dir) / "recipe.json").read_text())["recipe"]
    except (OSError, ValueError, KeyError, TypeError):
        return data, []
    if not isinstance(old, dict):
        return data, []
    today = recipe_to_dict(structure(data))  # the defaults this code gives the unset fields
    data, notes = copy.deepcopy(data), []
    for dotted, before in CHANGED_DEFAULTS.items():
        if _lookup(data, dotted)[0]:
            continue  # the user's own value: compared with the run's as any other field is
        found, value = _lookup(old, dotted)
        value = value if found else before
        table, _, leaf = dotted.rpartition(".")
        node = data.setdefault(table, {})
        if not isinstance(node, dict):
            continue  # a malformed table: structure() names it
        node[leaf] = value
        if value != _lookup(today, dotted)[1]:
                notes.append(f"{dotted} is unset; resuming with {json.dumps(value)}, the value the run in {output_dir} "
                         "was started with (the default then)")
    return data, notes


def load_recipe(path: Path, overrides: list[str] = (), cwd: Path | None = None, resume: bool = False,
                notes: list[str] | None = None) -> Recipe:
    """Load, override (`--set`, paths relative to `cwd`), and structure a recipe. A problem an
    override brings in is reported against that `--set`, not against the file. `resume`: the run in
    run.output_dir is being resumed, and fields whose default changed since it started keep its
    values unless the recipe sets them (`started_defaults`; each note appended to `notes`)."""
    data = load_recipe_dict(path)
    try:
        recipe = structure(overridden(data, overrides, cwd), source=str(path))
    except RecipeError:
        if overrides:
            structure_blaming_overrides(data, overrides, cwd)
        raise
    if resume:
        kept_data, kept = started_defaults(overridden(data, overrides, cwd), Path(recipe.run.output_dir))
        recipe = structure(kept_data, source=str(path))
        if notes is not None:
            notes.extend(kept)
    return recipe


def structure_blaming_overrides(data: dict, overrides: list[str], cwd: Path | None = None) -> None:
    """When `data` itself structures, raise the recipe's error (with every override) against the
    first `--set` after which it does not: "--set KEY=VALUE: <problem>". Return when the recipe is
    bad without any override (or fine with all of them): the caller's error stands."""
    try:
        structure(copy.deepcopy(data))
    except RecipeError:
        return  # the file alone is bad: its own error names it
    for k, assignment in enumerate(overrides, 1):
        try:
            structure(overridden(data, overrides[:k], cwd))
        except RecipeError:
            # the problem as it stands with every override (a later --set may have changed it)
            structure(overridden(data, overrides, cwd), source=f"--set {assignment}")
            return


def recipe_to_dict(recipe: Recipe) -> dict:
    """The fully-resolved recipe as plain data (written beside a run for reproducibility)."""
    return CONVERTER.unstructure(recipe)
