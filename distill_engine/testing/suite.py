"""The backend conformance suite: subclass `BackendConformance` in your backend's tests.

    # backends/mine/tests/test_conformance.py
    from distill_engine.testing.suite import BackendConformance

    class TestMine(BackendConformance):
        backend_name = "mine"          # the name your plugin registers

pytest then runs every check below against the numpy reference, with hypothesis over model
sizes, heads, batches, padding (counted in the losses or masked) and layer mappings: forward taps, each
head's logits and a gradient through it, each loss, gradients of each loss
(against central finite differences of the float64 reference), one optimiser step at the
schedule's learning rate, the teacher's outputs supplied in the batch instead of a teacher
model, the checkpoint round trip, and resume through `Trainer.state()` /
`load_state()` (bit for bit: with dropout on where the backend sets `resume_exact_with_dropout`),
and a step in every precision the backend serves on a CPU (`Backend.precisions`) within that
precision's tolerance, leaving float32 weights and moments.
A forward-only backend (`trains = False`) runs the forward and checkpoint checks only.
Tolerances: `distill_engine.testing.conformance`.
"""

from __future__ import annotations

import attrs
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill_engine import reference
from distill_engine.backend import ADAM_STEP, EXP_AVG, EXP_AVG_SQ, SCHEDULE_STEP, TrainSpec
from distill_engine.bert import BertConfig, head_prefix, init_parameters, is_no_decay, parameter_shapes
from distill_engine.checkpoint import load_neutral, save_checkpoint
from distill_engine.device import Device
from distill_engine.errors import CheckpointError
from distill_engine.graph import TEACHER_PREFIX, DistillGraph, LossTerm, build_graph, build_mapping
from distill_engine.graph.taps import HEADS
from distill_engine.losses import get_loss, has_implementation, loss_names
from distill_engine.graph.dependencies import used_parameters
from distill_engine.optim import OptimizerSpec, ScheduleSpec, learning_rates
from distill_engine.precision import PRECISIONS, served_precisions
from distill_engine.testing.conformance import PRECISION_TOLERANCES, assert_close, check_losses, check_taps
from distill_engine.testing.strategies import TRAINED_PROJECTIONS, batches, bert_configs

CPU = Device("cpu")
SUITE = settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"
# Finite differences in float64 of a float64 reference are accurate to ~1e-8; the backend's
# float32 gradient carries float32 rounding of the forward (~1e-6 relative); 1e-3 relative
# with 1e-5 absolute catches a wrong formula (a factor, a missing term) with margin to spare.
GRAD_RTOL, GRAD_ATOL = 1e-3, 1e-5


# TinyBERT's six kinds: the objectives of the checks that are about the trainer, not the losses
TINYBERT_KINDS = ("attention_mse", "embedding_mse", "hidden_mse", "soft_cross_entropy", "hard_cross_entropy", "mse")


def head_of(kind: str) -> str:
    """The model head a loss kind is checked on: the pooled one unless the kind takes the logits
    of other heads only (the token task's kinds: the token head's [B, L, C]; the span task's: [B, L, 2])."""
    d = get_loss(kind)
    return "pooled" if d.reads != "logits" or "pooled" in d.heads else d.heads[0]


def kinds_by_head(kinds) -> dict[str, list[str]]:
    """`kinds` grouped by `head_of`: each group is one objective on models of that head."""
    groups: dict[str, list[str]] = {}
    for kind in kinds:
        groups.setdefault(head_of(kind), []).append(kind)
    return groups


