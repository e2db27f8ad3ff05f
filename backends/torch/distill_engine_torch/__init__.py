"""PyTorch backend of distill-engine: BERT with taps, every loss, AdamW, compiled-free eager training.

Where it behaves differently from the numpy reference or the MindSpore backend:
- Computes in float32 (the reference in float64); the conformance tolerances absorb this.
  `run.precision` "bf16" (cpu, GPU) and "fp16" (GPU, with a GradScaler) autocast the forwards;
  weights, AdamW and evaluation stay float32 (see backend.py).
- Dropout draws from torch's generator seeded with the phase seed, so dropout masks differ from
  MindSpore's; runs agree in distribution, not bit for bit, unless dropout is 0.
- Optimiser: torch.optim.AdamW; with `OptimizerSpec.bias_correction` false the original TinyBERT's
  BertAdam (`optim.BertAdam`, the same state keys). The [PAD] row (`TrainSpec.freeze_pad_embedding`)
  is looked up through F.embedding's padding_idx, so its gradient is exactly zero.
- Devices: "cpu" and "gpu:N" (CUDA); "ascend" is not served.
- Reads Hugging Face `pytorch_model.bin` files with `torch.load(weights_only=True)` (no code runs).
"""

__version__ = "0.1.0"
