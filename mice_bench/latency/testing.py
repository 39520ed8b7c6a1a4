"""A tiny random BERT checkpoint for fast tests (not a user-facing model).

``make_tiny_model(path)`` writes a randomly initialised ``BertForSequenceClassification``
(hidden 32, 8 layers by default) and a WordPiece tokenizer over a small vocabulary into
``path``; ``mice-bench latency --model PATH`` then runs end to end in seconds.
"""

from __future__ import annotations

from pathlib import Path

from .inputs import FALLBACK_WORDS

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def make_tiny_model(path: str | Path, num_layers: int = 8, hidden_size: int = 32,
                    num_heads: int = 2, intermediate_size: int = 64, max_positions: int = 128,
                    seed: int = 0) -> Path:
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    words = sorted(set(FALLBACK_WORDS))
    vocab = path / "vocab.txt"
    vocab.write_text("\n".join([*SPECIALS, *words]) + "\n")
    tok = BertTokenizerFast(vocab=str(vocab), do_lower_case=True)
    tok.save_pretrained(str(path))
    cfg = BertConfig(vocab_size=len(SPECIALS) + len(words), hidden_size=hidden_size,
                     num_hidden_layers=num_layers, num_attention_heads=num_heads,
                     intermediate_size=intermediate_size, max_position_embeddings=max_positions,
                     num_labels=1, architectures=["BertForSequenceClassification"])
    torch.manual_seed(seed)
    model = BertForSequenceClassification(cfg)
    model.save_pretrained(str(path))
    return path
