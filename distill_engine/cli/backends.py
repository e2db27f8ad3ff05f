"""`distill-engine backends`: the installed backends with their versions and devices.

A backend whose plugin has a probe (`plugins.BackendSummary`: the version from the installed
distribution, the devices when the machine has no accelerator its framework could see) is listed
without importing its framework; importing torch and MindSpore took most of this command's 18 s.
The others, and any backend where the probe cannot know, are started as before.
"""

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
            summary = entry.probe() if entry.probe is not None else None
            if summary is None:
                backend = get_backend(name)
                version, devices = backend.version(), [str(d) for d in backend.available_devices()]
            else:
                version, devices = summary.version, summary.devices
            print(f"{name:<10} {version:<32} devices: {', '.join(devices)}  ({entry.description})")
        except DistillError as exc:
            print(f"{name:<10} unavailable: {exc}")
    return 0
