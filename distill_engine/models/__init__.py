"""Model families as plugins: the protocol (`family`), the registry of families and of their
per-backend implementations (`registry`), and the built-in BERT family (`builtin`). Import the
submodules you need; this package imports none of them eagerly."""
