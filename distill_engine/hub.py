"""Models named the Hugging Face Hub way (`teacher.path = "bert-base-uncased"` or `"org/name"`).

A checkpoint field whose value is not an existing path but reads as a Hub repository id is looked
up in the local Hugging Face cache, through huggingface_hub's own `snapshot_download` (the layout
`<cache>/models--org--name/snapshots/<revision>/...`, `refs/main` naming the revision; the cache is
`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`, as huggingface_hub reads it).
Nothing is downloaded unless `run.hub_download = true`, and never when `HF_HUB_OFFLINE` is set:
a name that is in no cache is one error naming the field and what was tried. The field then holds
the snapshot's directory, so recipe.json records which revision a run read and the fingerprint
hashes its files like any local checkpoint's.

The core imports huggingface_hub only here, only for a Hub name (the extra "hub").
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import attrs

from distill_engine.errors import RecipeError

# (checkpoint field, its format field): the fields that name a model, so may name one on the Hub
HUB_FIELDS = (("teacher.path", "teacher.format"), ("student.init", "student.format"),
              ("augment.mlm", "augment.mlm_format"))
# huggingface_hub's repo-id rule (`utils.validate_repo_id`): "name" or "namespace/name", letters,
# digits, "-", "_", "."; no "--" or "..", no leading or trailing "-" or "."; at most 96 characters
_REPO_ID = re.compile(r"(?:[A-Za-z0-9](?:[\w.-]*[A-Za-z0-9])?/)?[A-Za-z0-9](?:[\w.-]*[A-Za-z0-9])?")
# what a model's snapshot needs for the engine (downloads fetch these, not every file of the repo)
DOWNLOAD_PATTERNS = ["config.json", "*.safetensors", "model.safetensors.index.json", "vocab.txt",
                     "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]


def looks_like_repo_id(value: str) -> bool:
    """Whether `value` can be a Hub repository id (not whether one exists): never an absolute path,
    "~..." or "./..."."""
    return (bool(value) and len(value) <= 96 and _REPO_ID.fullmatch(value) is not None
            and "--" not in value and ".." not in value)


def cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (huggingface_hub reads it once, at
    import): $HF_HUB_CACHE, else $HF_HOME/hub, else huggingface_hub's default."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def offline() -> bool:
    """HF_HUB_OFFLINE set to a true value (huggingface_hub's switch), read now."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve(value: str, field: str, fmt: str, format_field: str, download: bool) -> str:
    """The local snapshot directory of Hub model `value`, named by recipe field `field`."""
    not_local = f'{field}: "{value}" is not a file or folder here (relative paths are read from the recipe\'s folder, ' \
                "or the working directory with --set)"
    if fmt != "huggingface":
        raise RecipeError(f'{not_local}; read as a Hugging Face Hub name it needs {format_field} = "huggingface" '
                          f'(now "{fmt}")')
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError:
        raise RecipeError(f"{not_local}; reading it as a Hugging Face Hub name needs huggingface_hub "
                          "(pip install 'distill-engine[hub]')") from None
    cache = cache_dir()
    repo = cache / f"models--{value.replace('/', '--')}"
    try:
        return snapshot_download(value, cache_dir=str(cache), local_files_only=True)
    except LocalEntryNotFoundError:
        pass  # not cached (or no refs/main to name its snapshot): download, or say what was tried
    except (OSError, ValueError) as exc:
        raise RecipeError(f"{not_local}, and its Hugging Face cache entry {repo} does not read ({exc})") from None
    tried = f"{not_local}, nor in the Hugging Face cache ({repo}/snapshots/ has none under refs/main)"
    if not download:
        raise RecipeError(f"{tried}; set run.hub_download = true to download it (when online), or point {field} at "
                          "a local checkpoint")
    if offline():
        raise RecipeError(f"{tried}; run.hub_download is on, but HF_HUB_OFFLINE is set: nothing is downloaded")
    try:
        return snapshot_download(value, cache_dir=str(cache), allow_patterns=DOWNLOAD_PATTERNS)
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as exc:  # offline, no such repo, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RecipeError(f"{tried}; downloading it from the Hub failed ({first})") from None


def _get(recipe, dotted: str):
    table, _, leaf = dotted.partition(".")
    return getattr(getattr(recipe, table), leaf)


def resolve_hub_names(recipe):
    """`recipe` with every checkpoint field that names a Hub model (not an existing path, and a
    repo id) replaced by its local snapshot directory; unchanged when there is none."""
    changes: dict[str, dict] = {}
    for field, format_field in HUB_FIELDS:
        value = _get(recipe, field)
        if not isinstance(value, str) or not value or value == "random" or Path(value).exists() \
                or not looks_like_repo_id(value):
            continue  # a path (the checks after report a missing one as before)
        path = resolve(value, field, _get(recipe, format_field), format_field, recipe.run.hub_download)
        table, _, leaf = field.partition(".")
        changes.setdefault(table, {})[leaf] = path
    if not changes:
        return recipe
    return attrs.evolve(recipe, **{table: attrs.evolve(getattr(recipe, table), **values)
                                   for table, values in changes.items()})


def cached_name(path: str) -> str | None:
    """The repo id of a snapshot folder of a Hugging Face cache (".../models--org--name/snapshots/<rev>"),
    else None: what `validate` shows of a field a Hub name was resolved into."""
    parts = Path(path).parts
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
        return parts[-3].removeprefix("models--").replace("--", "/")
    return None
