"""The backend conformance suite: subclass `BackendConformance` in your backend's tests.

    # backends/mine/tests/test_conformance.py
    from distill_engine.testing.suite import BackendConformance

    class TestMine(BackendConformance):
        backend_name = "mine"          # the name your plugin registers

pytest then runs every check below against the numpy reference, with hypothesis over model
sizes, batches, padding and layer mappings: forward taps, each loss, gradients of each loss
(against central finite differences of the float64 reference), one optimiser step at the
schedule's learning rate, and the checkpoint round trip. A forward-only backend (`trains =
False`) runs the forward and checkpoint checks only. Tolerances: `distill_engine.testing.conformance`.
"""

from __future__ import annotations

import attrs
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill_engine import reference
from distill_engine.backend import TrainSpec
from distill_engine.bert import BertConfig, init_parameters, is_no_decay
from distill_engine.checkpoint import load_neutral, save_checkpoint
from distill_engine.device import Device
from distill_engine.graph import LOSS_KINDS, build_graph, build_mapping
from distill_engine.optim import OptimizerSpec, ScheduleSpec, learning_rates
from distill_engine.testing.conformance import assert_close, check_losses, check_taps
from distill_engine.testing.strategies import batches, bert_configs

CPU = Device("cpu")
SUITE = settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
# Finite differences in float64 of a float64 reference are accurate to ~1e-8; the backend's
# float32 gradient carries float32 rounding of the forward (~1e-6 relative); 1e-3 relative
# with 1e-5 absolute catches a wrong formula (a factor, a missing term) with margin to spare.
GRAD_RTOL, GRAD_ATOL = 1e-3, 1e-5


@st.composite
def distill_setups(draw, kinds=None):
    """A teacher/student pair that every loss can compare, a mapping, and a padded batch."""
    heads = draw(st.integers(1, 3))
    teacher = draw(bert_configs(heads=heads, num_labels=2))
    student = draw(bert_configs(heads=heads, num_labels=2, projection_dim=teacher.hidden_size))
    layers = draw(st.integers(1, teacher.num_hidden_layers))
    student = BertConfig(**{**student.to_dict(), "num_hidden_layers": layers,
                            "projection": draw(st.sampled_from(["shared", "per_entry"]))})
    strategy = draw(st.sampled_from(["uniform", "top", "bottom", "explicit"]))
    explicit = sorted(draw(st.lists(st.integers(1, teacher.num_hidden_layers), min_size=layers, max_size=layers)))
    mapping = build_mapping(strategy, layers, teacher.num_hidden_layers, explicit if strategy == "explicit" else None)
    kinds = kinds or list(LOSS_KINDS)
    temperature = draw(st.floats(0.5, 4.0))
    graph = build_graph([(k, 0.5 + i, temperature) for i, k in enumerate(kinds)], student, teacher, mapping, where="suite")
    batch = draw(batches(num_labels=2))
    seed = draw(st.integers(0, 10_000))
    return teacher, init_parameters(teacher, seed), student, init_parameters(student, seed + 1), graph, batch


