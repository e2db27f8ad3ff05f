"""A model-family plugin outside the engine: Baidu's ERNIE as Hugging Face writes it (`ErnieModel`,
`ErnieForSequenceClassification`; config.json `model_type = "ernie"`).

ERNIE 1.0/2.0/3.0 is BERT's encoder under other names ("ernie." where BERT has "bert."), plus
optional task-type embeddings (`use_task_id`), which ERNIE 3.0's released checkpoints enable for
their pre-training tasks only. This plugin reads ERNIE without task ids (a config with
`use_task_id = true` is refused with one line), so its encoder computes exactly BERT's: the numpy
reference and the backends' networks are BERT's, registered under the family "ernie". What the
plugin owns is what a family owns: its config class, the model_type it reads, Hugging Face's
names both ways, a student of its own family, and an implementation per backend.
"""

from __future__ import annotations

from pathlib import Path

import attrs

from distill_engine.bert import BertConfig
from distill_engine.errors import CheckpointError
from distill_engine.hookspecs import hookimpl
from distill_engine.models.builtin import BERT, BertFamily


@attrs.frozen
class ErnieConfig(BertConfig):
    """BERT's fields; a config of its own class, so that `family_of` tells ERNIE from BERT."""


def _ernie(config: BertConfig) -> ErnieConfig:
    return ErnieConfig(**attrs.asdict(config, recurse=False))


class ErnieFamily(BertFamily):
    name = "ernie"
    description = "ERNIE (Hugging Face ErnieModel / ErnieForSequenceClassification, without task-type embeddings)"
    config_class = ErnieConfig
    hf_model_types = ("ernie",)

    def config_from_hf(self, data: dict, path: Path) -> ErnieConfig:
        if data.get("use_task_id"):
            raise CheckpointError(f"{path}: use_task_id = true (task-type embeddings) is not supported by the "
                                  "ernie family plugin; use a checkpoint without task ids")
        architectures = [a.replace("Ernie", "Bert") for a in data.get("architectures", []) or []]
        return _ernie(BERT.config_from_hf({**data, "architectures": architectures}, path))

    def config_to_hf(self, config: ErnieConfig) -> dict:
        data = BERT.config_to_hf(config)
        return {**data, "model_type": "ernie", "use_task_id": False,
                "architectures": [a.replace("Bert", "Ernie") for a in data["architectures"]]}

    def config_from_dict(self, data: dict) -> ErnieConfig:
        return _ernie(BertConfig.from_dict(data))

    def student_config(self, teacher: ErnieConfig, **sizes) -> ErnieConfig:
        return _ernie(BERT.student_config(teacher, **sizes))

    def from_hf_names(self, tensors, source: str):
        # task_type_embeddings exist only with use_task_id (refused above); the rest is BERT's under "ernie."
        renamed = {("bert." + k.removeprefix("ernie.") if k.startswith("ernie.") else k): v for k, v in tensors.items()}
        return BERT.from_hf_names(renamed, source)

    def to_hf_names(self, config: ErnieConfig, state):
        return {("ernie." + k.removeprefix("bert.") if k.startswith("bert.") else k): v
                for k, v in BERT.to_hf_names(config, state).items()}


@hookimpl
def register_model_families(register):
    register(ErnieFamily())


@hookimpl
def register_model_implementations(register):
    # ERNIE without task ids is BERT's network: each backend's BERT model, built for an ErnieConfig
    # (strings: the framework is imported when a model is first built, not when the plugin loads)
    register("ernie", "torch", "distill_engine_torch.backend:bert_model")
    register("ernie", "mindspore", "distill_engine_mindspore.backend:bert_model")
