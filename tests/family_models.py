"""Tiny Hugging Face models of the encoder families on BERT's network, built with transformers' own
config classes and saved with `save_pretrained` (for tests/test_encoder_families.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# per family: transformers' config class, its task class, the config's sizes (2 layers, hidden 16)
SIZES = dict(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=32,
             max_position_embeddings=24)
FAMILIES = {
    "roberta": ("RobertaConfig", "RobertaForSequenceClassification",
                dict(SIZES, pad_token_id=1, bos_token_id=0, eos_token_id=2, type_vocab_size=1, layer_norm_eps=1e-5)),
    "xlm-roberta": ("XLMRobertaConfig", "XLMRobertaForSequenceClassification",
                    dict(SIZES, pad_token_id=1, bos_token_id=0, eos_token_id=2, type_vocab_size=1,
                         layer_norm_eps=1e-5)),
    "distilbert": ("DistilBertConfig", "DistilBertForSequenceClassification",
                   dict(vocab_size=40, dim=16, n_layers=2, n_heads=4, hidden_dim=32, max_position_embeddings=24,
                        pad_token_id=0)),
    # embedding_size below hidden_size: the embeddings' projection is in the graph
    "electra": ("ElectraConfig", "ElectraForSequenceClassification", dict(SIZES, embedding_size=8)),
}


def save_tiny(family: str, directory: Path, seed: int = 0, task: str | None = None, perturb: bool = True,
              **overrides) -> Path:
    """A tiny random model of `family` saved by transformers; `perturb`: every tensor drawn afresh,
    so that no bias is zero and no LayerNorm the identity (a name mapped wrongly shows in the
    outputs); without, transformers' own initialisation (a teacher that trains)."""
    import torch
    import transformers

    config_class, task_class, sizes = FAMILIES[family]
    config = getattr(transformers, config_class)(**{**sizes, "num_labels": 2, **overrides})
    torch.manual_seed(seed)
    model = getattr(transformers, task or task_class)(config)
    with torch.no_grad():
        for name, p in model.named_parameters() if perturb else ():
            if "position_embeddings" in name and family in ("roberta", "xlm-roberta"):
                p.normal_(0, 0.5)
            else:
                p.normal_(0, 0.5 if p.dim() > 1 else 0.2).add_(1.0 if "LayerNorm" in name or "layer_norm" in name
                                                                else 0.0)
    model.save_pretrained(directory)
    return directory


def padded_batch(family: str, pad: int, seed: int = 0) -> dict[str, np.ndarray]:
    """3 rows of 7 tokens, the last two rows padded (by `pad`): the [PAD]-aware positions show."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 40, size=(3, 7)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 5:] = 0
    mask[2, 3:] = 0
    ids[mask == 0] = pad
    return {"input_ids": ids, "token_type_ids": np.zeros_like(ids), "attention_mask": mask}


def transformers_outputs(directory: Path, batch: dict) -> dict[str, np.ndarray]:
    """Hidden states, attention probabilities and logits of the saved model, by transformers."""
    import torch
    import transformers

    model = transformers.AutoModelForSequenceClassification.from_pretrained(directory, attn_implementation="eager")
    model.eval()
    with torch.no_grad():
        out = model(input_ids=torch.tensor(batch["input_ids"], dtype=torch.long),
                    attention_mask=torch.tensor(batch["attention_mask"], dtype=torch.long),
                    output_hidden_states=True, output_attentions=True)
    return {"hidden": [h.double().numpy() for h in out.hidden_states],
            "attention": [a.double().numpy() for a in out.attentions], "logits": out.logits.double().numpy()}
