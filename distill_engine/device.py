"""Where things run: a device written "kind:index" ("cpu", "gpu:0", "ascend:1"), parsed once.

Backends receive a `Device` value, never a string, and map it onto their framework's settings
("gpu" is CUDA in PyTorch, GPU in MindSpore; "ascend" is MindSpore's Ascend target).
"""

from __future__ import annotations

import attrs

from distill_engine.errors import DeviceError, did_you_mean

DEVICE_KINDS = ("cpu", "gpu", "ascend")
_ALIASES = {"cuda": "gpu", "npu": "ascend"}


@attrs.frozen
class Device:
    kind: str
    index: int = 0

    def __str__(self) -> str:
        return "cpu" if self.kind == "cpu" else f"{self.kind}:{self.index}"

    @classmethod
    def parse(cls, text: str | "Device") -> "Device":
        """Parse "cpu", "gpu", "gpu:1", "ascend:0" (also "cuda:0" -> gpu). Errors name the string."""
        if isinstance(text, Device):
            return text
        raw = str(text).strip().lower()
        kind, sep, index = raw.partition(":")
        kind = _ALIASES.get(kind, kind)
        if kind not in DEVICE_KINDS:
            raise DeviceError(f'device "{text}": kind "{kind}" is not one of {", ".join(DEVICE_KINDS)}'
                              f"{did_you_mean(kind, DEVICE_KINDS)}")
        if not sep:
            return cls(kind, 0)
        if not index.isdigit():
            raise DeviceError(f'device "{text}": the index after ":" must be a non-negative integer')
        if kind == "cpu" and int(index) != 0:
            raise DeviceError(f'device "{text}": there is one cpu device, write "cpu"')
        return cls(kind, int(index))
