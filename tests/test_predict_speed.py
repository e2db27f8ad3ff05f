"""`Predictor.last_speed` is the dict docs/python-api.md describes, and `predict` reports the batch
the model was given (3 texts are one batch of 3, not "a batch of 32")."""

import re
from pathlib import Path

import pytest

from distill_engine.bert import init_parameters
from distill_engine.checkpoint import save_checkpoint
from distill_engine.predict import SPEED_KEYS, describe_speed, load
from distill_engine.testing.fixtures import WORDS, tiny_config, write_vocab

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("distill_engine_torch")


@pytest.fixture
def predictor(tmp_path):
    config = tiny_config(num_labels=2)
    vocab = write_vocab(tmp_path / "vocab.txt")
    save_checkpoint(tmp_path / "ckpt", config, init_parameters(config, 0), vocab=vocab,
                    data={"task": "sst2", "max_seq_length": 12, "lowercase": True})
    return load(tmp_path / "ckpt", backend="torch")


def test_three_texts_are_one_batch_of_three(predictor):
    predictor.predict([" ".join(WORDS[:3]), WORDS[3], WORDS[4]], batch_size=32)
    speed = predictor.last_speed
    assert set(speed) == set(SPEED_KEYS)
    assert (speed["sentences"], speed["batches"], speed["batch_size"]) == (3, 1, 3)
    assert "ms per batch of 3 " in describe_speed(predictor)


def test_several_batches_are_batches_of_the_size_asked(predictor):
    predictor.predict([WORDS[i % len(WORDS)] for i in range(40)], batch_size=32)
    assert (predictor.last_speed["batches"], predictor.last_speed["batch_size"]) == (2, 32)  # the last filled up


def test_the_python_api_page_names_every_key_of_last_speed():
    text = (ROOT / "docs" / "python-api.md").read_text()
    described = text[text.index("`last_speed`"):].split(". Also")[0]
    assert set(re.findall(r"`(\w+)`", described)) - {"last_speed"} == set(SPEED_KEYS)
