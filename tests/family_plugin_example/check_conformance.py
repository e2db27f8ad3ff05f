"""The model-family conformance checks for the example ERNIE plugin, on both backends, and its
parity with transformers' own ERNIE (run by tests/test_model_family_plugin.py in a process where
the plugin is installed; a family plugin's author runs the same in their repo)."""

import attrs
import numpy as np
import pytest

from distill_engine.checkpoint import load_huggingface
from distill_engine.testing.family_suite import check_model_family, family_batch, student_of
from distill_engine.testing.fixtures import tiny_config
from distill_engine_ernie_family import ErnieConfig

TEACHER = ErnieConfig(**attrs.asdict(tiny_config(num_labels=2, hidden_dropout_prob=0.0,
                                                 attention_probs_dropout_prob=0.0), recurse=False))
STUDENT = student_of(TEACHER, layers=2, hidden_size=8, heads=4, intermediate_size=16, hidden_act="gelu")


@pytest.mark.parametrize("backend", ["torch", "mindspore"])
def test_the_family_conforms(backend):
    check_model_family("ernie", backend, TEACHER, STUDENT)


@pytest.fixture(scope="module")
def transformers_ernie(tmp_path_factory):
    """A tiny ErnieForSequenceClassification built and saved by transformers itself."""
    import torch
    import transformers

    config = transformers.ErnieConfig(vocab_size=TEACHER.vocab_size, hidden_size=16, num_hidden_layers=2,
                                      num_attention_heads=4, intermediate_size=32, max_position_embeddings=32,
                                      num_labels=3, use_task_id=False)
    torch.manual_seed(0)
    model = transformers.ErnieForSequenceClassification(config).eval()
    path = tmp_path_factory.mktemp("ernie")
    model.save_pretrained(path)
    return model, path


@pytest.mark.parametrize("backend", ["torch", "mindspore"])
def test_transformers_ernie_loads_and_computes_the_same_logits(transformers_ernie, backend):
    import torch

    from distill_engine.device import Device
    from distill_engine.plugins import get_backend

    model, path = transformers_ernie
    ckpt = load_huggingface(path)
    assert type(ckpt.config) is ErnieConfig and ckpt.config.num_labels == 3
    config = attrs.evolve(ckpt.config, classifier_activation="none")  # Hugging Face's head: classifier(pooled)
    batch = family_batch(config)
    with torch.no_grad():
        expected = model(input_ids=torch.as_tensor(batch["input_ids"], dtype=torch.long),
                         attention_mask=torch.as_tensor(batch["attention_mask"], dtype=torch.long),
                         token_type_ids=torch.as_tensor(batch["token_type_ids"], dtype=torch.long)).logits.numpy()
    engine = get_backend(backend).load_model(config, ckpt.state, Device("cpu")).predict(batch)
    np.testing.assert_allclose(engine, expected, rtol=1e-5, atol=1e-5)