@st.composite
def distill_setups(draw, kinds=None):
    """A teacher/student pair that every loss can compare, a mapping, and a padded batch. The
    kinds of one head (`kinds_by_head`, one group drawn): models of that head, and the labels it
    trains on (a tag per position for the token head, a start and an end for the span head)."""
    groups = kinds_by_head(kinds or list(TINYBERT_KINDS))
    head = draw(st.sampled_from(sorted(groups)))
    kinds = groups[head]
    heads = draw(st.integers(1, 3))
    teacher = draw(bert_configs(heads=heads, num_labels=2, head=head))
    student = draw(bert_configs(heads=heads, num_labels=2, projection_dim=teacher.hidden_size, head=head))
    layers = draw(st.integers(1, teacher.num_hidden_layers))
    student = BertConfig(**{**student.to_dict(), "num_hidden_layers": layers,
                            "projection": draw(st.sampled_from(TRAINED_PROJECTIONS))})
    strategy = draw(st.sampled_from(["uniform", "top", "bottom", "explicit"]))
    explicit = sorted(draw(st.lists(st.integers(1, teacher.num_hidden_layers), min_size=layers, max_size=layers)))
    mapping = build_mapping(strategy, layers, teacher.num_hidden_layers, explicit if strategy == "explicit" else None)
    temperature = draw(st.floats(0.5, 4.0))
    graph = build_graph([(k, 0.5 + i, temperature) for i, k in enumerate(kinds)], student, teacher, mapping, where="suite",
                        mask_padding=draw(st.booleans()))
    batch = draw(batches(num_labels=2, per_position=head == "token", span=head == "span"))
    seed = draw(st.integers(0, 10_000))
    return teacher, init_parameters(teacher, seed), student, init_parameters(student, seed + 1), graph, batch


# Objectives for the resume check: one reaching every parameter, one without the logits (the pooler
# and head get no gradient, so no Adam moments), one of logits only (the projections get none).
RESUME_OBJECTIVES = (list(TINYBERT_KINDS), ["attention_mse", "hidden_mse"], ["soft_cross_entropy", "hard_cross_entropy"])


