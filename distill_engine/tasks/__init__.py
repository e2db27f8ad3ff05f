"""Task types as plugins: the protocol (`base`), the registries of task types and metrics, and the
built-in "sequence" type (`sequence`, registered by `builtin`). Import the submodules you need;
this package imports none of them eagerly, so `distill_engine.data` can use the metric registry
without a circle."""