class BackendConformance:
    """Every check a backend must pass. Set `backend_name` in the subclass."""

    backend_name: str = ""

    @pytest.fixture
    def backend(self):
        from distill_engine.plugins import get_backend

        return get_backend(self.backend_name)

    def _trains(self, backend):
        if not getattr(backend, "trains", True):
            pytest.skip(f"backend {backend.name} is forward-only")

    # --- forward ---------------------------------------------------------------------------
    @SUITE
    @given(config=bert_configs(), batch=batches(), seed=st.integers(0, 10_000))
    def test_forward_taps(self, backend, config, batch, seed):
        params = init_parameters(config, seed)
        check_taps(backend.load_model(config, params, CPU).forward(batch), config, params, batch)
        assert_close(backend.load_model(config, params, CPU).predict(batch),
                     reference.forward(config, params, batch).logits, "predict logits")

    # --- losses ----------------------------------------------------------------------------
    @SUITE
    @given(setup=distill_setups())
    def test_each_loss(self, backend, setup):
        self._trains(backend)
        teacher, t_params, student, s_params, graph, batch = setup
        trainer = backend.trainer(backend.load_model(student, s_params, CPU), backend.load_model(teacher, t_params, CPU),
                                  TrainSpec(graph, OptimizerSpec(), np.zeros(1, np.float32)))
        check_losses(trainer.losses(batch), graph, student, s_params, teacher, t_params, batch)

    # --- gradients -------------------------------------------------------------------------
    @SUITE
    @given(setup=distill_setups(), kind=st.sampled_from(list(LOSS_KINDS)), pick=st.integers(0, 2**32 - 1))
    def test_gradient_of_each_loss(self, backend, setup, kind, pick):
        self._trains(backend)
        teacher, t_params, student, s_params, _, batch = setup
        # finite differences are wrong across a ReLU kink: the student is smooth everywhere here
        student = attrs.evolve(student, hidden_act="gelu", classifier_activation="none")
        graph = build_graph([(kind, 1.0, 1.5)], student, teacher, _mapping(student, teacher), where="suite")
        trainer = backend.trainer(backend.load_model(student, s_params, CPU), backend.load_model(teacher, t_params, CPU),
                                  TrainSpec(graph, OptimizerSpec(), np.zeros(1, np.float32)))
        grads = trainer.gradients(batch)
        assert set(grads) == set(s_params), "gradients must cover every student parameter by canonical name"

        def objective(p):
            return reference.losses(graph, student, p, teacher, t_params, batch)["total"]

        rng = np.random.default_rng(pick)
        # the parameters this loss reaches: projections for the hidden losses, the head for logits
        candidates = [n for n in s_params if np.any(grads[n] != 0)] or list(s_params)
        for name in rng.choice(candidates, size=min(3, len(candidates)), replace=False):
            index = tuple(int(rng.integers(s)) for s in s_params[name].shape)
            expected = reference.numerical_gradient(objective, s_params, name, index)
            assert_close(grads[name][index], expected, f"gradient of {kind} w.r.t. {name}{list(index)}",
                         rtol=GRAD_RTOL, atol=GRAD_ATOL)

    # --- optimiser -------------------------------------------------------------------------
    @SUITE
    @given(setup=distill_setups(kinds=["attention_mse", "hidden_mse", "soft_cross_entropy"]),
           clip=st.sampled_from(["global_norm", "per_parameter", "none"]), steps=st.integers(1, 3))
    def test_optimizer_steps_follow_adamw_and_the_schedule(self, backend, setup, clip, steps):
        self._trains(backend)
        teacher, t_params, student, s_params, graph, batch = setup
        spec = OptimizerSpec(lr=1e-3, weight_decay=0.1, clip=clip, max_grad_norm=0.05)
        lrs = learning_rates(ScheduleSpec("linear", 0.5), spec.lr, steps + 1)
        model = backend.load_model(student, s_params, CPU)
        trainer = backend.trainer(model, backend.load_model(teacher, t_params, CPU), TrainSpec(graph, spec, lrs, seed=0))
        expected, adam = dict(s_params), {}
        for s in range(steps):
            grads = reference.clip_gradients(trainer.gradients(batch), clip, spec.max_grad_norm)
            touched = {k for k, g in grads.items() if np.any(g != 0)}
            result = trainer.step(batch)
            assert result["lr"] == pytest.approx(float(lrs[s])), f"step {s} used lr {result['lr']}, schedule {lrs[s]}"
            stepped = reference.adamw_step({k: expected[k] for k in touched}, grads, adam, float(lrs[s]), spec,
                                           is_no_decay)
            expected.update(stepped)
        actual = model.state_dict()
        for name in sorted(touched):
            assert_close(actual[name], expected[name], f"parameter {name} after {steps} AdamW step(s)",
                         rtol=1e-4, atol=1e-6)

    # --- checkpoints -----------------------------------------------------------------------
    @SUITE
    @given(config=bert_configs(projection_dim=8), seed=st.integers(0, 10_000))
    def test_checkpoint_round_trip(self, backend, config, seed, tmp_path_factory):
        params = init_parameters(config, seed)
        state = backend.load_model(config, params, CPU).state_dict()
        assert set(state) == set(params)
        for name in params:
            assert np.array_equal(state[name], params[name]), f"{name} changed on its way through the backend"
        path = save_checkpoint(tmp_path_factory.mktemp("ck") / "model", config, state)
        back = load_neutral(path)
        reloaded = backend.load_model(back.config, back.state, CPU).state_dict()
        assert all(np.array_equal(reloaded[k], params[k]) for k in params)


def _mapping(student: BertConfig, teacher: BertConfig):
    return build_mapping("uniform", student.num_hidden_layers, teacher.num_hidden_layers)
