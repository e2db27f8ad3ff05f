"""The model's heads (`BertConfig.head`: pooled, token, span) in the core: the config and its Hugging
Face form, the canonical names, the numpy reference's logits (hypothesis properties), the graph's
refusal of the [B, C] logit losses on the token and span heads, and the teacher-output cache of
per-position logits. The backends against the reference: the conformance suite's `test_each_head`."""

from __future__ import annotations

import json

import attrs
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

from distill_engine import reference, teacher_cache
from distill_engine.bert import BertConfig, head_prefix, init_parameters, parameter_shapes
from distill_engine.checkpoint import load_huggingface
from distill_engine.data import EncodedDataset
from distill_engine.errors import CheckpointError, RecipeError
from distill_engine.graph import TEACHER_PREFIX, build_graph, build_mapping
from distill_engine.graph.taps import HEAD_LOGITS, HEADS
from distill_engine.losses import get_loss, loss_definitions
from distill_engine.models.builtin import BERT
from distill_engine.testing.strategies import batches, bert_configs
from distill_engine.testing.fixtures import tiny_config

PROPERTY = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
LOGIT_LOSSES = [d.name for d in loss_definitions().values() if d.reads == "logits"]


# --- config and names ----------------------------------------------------------------------------
def test_a_config_without_the_key_has_the_pooled_head():
    data = tiny_config(num_labels=2).to_dict()
    del data["head"]
    assert BertConfig.from_dict(data).head == "pooled"
    assert BertConfig.from_dict(data) == tiny_config(num_labels=2)


@pytest.mark.parametrize("head, labels, message", [("token", 0, "num_labels > 0"), ("span", 3, "num_labels 2"),
                                                   ("span", 0, "num_labels 2"), ("tagger", 2, "not one of")])
def test_an_impossible_head_is_one_clear_error(head, labels, message):
    with pytest.raises(CheckpointError, match=message):
        tiny_config(num_labels=labels, head=head)


@pytest.mark.parametrize("head, labels, names", [
    ("pooled", 3, ("classifier.weight", "classifier.bias")),
    ("token", 5, ("classifier.weight", "classifier.bias")),
    ("span", 2, ("qa_outputs.weight", "qa_outputs.bias")),
])
def test_each_head_has_its_parameters_and_keeps_the_pooler(head, labels, names):
    config = tiny_config(num_labels=labels, head=head)
    shapes = parameter_shapes(config)
    assert shapes[names[0]] == (labels, config.hidden_size) and shapes[names[1]] == (labels,)
    assert "pooler.dense.weight" in shapes and head_prefix(config) == names[0].split(".")[0]
    other = {"classifier.weight", "qa_outputs.weight"} - {names[0]}
    assert not other & set(shapes)
    assert set(init_parameters(config, 0)) == set(shapes)


def test_adding_a_head_does_not_change_the_encoders_draw():
    pooled, token = tiny_config(num_labels=3), tiny_config(num_labels=3, head="token")
    a, b = init_parameters(pooled, 7), init_parameters(token, 7)
    assert all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("head, labels, architecture", [
    ("pooled", 3, "BertForSequenceClassification"), ("token", 5, "BertForTokenClassification"),
    ("span", 2, "BertForQuestionAnswering"), ("pooled", 0, "BertModel")])
def test_the_hugging_face_config_round_trips_each_head(tmp_path, head, labels, architecture):
    # classifier_activation is not part of BertModel's config.json: it reads as "none",
    # BertForSequenceClassification's classifier(pooled) (tiny_config's, the engine's default)
    config = tiny_config(num_labels=labels, head=head)
    hf = config.to_hf_config()
    assert hf["architectures"] == [architecture] and "head" not in hf
    hf["id2label"] = {str(i): f"L{i}" for i in range(hf["num_labels"])}
    (tmp_path / "config.json").write_text(json.dumps(hf))
    assert BertConfig.from_hf_config(tmp_path / "config.json") == config
    assert BERT.config_from_hf(hf, tmp_path) == config


@pytest.mark.parametrize("head, labels", [("pooled", 2), ("token", 3), ("span", 2)])
def test_the_hugging_face_names_round_trip_each_head(head, labels):
    config = tiny_config(num_labels=labels, head=head)
    state = init_parameters(config, 0)
    hf = BERT.to_hf_names(config, state)
    kept = {k for k in hf if not k.startswith("bert.")}
    assert kept == {head_prefix(config) + ".weight", head_prefix(config) + ".bias"}
    back = BERT.from_hf_names(hf, "test")
    assert set(back) == set(state) and all(np.array_equal(back[k], state[k]) for k in state)


