"""Cross-backend parity: one neutral checkpoint and one batch give the same numbers on every backend.

Runs for every pair of installed training backends (torch and mindspore when both are there);
skips with the reason when fewer than two are installed. Tolerances are the conformance suite's
(distill_engine.testing.conformance), except after K optimiser steps, where differences of
float32 rounding compound through Adam's normalisation: PARITY_STEPS_RTOL below.
"""

import itertools

import numpy as np
import pytest

from distill_engine import reference
from distill_engine.backend import TrainSpec
from distill_engine.bert import init_parameters
from distill_engine.checkpoint import load_neutral, save_checkpoint
from distill_engine.device import Device
from distill_engine.graph import build_graph, build_mapping
from distill_engine.optim import OptimizerSpec, ScheduleSpec, learning_rates
from distill_engine.plugins import backend_registry, get_backend
from distill_engine.testing.conformance import assert_close
from distill_engine.testing.fixtures import tiny_config

CPU = Device("cpu")
K_STEPS = 5
# After K Adam steps a parameter moves by ~K*lr; float32 rounding differences in the gradients
# (1e-6 relative) pass through m/sqrt(v) and can flip tiny-gradient coordinates' step size, so
# parameters are compared at 1e-4 relative / 1e-6 absolute (lr 1e-3: 1e-3 of one step).
PARITY_STEPS_RTOL, PARITY_STEPS_ATOL = 1e-4, 1e-6
LARGEST: dict[str, float] = {}


def _training_backends():
    names = []
    for name in sorted(backend_registry()):
        try:
            if getattr(get_backend(name), "trains", True):
                names.append(name)
        except Exception:  # a backend that cannot start here is not part of the comparison
            continue
    return names


PAIRS = list(itertools.combinations(_training_backends(), 2))
pytestmark = pytest.mark.skipif(not PAIRS, reason="parity needs two training backends installed (torch and mindspore)")


def _setup():
    teacher = tiny_config(num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=0.1)
    student = tiny_config(num_labels=2, hidden_size=8, num_hidden_layers=2, num_attention_heads=4, intermediate_size=12,
                          projection="shared", projection_dim=16, hidden_dropout_prob=0.0,
                          attention_probs_dropout_prob=0.0, initializer_range=0.1)
    rng = np.random.default_rng(0)
    mask = np.array([[1] * 10, [1] * 6 + [0] * 4, [1] * 3 + [0] * 7], np.int32)
    batch = {"input_ids": (rng.integers(5, 30, (3, 10)) * mask).astype(np.int32),
             "token_type_ids": np.zeros((3, 10), np.int32), "attention_mask": mask,
             "labels": np.array([0, 1, 1], np.int32)}
    return teacher, init_parameters(teacher, 1), student, init_parameters(student, 2), batch


def _diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _trainer(name, kinds, spec=None, lrs=None):
    teacher, t_params, student, s_params, batch = _setup()
    backend = get_backend(name)
    graph = build_graph([(k, 1.0, 1.0) for k in kinds], student, teacher, build_mapping("uniform", 2, 4), where="parity")
    model = backend.load_model(student, s_params, CPU)
    trainer = backend.trainer(model, backend.load_model(teacher, t_params, CPU),
                              TrainSpec(graph, spec or OptimizerSpec(), lrs if lrs is not None else np.zeros(1, np.float32)))
    return model, trainer, batch


ALL = ["attention_mse", "embedding_mse", "hidden_mse", "soft_cross_entropy"]


@pytest.mark.parametrize("a,b", PAIRS)
def test_same_taps_losses_and_gradients(a, b):
    teacher, t_params, student, s_params, batch = _setup()
    taps = [get_backend(n).load_model(student, s_params, CPU).forward(batch).named() for n in (a, b)]
    for tap in taps[0]:
        assert_close(taps[1][tap], taps[0][tap], f"tap {tap} ({b} vs {a})")
        LARGEST[f"tap {tap}"] = _diff(taps[1][tap], taps[0][tap])
    results = []
    for name in (a, b):
        _, trainer, batch = _trainer(name, ALL)
        results.append((trainer.losses(batch), trainer.gradients(batch)))
    (la, ga), (lb, gb) = results
    for kind in ALL + ["total"]:
        assert_close(lb[kind], la[kind], f"loss {kind} ({b} vs {a})")
    for param in ga:
        assert_close(gb[param], ga[param], f"gradient {param} ({b} vs {a})", rtol=1e-4, atol=1e-6)
    print(f"\nlargest |{b} - {a}|: taps {max(v for k, v in LARGEST.items()):.3g}, "
          f"losses {max(abs(lb[k] - la[k]) for k in ALL):.3g}, gradients {max(_diff(gb[p], ga[p]) for p in ga):.3g}")