class BackendConformance:
    """Every check a backend must pass. Set `backend_name` in the subclass.

    `resume_examples` is the number of hypothesis examples of the resume check (each builds two
    trainers; a compiling backend may lower it to keep the suite fast), `precision_examples` that
    of each precision's check (two trainers for a reduced precision, one for float32), and
    `trainer_examples` that of the checks that build trainers and step them (the supplied teacher
    outputs: three trainers; the AdamW steps: one): a compiling backend compiles graphs for each.
    """

    backend_name: str = ""
    resume_examples: int = 6
    precision_examples: int = 6
    trainer_examples: int = 12

    @pytest.fixture
    def backend(self):
        from distill_engine.plugins import get_backend

        return get_backend(self.backend_name)

    def _trains(self, backend):
        if not getattr(backend, "trains", True):
            pytest.skip(f"backend {backend.name} is forward-only")

    # --- forward ---------------------------------------------------------------------------
    @SUITE
    @given(config=bert_configs(head=None), batch=batches(), seed=st.integers(0, 10_000))
    def test_forward_taps(self, backend, config, batch, seed):
        params = init_parameters(config, seed)
        check_taps(backend.load_model(config, params, CPU).forward(batch), config, params, batch)
        assert_close(backend.load_model(config, params, CPU).predict(batch),
                     reference.forward(config, params, batch).logits, "predict logits")

    # --- heads -----------------------------------------------------------------------------
    head_examples: int = 2  # hypothesis examples per head (a compiling backend builds three graphs for each)

    @pytest.mark.parametrize("head", HEADS)
    def test_each_head(self, backend, head):
        """Each head (`BertConfig.head`: pooled, token, span) on its own: the forward's taps and
        `predict`'s logits ([B, C], [B, L, C], [B, L, 2]: `graph.taps.HEAD_LOGITS`) against the
        reference; then, on a training backend, a logit loss through the head, its value and its
        gradient against central finite differences of the reference, with the teacher's logits
        supplied in the batch (the teacher-output cache's path); a token or span head's gradient
        does not reach the pooler."""

        @settings(SUITE, max_examples=self.head_examples)
        @given(config=bert_configs(head=head), batch=batches(), seed=st.integers(0, 10_000),
               pick=st.integers(0, 2**32 - 1))
        def check(config, batch, seed, pick):
            self._check_head(backend, config, batch, seed, pick)

        check()

    def _check_head(self, backend, config, batch, seed, pick):
        # finite differences are wrong across a ReLU kink: smooth everywhere here
        student = attrs.evolve(config, hidden_act="gelu", classifier_activation="none")
        s_params, t_params = init_parameters(student, seed), init_parameters(student, seed + 1)
        model = backend.load_model(student, s_params, CPU)
        check_taps(model.forward(batch), student, s_params, batch)
        assert_close(model.predict(batch), reference.forward(student, s_params, batch).logits,
                     f"predict logits of the {student.head} head")
        if not getattr(backend, "trains", True):
            return
        # The built-in logit losses take the pooled head's logits only (build_graph refuses the others:
        # the per-token and per-span losses come with NER and QA). logit_mse's formula is an
        # element-wise mean, and so are its implementations: the suite declares it for every head
        # here, to reach each head's backward through the trainer.
        definition = attrs.evolve(get_loss("logit_mse"), heads=HEADS)
        graph = DistillGraph(terms=(LossTerm(kind="logit_mse", key="logit_mse", resolved=definition),))
        teacher_logits = reference.forward(student, t_params, batch).logits
        supplied = {**batch, TEACHER_PREFIX + "logits": np.asarray(teacher_logits, np.float32)}
        trainer = backend.trainer(model, None, TrainSpec(graph, OptimizerSpec(), np.zeros(1, np.float32)))
        check_losses(trainer.losses(supplied), graph, student, s_params, student, t_params, batch)
        grads = trainer.gradients(supplied)
        assert set(grads) == set(s_params), "gradients must cover every student parameter by canonical name"
        if student.head != "pooled":
            for name in ("pooler.dense.weight", "pooler.dense.bias"):
                assert np.all(grads[name] == 0), f"the {student.head} head's logits reach {name}"

        def objective(p):
            return reference.losses(graph, student, p, student, t_params, batch)["total"]

        rng = np.random.default_rng(pick)
        prefix = head_prefix(student)
        # the head's own parameters, and two the head's input depends on at every position: the
        # last layer's output projection and the embeddings' LayerNorm
        names = (prefix + ".weight", prefix + ".bias",
                 f"encoder.layer.{student.num_hidden_layers - 1}.output.dense.weight", "embeddings.LayerNorm.weight")
        picks = [(name, tuple(int(rng.integers(n)) for n in s_params[name].shape)) for name in names]
        for name, index in picks:
            assert_close(grads[name][index], reference.numerical_gradient(objective, s_params, name, index),
                         f"gradient through the {student.head} head w.r.t. {name}{list(index)}",
                         rtol=GRAD_RTOL, atol=GRAD_ATOL)

    # --- losses ----------------------------------------------------------------------------
    # A loss plugin's suite checks its own kinds only: only_losses = ("my_loss",)
    only_losses: tuple[str, ...] = ()

    def loss_kinds(self, backend) -> list[str]:
        """The registered loss kinds this backend implements (every one is checked), or `only_losses`."""
        if self.only_losses:
            missing = [k for k in self.only_losses if not has_implementation(k, backend.name)]
            assert not missing, f"backend {backend.name} has no implementation of {', '.join(missing)}"
            return list(self.only_losses)
        return [k for k in loss_names() if has_implementation(k, backend.name)]

    def test_every_builtin_loss_is_implemented(self, backend):
        """A training backend implements every built-in loss kind (a plugin's may be partial: plan()
        then names the missing kind and the backends that have it)."""
        self._trains(backend)
        if self.only_losses:
            pytest.skip("a loss plugin's suite (only_losses) checks its own kinds")
        from distill_engine.losses.builtin import BUILTIN_LOSSES

        missing = [d.name for d in BUILTIN_LOSSES if not has_implementation(d.name, backend.name)]
        assert not missing, f"backend {backend.name} implements no {', '.join(missing)}"

    @SUITE
    @given(data=st.data())
    def test_each_loss(self, backend, data):
        """Every loss kind the backend implements, in one objective, against the reference."""
        self._trains(backend)
        teacher, t_params, student, s_params, graph, batch = data.draw(distill_setups(kinds=self.loss_kinds(backend)))
        trainer = backend.trainer(backend.load_model(student, s_params, CPU), backend.load_model(teacher, t_params, CPU),
                                  TrainSpec(graph, OptimizerSpec(), np.zeros(1, np.float32)))
        check_losses(trainer.losses(batch), graph, student, s_params, teacher, t_params, batch)

    # --- gradients -------------------------------------------------------------------------
    gradient_examples: int = 3  # hypothesis examples per loss kind

    def test_gradient_of_each_loss(self, backend):
        """d(loss)/d(parameter) of each kind the backend implements against central finite
        differences of the float64 reference, on parameters the loss reaches; except the pad row
        (`pad_token_id`: 0, the batches' padding, or 3, a real token's id) of a
        `freeze_pad_embedding` trainer: exactly zero."""
        self._trains(backend)
        for kind in self.loss_kinds(backend):
            @settings(SUITE, max_examples=self.gradient_examples)
            # the kind on models of its head (a token kind: the token head and its per-position labels)
            @given(setup=distill_setups(kinds=[kind]), pick=st.integers(0, 2**32 - 1), mask_padding=st.booleans(),
                   kind=st.just(kind), freeze_pad=st.booleans(), pad_token_id=st.sampled_from([0, 3]))
            def check(setup, pick, mask_padding, kind, freeze_pad, pad_token_id):
                self._check_gradient(backend, setup, kind, pick, mask_padding, freeze_pad, pad_token_id)

            check()

    def _check_gradient(self, backend, setup, kind, pick, mask_padding, freeze_pad, pad_token_id):
        teacher, t_params, student, s_params, _, batch = setup
        # finite differences are wrong across a ReLU kink: the student is smooth everywhere here
        student = attrs.evolve(student, hidden_act="gelu", classifier_activation="none", pad_token_id=pad_token_id)
        graph = build_graph([(kind, 1.0, 1.5)], student, teacher, _mapping(student, teacher), where="suite",
                            mask_padding=mask_padding)
        trainer = backend.trainer(backend.load_model(student, s_params, CPU), backend.load_model(teacher, t_params, CPU),
                                  TrainSpec(graph, OptimizerSpec(), np.zeros(1, np.float32),
                                            freeze_pad_embedding=freeze_pad))
        grads = trainer.gradients(batch)
        assert set(grads) == set(s_params), "gradients must cover every student parameter by canonical name"
        if freeze_pad:
            pad_row = grads[WORD_EMBEDDINGS][pad_token_id]
            assert np.all(pad_row == 0), (f"gradient of {kind} w.r.t. the pad row {pad_token_id} of "
                                          f"{WORD_EMBEDDINGS} is {pad_row}, not 0 (freeze_pad_embedding)")

        def objective(p):
            return reference.losses(graph, student, p, teacher, t_params, batch)["total"]

        rng = np.random.default_rng(pick)
        # the parameters this loss reaches: projections for the hidden losses, the head for logits
        candidates = [n for n in s_params if np.any(grads[n] != 0)] or list(s_params)
        picks = [(name, tuple(int(rng.integers(s)) for s in s_params[name].shape))
                 for name in rng.choice(candidates, size=min(3, len(candidates)), replace=False)]
        # and one coordinate of the pad row: the reference's gradient when it trains
        picks.append((WORD_EMBEDDINGS, (pad_token_id, int(rng.integers(student.hidden_size)))))
        for name, index in picks:
            if freeze_pad and name == WORD_EMBEDDINGS and index[0] == pad_token_id:
                expected = 0.0
            else:
                expected = reference.numerical_gradient(objective, s_params, name, index)
            assert_close(grads[name][index], expected, f"gradient of {kind} w.r.t. {name}{list(index)}",
                         rtol=GRAD_RTOL, atol=GRAD_ATOL)

    # --- the teacher's outputs supplied in the batch (the teacher-output cache) --------------
    def test_teacher_outputs_supplied_in_the_batch(self, backend):
        """A batch carrying "teacher.<tap>" for every tap the graph reads (`DistillGraph.teacher_taps`)
        trains without a teacher model: the losses are the reference's, and the steps those of a
        trainer that runs the teacher. A batch with some of the taps but not all is refused."""
        self._trains(backend)

        @settings(SUITE, max_examples=self.trainer_examples)
        @given(data=st.data(), steps=st.integers(1, 2))
        def check(data, steps):
            self._check_teacher_outputs_supplied(backend, data.draw(distill_setups(kinds=self.loss_kinds(backend))),
                                                 steps)

        check()

    def _check_teacher_outputs_supplied(self, backend, setup, steps):
        teacher, t_params, student, s_params, graph, batch = setup
        if not graph.teacher_taps:
            return
        taps = reference.forward(teacher, t_params, batch).named()
        supplied = {**batch, **{TEACHER_PREFIX + n: np.asarray(taps[n], np.float32) for n in graph.teacher_taps}}
        lrs = learning_rates(ScheduleSpec("constant", 0.0), 1e-3, steps)
        cached_model = backend.load_model(student, s_params, CPU)
        cached = backend.trainer(cached_model, None, TrainSpec(graph, OptimizerSpec(lr=1e-3), lrs))
        check_losses(cached.losses(supplied), graph, student, s_params, teacher, t_params, batch)
        # The steps are compared with the backend's own teacher outputs: Adam's update of a parameter
        # whose gradient is ~0 is ~lr * sign(g), so 1e-7 of teacher rounding could flip it.
        teacher_model = backend.load_model(teacher, t_params, CPU)
        own = teacher_model.forward(batch).named()
        supplied = {**batch, **{TEACHER_PREFIX + n: np.asarray(own[n], np.float32) for n in graph.teacher_taps}}
        cached_model = backend.load_model(student, s_params, CPU)
        cached = backend.trainer(cached_model, None, TrainSpec(graph, OptimizerSpec(lr=1e-3), lrs))
        model = backend.load_model(student, s_params, CPU)
        running = backend.trainer(model, teacher_model, TrainSpec(graph, OptimizerSpec(lr=1e-3), lrs))
        for s in range(steps):
            got, want = cached.step(supplied), running.step(batch)
            assert_close(got["total"], want["total"], f"step {s} total loss with supplied teacher outputs")
        want = model.state_dict()
        for name, value in cached_model.state_dict().items():
            assert_close(value, want[name], f"parameter {name} after {steps} step(s) with supplied teacher outputs",
                         rtol=1e-4, atol=1e-6)
        if len(graph.teacher_taps) > 1:
            partial = {k: v for k, v in supplied.items() if k != TEACHER_PREFIX + graph.teacher_taps[0]}
            with pytest.raises(KeyError, match=graph.teacher_taps[0]):
                cached.losses(partial)

    # --- optimiser -------------------------------------------------------------------------
    def test_optimizer_steps_follow_adamw_and_the_schedule(self, backend):
        self._trains(backend)

        @settings(SUITE, max_examples=self.trainer_examples)
        @given(setup=distill_setups(kinds=["attention_mse", "hidden_mse", "soft_cross_entropy"]),
               clip=st.sampled_from(["global_norm", "per_parameter", "none"]), steps=st.integers(1, 3),
               bias_correction=st.booleans())
        def check(setup, clip, steps, bias_correction):
            self._check_optimizer_steps(backend, setup, clip, steps, bias_correction)

        check()

    def _check_optimizer_steps(self, backend, setup, clip, steps, bias_correction=True):
        """`steps` steps against `reference.adamw_step` on the trainer's own gradients (the pad row's
        zero included): AdamW, or BertAdam without bias correction."""
        teacher, t_params, student, s_params, graph, batch = setup
        spec = OptimizerSpec(lr=1e-3, weight_decay=0.1, clip=clip, max_grad_norm=0.05, bias_correction=bias_correction)
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
            assert_close(actual[name], expected[name],
                         f"parameter {name} after {steps} {'AdamW' if bias_correction else 'BertAdam'} step(s)",
                         rtol=1e-4, atol=1e-6)

    # --- resume ----------------------------------------------------------------------------
    def test_resume_continues_exactly(self, backend):
        """k steps; the student's weights and `trainer.state()`; a fresh model and trainer from
        them, `load_state`, m steps: the same losses, weights and state as k+m uninterrupted steps,
        bit for bit, in each precision the backend serves on a CPU. With dropout on when the backend
        declares `resume_exact_with_dropout`."""
        self._trains(backend)
        dropout = 0.1 if getattr(backend, "resume_exact_with_dropout", False) else 0.0

        @settings(SUITE, max_examples=self.resume_examples)
        @given(setup=st.sampled_from(RESUME_OBJECTIVES).flatmap(lambda kinds: distill_setups(kinds=kinds)),
               clip=st.sampled_from(["global_norm", "per_parameter", "none"]), k=st.integers(1, 3),
               m=st.integers(1, 2), seed=st.integers(0, 10_000), loss_scale=st.sampled_from([None, 2.0**8]),
               window=st.integers(1, 2), precision=st.sampled_from(served_precisions(backend, CPU)),
               bias_correction=st.booleans())
        def check(setup, clip, k, m, seed, loss_scale, window, precision, bias_correction):
            teacher, t_params, student, s_params, graph, batch = setup
            student = attrs.evolve(student, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
            opt = OptimizerSpec(lr=1e-3, weight_decay=0.1, clip=clip, max_grad_norm=0.05,
                                bias_correction=bias_correction)
            # a warm-up then a decay: every step's rate differs, so a lost schedule position shows
            spec = TrainSpec(graph, opt, learning_rates(ScheduleSpec("linear", 0.5), opt.lr, k + m + 1), seed=seed,
                             loss_scale=loss_scale, loss_scale_window=window, precision=precision)
            teacher_model = backend.load_model(teacher, t_params, CPU)
            model = backend.load_model(student, s_params, CPU)
            trainer = backend.trainer(model, teacher_model, spec)
            for _ in range(k):
                trainer.step(batch)
            weights, state = model.state_dict(), trainer.state()
            check_trainer_state(state, student, graph, steps=k)
            saved = {key: value.copy() for key, value in state.items()}
            expected = [trainer.step(batch) for _ in range(m)]
            for key, value in state.items():
                assert np.array_equal(value, saved[key]), f'state()["{key}"] changed as the trainer went on (not a copy)'

            resumed_model = backend.load_model(student, weights, CPU)
            resumed = backend.trainer(resumed_model, teacher_model, spec)
            resumed.load_state(state)
            for s in range(m):
                got = resumed.step(batch)
                for key in expected[s]:
                    assert np.array_equal(got[key], expected[s][key]), \
                        f"resumed step {k + s}: {key} = {got[key]!r}, uninterrupted {expected[s][key]!r}"
            after, want = resumed_model.state_dict(), model.state_dict()
            for name in want:
                assert np.array_equal(after[name], want[name]), f"parameter {name} after resume differs from {k + m} steps"
            end, want_end = resumed.state(), trainer.state()
            assert set(end) == set(want_end), f"trainer state keys after resume: {sorted(set(end) ^ set(want_end))}"
            for key in want_end:
                assert np.array_equal(end[key], want_end[key]), f'trainer state "{key}" after resume differs'

        check()

    # --- precisions ------------------------------------------------------------------------
    @pytest.mark.parametrize("precision", PRECISIONS)
    def test_a_step_in_each_served_precision_stays_within_its_tolerance(self, backend, precision):
        """`check_precision_step` for each precision the backend serves on a CPU."""
        self._trains(backend)
        if precision not in served_precisions(backend, CPU):
            pytest.skip(f'backend {backend.name} does not serve "{precision}" on cpu')

        @settings(SUITE, max_examples=self.precision_examples)
        @given(setup=distill_setups())
        def check(setup):
            check_precision_step(backend, setup, precision)

        check()

    def test_trainer_state_is_checked_on_load(self, backend):
        """load_state names what is wrong (CheckpointError, one line), ignores other backends'
        RNG keys, and a failed load leaves the fresh trainer able to load a good state."""
        self._trains(backend)
        teacher = BertConfig(vocab_size=40, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=12, max_position_embeddings=16, initializer_range=0.2, num_labels=2,
                             hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        student = attrs.evolve(teacher, num_hidden_layers=1, projection="shared", projection_dim=8)
        graph = build_graph([("hidden_mse", 1.0, 1.0), ("soft_cross_entropy", 1.0, 2.0)], student, teacher,
                            _mapping(student, teacher), where="suite")
        batch = {"input_ids": np.array([[2, 7, 9, 3, 0]], np.int32), "token_type_ids": np.zeros((1, 5), np.int32),
                 "attention_mask": np.array([[1, 1, 1, 1, 0]], np.int32), "labels": np.array([1], np.int32)}
        spec = TrainSpec(graph, OptimizerSpec(lr=1e-3), np.full(4, 1e-3, np.float32), seed=1)
        teacher_model = backend.load_model(teacher, init_parameters(teacher, 1), CPU)
        model = backend.load_model(student, init_parameters(student, 2), CPU)
        trainer = backend.trainer(model, teacher_model, spec)
        trainer.step(batch)
        weights, state = model.state_dict(), trainer.state()
        check_trainer_state(state, student, graph, steps=1)

        fresh = backend.trainer(backend.load_model(student, weights, CPU), teacher_model, spec)
        moment = EXP_AVG + "fit_dense.weight"
        bad = {
            f'no "{SCHEDULE_STEP}"': ({k: v for k, v in state.items() if k != SCHEDULE_STEP}, SCHEDULE_STEP),
            f'no "{ADAM_STEP}"': ({k: v for k, v in state.items() if k != ADAM_STEP}, ADAM_STEP),
            "a mis-shaped moment": ({**state, moment: np.zeros((3, 1), np.float32)}, moment),
            "a moment of no parameter": ({**state, EXP_AVG + "encoder.layer.9.output.dense.bias": np.zeros(8, np.float32),
                                          EXP_AVG_SQ + "encoder.layer.9.output.dense.bias": np.zeros(8, np.float32)},
                                         "encoder.layer.9.output.dense.bias"),
            "a value that is not an array": ({**state, SCHEDULE_STEP: 1}, SCHEDULE_STEP),
        }
        for what, (broken, named) in bad.items():
            with pytest.raises(CheckpointError) as caught:
                fresh.load_state(broken)
            message = str(caught.value)
            assert named in message and "\n" not in message, f"load_state of a state with {what}: {message!r}"
        fresh.load_state({**state, "rng.some-other-backend.cpu": np.zeros(7, np.uint8)})

    # --- checkpoints -----------------------------------------------------------------------
    @SUITE
    @given(config=bert_configs(projection_dim=8, head=None), seed=st.integers(0, 10_000))
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


def check_trainer_state(state, student: BertConfig, graph, *, steps: int) -> None:
    """`Trainer.state()` after `steps` applied steps: str keys, numpy arrays, the neutral scalars,
    and Adam moments under canonical names with the parameters' shapes, for exactly the parameters
    the objective reaches (`used_parameters`: as torch.optim keeps none for a parameter whose
    gradient is None); so that any backend can load any other's state."""
    assert isinstance(state, dict), f"state() returned {type(state).__name__}, not a dict"
    for key, value in state.items():
        assert isinstance(key, str), f"trainer state key {key!r} is not a string"
        assert isinstance(value, np.ndarray), f'trainer state "{key}" is a {type(value).__name__}, not a numpy array'
        assert value.dtype != object, f'trainer state "{key}" holds Python objects'
    assert state[SCHEDULE_STEP].shape == () and int(state[SCHEDULE_STEP]) == steps, f"{SCHEDULE_STEP} after {steps} steps"
    assert state[ADAM_STEP].shape == () and int(state[ADAM_STEP]) <= steps, f"{ADAM_STEP} after {steps} steps"
    shapes = parameter_shapes(student)
    moments = {k[len(EXP_AVG):] for k in state if k.startswith(EXP_AVG)}
    assert moments == {k[len(EXP_AVG_SQ):] for k in state if k.startswith(EXP_AVG_SQ)}, "exp_avg and exp_avg_sq differ"
    if int(state[ADAM_STEP]):
        reached = used_parameters(student, graph)
        assert moments == reached, (f"Adam moments for {sorted(moments - reached)} (not reached by the objective), "
                                    f"none for {sorted(reached - moments)}")
    for name in moments:
        for prefix in (EXP_AVG, EXP_AVG_SQ):
            value = state[prefix + name]
            assert value.shape == tuple(shapes[name]) and value.dtype == np.float32, \
                f"{prefix}{name}: {value.dtype} {value.shape}, parameter is float32 {tuple(shapes[name])}"


def check_precision_step(backend, setup, precision: str) -> None:
    """One AdamW step with `TrainSpec.precision = precision` on a CPU: each loss term it returns
    within `PRECISION_TOLERANCES[precision]` of the float64 reference, its parameter update within
    that tolerance of the backend's own float32 step, no step skipped, and the weights and Adam's
    moments it leaves stored in float32. A backend's tests call it directly for a precision the
    backend serves only on accelerators, when its trainer can run that precision on a CPU."""
    teacher, t_params, student, s_params, graph, batch = setup
    # a ReLU kink turns rounding into a discrete change of the gradient (as in the gradient check)
    student = attrs.evolve(student, hidden_act="gelu", classifier_activation="none")
    tol = PRECISION_TOLERANCES[precision]
    opt = OptimizerSpec(lr=1e-3, eps=1.0, weight_decay=0.0, clip="none")  # eps: see PrecisionTolerance

    def step(p):
        model = backend.load_model(student, s_params, CPU)
        # float16 from 2^8 (the MindSpore zoo's start): 2^16 overflows the first steps of these
        # models, and a skipped step has no update to compare
        spec = TrainSpec(graph, opt, np.full(1, opt.lr, np.float32), precision=p,
                         loss_scale=2.0**8 if p == "fp16" else None)
        trainer = backend.trainer(model, backend.load_model(teacher, t_params, CPU), spec)
        return trainer.step(batch), model.state_dict(), trainer.state()

    losses, weights, state = step(precision)
    expected = reference.losses(graph, student, s_params, teacher, t_params, batch)
    for kind, value in expected.items():
        assert_close(losses[kind], value, f'"{precision}" step: loss {kind}', rtol=tol.rtol, atol=tol.atol)
    assert int(state[ADAM_STEP]) == 1, f'"{precision}" step: no update applied (an overflow at loss scale 2^8?)'
    names = sorted(used_parameters(student, graph))
    if precision != "fp32":
        _, weights32, _ = step("fp32")
        update = np.concatenate([(weights[n] - s_params[n]).ravel() for n in names])
        update32 = np.concatenate([(weights32[n] - s_params[n]).ravel() for n in names])
        err = float(np.linalg.norm(update - update32) / np.linalg.norm(update32))
        assert err <= tol.update, (f'"{precision}" step: the parameter update differs from float32\'s by {err:.3g} '
                                   f"relative (L2 norm; tolerance {tol.update})")
    # Master weights and moments in float32: a tensor kept in bfloat16 (float16) and widened to
    # float32 has the low 16 (13) bits of every value zero, which state_dict()'s float32 cannot hide.
    # Pooled per kind: a tiny tensor of few-bit gradients may hold such values by chance.
    kinds = {"updated parameters": [weights[n] for n in names],
             "Adam's exp_avg": [v for k, v in state.items() if k.startswith(EXP_AVG)],
             "Adam's exp_avg_sq": [v for k, v in state.items() if k.startswith(EXP_AVG_SQ)]}
    for what, values in kinds.items():
        share = _float32_share(values)
        assert share > 0.5, (f'"{precision}" step: {what} look stored in {precision}: only {share:.0%} of their '
                             "values use float32's low 13 mantissa bits")


def _float32_share(values) -> float:
    """The share of non-zero values whose low 13 mantissa bits are not all zero: ~1 for float32
    results (2^-13 of them are zero there by chance), 0 for values rounded to bfloat16 or float16."""
    flat = np.concatenate([np.asarray(v, np.float32).ravel() for v in values] or [np.ones(1, np.float32)])
    flat = flat[flat != 0]
    return float(np.mean((flat.view(np.uint32) & 0x1FFF) != 0)) if flat.size else 1.0


def _mapping(student: BertConfig, teacher: BertConfig):
    return build_mapping("uniform", student.num_hidden_layers, teacher.num_hidden_layers)
