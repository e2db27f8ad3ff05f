"""Layer mapping strategies: TinyBERT's uniform rule, its non-divisible extension, explicit lists."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from distill_engine.errors import RecipeError
from distill_engine.graph import build_mapping, uniform_layers


def test_tinybert_12_to_4_matches_the_paper():
    m = build_mapping("uniform", 4, 12)
    assert m.attention == ((0, 2), (1, 5), (2, 8), (3, 11))
    assert m.hidden == ((0, 0), (1, 3), (2, 6), (3, 9), (4, 12))


def test_six_to_four_rounds_half_up():
    assert uniform_layers(4, 6) == (2, 3, 5, 6)


@given(m=st.integers(1, 12), k=st.integers(1, 4))
def test_divisible_mapping_is_tinyberts_formula(m, k):
    mapping = build_mapping("uniform", m, m * k)
    assert mapping.attention == tuple((i, i * k + k - 1) for i in range(m))
    assert mapping.hidden == tuple((i, i * k) for i in range(m + 1))


@given(st.integers(1, 24).flatmap(lambda n: st.tuples(st.integers(1, n), st.just(n))))
def test_uniform_mapping_is_increasing_and_ends_at_the_top(mn):
    m, n = mn
    g = uniform_layers(m, n)
    assert len(g) == m and g[-1] == n
    assert all(a < b for a, b in zip(g, g[1:]))
    assert all(1 <= t <= n for t in g)
    # within half a layer of the exact proportional position
    assert all(abs(t - j * n / m) <= 0.5 for j, t in enumerate(g, start=1))


def test_top_and_bottom():
    assert build_mapping("top", 2, 6).teacher_layer_of == (5, 6)
    assert build_mapping("bottom", 2, 6).teacher_layer_of == (1, 2)


def test_explicit_list_and_its_errors():
    assert build_mapping("explicit", 3, 6, [1, 4, 6]).attention == ((0, 0), (1, 3), (2, 5))
    with pytest.raises(RecipeError, match="has 2 entries; the student has 3"):
        build_mapping("explicit", 3, 6, [1, 2])
    with pytest.raises(RecipeError, match="1-based, 1..6"):
        build_mapping("explicit", 2, 6, [0, 6])
    with pytest.raises(RecipeError, match="more layers"):
        build_mapping("uniform", 8, 6)
    with pytest.raises(RecipeError, match='did you mean "uniform"'):
        build_mapping("unifrom", 2, 6)


@given(st.integers(1, 24).flatmap(lambda n: st.tuples(st.integers(1, 24), st.just(n))))
def test_last_maps_only_the_last_layers(mn):
    m, n = mn
    mapping = build_mapping("last", m, n)
    assert mapping.hidden == ((0, 0), (m, n))
    assert mapping.attention == ((m - 1, n - 1),)
    assert mapping.describe() == f"{m}->{n}"
