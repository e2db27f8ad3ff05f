"""PyTorch backend of distill-engine: BERT with taps, every loss, AdamW, compiled-free eager training.

Where it behaves differently from the numpy reference or the MindSpore backend:
- Computes in float32 (the reference in float64); the conformance tolerances absorb this.
  `run.precision` "bf16" (cpu, GPU) and "fp16" (GPU, with a GradScaler) autocast the forwards;
  weights, AdamW and evaluation stay float32 (see trainer.py).
- Dropout draws from torch's generator seeded with the phase seed, so dropout masks differ from
  MindSpore's; runs agree in distribution, not bit for bit, unless dropout is 0.
- Optimiser: torch.optim.AdamW; with `OptimizerSpec.bias_correction` false the original TinyBERT's
  BertAdam (`optim.BertAdam`, the same state keys). Both run torch's fused AdamW kernel on cpu and
  CUDA (`optim`: within float32 rounding of the per-tensor update, a few ulp after a few steps;
  `DISTILL_ENGINE_TORCH_OPTIMIZER=foreach` is bit for bit the per-tensor path). The [PAD] row (`TrainSpec.freeze_pad_embedding`)
  is looked up through F.embedding's padding_idx, so its gradient is exactly zero.
- Devices: "cpu" and "gpu:N" (CUDA); "ascend" is not served.
- Reads Hugging Face `pytorch_model.bin` files with `torch.load(weights_only=True)` (no code runs).

Modules, the same file for the same job as in `distill_engine_mindspore` (tests/test_backend_layout.py):
`plugin` (the entry point; imports no torch), `backend` (`TorchBackend`, `TorchModel`, the torchrun
process group), `trainer` (`TorchTrainer`: the step, precision, resume), `runtime` (devices,
autocast dtypes), `model` (`TorchBert`, the nn.Module), `losses` (the loss kinds), `export`
(ONNX), `checkpoint` (`.bin` reading). Only here: `optim` (the fused or multi-tensor update and
per-parameter clipping; `BertAdam`, the original TinyBERT's AdamW without bias correction, as a
`torch.optim.Optimizer`; MindSpore writes its AdamW update,
both variants, with ops inside its compiled step in trainer.py). Only in the MindSpore backend, as
torch has no need of them: `fused` (C++ CPU kernels: torch's own CPU kernels are fast) and
`zoo_names` (the MindSpore model zoo's parameter names).
"""

__version__ = "0.1.0"
