"""Where things run: a device written "kind:index" ("cpu", "gpu:0", "ascend:1"), parsed once.

Backends receive a `Device` value, never a string, and map it onto their framework's settings
("gpu" is CUDA in PyTorch, GPU in MindSpore; "ascend" is MindSpore's Ascend target).
"""

from __future__ import annotations

import glob

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


# The device files through which a framework reaches each kind of accelerator on Linux: NVIDIA
# (and WSL's /dev/dxg, ROCm's /dev/kfd, both served through torch's CUDA API), and Ascend NPUs.
# Where none of a kind exists, no framework can list a device of that kind: a backend plugin's
# probe (`plugins.BackendSummary`) may then answer "cpu" without importing its framework.
ACCELERATOR_FILES = {"gpu": ("/dev/nvidia[0-9]*", "/dev/dxg", "/dev/kfd"), "ascend": ("/dev/davinci[0-9]*",)}


def accelerator_files_present(kind: str) -> bool:
    """Whether this machine has a device file of accelerator `kind` ("gpu", "ascend")."""
    return any(glob.glob(pattern) for pattern in ACCELERATOR_FILES[kind])
