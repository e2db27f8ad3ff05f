"""`distill-engine export --to mindspore | mindir`: a .ckpt under the model zoo's TinyBERT names that
round-trips through the zoo importer bit for bit, and a MindIR that loads back (mindspore.load +
nn.GraphCell) and predicts the engine's outputs on MindSpore's CPU."""

from __future__ import annotations

import numpy as np
import pytest

from distill_engine.bert import init_parameters
from distill_engine.checkpoint import save_checkpoint
from distill_engine.cli import main
from distill_engine.export import check_batches, reference_outputs
from distill_engine.testing.fixtures import tiny_config
from distill_engine_mindspore.checkpoint import CONFIG_KEY, import_ckpt, read_ckpt
from distill_engine_mindspore.export import run_mindir
from distill_engine_mindspore.zoo_names import zoo_to_canonical


@pytest.mark.parametrize("with_projection", [False, True])
def test_zoo_ckpt_round_trips_through_the_importer_bit_for_bit(tmp_path, capsys, with_projection):
    cfg = tiny_config(num_labels=2, projection="shared", projection_dim=24,
                      classifier_activation="relu")  # the zoo's TinyBERT head
    state = init_parameters(cfg, 6)
    ckpt = save_checkpoint(tmp_path / "student", cfg, state)
    out = tmp_path / "student.ckpt"
    argv = ["export", str(ckpt), "--to", "mindspore", str(out)] + (["--with-projection"] if with_projection else [])
    assert main(argv) == 0
    assert "bit for bit" in capsys.readouterr().out
    raw = read_ckpt(out)
    assert {"bert.tinybert_embedding_lookup.embedding_table", "bert.tinybert_encoder.layers.3.output.layernorm.gamma",
            "bert.dense.weight", "dense_1.weight", "dense_1.bias"} <= set(raw)
    assert ("fit_dense.weight" in raw) == with_projection
    assert zoo_to_canonical(raw, cfg.num_hidden_layers).keys() == {k for k in state if with_projection
                                                                    or not k.startswith("fit_dense")}
    back = import_ckpt(out)
    kept = {k: v for k, v in state.items() if with_projection or not k.startswith("fit_dense")}
    assert back.state.keys() == kept.keys()
    assert all(back.state[k].dtype == np.float32 and back.state[k].tobytes() == v.tobytes() for k, v in kept.items())
    assert back.config.classifier_activation == "relu" and back.manifest["format"] == "mindspore-zoo"
    assert back.config.projection == ("shared" if with_projection else "none")


def test_zoo_ckpt_loads_into_a_cell_with_the_zoo_names(tmp_path):
    """The embedded config is a string entry that MindSpore's own loading ignores."""
    import mindspore as ms
    from mindspore import nn

    cfg = tiny_config(num_labels=2)
    state = init_parameters(cfg, 6)
    assert main(["export", str(save_checkpoint(tmp_path / "s", cfg, state)), "--to", "mindspore",
                 str(tmp_path / "s.ckpt")]) == 0

    class Head(nn.Cell):  # BertModelCLS's head, under its zoo name
        def __init__(self):
            super().__init__()
            self.dense_1 = nn.Dense(cfg.hidden_size, 2)

    net = Head()
    params = ms.load_checkpoint(str(tmp_path / "s.ckpt"))
    assert isinstance(params[CONFIG_KEY], str)
    not_loaded, _ = ms.load_param_into_net(net, params)
    assert not_loaded == []
    np.testing.assert_array_equal(net.dense_1.weight.asnumpy(), state["classifier.weight"])


@pytest.mark.parametrize("num_labels", [2, 0])
def test_mindir_loads_back_and_predicts_the_engines_outputs(tmp_path, capsys, num_labels):
    cfg = tiny_config(num_labels=num_labels, classifier_activation="relu")  # TinyBERT's head: MindIR keeps the ReLU
    state = init_parameters(cfg, 7)
    ckpt = save_checkpoint(tmp_path / "student", cfg, state)
    out = tmp_path / "student.mindir"
    assert main(["export", str(ckpt), "--to", "mindir", str(out)]) == 0
    assert "dynamic" in capsys.readouterr().out
    names = ("logits",) if num_labels else ("last_hidden_state", "pooler_output")
    for b, length in ((1, 5), (4, 17)):  # shapes other than the export's own check
        batch = check_batches(cfg, b, length, seed=b)[0]
        got = run_mindir(out, batch, names)
        expected = reference_outputs(cfg, state, batch)
        for name in names:
            np.testing.assert_allclose(got[name], expected[name], rtol=1e-4, atol=1e-4, err_msg=name)


def test_per_entry_projection_has_no_zoo_name(tmp_path, capsys):
    cfg = tiny_config(num_labels=2, projection="per_entry", projection_dim=24)
    ckpt = save_checkpoint(tmp_path / "student", cfg, init_parameters(cfg, 1))
    assert main(["export", str(ckpt), "--to", "mindspore", str(tmp_path / "s.ckpt"), "--with-projection"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --with-projection:") and "per_entry" in err and "\n" not in err
    assert not (tmp_path / "s.ckpt").exists()
