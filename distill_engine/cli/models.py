"""`distill-engine models`: the model families, the Hugging Face model types they read, their taps
and the backends that build them."""

from __future__ import annotations


def add_parser(sub) -> None:
    sub.add_parser("models", help="list the model families (teacher and student architectures) and their backends")


def command(_args) -> int:
    from distill_engine.models.registry import MODEL_FAMILIES, implemented_on

    print("Model families (a Hugging Face config.json's model_type picks one; a plugin adds one through "
          "register_model_families):")
    for name, family in MODEL_FAMILIES.all().items():
        print(f"{name}\n    {family.description}\n    model_type: {', '.join(family.hf_model_types)}; "
              f"taps: {', '.join(family.taps)}; from plugin {MODEL_FAMILIES.owner(name)}; "
              f"backends: {', '.join(implemented_on(name)) or 'none'}")
    return 0
