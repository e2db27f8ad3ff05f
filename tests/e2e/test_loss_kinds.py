"""Every built-in loss kind trains a student in a tiny run, through the CLI, on every installed
training backend (the values and gradients of each are checked against the reference by the
conformance suite; this checks that recipes reach them and that a run goes through). On MindSpore it
is also the tiny pipeline through every phase (test_pipelines.py runs the core's checks of it on torch)."""

import json

import numpy as np
import pytest

from distill_engine.checkpoint import load_neutral
from distill_engine.cli import main
from distill_engine.losses.builtin import BUILTIN_LOSSES
from distill_engine.testing.fixtures import write_tiny_recipe

from test_pipelines import BACKENDS

# TD1: every kind that reads attention, value vectors or hidden states; TD2: every logit kind that
# a classification task trains with (mse, the regression loss, runs in test_custom_tasks' JSONL task)
TD1 = ("[{kind='attention_mse', after_softmax=true}, {kind='embedding_mse'}, {kind='hidden_mse'}, "
       "{kind='cosine_hidden', mapping={strategy='last'}}, {kind='pkd_hidden'}, {kind='minilm_attention'}, "
       "{kind='minilm_value_relation'}, {kind='attention_mse', weight=0.5, mapping={strategy='top'}}]")
TD2 = ("[{kind='soft_cross_entropy', temperature=2.0}, {kind='kl_divergence', temperature=2.0}, "
       "{kind='logit_mse', weight=0.1}, {kind='hard_cross_entropy'}]")


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_builtin_kind_trains_in_a_tiny_run(backend, tmp_path, capsys):
    recipe = write_tiny_recipe(tmp_path, student_heads=4)
    assert main(["run", str(recipe), "--backend", backend, "--no-progress", "--set", 'data.batching="fixed"',
                 "--set", "phases.gd.max_steps=1", "--set", "phases.td1.epochs=3", "--set", "phases.td2.epochs=3",
                 "--set", "phases.td1.mask_padding=true", "--set", f"phases.td1.losses={TD1}",
                 "--set", f"phases.td2.losses={TD2}"]) == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    trained = set()
    for phase in ("td1", "td2"):
        steps = [r for r in records if r["event"] == "train" and r["phase"] == phase]
        assert steps and all(np.isfinite(r["total"]) for r in steps)
        totals = [r["total"] for r in steps]
        assert np.mean(totals[-6:]) < np.mean(totals[:6]), (phase, totals)  # one epoch's batches each
        trained |= {k for k in steps[0] if any(k == d.name or k.startswith(d.name + "_") for d in BUILTIN_LOSSES)}
    assert {"attention_mse_1", "attention_mse_2", "embedding_mse", "hidden_mse", "cosine_hidden", "pkd_hidden",
            "minilm_attention", "minilm_value_relation", "soft_cross_entropy", "kl_divergence", "logit_mse",
            "hard_cross_entropy"} <= trained
    # the projection trained in td1 is handed to td2 and saved with the student (td2 has no hidden loss)
    td1, td2 = (load_neutral(tmp_path / "run" / phase / "final") for phase in ("td1", "td2"))
    np.testing.assert_array_equal(td1.state["fit_dense.weight"], td2.state["fit_dense.weight"])
    # every phase of the tiny pipeline ran, each on one batch shape (fixed batches: one graph to compile)
    assert [r.get("shapes") for r in records if r["event"] == "phase_end"] == [1, 1, 1, 1, None]
