"""`distill-engine augment`: TinyBERT's data augmentation of a task file."""

from __future__ import annotations

import os
from pathlib import Path


def add_parser(sub) -> None:
    a = sub.add_parser("augment", help="TinyBERT's data augmentation of a task file (GloVe neighbours, optionally "
                                       "masked-LM candidates)")
    a.add_argument("input", type=Path, help="the task file to augment (e.g. train.tsv)")
    a.add_argument("--task", required=True,
                   help='a task preset ("sst2"), an inline TOML table defining one (\'{ name = "reviews", '
                        'format = "csv", text_a = "review", label = "verdict", labels = ["bad", "good"] }\') '
                        "or a recipe .toml whose data.task to use")
    a.add_argument("--glove", required=True, type=Path, help="word vectors in GloVe's text format (.txt or .txt.gz)")
    a.add_argument("--mlm", type=Path, help="a BERT with its masked-LM head (Hugging Face BertForMaskedLM directory, "
                                            "or a MindSpore zoo .ckpt with --mlm-format mindspore); without it GloVe "
                                            "serves every word (README, Data augmentation)")
    a.add_argument("--mlm-format", default="huggingface", choices=("huggingface", "mindspore"))
    a.add_argument("--mlm-vocab", type=Path, help="the masked LM's vocab.txt (default: beside the checkpoint)")
    a.add_argument("--n", type=int, help="draws per text (default: the paper's per task: SST-2 and QNLI 20, MNLI "
                                         "and QQP 10, others 30)")
    a.add_argument("--p", type=float, default=0.4, help="probability of replacing each eligible word (default 0.4)")
    a.add_argument("--k", type=int, default=15, help="candidates per word (default 15)")
    a.add_argument("--seed", type=int, default=42, help="seed of the draws (default 42)")
    a.add_argument("--glove-rows", type=int, default=100_000, help="GloVe rows searched, the most frequent first "
                                                                    "(default 100000, the paper's)")
    a.add_argument("--output", required=True, type=Path, help="the augmented file (the input's format); a manifest "
                                                              "is written beside it")
    a.add_argument("--backend", default=os.environ.get("DISTILL_ENGINE_BACKEND", "torch"),
                   help="backend that runs the masked LM (default torch)")
    a.add_argument("--device", default="cpu", help='device of the masked LM ("cpu", "gpu:0", ...)')
    a.add_argument("--batch-size", type=int, default=64, help="masked-LM queries per forward (default 64)")
    a.add_argument("--max-examples", type=int, default=0, help="augment only the first N examples (default: all)")
    a.add_argument("--overwrite", action="store_true", help="replace an output this job did not make")
    a.add_argument("--no-progress", action="store_true", help="no progress bar")


def command(args) -> int:
    from distill_engine.augment.augmenter import AugmentSettings, default_n
    from distill_engine.augment.job import AugmentJob, AugmentStopped, run_job
    from distill_engine.recipe.task_argument import parse_task_argument

    task = parse_task_argument(args.task)
    settings = AugmentSettings(n=default_n(task.name) if args.n is None else args.n, p=args.p, k=args.k,
                               seed=args.seed, glove_rows=args.glove_rows)
    job = AugmentJob(args.input, task, args.glove, args.output, settings, mlm=args.mlm, mlm_format=args.mlm_format,
                     mlm_vocab=args.mlm_vocab, backend=args.backend, device=args.device, batch_size=args.batch_size,
                     max_examples=args.max_examples)
    try:
        m = run_job(job, overwrite=args.overwrite, progress=not args.no_progress)
    except KeyboardInterrupt:
        raise AugmentStopped("augmentation interrupted; the finished chunks are kept: the same command "
                             "continues from there") from None
    c = m["counts"]
    speed = f", {m['examples_per_second']:g} examples/s" if m.get("examples_per_second") else ""
    print(f"augment: {c['input_rows']} rows -> {c['output_rows']} rows in {args.output} ({c['new_rows']} new; "
          f"N={settings.n}, p={settings.p:g}, K={settings.k}, seed {settings.seed}; "
          f"{c['eligible_words']} eligible words: {c['mlm_words']} by masked LM, {c['glove_words']} by GloVe, "
          f"{c['words_without_candidates']} without candidates{speed})")
    return 0
