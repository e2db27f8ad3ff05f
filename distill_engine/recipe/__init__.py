"""Recipes: the declarative description of a distillation pipeline (schema, loading, checks)."""

from distill_engine.recipe.loader import CONVERTER, apply_override, load_recipe, recipe_to_dict, structure
from distill_engine.recipe.schema import (PHASE_KINDS, DataSpec, LossSpec, MappingSpec, OptimizerConfig, PhaseSpec,
                                          Recipe, RunSpec, ScheduleConfig, StudentSpec, TeacherSpec)

__all__ = ["CONVERTER", "apply_override", "load_recipe", "recipe_to_dict", "structure", "PHASE_KINDS", "DataSpec",
           "LossSpec", "MappingSpec", "OptimizerConfig", "PhaseSpec", "Recipe", "RunSpec", "ScheduleConfig",
           "StudentSpec", "TeacherSpec"]
