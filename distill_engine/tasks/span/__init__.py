"""The built-in task type "span": an answer cut from a context (extractive question answering, SQuAD).

    reader      SQuAD JSON (v1.1, v2.0) and JSON Lines into `SpanExamples` (errors name file and record)
    encoding    question + context windows (run_qa's doc_stride), start/end labels, n-best decoding
    metrics     SQuAD v1.1's official exact match and F1, per question
    losses      the span loss kinds (fine-tuning and the prediction-layer phase), numpy reference
    task_type   the definition a recipe writes (`SpanTask`) and the type the engine calls

Registered through the same hooks as the sequence and token types (`distill_engine.tasks.builtin`).
"""