@pytest.mark.parametrize("head, labels", [("token", 3), ("span", 2)])
def test_a_hugging_face_token_or_qa_model_without_a_pooler_gets_a_fresh_one(tmp_path, head, labels):
    """BertForTokenClassification and BertForQuestionAnswering have no pooler; the import's state
    has every canonical tensor, the pooler fresh, the rest as the file holds it."""
    config = tiny_config(num_labels=labels, head=head)
    state = init_parameters(config, 4)
    hf = {k: v for k, v in BERT.to_hf_names(config, state).items() if "pooler" not in k}
    save_file(hf, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(config.to_hf_config()))
    ckpt = load_huggingface(tmp_path)
    assert ckpt.config == config and set(ckpt.state) == set(parameter_shapes(config))
    assert all(np.array_equal(ckpt.state[k], state[k]) for k in state if "pooler" not in k)


# --- the reference's logits -------------------------------------------------------------------
@PROPERTY
@given(config=bert_configs(head="token"), batch=batches(), seed=st.integers(0, 10_000), data=st.data())
def test_token_logits_at_a_position_depend_only_on_its_hidden_state(config, batch, seed, data):
    params = init_parameters(config, seed)
    taps = reference.forward(config, params, batch)
    last = taps.hidden_states[-1]
    b, length, _ = last.shape
    assert taps.logits.shape == (b, length, config.num_labels)
    w, bias = params["classifier.weight"].astype(np.float64), params["classifier.bias"].astype(np.float64)
    np.testing.assert_allclose(taps.logits, last @ w.T + bias, rtol=1e-12, atol=1e-12)
    # change every other position's state: position i's logits stay as they were
    i = data.draw(st.integers(0, length - 1))
    other = np.random.default_rng(seed).standard_normal(last.shape)
    other[:, i] = last[:, i]
    changed = reference.head(config, params, other, taps.pooled)
    np.testing.assert_array_equal(changed[:, i], taps.logits[:, i])


@PROPERTY
@given(config=bert_configs(head="span"), batch=batches(), seed=st.integers(0, 10_000))
def test_span_logits_are_the_token_head_with_two_classes(config, batch, seed):
    params = init_parameters(config, seed)
    span = reference.forward(config, params, batch).logits
    token = attrs.evolve(config, head="token")
    renamed = {k.replace("qa_outputs.", "classifier."): v for k, v in params.items()}
    np.testing.assert_array_equal(span, reference.forward(token, renamed, batch).logits)
    b, length = batch["input_ids"].shape
    assert span.shape == (b, length, 2)  # start = [..., 0], end = [..., 1]


@PROPERTY
@given(config=bert_configs(), batch=batches(), seed=st.integers(0, 10_000))
def test_a_pooled_models_logits_are_those_of_before_heads(config, batch, seed):
    """classifier(act(tanh(pooler(h[:, 0])))), the formula of the pooled head before the field
    existed; the field's default changes nothing."""
    params = init_parameters(config, seed)
    taps = reference.forward(config, params, batch)
    p = {k: v.astype(np.float64) for k, v in params.items()}
    pooled = np.tanh(taps.hidden_states[-1][:, 0] @ p["pooler.dense.weight"].T + p["pooler.dense.bias"])
    head_in = np.maximum(pooled, 0.0) if config.classifier_activation == "relu" else pooled
    np.testing.assert_array_equal(taps.logits, head_in @ p["classifier.weight"].T + p["classifier.bias"])
    assert taps.logits.shape == (batch["input_ids"].shape[0], config.num_labels)
    explicit = attrs.evolve(config, head="pooled")
    np.testing.assert_array_equal(reference.forward(explicit, params, batch).logits, taps.logits)


def test_the_head_shapes_are_documented_once():
    assert set(HEAD_LOGITS) == set(HEADS) == {"pooled", "token", "span"}


