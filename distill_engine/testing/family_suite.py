"""Conformance checks of a model family on a backend, against the family's own numpy reference.

A model-family plugin runs `check_model_family(family, backend, teacher, student)` from its tests
for every backend it implements (see tests/family_plugin_example). It checks what the engine
relies on: the family's names, shapes and initialisation agree; its config and its Hugging Face
names survive a round trip; the backend's model holds exactly the state it was given, its every
tap equals the reference forward's (the tolerances of `distill_engine.testing.conformance`), its
`predict` equals the logits; a training step's losses (fine-tuning, and TinyBERT's intermediate
and prediction losses from a teacher of the family) equal the reference's, and the step updates
every trained parameter to finite values.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import numpy as np

from distill_engine import reference
from distill_engine.backend import TrainSpec
from distill_engine.device import Device
from distill_engine.graph import build_graph, build_mapping
from distill_engine.models.registry import family_of, get_family
from distill_engine.optim import OptimizerSpec
from distill_engine.plugins import get_backend
from distill_engine.testing.conformance import assert_close

CPU = Device("cpu")
# the shape fields a Hugging Face config.json round trip must keep
SHAPE_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "max_position_embeddings", "pad_token_id")


def family_batch(config, batch_size: int = 3, length: int = 7, seed: int = 0) -> dict[str, np.ndarray]:
    """A padded batch the family's models read: ids from the vocabulary (the [PAD] row at padding),
    one row shorter than the others, binary labels."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, config.vocab_size, size=(batch_size, length)).astype(np.int32)
    mask = np.ones((batch_size, length), np.int32)
    mask[-1, length - 2:] = 0
    ids[mask == 0] = config.pad_token_id
    return {"input_ids": ids, "token_type_ids": np.zeros_like(ids), "attention_mask": mask,
            "labels": rng.integers(0, max(config.num_labels, 1), size=batch_size).astype(np.int32)}


def check_names_and_configs(family_name: str, config) -> None:
    """Shapes and initialisation agree, the config and the Hugging Face names survive a round trip."""
    family = get_family(family_name)
    assert family_of(config) is family, f"{type(config).__name__} is not family {family_name}'s config class"
    shapes = family.parameter_shapes(config)
    state = family.init_parameters(config, 0)
    assert list(state) == list(shapes), "init_parameters and parameter_shapes name different tensors"
    for name, value in state.items():
        assert value.shape == shapes[name] and value.dtype == np.float32, f"{name}: {value.shape} {value.dtype}"
    again = family.init_parameters(config, 0)
    assert all(np.array_equal(state[k], again[k]) for k in state), "initialisation is not deterministic"
    assert family.config_from_dict(config.to_dict()) == config, "config_from_dict(config.to_dict()) != config"
    hf = family.config_to_hf(config)
    assert hf.get("model_type") in family.hf_model_types, f"config_to_hf writes model_type {hf.get('model_type')}"
    back = family.config_from_hf(hf, Path("config.json"))
    for field in SHAPE_FIELDS:
        assert getattr(back, field) == getattr(config, field), f"config.json round trip changes {field}"
    named = family.from_hf_names(family.to_hf_names(config, state), "round trip")
    assert sorted(named) == sorted(state), "from_hf_names(to_hf_names(state)) names other tensors"
    assert all(np.array_equal(named[k], state[k]) for k in state), "the Hugging Face round trip changes a tensor"


def check_forward(family_name: str, backend_name: str, config, seed: int = 0) -> None:
    """The backend's model of `config` holds its state and computes the reference's taps and logits."""
    family = get_family(family_name)
    backend = get_backend(backend_name)
    state = family.init_parameters(config, seed)
    model = backend.load_model(config, state, CPU)
    held = model.state_dict()
    assert sorted(held) == sorted(state), f"{backend_name} holds {sorted(set(held) ^ set(state))[:4]} differently"
    for name in state:
        assert_close(held[name], state[name], f"{backend_name} state {name}", rtol=0, atol=0)
    batch = family_batch(config)
    expected = family.reference_forward(config, state, batch).named()
    actual = model.forward(batch).named()
    for name, value in expected.items():
        assert name in actual, f"{backend_name}: tap {name} missing"
        assert_close(actual[name], value, f"{backend_name} tap {name}")
    if config.num_labels:
        assert_close(model.predict(batch), expected["logits"], f"{backend_name} predict")


def check_training(family_name: str, backend_name: str, teacher, student) -> None:
    """One step of fine-tuning (the teacher) and of TinyBERT's TD1 and TD2 (the student from the
    teacher): each term equals the reference's before the step, and the step moves the parameters
    to finite values."""
    family = get_family(family_name)
    backend = get_backend(backend_name)
    t_state = family.init_parameters(teacher, 1)
    s_state = family.init_parameters(student, 2)
    batch = family_batch(student)
    mapping = build_mapping("uniform", student.num_hidden_layers, teacher.num_hidden_layers)
    cases = [
        (teacher, t_state, None, None, build_graph([("hard_cross_entropy", 1.0)], teacher, None, None, where="family")),
        (student, s_state, teacher, t_state, build_graph([("attention_mse", 1.0), ("embedding_mse", 1.0),
                                                          ("hidden_mse", 1.0)], student, teacher, mapping,
                                                         where="family")),
        (student, s_state, teacher, t_state, build_graph([("soft_cross_entropy", 1.0)], student, teacher, mapping,
                                                         where="family")),
    ]
    for config, state, t_config, t_params, graph in cases:
        model = backend.load_model(config, state, CPU)
        teacher_model = None if t_config is None else backend.load_model(t_config, t_params, CPU)
        trainer = backend.trainer(model, teacher_model, TrainSpec(graph, OptimizerSpec(lr=1e-2), np.full(2, 1e-2)))
        expected = reference.losses(graph, config, state, t_config, t_params, batch)
        actual = trainer.losses(batch)
        for term in (*[t.name for t in graph.terms], "total"):
            assert_close(actual[term], expected[term], f"{backend_name} loss {term}")
        trainer.step(batch)
        after = model.state_dict()
        assert all(np.all(np.isfinite(v)) for v in after.values()), f"{backend_name}: a parameter is not finite"
        moved = [k for k in after if not np.array_equal(after[k], state[k])]
        assert moved, f"{backend_name}: the step changed no parameter"


def check_model_family(family_name: str, backend_name: str, teacher, student) -> None:
    """Every check above for `teacher` and `student` configs of the family (the student with a
    projection to the teacher's width when the widths differ)."""
    check_names_and_configs(family_name, teacher)
    check_names_and_configs(family_name, student)
    check_forward(family_name, backend_name, teacher)
    check_forward(family_name, backend_name, student)
    check_training(family_name, backend_name, teacher, student)


def student_of(teacher, **sizes):
    """A student config of the teacher's family (`ModelFamily.student_config`) with its head and a
    shared projection to the teacher's width."""
    family = family_of(teacher)
    base = family.student_config(teacher, **sizes)
    return attrs.evolve(base, num_labels=teacher.num_labels, projection="shared", projection_dim=teacher.hidden_size,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