@pytest.mark.parametrize("a,b", PAIRS)
def test_k_training_steps_stay_together(a, b):
    spec = OptimizerSpec(lr=1e-3, weight_decay=0.01, clip="global_norm", max_grad_norm=1.0)
    lrs = learning_rates(ScheduleSpec("linear", 0.2), spec.lr, K_STEPS)
    states, losses = [], []
    for name in (a, b):
        model, trainer, batch = _trainer(name, ALL, spec, lrs)
        losses.append([trainer.step(batch)["total"] for _ in range(K_STEPS)])
        states.append(model.state_dict())
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4, err_msg=f"losses over {K_STEPS} steps ({b} vs {a})")
    for name in states[0]:
        assert_close(states[1][name], states[0][name], f"{name} after {K_STEPS} steps ({b} vs {a})",
                     rtol=PARITY_STEPS_RTOL, atol=PARITY_STEPS_ATOL)
    print(f"\nafter {K_STEPS} steps largest |{b} - {a}|: parameters "
          f"{max(_diff(states[1][k], states[0][k]) for k in states[0]):.3g}, "
          f"loss {max(abs(x - y) for x, y in zip(*losses)):.3g}")


@pytest.mark.parametrize("a,b", PAIRS)
def test_a_student_trained_in_one_backend_predicts_the_same_in_the_other(a, b, tmp_path):
    spec = OptimizerSpec(lr=1e-2)
    model, trainer, batch = _trainer(a, ["soft_cross_entropy", "hidden_mse"], spec, np.full(3, 1e-2, np.float32))
    for _ in range(3):
        trainer.step(batch)
    path = save_checkpoint(tmp_path / "student", model.config, model.state_dict())
    ck = load_neutral(path)
    other = get_backend(b).load_model(ck.config, ck.state, CPU)
    assert_close(other.predict(batch), model.predict(batch), f"logits of a {a}-trained student in {b}")
    assert np.array_equal(other.predict(batch).argmax(-1), model.predict(batch).argmax(-1))


@pytest.mark.parametrize("a,b", [pair for a, b in PAIRS for pair in ((a, b), (b, a))])
def test_a_run_resumed_in_the_other_backend_stays_together(a, b):
    """Trainer state has one naming on every backend: k steps in `a`, its weights and trainer.state()
    loaded into `b`, m more steps there, against k+m steps in `a` (parity tolerances: dropout off)."""
    k, m = 3, 2
    spec = OptimizerSpec(lr=1e-3, weight_decay=0.01, clip="global_norm", max_grad_norm=1.0)
    lrs = learning_rates(ScheduleSpec("linear", 0.4), spec.lr, k + m)
    model, trainer, batch = _trainer(a, ALL, spec, lrs)
    for _ in range(k):
        trainer.step(batch)
    weights, state = model.state_dict(), trainer.state()
    expected = [trainer.step(batch) for _ in range(m)]
    teacher, t_params, student, _, _ = _setup()
    other = get_backend(b)
    resumed_model = other.load_model(student, weights, CPU)
    resumed = other.trainer(resumed_model, other.load_model(teacher, t_params, CPU), trainer.spec)
    resumed.load_state(state)
    got = [resumed.step(batch) for _ in range(m)]
    assert [g["lr"] for g in got] == pytest.approx([e["lr"] for e in expected]), "schedule position lost"
    np.testing.assert_allclose([g["total"] for g in got], [e["total"] for e in expected], rtol=1e-4,
                               err_msg=f"losses of a {a} run resumed in {b}")
    after, want = resumed_model.state_dict(), model.state_dict()
    for name in want:
        assert_close(after[name], want[name], f"{name} after a {a} run resumed in {b}",
                     rtol=PARITY_STEPS_RTOL, atol=PARITY_STEPS_ATOL)