# --- the graph --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", LOGIT_LOSSES)
@pytest.mark.parametrize("head", ["pooled", "token", "span"])
def test_a_logit_loss_on_a_head_it_does_not_take_is_refused(kind, head):
    """Each logit kind takes the heads it names (the built-in ones the pooled head's, the token
    task's the token head's, the span task's the span head's); on another the graph says which
    kinds take that head."""
    if head in get_loss(kind).heads:
        pytest.skip(f"{kind} takes a {head} head")
    student = tiny_config(num_labels=2, head=head, hidden_size=8, num_hidden_layers=2, intermediate_size=12)
    teacher = tiny_config(num_labels=2, head=head)
    with pytest.raises(RecipeError) as caught:
        build_graph([(kind, 1.0, 1.0)], student, teacher, build_mapping("uniform", 2, 4), where="phases[1]")
    message = str(caught.value)
    assert message.startswith("phases[1].losses[0]: ") and f"{head} head" in message and "\n" not in message
    assert {"pooled": "soft_cross_entropy, hard_cross_entropy", "token": "token_cross_entropy, token_soft_cross_entropy",
            "span": "span_cross_entropy, span_soft_cross_entropy, span_kl_divergence"}[head] in message, message


def test_a_pooled_logit_loss_refuses_a_teacher_with_another_head():
    student, teacher = tiny_config(num_labels=2), tiny_config(num_labels=2, head="token")
    with pytest.raises(RecipeError, match="teacher has a token head"):
        build_graph([("soft_cross_entropy", 1.0, 1.0)], student, teacher, None, where="phases[0]")
    # a loss of the encoder's taps does not care about the head
    build_graph([("hidden_mse", 1.0)], tiny_config(num_labels=2, head="span"), tiny_config(num_labels=2, head="span"),
                build_mapping("uniform", 4, 4), where="phases[0]")


# --- the teacher-output cache -------------------------------------------------------------------
@pytest.mark.parametrize("head, labels", [("token", 3), ("span", 2)])
def test_the_cache_stores_per_position_logits(tmp_path, head, labels):
    teacher = tiny_config(num_labels=labels, head=head, num_hidden_layers=2)
    state = init_parameters(teacher, 3)
    rng = np.random.default_rng(0)
    n, length = 9, 10
    lengths = rng.integers(2, length + 1, n)
    mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
    data = EncodedDataset(rng.integers(5, teacher.vocab_size, (n, length)) * mask, np.zeros((n, length), np.int32),
                          mask, labels=np.zeros(n, np.int64))
    taps = ["hidden.2", "logits"]
    assert teacher_cache.tap_width("logits", teacher) == ("tokens", labels)
    key = teacher_cache.cache_key(teacher, state, data, taps, "float32")
    cache, status = teacher_cache.build_or_open(tmp_path, key, data, teacher,
                                                lambda b: reference.forward(teacher, state, b).named(),
                                                backend="numpy", progress=False, say=lambda _: None)
    assert status == "built"
    assert cache.shards[0]["logits"].size == labels * int(lengths.sum())
    assert teacher_cache.estimate_bytes(lengths, taps, teacher, "float32") == \
        4 * (int(lengths.sum()) * (teacher.hidden_size + labels) + n)
    rows = np.array([4, 0, 7])
    keep = int(lengths[rows].max()) + 1
    out = cache.outputs(rows, keep)[TEACHER_PREFIX + "logits"]
    assert out.shape == (3, keep, labels)
    for b, row in enumerate(rows):
        one = {k: v[row:row + 1, :lengths[row]] for k, v in data.batch(np.arange(n)).items() if k != "labels"}
        want = reference.forward(teacher, state, one).logits[0]
        np.testing.assert_allclose(out[b, :lengths[row]], want, rtol=1e-5, atol=1e-6)
        assert np.all(out[b, lengths[row]:] == 0)


def test_a_pooled_teachers_cache_key_is_that_of_before_heads():
    teacher = tiny_config(num_labels=2)
    data = EncodedDataset(np.ones((2, 4), np.int32), np.zeros((2, 4), np.int32), np.ones((2, 4), np.int32))
    key = teacher_cache.cache_key(teacher, init_parameters(teacher, 0), data, ["logits"], "float16")
    assert "head" not in key["teacher_config"]
    token = teacher_cache.cache_key(attrs.evolve(teacher, head="token"), init_parameters(teacher, 0), data,
                                    ["logits"], "float16")
    assert token["teacher_config"]["head"] == "token" and token["id"] != key["id"]
