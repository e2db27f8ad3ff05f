"""The built-in task type "token": a tag per word (named-entity recognition, chunking).

    schemes     the tag schemes (IOB1, IOB2, BIOES): which tags are well formed, which follow which
    reader      CoNLL column files and JSON Lines into `TokenExamples` (errors name file:line)
    encoding    words to word pieces, each word's tag on its first piece; long sentences as windows
    metrics     entity-level precision/recall/F1 (seqeval, conlleval's counting) and the MindSpore
                zoo's token-level F1
    losses      the per-token loss kinds (fine-tuning and the prediction-layer phase), numpy reference
    task_type   the definition a recipe writes (`TokenTask`) and the type the engine calls

Registered through the same hooks as the sequence type (`distill_engine.tasks.builtin`).
"""
