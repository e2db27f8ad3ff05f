"""MindSpore exports (`distill-engine export --to mindspore | mindir`).

- `mindspore`: a `.ckpt` under the model zoo's TinyBERT names (`zoo_names`), as the zoo's
  `BertModelCLS` student holds them: `bert.tinybert_*` (embeddings, encoder), `bert.dense.*`
  (pooler), `dense_1.*` (classifier) and `fit_dense.*` (the shared projection, with
  --with-projection). The engine's config is embedded as a string entry (`checkpoint.CONFIG_KEY`;
  `load_param_into_net` ignores it), so `import_ckpt` reads the file back without a config.json.
- `mindir`: `mindspore.export(..., file_format="MINDIR")` of the inference cell: a BertCell without
  the fused CPU kernels (custom AOT ops would not travel with the file), called as
  (input_ids, attention_mask, token_type_ids), int32 [batch, sequence], dynamic axes unless fixed,
  returning `logits` (or `last_hidden_state`, `pooler_output` for a model without a head). Loaded
  back with `mindspore.load` + `nn.GraphCell`.
"""

from __future__ import annotations

from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn

from distill_engine.bert import BertConfig
from distill_engine.errors import BackendError
from distill_engine_mindspore.checkpoint import write_ckpt
from distill_engine_mindspore.model import BertCell
from distill_engine_mindspore.zoo_names import zoo_name

ZOO_PREFIX = "bert.tinybert_"  # the zoo's TinyBERT student: BertModelCLS.bert = TinyBertModel
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def zoo_state(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {zoo_name(name, ZOO_PREFIX): np.ascontiguousarray(value, np.float32) for name, value in state.items()}


def export_zoo_ckpt(config: BertConfig, state: dict[str, np.ndarray], path: Path) -> dict:
    write_ckpt(path, zoo_state(state), config)
    return {"names": f"model zoo TinyBERT ({ZOO_PREFIX}*, dense_1.* head)"}


class _Inference(nn.Cell):
    def __init__(self, cell: BertCell):
        super().__init__(auto_prefix=False)
        self.cell = cell
        self.has_head = bool(cell.config.num_labels)

    def construct(self, input_ids, attention_mask, token_type_ids):
        hidden, _, pooled, logits = self.cell.taps(input_ids, token_type_ids, attention_mask, True, False)
        if self.has_head:
            return logits
        return hidden[-1], pooled


def output_names(config: BertConfig) -> tuple[str, ...]:
    return ("logits",) if config.num_labels else ("last_hidden_state", "pooler_output")


def export_mindir(config: BertConfig, state: dict[str, np.ndarray], path: Path, *, batch_size: int = 0,
                  seq_length: int = 0) -> dict:
    net = _Inference(BertCell(config, state, None))
    net.set_train(False)
    shape = [batch_size or None, seq_length or None]
    spec = Tensor(shape=shape, dtype=ms.int32)
    if path.suffix != ".mindir":
        raise BackendError(f"{path}: a MindIR file name must end in .mindir")
    ms.export(net, spec, spec, spec, file_name=str(path), file_format="MINDIR")
    if not path.is_file():
        raise BackendError(f"mindspore.export wrote no {path}")
    shown = "dynamic" if shape == [None, None] else f"[{batch_size or 'batch'}, {seq_length or 'sequence'}]"
    return {"inputs": ", ".join(INPUTS) + f" (int32, {shown})", "outputs": ", ".join(output_names(config))}


def run_mindir(path: Path, batch: dict[str, np.ndarray], names: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    graph = nn.GraphCell(ms.load(str(path)))
    out = graph(*(Tensor(np.asarray(batch[k]).astype(np.int32)) for k in INPUTS))
    outs = out if isinstance(out, (tuple, list)) else (out,)
    names = names or (("logits",) if len(outs) == 1 else ("last_hidden_state", "pooler_output"))
    return {name: o.asnumpy() for name, o in zip(names, outs)}
