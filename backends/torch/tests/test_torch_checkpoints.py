"""Hugging Face `pytorch_model.bin` import through the torch plugin's weight reader (register_weight_readers):
tensors load, pickled code is refused."""

import json
import os
import pickle
import shlex

import numpy as np
import pytest
import torch

from distill_engine.bert import init_parameters
from distill_engine.checkpoint import load_huggingface
from distill_engine.errors import CheckpointError
from distill_engine.testing.fixtures import tiny_config, write_vocab


def _hf_bin_dir(tmp_path, state):
    d = tmp_path / "hf"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(tiny_config().to_hf_config()))
    write_vocab(d / "vocab.txt")
    torch.save(state, d / "pytorch_model.bin")
    return d


def test_pytorch_bin_imports_through_the_plugin_reader(tmp_path):
    params = init_parameters(tiny_config(), 0)
    d = _hf_bin_dir(tmp_path, {"bert." + k: torch.from_numpy(v) for k, v in params.items()})
    ck = load_huggingface(d)
    assert set(ck.state) == set(params)
    assert all(np.array_equal(ck.state[k], params[k]) for k in params)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo pwned > {shlex.quote(str(self.marker))}",))


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"  # the test's own: a run beside it (pytest-xdist) has another
    d = _hf_bin_dir(tmp_path, {"bert.embeddings.word_embeddings.weight": torch.zeros(2, 2)})
    with open(d / "pytorch_model.bin", "wb") as fh:
        pickle.dump({"x": _Exploit(marker)}, fh)
    with pytest.raises(CheckpointError, match="pytorch_model.bin: cannot read"):
        load_huggingface(d)
    assert not os.path.exists(marker)
