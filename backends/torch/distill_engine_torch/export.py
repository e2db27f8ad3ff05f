"""ONNX export of a student (`distill-engine export --to onnx`), and running the file with onnxruntime.

The graph is traced by torch's TorchScript exporter (`dynamo=False`: the dynamo exporter needs
onnxscript, which the engine does not install) at opset `distill_engine.export.OPSET`. Inputs are
Hugging Face's: `input_ids`, `attention_mask`, `token_type_ids` (int64, [batch, sequence]); the
output is `logits` for a model with a head ([batch, labels] for the pooled head, [batch,
sequence, labels] for the token and span heads: `graph.taps.HEAD_LOGITS`), else `last_hidden_state`
[batch, sequence, hidden] and `pooler_output` [batch, hidden]. The batch and sequence axes are
dynamic unless a fixed size is given. The head is the engine's, ReLU included when
`classifier_activation` is "relu".
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from distill_engine.bert import BertConfig
from distill_engine.errors import BackendError
from distill_engine.export import OPSET
from distill_engine_torch.model import TorchBert

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class _Inference(torch.nn.Module):
    """TorchBert with Hugging Face's input order and outputs."""

    def __init__(self, bert: TorchBert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask, token_type_ids):
        hidden, _, pooled, logits, _ = self.bert(input_ids, token_type_ids, attention_mask)
        if self.bert.config.num_labels:
            return logits
        return hidden[-1], pooled


def output_names(config: BertConfig) -> tuple[str, ...]:
    return ("logits",) if config.num_labels else ("last_hidden_state", "pooler_output")


def export_onnx(config: BertConfig, state: dict[str, np.ndarray], path: Path, *, batch_size: int = 0,
                seq_length: int = 0) -> dict:
    bert = TorchBert(config)
    bert.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v, np.float32)) for k, v in state.items()})
    module = _Inference(bert).eval()
    b, length = batch_size or 2, seq_length or min(8, config.max_sequence_length)
    # token type 0: a family with one type (RoBERTa) has no row 1
    dummy = tuple((torch.zeros if name == "token_type_ids" else torch.ones)((b, length), dtype=torch.int64)
                  for name in INPUTS)
    axes = {**({0: "batch"} if not batch_size else {}), **({1: "sequence"} if not seq_length else {})}
    outputs = output_names(config)
    dynamic = {name: dict(axes) for name in INPUTS}
    for name in outputs:
        per_position = name == "last_hidden_state" or name == "logits" and config.head != "pooled"  # [B, L, ...]
        dynamic[name] = {k: v for k, v in axes.items() if per_position or k == 0}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings about shapes read as Python numbers: traced as ops
        torch.onnx.export(module, dummy, str(path), dynamo=False, opset_version=OPSET, input_names=list(INPUTS),
                          output_names=list(outputs), dynamic_axes={k: v for k, v in dynamic.items() if v})
    try:
        import onnx
    except ImportError:
        pass
    else:
        onnx.checker.check_model(str(path))
    shape = "dynamic" if not (batch_size or seq_length) else f"[{batch_size or 'batch'}, {seq_length or 'sequence'}]"
    return {"inputs": ", ".join(graph_inputs(config)) + f" (int64, {shape})", "outputs": ", ".join(outputs)}


def graph_inputs(config) -> tuple[str, ...]:
    """The graph's inputs: a family without token types (DistilBERT) reads none, and the exporter
    drops an input the graph does not read (so does Hugging Face's DistilBERT graph)."""
    return INPUTS if config.type_vocab_size else tuple(n for n in INPUTS if n != "token_type_ids")


def run_onnx(path: Path, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    try:
        import onnxruntime
    except ImportError:
        raise BackendError("onnxruntime is not installed, and the export is checked with it: pip install "
                           "onnxruntime (or the engine's export extra)") from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = {i.name for i in session.get_inputs()}  # (graph_inputs: no token types for DistilBERT)
    feed = {name: np.asarray(batch[name], np.int64) for name in INPUTS if name in inputs}
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed)))
