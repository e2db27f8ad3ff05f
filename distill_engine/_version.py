"""The engine's version, in a module of its own so that the package's modules can read it without
importing the package's lazy public API (`distill_engine/__init__.py`)."""

__version__ = "0.1.0"
