"""distill-engine: framework-agnostic knowledge distillation for BERT-style models.

The core (this package) never imports a framework; backends are pluggy plugins found through
the "distill_engine.backends" entry-point group. See README.md for the architecture.
"""

from distill_engine.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["hookimpl", "__version__"]
