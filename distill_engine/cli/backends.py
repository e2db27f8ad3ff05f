"""`distill-engine backends`: the installed backends with their versions and devices."""

from __future__ import annotations

from distill_engine.errors import DistillError


def add_parser(sub) -> None:
    sub.add_parser("backends", help="list installed backends with versions and devices")


def command(_args) -> int:
    from distill_engine.plugins import backend_registry, get_backend

    entries = backend_registry()
    if not entries:
        print("no backends installed (pip install -e backends/torch, or backends/mindspore)")
        return 1
    for name, entry in sorted(entries.items()):
        try:
            backend = get_backend(name)
            devices = ", ".join(str(d) for d in backend.available_devices())
            print(f"{name:<10} {backend.version():<32} devices: {devices}  ({entry.description})")
        except DistillError as exc:
            print(f"{name:<10} unavailable: {exc}")
    return 0
