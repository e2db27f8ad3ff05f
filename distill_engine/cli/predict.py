"""`distill-engine predict CHECKPOINT`: classify a task file or texts with a checkpoint (any format)."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def add_parser(sub) -> None:
    from distill_engine.checkpoint import CHECKPOINT_FORMATS as FORMATS

    p = sub.add_parser("predict", help="classify a task file or texts with a checkpoint (any format); "
                                       "prints sentences/s")
    p.add_argument("checkpoint", type=Path, help="a checkpoint: a neutral directory (a run's <phase>/best or final), "
                                                 "a Hugging Face directory or a MindSpore .ckpt (config.json beside it)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--input", type=Path, help="a task file (TSV, CSV or JSONL, as the task reads it) to predict")
    what.add_argument("--text", action="append", help="a text to classify (repeatable); the predictions are printed")
    p.add_argument("--text-b", action="append", help="the second text of a sentence pair (one per --text)")
    p.add_argument("--output", type=Path, help="where to write the input file with the prediction columns added "
                                               "(in the input's format)")
    p.add_argument("--glue-submission", type=Path, metavar="OUT.tsv",
                   help='write a GLUE submission file ("index<TAB>prediction") from an input with an "index" column '
                        "(GLUE test files)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--backend", default=os.environ.get("DISTILL_ENGINE_BACKEND", "torch"),
                   help="backend that runs the model (default torch)")
    p.add_argument("--device", default="cpu", help='device ("cpu", "gpu:0", "ascend:0"; default cpu)')
    p.add_argument("--format", choices=FORMATS, help="the checkpoint's format (default: found from its files)")
    p.add_argument("--task", help="a task preset (sst2), an inline TOML table or a recipe .toml (its data.task); "
                                  "default: the task recorded with the checkpoint")
    p.add_argument("--vocab", type=Path, help="the model's vocab.txt (default: the checkpoint's, or beside it)")
    p.add_argument("--batch-size", type=int, default=32, help="sentences per forward (default 32)")
    p.add_argument("--max-seq-length", type=int, help="tokens per sentence pair (default: the checkpoint's run's "
                                                      "data.max_seq_length, else 128)")


def command(args) -> int:
    """`distill-engine predict`: every argument and file is checked before the model runs."""
    from distill_engine.device import Device
    from distill_engine.errors import DataError
    from distill_engine.plugins import get_backend
    from distill_engine.predict import (Predictor, check_output, describe_speed, predict_table, prepare, read_input,
                                        text_lines, write_glue_submission, write_predictions)

    if args.input is not None and args.output is None and args.glue_submission is None:
        raise DataError("--input: give --output (the file with predictions) and/or --glue-submission")
    if args.text is not None and (args.output is not None or args.glue_submission is not None):
        raise DataError("--text prints its predictions; --output and --glue-submission go with --input")
    if args.text_b is not None and args.text is None:
        raise DataError("--text-b goes with --text (one --text-b per --text)")
    if args.text_b is not None and len(args.text_b) != len(args.text):
        raise DataError(f"--text-b: {len(args.text_b)} given for {len(args.text)} --text")
    if args.batch_size < 1:
        raise DataError(f"--batch-size {args.batch_size}: expected at least 1")
    inputs = [args.input] if args.input is not None else []
    outputs = [(flag, path) for flag, path in (("--output", args.output), ("--glue-submission", args.glue_submission))
               if path is not None]
    for flag, path in outputs:
        check_output(path, flag, overwrite=args.overwrite, inputs=inputs)
    if len(outputs) == 2 and outputs[0][1].resolve() == outputs[1][1].resolve():
        raise DataError("--glue-submission: the same file as --output")
    if args.input is not None and not args.input.is_file():
        raise DataError(f"--input {args.input}: " + ("is a folder, expected a file" if args.input.is_dir()
                                                    else "file not found"))
    backend = get_backend(args.backend)
    backend.check_device(Device.parse(args.device))
    prepared = prepare(args.checkpoint, args.format, task=args.task, vocab=args.vocab,
                       max_seq_length=args.max_seq_length)
    task = prepared.task
    if args.text is not None and task is not None and task.is_pair != (args.text_b is not None):
        raise DataError(f"--text-b: task {task.name} is a sentence-pair task; give one --text-b per --text"
                        if task.is_pair else f"--text-b: task {task.name} reads one text per example")
    table = examples = None
    if args.input is not None:
        table, examples = read_input(args.input, prepared, glue_submission=args.glue_submission is not None)
    predictor = Predictor(prepared, args.backend, args.device)
    if table is None:
        predictions = predictor.predict(args.text, args.text_b, batch_size=args.batch_size)
        for line in text_lines(predictions, prepared.labels, args.text, args.text_b):
            print(line)
    else:
        predictions, _, metrics = predict_table(predictor, table, examples, batch_size=args.batch_size)
        if args.output is not None:
            write_predictions(args.output, table, predictions, prepared.labels)
            print(f"predictions of {len(predictions)} rows written to {args.output}")
        if args.glue_submission is not None:
            write_glue_submission(args.glue_submission, table, predictions)
            print(f"GLUE submission of {len(predictions)} rows written to {args.glue_submission}")
        if metrics:
            shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
            print(f"{args.input}: {shown} on its {len(predictions)} labelled rows", file=sys.stderr)
    print(describe_speed(predictor), file=sys.stderr)
    return 0
