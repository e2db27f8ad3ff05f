"""Layer mapping: which teacher layer each student layer learns from (TinyBERT's g(m)).

Indices follow TinyBERT's two lists. Hidden-state *entries* are `[embeddings, layer_1 .. layer_L]`
(entry 0 is the embedding output); attention *layers* are 0-based. A mapping is a list of pairs
(student layer j, teacher layer g(j)), both 1-based; then hidden entry j <- teacher entry g(j),
entry 0 <- entry 0, and attention layer j-1 <- teacher layer g(j)-1.

Uniform rule (TinyBERT): g(j) = j*k with k = N/M. When N is not a multiple of M the engine uses
g(j) = round_half_up(j*N/M): the student's last layer still learns from the teacher's last, the
layers are spread as evenly as integers allow, and the rule reduces to j*k when N = k*M.
Example 6 -> 4: g = (2, 3, 5, 6); 12 -> 4: g = (3, 6, 9, 12).

The other strategies: "top" (the teacher's last M layers) and "bottom" (its first M), TinyBERT's
Table 5 ablations; "last" maps only the student's last layer to the teacher's last (MiniLM,
DistilBERT's cosine loss); "explicit" lists g(1..M).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import attrs

from distill_engine.errors import RecipeError

Strategy = Literal["uniform", "top", "bottom", "last", "explicit"]
STRATEGIES = ("uniform", "top", "bottom", "last", "explicit")


@attrs.frozen
class LayerMapping:
    """Resolved pairs (student index, teacher index) for hidden-state entries and attention layers.

    `teacher_layer_of` is g(1..M), the 1-based teacher layer of each student layer, for a mapping
    of every student layer; `student_layer_of` lists the student layers mapped when only some are
    (the "last" strategy), else it is empty (all of 1..M)."""

    student_layers: int
    teacher_layers: int
    teacher_layer_of: tuple[int, ...]
    student_layer_of: tuple[int, ...] = ()

    @property
    def layer_pairs(self) -> tuple[tuple[int, int], ...]:
        """(student layer, teacher layer), both 1-based."""
        students = self.student_layer_of or tuple(range(1, len(self.teacher_layer_of) + 1))
        return tuple(zip(students, self.teacher_layer_of))

    @property
    def hidden(self) -> tuple[tuple[int, int], ...]:
        return ((0, 0),) + self.layer_pairs

    @property
    def attention(self) -> tuple[tuple[int, int], ...]:
        return tuple((j - 1, t - 1) for j, t in self.layer_pairs)

    def to_dict(self) -> dict:
        out = {"student_layers": self.student_layers, "teacher_layers": self.teacher_layers,
               "teacher_layer_of": list(self.teacher_layer_of)}
        if self.student_layer_of:
            out["student_layer_of"] = list(self.student_layer_of)
        return out

    def describe(self) -> str:
        """"1->2, 2->3, 3->5, 4->6" (student -> teacher layer)."""
        return ", ".join(f"{j}->{t}" for j, t in self.layer_pairs)


def uniform_layers(student_layers: int, teacher_layers: int) -> tuple[int, ...]:
    """g(j) = round_half_up(j*N/M), integer arithmetic (exact j*N/M when divisible)."""
    m, n = student_layers, teacher_layers
    return tuple((2 * j * n + m) // (2 * m) for j in range(1, m + 1))


def build_mapping(strategy: str, student_layers: int, teacher_layers: int,
                  layers: Sequence[int] | None = None, *, where: str = "mapping") -> LayerMapping:
    """Resolve a mapping strategy for M student and N teacher layers; errors name `where`."""
    m, n = student_layers, teacher_layers
    if m < 1 or n < 1:
        raise RecipeError(f"{where}: layer counts must be positive (student {m}, teacher {n})")
    if strategy != "explicit" and layers:
        raise RecipeError(f'{where}.layers is only read with strategy "explicit", not "{strategy}"')
    if strategy == "explicit":
        if not layers:
            raise RecipeError(f'{where}.layers: strategy "explicit" needs one teacher layer per student layer')
        g = tuple(int(x) for x in layers)
        if len(g) != m:
            raise RecipeError(f"{where}.layers has {len(g)} entries; the student has {m} layers")
        if any(not 1 <= t <= n for t in g):
            raise RecipeError(f"{where}.layers {list(g)}: teacher layers are 1-based, 1..{n}")
        return LayerMapping(m, n, g)
    if strategy == "last":
        return LayerMapping(m, n, (n,), (m,))
    if m > n:
        raise RecipeError(f"{where}: the student has more layers ({m}) than the teacher ({n}); "
                          'use strategy "explicit"')
    if strategy == "uniform":
        return LayerMapping(m, n, uniform_layers(m, n))
    if strategy == "top":
        return LayerMapping(m, n, tuple(range(n - m + 1, n + 1)))
    if strategy == "bottom":
        return LayerMapping(m, n, tuple(range(1, m + 1)))
    from distill_engine.errors import unknown_name
    raise RecipeError(f"{where}.strategy: " + unknown_name("mapping strategy", strategy, STRATEGIES))
