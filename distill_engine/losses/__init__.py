"""Loss kinds as plugins: definitions (framework-free, with a numpy reference) and their registry.

`LossDefinition` says what a loss is; `loss_definitions()` lists the registered kinds;
`implementation(name, backend)` is the function a backend's trainer calls. docs/writing-a-loss.md
is the guide for adding one.
"""

from distill_engine.losses.definition import READS, LossDefinition, LossParam
from distill_engine.losses.registry import (get_loss, has_implementation, implementation, implemented_on,
                                            loss_definitions, loss_names, missing_message)

__all__ = ["READS", "LossDefinition", "LossParam", "get_loss", "has_implementation", "implementation",
           "implemented_on", "loss_definitions", "loss_names", "missing_message"]
