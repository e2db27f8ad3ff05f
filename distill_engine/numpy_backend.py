"""The numpy reference as a forward-only backend: `--backend numpy` evaluates checkpoints.

It is the worked example of a backend plugin (see docs/writing-a-backend.md): a plain object
registered through the `register_backends` hook, exactly as the torch and mindspore plugins
are, only built in. It cannot train; asking it to is a clear error before anything runs.
"""

from __future__ import annotations

import numpy as np

from distill_engine._version import __version__
from distill_engine.backend import check_device_in
from distill_engine.device import Device
from distill_engine.errors import BackendError
from distill_engine.graph import Taps
from distill_engine.hookspecs import hookimpl
from distill_engine.models.registry import family_of


class NumpyModel:
    def __init__(self, config, state: dict[str, np.ndarray]):
        self.config = config
        self.family = family_of(config)  # the model family's numpy forward: BERT's is distill_engine.reference
        self.state = {k: np.asarray(v, np.float32) for k, v in state.items()}

    def state_dict(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self.state.items()}

    def forward(self, batch) -> Taps:
        return self.family.reference_forward(self.config, self.state, batch)

    def predict(self, batch) -> np.ndarray:
        return self.forward(batch).logits.astype(np.float32)


class NumpyBackend:
    name = "numpy"
    trains = False  # forward only: the runner refuses training phases before starting

    def version(self) -> str:
        return f"{__version__} (numpy {np.__version__}, reference, forward only)"

    def device_kinds(self) -> tuple[str, ...]:
        return ("cpu",)

    def available_devices(self) -> list[Device]:
        return [Device("cpu")]

    def check_device(self, device: Device) -> None:
        check_device_in(self, device)

    def load_model(self, config, state, device: Device) -> NumpyModel:
        self.check_device(device)
        return NumpyModel(config, state)

    def trainer(self, student, teacher, spec):
        raise BackendError('the numpy backend is forward-only (it evaluates checkpoints); '
                           'train with --backend torch or --backend mindspore')


@hookimpl
def register_backends(register):
    register("numpy", NumpyBackend, description="numpy reference (cpu, forward only)")
