"""`distill-engine export CHECKPOINT --to FORMAT OUTPUT`: a checkpoint for the tools users use next."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    from distill_engine.checkpoint import CHECKPOINT_FORMATS

    e = sub.add_parser("export", help="write a checkpoint as a Hugging Face directory, ONNX, MindSpore .ckpt or "
                                      "MindIR, checked against the engine")
    e.add_argument("checkpoint", type=Path, help="a neutral checkpoint (runs/x/td2/best), a Hugging Face directory "
                                                 "or a MindSpore .ckpt")
    e.add_argument("--to", required=True, nargs=2, metavar=("FORMAT", "OUTPUT"),
                   help="huggingface DIR | onnx FILE.onnx | mindspore FILE.ckpt | mindir FILE.mindir")
    e.add_argument("--format", choices=CHECKPOINT_FORMATS,
                   help="the checkpoint's format (default: detected: manifest.json = neutral, config.json = "
                        "huggingface, .ckpt = mindspore)")
    e.add_argument("--backend", help="the backend that writes onnx (default torch) or mindspore / mindir (default "
                                     "mindspore)")
    e.add_argument("--vocab", type=Path, help="the WordPiece vocab.txt of the tokenizer written (huggingface, onnx; default: the checkpoint's)")
    e.add_argument("--with-projection", action="store_true",
                   help="keep TinyBERT's projection fit_dense* (huggingface, mindspore; left out by default)")
    e.add_argument("--batch-size", type=int, default=0, help="onnx / mindir: a fixed batch size (default: "
                                                                   "dynamic)")
    e.add_argument("--seq-length", type=int, default=0, help="onnx / mindir: a fixed sequence length (default: "
                                                                   "dynamic)")
    e.add_argument("--overwrite", action="store_true", help="replace an existing output")


def request_of(args):
    """The `ExportRequest` of the command's arguments."""
    from distill_engine.errors import DistillError
    from distill_engine.export import TARGETS, ExportRequest

    to, output = args.to
    if to not in TARGETS:
        raise DistillError(f"--to {to}: not an export format; choose from {', '.join(TARGETS)}")
    return ExportRequest(args.checkpoint, to, Path(output), args.format, args.backend, args.vocab,
                         args.with_projection, args.overwrite, args.batch_size, args.seq_length)


def command(args, say=print) -> int:
    from distill_engine.export import export

    say(export(request_of(args)))
    return 0
