"""The divergence guard of a training phase (training.PhaseTraining._guard), without a framework:
a loss far above the phase's first ones, a non-finite loss, and a loss that is absurd from the
first step on (which the relative check alone takes as the phase's normal)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from distill_engine.training import MAX_LOSS_TERM, DivergenceError, PhaseTraining


def _phase(factor: float = 1000.0, needs_teacher: bool = True) -> PhaseTraining:
    training = PhaseTraining.__new__(PhaseTraining)  # the guard reads only these
    training.where = "phases[2] (td1)"
    training.advice = "the run diverged; lower phases.td1.optimizer.lr (now 5e-05)"
    training.context = SimpleNamespace(recipe=SimpleNamespace(run=SimpleNamespace(divergence_factor=factor)))
    terms = (SimpleNamespace(name="hidden_mse"), SimpleNamespace(name="attention_mse"))
    training.phase = SimpleNamespace(graph=SimpleNamespace(terms=terms, needs_teacher=needs_teacher))
    return training


def _steps(training: PhaseTraining, totals: list[float], hidden: list[float] | None = None) -> None:
    losses: list[float] = []
    for step, total in enumerate(totals, 1):
        h = hidden[step - 1] if hidden else total / 2
        training._guard({"hidden_mse": h, "attention_mse": total - h, "total": total, "lr": 1e-4}, step, losses)


def test_a_loss_absurd_from_the_first_step_stops_the_run_naming_the_term_and_the_teacher():
    """TD1 against a collapsed teacher: 1e9-1e10 from step 1, steady, so never 1000x its start."""
    with pytest.raises(DivergenceError) as caught:
        _steps(_phase(), [3e9, 2.9e9, 3.1e9], hidden=[2e9, 2e9, 2e9])
    message = str(caught.value)
    assert message.startswith("phases[2] (td1): the loss term hidden_mse is 2e+09 at step 1, over 1e+06, "
                              "which no healthy model reaches; the run diverged; lower phases.td1.optimizer.lr")
    assert "or the teacher: a teacher_finetune that diverged" in message


def test_a_phase_without_a_teacher_is_not_told_to_check_one():
    with pytest.raises(DivergenceError) as caught:
        _steps(_phase(needs_teacher=False), [4e6], hidden=[2e6])
    assert "teacher" not in str(caught.value).split("reaches;")[1]


def test_healthy_losses_pass_up_to_the_ceiling_and_a_factor_of_0_turns_the_guard_off():
    big = MAX_LOSS_TERM * 0.99  # a large but steady loss, each term just under the ceiling
    _steps(_phase(), [2 * big] * 5, hidden=[big] * 5)
    _steps(_phase(factor=0), [3e9, 3e9], hidden=[2e9, 2e9])  # off: only non-finite losses stop it


def test_the_relative_check_and_non_finite_losses_still_stop_it():
    with pytest.raises(DivergenceError, match="over 1000x its starting value"):
        _steps(_phase(), [1.0, 1.0, 1.0, 2000.0], hidden=[0.5, 0.5, 0.5, 0.5])
    with pytest.raises(DivergenceError, match="the training loss became nan at step 2"):
        _steps(_phase(factor=0), [1.0, float("nan")], hidden=[0.5, 0.5])
