"""MindSpore backend of distill-engine: BERT with every tap, every loss, and a compiled AdamW training step.

Public API: `MindSporeBackend` (registered as "mindspore" by `plugin`), `MindSporeModel`,
`MindSporeTrainer`, the Cell `BertCell`, and `read_ckpt` / `write_ckpt` / `import_ckpt` /
`zoo_to_canonical` for MindSpore checkpoints. The names load lazily: importing the package (or its
`plugin` module, which the engine loads to list backends) does not import MindSpore.

Where it behaves differently from the numpy reference or the PyTorch backend:
- Precision: float32, as the PyTorch backend, except on a CPU the pooler's tanh and the logit
  losses (softmax / log-softmax / cross-entropy on [B, C]), which run in float64 there
  (`runtime.WIDE`): MindSpore's float32 CPU kernels for tanh (error ~1e-4) and exp (~5e-6
  relative) are fast approximations that would eat the conformance tolerance. On GPU and Ascend
  they run in float32 (Ascend's AI Core has no float64). GELU uses `ops.gelu` (accurate kernels).
- Fused CPU kernels (`fused`): on a CPU, bias + exact GELU, softmax, residual add + LayerNorm and the
  MSE losses run as C++ kernels (MindSpore AOT custom ops with their gradients), compiled with g++
  on first use; MindSpore's own kernels for these were most of the gap to PyTorch. Off with
  DISTILL_ENGINE_MS_FUSED=0, or when no compiler is found. Graphs holding them are compiled per
  input shape (no dynamic-shape graph: AOT ops infer shapes in Python).
- Compilation: the training step, the evaluation objective, gradients and the inference forward are
  MindSpore graphs (`mindspore.jit`, kernel-by-kernel "O0"); the process-wide execution mode is left
  alone. Each new input shape (batch size, sequence length) compiles once (~1-5 s for small models,
  ~25 s for the first TinyBERT GD step); `DISTILL_ENGINE_MS_PYNATIVE=1` runs everything eagerly for
  debugging, with the same numbers, ~3x slower.
- Dropout: MindSpore's stateful Dropout kernels, each site seeded from (TrainSpec.seed, site index);
  reproducible from run to run and identical in graph and PyNative modes, but not the same masks as
  PyTorch's. The teacher never drops out; `losses` and `gradients` run without dropout.
- Resume: `MindSporeTrainer.state()` / `load_state()` restore Adam's moments and t, the schedule
  position and the loss scale exactly (bit-identical resume without dropout), but not the dropout
  RNG: it lives inside each Dropout kernel and cannot be read or set, and MindSpore 2.10's
  Generator-driven dropout (`mint.nn.functional.dropout`) has no CPU kernel. A resumed trainer
  re-seeds every site from (TrainSpec.seed, the saved schedule position) instead: reproducible,
  never a replay of step 0's masks, but not the masks of the uninterrupted run (PyTorch's resume
  is exact with dropout). The state has no "rng.mindspore.*" entry and ignores other backends'.
- Optimiser: AdamW written with ops, operation for operation torch.optim.AdamW (bias correction,
  decoupled decay, no decay where `is_no_decay`), not `nn.AdamWeightDecay` (no bias correction, the
  zoo's choice); with `OptimizerSpec.bias_correction` false the same update with 1 - b^t taken as
  1 (the original TinyBERT's BertAdam). As PyTorch skips parameters whose gradient is None, only the
  parameters the objective reaches are updated (`distill_engine.graph.dependencies.used_parameters`):
  the pooler is not decayed in GD. The [PAD] row (`TrainSpec.freeze_pad_embedding`): the word
  embeddings' gradient is multiplied by a row mask inside the compiled step (torch: padding_idx).
- Clipping: "global_norm" and "per_parameter" both scale by max / max(norm, max) (the reference's
  and `ops.clip_by_global_norm`'s rule, written out since that function is deprecated);
  torch's clip_grad_norm_ divides by norm + 1e-6.
- Mixed precision: with `TrainSpec.precision` "fp16" (served on GPU/Ascend), matrix products run
  in float16 (parameters, LayerNorm, softmax, taps and losses stay float32) under dynamic loss
  scaling (DynamicLossScaleUpdateCell rules, kept on the host) from `TrainSpec.initial_loss_scale`.
  An overflowing step is skipped: the schedule advances, Adam's step count does not (as torch's
  GradScaler). A loss scale in "fp32" scales a float32 step. "bf16" is not served: MindSpore 2.10's
  CPU MatMul/BatchMatMul have no bfloat16 kernel (measured), and MindSpore documents bfloat16
  kernels for Ascend only. Evaluation (`predict`, `forward`) is float32 in every precision.
- Devices: "cpu", "gpu:N", "ascend:N" where MindSpore's plugin for them loads (else the
  DeviceError quotes MindSpore's own plugin-load error). MindSpore binds a process to one device;
  asking for a second raises DeviceError; under msrun the launcher's binding stands. Graphs name
  their compile backend ("ms_backend"); on Ascend the precision mode keeps each op's dtype, and an
  Atlas training chip (910A) trains in "fp16" only. Overflow: `mindspore.amp.all_finite`.
- `predict` on a model without a classification head raises BackendError.
- Checkpoints: `.ckpt` files are read with `mindspore.load_checkpoint` (protobuf, nothing executed),
  under canonical names (as `write_ckpt` writes them, bit for bit, with the config embedded) or the
  MindSpore model zoo's BERT/TinyBERT names (`zoo_names`). The zoo's networks have one shared
  `fit_dense`, so a zoo file imports with projection "shared"; there is no export to zoo names, and a
  "paper" or "per_entry" student travels under canonical names with its config embedded.

Modules, the same file for the same job as in `distill_engine_torch` (tests/test_backend_layout.py):
`plugin` (the entry point; imports no MindSpore), `backend` (`MindSporeBackend`, `MindSporeModel`,
the msrun process group), `trainer` (`MindSporeTrainer`: the compiled step, precision, resume),
`runtime` (devices, graph or PyNative execution), `model` (`BertCell`), `losses` (the loss kinds),
`export` (zoo .ckpt, MindIR), `checkpoint` (.ckpt read, write, import). Only here: `fused` (the C++
CPU kernels for MindSpore's slow element-wise CPU ops; torch's are fast) and `zoo_names` (the
model zoo's BERT/TinyBERT names; torch reads Hugging Face names, which the core maps). Only in the
torch backend: `optim` (BertAdam as a `torch.optim.Optimizer`; here both AdamW variants are ops
inside the compiled step, trainer.py).
"""

__version__ = "0.1.0"

__all__ = ["__version__", "MindSporeBackend", "MindSporeModel", "MindSporeTrainer", "BertCell",
           "read_ckpt", "write_ckpt", "import_ckpt", "zoo_to_canonical"]


def __getattr__(name):
    # Lazy, so that `import distill_engine_mindspore.plugin` does not import MindSpore.
    if name in ("MindSporeBackend", "MindSporeModel"):
        from distill_engine_mindspore import backend

        return getattr(backend, name)
    if name == "MindSporeTrainer":
        from distill_engine_mindspore.trainer import MindSporeTrainer

        return MindSporeTrainer
    if name == "BertCell":
        from distill_engine_mindspore.model import BertCell

        return BertCell
    if name in ("read_ckpt", "write_ckpt", "import_ckpt"):
        from distill_engine_mindspore import checkpoint

        return getattr(checkpoint, name)
    if name == "zoo_to_canonical":
        from distill_engine_mindspore.zoo_names import zoo_to_canonical

        return zoo_to_canonical
    raise AttributeError(f"module 'distill_engine_mindspore' has no attribute {name!r}")
