"""Loss kinds as plugins: the registry, the hooks, recipe parameters and mappings, and properties
of every built-in kind's numpy reference (the oracle the backends are checked against)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distill_engine.cli import main
from distill_engine.errors import BackendError, RecipeError
from distill_engine.fingerprint import differences
from distill_engine.graph import LossRequest, build_graph, build_mapping
from distill_engine.hookspecs import hookimpl
from distill_engine.losses import LossDefinition, LossParam, get_loss, implementation, loss_definitions, loss_names
from distill_engine.losses.builtin import BUILTIN_LOSSES
from distill_engine.recipe import load_recipe, recipe_to_dict
from distill_engine.testing.fixtures import tiny_config, write_tiny_recipe
from test_cli_errors import _error

SETTINGS = settings(max_examples=40, deadline=None)


# --------------------------------------------------------------------------- the numpy references
def _pair_tensors(reads: str, rng, b=2, heads=2, length=5, width=6, classes=3):
    shape = {"attention": (b, heads, length, length), "values": (b, heads, length, width),
             "embeddings": (b, length, width), "hidden": (b, length, width), "logits": (b, classes)}[reads]
    return rng.standard_normal(shape) * 2.0


def _inputs(definition: LossDefinition, seed: int, equal: bool, masked: bool):
    rng = np.random.default_rng(seed)
    pairs = 1 if definition.reads in ("logits", "embeddings") else 2
    teacher = tuple(_pair_tensors(definition.reads, rng) for _ in range(pairs))
    student = teacher if equal else tuple(_pair_tensors(definition.reads, rng) for _ in range(pairs))
    mask = None
    if masked:
        mask = np.ones((2, 5))
        mask[1, 3:] = 0.0
    labels = np.array([0, 2]) if definition.needs_labels else None
    return student, (teacher if definition.needs_teacher else ()), mask, labels


# the distillation losses that vanish when the student reproduces the teacher
VANISHING = [d for d in BUILTIN_LOSSES if d.needs_teacher and d.name != "soft_cross_entropy"]


@SETTINGS
@given(seed=st.integers(0, 10_000), masked=st.booleans(), definition=st.sampled_from(VANISHING))
def test_a_distillation_loss_is_zero_when_the_student_matches_and_positive_otherwise(seed, masked, definition):
    args = _inputs(definition, seed, equal=True, masked=masked)
    assert abs(definition.reference(*args, definition.defaults)) < 1e-9
    assert definition.reference(*_inputs(definition, seed, equal=False, masked=masked), definition.defaults) > 0


@SETTINGS
@given(seed=st.integers(0, 10_000), temperature=st.floats(0.5, 8.0))
def test_soft_targets_are_smallest_at_the_teacher_and_kl_is_their_excess(seed, temperature):
    sce, kl = get_loss("soft_cross_entropy"), get_loss("kl_divergence")
    student, teacher, _, _ = _inputs(kl, seed, equal=False, masked=False)
    at_teacher = sce.reference(teacher, teacher, None, None, (temperature,))
    elsewhere = sce.reference(student, teacher, None, None, (temperature,))
    assert elsewhere >= at_teacher
    # KL = cross-entropy - entropy, summed over C classes (soft_cross_entropy means over them), times T^2
    classes = teacher[0].shape[-1]
    expected = temperature**2 * classes * (elsewhere - at_teacher)
    assert kl.reference(student, teacher, None, None, (temperature,)) == pytest.approx(expected, rel=1e-9)


@SETTINGS
@given(seed=st.integers(0, 10_000), scale=st.floats(0.1, 10.0), name=st.sampled_from(["cosine_hidden", "pkd_hidden"]))
def test_normalised_hidden_losses_ignore_the_students_scale(seed, scale, name):
    d = get_loss(name)
    student, teacher, mask, _ = _inputs(d, seed, equal=False, masked=False)
    scaled = tuple(h * scale for h in student)
    assert d.reference(scaled, teacher, mask, None, ()) == pytest.approx(d.reference(student, teacher, mask, None, ()),
                                                                          rel=1e-9, abs=1e-12)


@SETTINGS
@given(seed=st.integers(0, 10_000), shift=st.floats(-50, 50))
def test_minilm_attention_is_blind_to_a_shift_of_each_row(seed, shift):
    d = get_loss("minilm_attention")
    student, teacher, _, _ = _inputs(d, seed, equal=False, masked=False)
    shifted = tuple(a + shift for a in student)
    assert d.reference(shifted, teacher, None, None, ()) == pytest.approx(d.reference(student, teacher, None, None, ()),
                                                                           rel=1e-9, abs=1e-12)


POSITIONAL = [d for d in BUILTIN_LOSSES if d.positions]


@SETTINGS
@given(seed=st.integers(0, 10_000), definition=st.sampled_from(POSITIONAL + [get_loss("pkd_hidden")]),
       noise=st.floats(-100, 100))
def test_with_a_mask_padded_positions_change_nothing(seed, definition, noise):
    """What mask_padding promises (and the teacher-output cache, which stores zeros there, needs)."""
    student, teacher, mask, labels = _inputs(definition, seed, equal=False, masked=True)
    padded = mask == 0  # [B, L]
    before = definition.reference(student, teacher, mask, labels, definition.defaults)

    def disturb(x):
        x = x.copy()
        if definition.reads in ("attention", "values"):
            b_idx, l_idx = np.nonzero(padded)
            x[b_idx, :, l_idx] = noise  # padded query rows (and value rows)
            if definition.reads == "attention":
                x.transpose(0, 1, 3, 2)[b_idx, :, l_idx] = noise  # padded keys too
        else:
            x[padded] = noise
        return x

    after = definition.reference(tuple(map(disturb, student)), tuple(map(disturb, teacher)), mask, labels,
                                 definition.defaults)
    assert after == pytest.approx(before, rel=1e-7, abs=1e-9)


def test_every_builtin_kind_has_a_formula_and_is_listed(capsys):
    assert main(["losses"]) == 0
    out = capsys.readouterr().out
    for d in BUILTIN_LOSSES:
        assert f"{d.name}\n" in out and d.formula[:60] in out
    assert "parameter temperature (0.001 <= x <= 1000, default 1.0)" in out
    assert "parameter after_softmax (true or false, default false)" in out


# --------------------------------------------------------------------------- the hooks
def _my_loss(student, teacher, mask, labels, params):
    (power,) = params
    return float(sum(np.mean(np.abs(np.asarray(s, np.float64) - t) ** power) for s, t in zip(student, teacher)))


MY_LOSS = LossDefinition("l_power_hidden", "hidden", formula="sum over pairs of mean |H_S - H_T|^power",
                         reference=_my_loss, summary="a test loss", projected=True,
                         params=(LossParam("power", 2.0, "the exponent", 1.0, 4.0),))


class MyLossPlugin:
    @hookimpl
    def register_losses(self, register):
        register(MY_LOSS)

    @hookimpl
    def register_loss_implementations(self, register):
        register("l_power_hidden", "planonly", "tests.test_losses:_my_loss")


def test_a_plugin_registers_a_loss_that_recipes_and_the_cli_use(tmp_path, planonly, register_plugin, capsys):
    register_plugin(MyLossPlugin(), name="my-loss")
    assert "l_power_hidden" in loss_names()
    assert main(["losses"]) == 0
    out = capsys.readouterr().out
    assert "l_power_hidden\n    a test loss: reads hidden (phase mapping); needs teacher; from plugin my-loss; " \
           "backends: planonly" in out
    assert "parameter power (1 <= x <= 4, default 2.0): the exponent" in out
    recipe = write_tiny_recipe(tmp_path)
    assert main(["validate", str(recipe), "--backend", planonly,
                 "--set", "phases.td1.losses=[{kind='l_power_hidden', power=3.0, weight=2}]"]) == 0
    assert "2*l_power_hidden" in capsys.readouterr().out
    err = _error(capsys, ["validate", str(recipe), "--backend", planonly,
                          "--set", "phases.td1.losses=[{kind='l_power_hidden', power=5.0}]"])
    assert "phases[2].losses[0].power: 5 is out of range (power (1 <= x <= 4" in err
    err = _error(capsys, ["validate", str(recipe), "--backend", planonly,
                          "--set", "phases.td1.losses=[{kind='l_power_hidden', powr=3.0}]"])
    assert 'phases[2].losses[0].powr: unknown key (did you mean "power"?); loss l_power_hidden has parameters power' in err


def test_the_plugin_registry_forgets_an_unregistered_plugin(register_plugin):
    from distill_engine.plugins import pm

    plugin = MyLossPlugin()
    pm.register(plugin, name="temporary")
    try:
        assert "l_power_hidden" in loss_definitions()
    finally:
        pm.unregister(plugin)
    assert "l_power_hidden" not in loss_definitions()


class DuplicateLossPlugin:
    @hookimpl
    def register_losses(self, register):
        register(next(d for d in BUILTIN_LOSSES if d.name == "hidden_mse"))


def test_a_loss_registered_twice_names_both_plugins(register_plugin):
    register_plugin(DuplicateLossPlugin(), name="dup")
    with pytest.raises(BackendError, match='loss "hidden_mse" registered twice \\(by builtin-losses and dup\\)'):
        loss_definitions()


def test_a_kind_the_backend_lacks_is_refused_by_validate(tmp_path, planonly, register_plugin, capsys):
    class OnlyDefinition:
        @hookimpl
        def register_losses(self, register):
            register(MY_LOSS)

    register_plugin(OnlyDefinition(), name="definition-only")
    recipe = write_tiny_recipe(tmp_path)
    err = _error(capsys, ["validate", str(recipe), "--backend", planonly,
                          "--set", "phases.td1.losses=[{kind='l_power_hidden'}]"])
    assert err == ('error: phases[2] (td1).losses[0].kind: loss "l_power_hidden" has no implementation for backend '
                   '"planonly" (implemented for: no backend; a loss plugin adds one through register_loss_implementations)')
    with pytest.raises(BackendError, match="no implementation for backend"):
        implementation("l_power_hidden", "planonly")


# --------------------------------------------------------------------------- recipes and graphs
def test_unknown_kind_and_parameter_errors_name_the_field(tmp_path, planonly, capsys):
    recipe = write_tiny_recipe(tmp_path)
    err = _error(capsys, ["validate", str(recipe), "--backend", planonly, "--set", "phases.td2.losses=[{kind='kl_divergense'}]"])
    assert 'phases[3].losses[0].kind: unknown loss "kl_divergense" (did you mean "kl_divergence"?)' in err
    err = _error(capsys, ["validate", str(recipe), "--backend", planonly,
                          "--set", "phases.td1.losses=[{kind='hidden_mse', temperature=2.0}]"])
    assert "phases[2].losses[0].temperature: unknown key; loss hidden_mse has no parameters" in err
    err = _error(capsys, ["validate", str(recipe), "--backend", planonly,
                          "--set", "phases.td1.losses=[{kind='attention_mse', after_softmax=1}]"])
    assert "phases[2].losses[0].after_softmax: expected true or false, got 1" in err


def test_loss_parameters_and_mappings_reach_the_graph(tmp_path, planonly):
    from distill_engine.planning import plan

    recipe = write_tiny_recipe(tmp_path, extra="")
    r = load_recipe(recipe, ["phases.td1.losses=[{kind='hidden_mse'}, {kind='hidden_mse', weight=0.5, "
                             "mapping={strategy='last'}}, {kind='minilm_attention'}, "
                             "{kind='attention_mse', after_softmax=true, mapping={strategy='explicit', layers=[1, 2]}}]",
                             "phases.td2.losses=[{kind='kl_divergence', temperature=4.0}]"])
    p = plan(r, planonly)
    td1, td2 = p.phases[2].graph, p.phases[3].graph
    assert [t.name for t in td1.terms] == ["hidden_mse_1", "hidden_mse_2", "minilm_attention", "attention_mse"]
    assert td1.terms[0].pairs == ((1, 2), (2, 4)) and td1.terms[1].pairs == ((2, 4),)
    assert td1.terms[2].pairs == ((1, 3),)  # minilm's own default: the last layers
    assert td1.terms[3].pairs == ((0, 0), (1, 1)) and td1.terms[3].params == (True,)
    assert td2.terms[0].params == (4.0,)
    saved = recipe_to_dict(r)["phases"][3]["losses"]
    assert saved == [{"kind": "kl_divergence", "weight": 1.0, "temperature": 4.0}]
    assert json.loads(json.dumps(recipe_to_dict(r)))  # recipe.json stays plain data


def test_a_run_from_before_loss_plugins_resumes_without_differences(tmp_path):
    recipe = write_tiny_recipe(tmp_path)
    new = recipe_to_dict(load_recipe(recipe))
    old = json.loads(json.dumps(new))
    old["phases"][2]["losses"] = [{"kind": "attention_mse", "weight": 1.0, "temperature": 1.0}]
    new["phases"][2]["losses"] = [{"kind": "attention_mse", "weight": 1.0, "after_softmax": False}]
    assert differences(old, {}, new, {}) == []
    new["phases"][2]["losses"][0]["after_softmax"] = True
    assert differences(old, {}, new, {}) == ["phases[2] (td1).losses[0].after_softmax (false -> true)"]


def test_graph_errors_name_the_loss():
    student, teacher = tiny_config(hidden_size=8, num_attention_heads=2), tiny_config()
    mapping = build_mapping("uniform", student.num_hidden_layers, teacher.num_hidden_layers)
    with pytest.raises(RecipeError, match=r"p.losses\[0\]: minilm_value_relation compares attention heads one by one"):
        build_graph([LossRequest("minilm_value_relation")], student, teacher, mapping, where="p")
    with pytest.raises(RecipeError, match=r"p.losses\[0\]: cosine_hidden needs a projection"):
        build_graph([LossRequest("cosine_hidden")], student, teacher, mapping, where="p")
