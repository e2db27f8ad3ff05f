"""The registries of model families and of their per-backend implementations.

Families register through `register_model_families` (BERT through the same hook,
`distill_engine.models.builtin`); a backend that builds a family registers
`register(family, backend, implementation)` through `register_model_implementations`, where
`implementation(config, state, device)` returns the backend's `Model` and may be a "module:attr"
string imported on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill_engine.errors import CheckpointError
from distill_engine.registries import HookRegistry, ImplementationRegistry

DEFAULT_FAMILY = "bert"
_MEMBERS = ("name", "description", "config_class", "hf_model_types", "taps", "config_from_hf", "config_to_hf",
            "config_from_dict", "student_config", "parameter_shapes", "init_parameters", "from_hf_names",
            "to_hf_names", "reference_forward", "tokenizer")


def _check(obj: Any) -> str | None:
    missing = [m for m in _MEMBERS if not hasattr(obj, m)]
    if missing:
        return (f"{type(obj).__name__} is not a model family: it lacks {', '.join(missing)} "
                "(distill_engine.models.family.ModelFamily)")
    return None


MODEL_FAMILIES = HookRegistry("register_model_families", "model family", _check)


def model_families() -> dict[str, Any]:
    """Every registered model family by name (BERT first)."""
    return MODEL_FAMILIES.all()


def get_family(name: str) -> Any:
    """The family called `name`; unknown: a `CheckpointError` listing the registered ones."""
    return MODEL_FAMILIES.get(name, CheckpointError)


def family_of(config: Any) -> Any:
    """The registered family whose config class is `config`'s class (exactly: a family may subclass
    BERT's config and still be another family)."""
    for family in model_families().values():
        if type(config) is family.config_class:
            return family
    raise CheckpointError(f"{type(config).__name__} is not the config of a registered model family "
                          f"(registered: {', '.join(model_families())})")


def family_for_model_type(model_type: str, path: Path) -> Any:
    """The family that reads a Hugging Face config.json of `model_type`; unknown: one line naming
    the file and the model types the registered families read."""
    for family in model_families().values():
        if model_type in family.hf_model_types:
            return family
    readable = sorted(t for f in model_families().values() for t in f.hf_model_types)
    raise CheckpointError(f'{path}: model_type "{model_type}" is not a registered model family\'s '
                          f"(readable here: {', '.join(readable)}; a model-family plugin adds one)")


def read_hf_config(path: Path) -> Any:
    """The config of a Hugging Face config.json, read by the family of its `model_type` (absent: BERT,
    as old BERT configs have none)."""
    import json

    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no config.json") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return family_for_model_type(data.get("model_type", DEFAULT_FAMILY), path).config_from_hf(data, Path(path))


def parameter_shapes(config: Any) -> dict[str, tuple[int, ...]]:
    """`family_of(config).parameter_shapes(config)`."""
    return family_of(config).parameter_shapes(config)


def init_parameters(config: Any, seed: int, only: set[str] | None = None) -> dict:
    """`family_of(config).init_parameters(config, seed, only)`."""
    return family_of(config).init_parameters(config, seed, only)


# --- implementations per backend ------------------------------------------------------------------
MODEL_IMPLEMENTATIONS = ImplementationRegistry(
    "register_model_implementations", "model family",
    "a model-family plugin adds one through register_model_implementations")


def implemented_on(family: str) -> tuple[str, ...]:
    """The backends that build `family` (sorted)."""
    return MODEL_IMPLEMENTATIONS.implemented_on(family)


def build_model(backend: str, config: Any, state: dict, device: Any) -> Any:
    """The model of `config`'s family holding `state`, built by the implementation registered for
    `backend` (a backend's name): what `Backend.load_model` does. The implementation is called as
    `implementation(config, state, device)`. (A backend that subclasses torch's passes "torch": it
    builds torch's models under its own name.)"""
    return MODEL_IMPLEMENTATIONS.get(family_of(config).name, backend)(config, state, device)
