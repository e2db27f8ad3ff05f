"""TinyBERT's data augmentation: GloVe neighbours and masked-LM candidates, resumable."""
