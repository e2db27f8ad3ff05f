"""distill-engine: framework-agnostic knowledge distillation for BERT-style models.

The core (this package) never imports a framework; backends are pluggy plugins found through
the "distill_engine.backends" entry-point group. See README.md for the architecture.

The Python API (README, "Python API"): `run(recipe, backend=..., overrides=...)` runs a recipe and
returns its summary; `load(path)` gives a `Predictor` of any checkpoint (`.predict(texts)`);
`phase_losses(teacher, student, texts, kind=...)` computes one phase's loss terms. They are
imported on first use, so `import distill_engine` stays light.
"""

from distill_engine._version import __version__
from distill_engine.hookspecs import hookimpl

__all__ = ["hookimpl", "__version__", "load", "phase_losses", "run"]

_API = ("load", "phase_losses", "run")


def __getattr__(name: str):
    if name in _API:
        from distill_engine import api

        return getattr(api, name)
    raise AttributeError(f"module 'distill_engine' has no attribute {name!r}")
