"""RoBERTa and XLM-R: BERT's encoder with positions counted from padding_idx + 1 over the real
tokens (`BertConfig.position_ids = "after_padding"`), one token type, and the sequence head
`classifier.dense -> tanh -> classifier.out_proj` on the first token (no pooler in the task
classes). XLM-R is RoBERTa's architecture with a SentencePiece Unigram vocabulary: the same family
code under its own name, model_type and tokenizer file."""

from __future__ import annotations

from pathlib import Path

import attrs

from distill_engine.bert import BertConfig
from distill_engine.hookspecs import hookimpl
from distill_engine.models.bert_network import BertNetworkFamily


@attrs.frozen
class RobertaConfig(BertConfig):
    """BERT's fields with RoBERTa's positions (a class of its own: `family_of` tells the families apart)."""


@attrs.frozen
class XLMRobertaConfig(BertConfig):
    """RoBERTa's network; XLM-R's family."""


class RobertaFamily(BertNetworkFamily):
    name = "roberta"
    description = "RoBERTa (Hugging Face RobertaModel / RobertaFor*; byte-level BPE vocab.json + merges.txt)"
    config_class = RobertaConfig
    hf_model_types = ("roberta",)
    hf_prefix = "roberta"
    hf_class = "Roberta"
    variant = {"position_ids": "after_padding", "pooler_activation": "tanh"}
    hf_has_pooler = True  # RobertaModel's pooler (tanh): the sequence head's dense is another tensor
    hf_dropped = ("lm_head.",)
    vocab_files = ("vocab.json", "merges.txt")

    def tokenizer(self, vocab: Path, lowercase: bool):
        from distill_engine.data.tokenizer import LibraryTokenizer

        return LibraryTokenizer(vocab, lowercase=lowercase)

    def check_vocab(self, vocab: Path) -> int:
        from distill_engine.data.tokenizer import check_library_vocab

        return check_library_vocab(vocab)

    def hf_tokenizer_files(self, vocab: Path, max_length: int) -> dict[str, str]:
        """{file name: text} of the tokenizer an export writes: the family's files (the vocabulary
        file given first, the others from beside it), the tokenizer.json the engine tokenises with,
        and the config naming transformers' tokenizer class with the special tokens."""
        import json

        from distill_engine.data.tokenizer import LibraryTokenizer

        tokenizer = LibraryTokenizer(vocab)
        files = {self.vocab_files[0]: vocab.read_text(encoding="utf-8")}
        files.update({name: (vocab.parent / name).read_text(encoding="utf-8") for name in self.vocab_files[1:]
                      if (vocab.parent / name).is_file()})
        special = {"bos_token": tokenizer.special["cls"], "eos_token": tokenizer.special["sep"],
                   **{f"{role}_token": token for role, token in tokenizer.special.items()}}
        files["tokenizer.json"] = tokenizer.library_tokenizer.to_str()
        files["tokenizer_config.json"] = json.dumps({"tokenizer_class": f"{self.hf_class}Tokenizer",
                                                     "model_max_length": max_length, **special}, indent=2)
        files["special_tokens_map.json"] = json.dumps(special, indent=2)
        return files


class XLMRobertaFamily(RobertaFamily):
    name = "xlm-roberta"
    description = "XLM-RoBERTa (Hugging Face XLMRobertaModel / XLMRobertaFor*; SentencePiece Unigram tokenizer.json)"
    config_class = XLMRobertaConfig
    hf_model_types = ("xlm-roberta",)
    hf_class = "XLMRoberta"
    vocab_files = ("tokenizer.json",)


@hookimpl
def register_model_families(register):
    register(RobertaFamily())
    register(XLMRobertaFamily())