# --- every built-in loss kind, one at a time: values and gradients ------------------------------------
def _loss_cases():
    from distill_engine.losses.builtin import BUILTIN_LOSSES

    cases = [(d.name, {}) for d in BUILTIN_LOSSES]
    cases.insert(1, ("attention_mse", {"after_softmax": True}))
    return cases


LOSS_CASES = _loss_cases()


def _loss_batches(kind: str, count: int = 3):
    """Batches of one shape (one compiled graph per backend), each with its own tokens and padding."""
    rng = np.random.default_rng(7)
    out = []
    for _ in range(count):
        lengths = [10, int(rng.integers(1, 10)), int(rng.integers(1, 10))]
        mask = np.array([[1] * n + [0] * (10 - n) for n in lengths], np.int32)
        labels = (rng.uniform(0.0, 5.0, 3).astype(np.float32) if kind == "mse"  # regression scores
                  else rng.integers(0, 2, 3).astype(np.int32))
        out.append({"input_ids": (rng.integers(5, 30, (3, 10)) * mask).astype(np.int32),
                    "token_type_ids": (np.arange(10)[None] >= rng.integers(0, 10, (3, 1))).astype(np.int32) * mask,
                    "attention_mask": mask, "labels": labels})
    return out


def _loss_trainer(name, kind, params, mask_padding):
    from distill_engine.graph import LossRequest

    teacher, t_params, student, s_params, _ = _setup()
    backend = get_backend(name)
    request = LossRequest(kind, 1.0, {**params, **({"temperature": 1.5} if kind in ("soft_cross_entropy", "kl_divergence")
                                                   else {})})
    graph = build_graph([request], student, teacher, build_mapping("uniform", 2, 4), where="parity",
                        mask_padding=mask_padding)
    return backend.trainer(backend.load_model(student, s_params, CPU), backend.load_model(teacher, t_params, CPU),
                           TrainSpec(graph, OptimizerSpec(), np.zeros(1, np.float32))), graph


@pytest.mark.parametrize("mask_padding", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize("kind, params", LOSS_CASES, ids=[k + "".join(f"-{p}" for p in ps) for k, ps in LOSS_CASES])
@pytest.mark.parametrize("a,b", PAIRS)
def test_each_loss_kind_gives_the_same_value_and_gradients(a, b, kind, params, mask_padding):
    """One term of `kind` on the same weights and three batches (own tokens and padding each): the
    value at the conformance tolerance, every parameter's gradient at 1e-4 relative / 1e-6 absolute.
    Prints the largest differences (run with -s), and each backend's from the float64 reference."""
    trainers = [_loss_trainer(name, kind, params, mask_padding) for name in (a, b)]
    graph = trainers[0][1]
    key = graph.terms[0].name
    teacher, t_params, student, s_params, _ = _setup()
    value_diff = value_rel = grad_diff = grad_scale = 0.0
    from_reference = {a: 0.0, b: 0.0}
    for batch in _loss_batches(kind):
        (la, ga), (lb, gb) = [(t.losses(batch), t.gradients(batch)) for t, _ in trainers]
        want = reference.losses(graph, student, s_params, teacher, t_params, batch)[key]
        for name, got in ((a, la), (b, lb)):
            from_reference[name] = max(from_reference[name], abs(got[key] - want))
        assert_close(lb[key], la[key], f"loss {key} ({b} vs {a}, mask_padding={mask_padding})")
        value_diff = max(value_diff, abs(lb[key] - la[key]))
        value_rel = max(value_rel, abs(lb[key] - la[key]) / max(abs(la[key]), 1e-30))
        for param in ga:
            assert_close(gb[param], ga[param], f"gradient of {key} w.r.t. {param} ({b} vs {a}, "
                         f"mask_padding={mask_padding})", rtol=1e-4, atol=1e-6)
            grad_diff = max(grad_diff, _diff(gb[param], ga[param]))
            grad_scale = max(grad_scale, float(np.max(np.abs(ga[param]))))
    print(f"\n{kind}{params or ''} mask_padding={mask_padding}: largest |{b} - {a}| value {value_diff:.3g} "
          f"(relative {value_rel:.3g}), gradient {grad_diff:.3g} (largest |gradient| {grad_scale:.3g}); "
          f"value - float64 reference: {a} {from_reference[a]:.3g}, {b} {from_reference[b]:.3g}")
