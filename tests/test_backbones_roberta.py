"""RoBERTa-family checkpoints score as Hugging Face's ``RobertaForSequenceClassification``
fed by the checkpoint's own tokenizer, also when the config has ``type_vocab_size`` 2 (as
some RoBERTa-family checkpoints do): the tokenizer gives every token type 0, so type 1's
embedding row must never be added."""

from __future__ import annotations

import pytest
import torch

from mice_bench.backbone import from_hf, random_hf_model
from mice_bench.executors import make_executor

QUERIES = ["what is a cat", "how many legs does a spider have", "vitamin d and bones"]
DOCS = ["a cat is an animal that likes milk", "spiders have eight legs and build webs " * 3,
        "vitamin d supplementation and bone density in elderly women"]


@pytest.fixture(scope="module")
def roberta_tokenizer(tmp_path_factory):
    """A small byte-level BPE tokenizer in RoBERTa's format (vocab.json + merges.txt),
    trained here on a few sentences, loaded as Hugging Face's RobertaTokenizerFast."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    d = tmp_path_factory.mktemp("roberta-tok")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(QUERIES + DOCS + ["the of and to in is a"] * 3, vocab_size=400,
                            min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(d))
    tok = RobertaTokenizerFast.from_pretrained(str(d))
    assert tok.pad_token_id == 1 and "token_type_ids" not in tok.model_input_names
    return tok


def _roberta(tok, type_vocab_size: int, seed: int = 3):
    from transformers import RobertaConfig

    cfg = RobertaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=4,
                        num_attention_heads=4, intermediate_size=64,
                        max_position_embeddings=130, type_vocab_size=type_vocab_size,
                        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                        eos_token_id=tok.eos_token_id, num_labels=1, initializer_range=0.3)
    model = random_hf_model(cfg, seed=seed)
    if type_vocab_size > 1:     # a type-1 row far from type 0's: using it would show
        with torch.no_grad():
            model.roberta.embeddings.token_type_embeddings.weight[1].normal_(0, 3.0)
    return model


def _hf_scores(model, tok) -> torch.Tensor:
    enc = tok(QUERIES, DOCS, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits[:, 0].float()


@pytest.mark.parametrize("type_vocab_size", [1, 2])
@pytest.mark.parametrize("kind", ["fast", "reference"])
def test_ce_equals_hugging_face_with_its_own_tokenizer(roberta_tokenizer, type_vocab_size,
                                                       kind):
    model = _roberta(roberta_tokenizer, type_vocab_size)
    bb = from_hf(model, roberta_tokenizer)
    assert bb.family.name == "roberta" and not bb.has_token_types
    ref = _hf_scores(model, roberta_tokenizer)
    assert float(ref.std()) > 1e-2
    ours = make_executor("ce", bb, kind).score_pairs(QUERIES, DOCS)
    assert (ours - ref).abs().max() < 1e-4, (ours, ref)


def test_the_type_one_row_would_change_the_scores(roberta_tokenizer):
    """The check above can fail: scoring the documents as type 1 moves the scores."""
    model = _roberta(roberta_tokenizer, 2)
    enc = roberta_tokenizer(QUERIES, DOCS, padding=True, return_tensors="pt")
    second = torch.zeros_like(enc["input_ids"])
    for i, ids in enumerate(enc["input_ids"].tolist()):
        seps = [j for j, t in enumerate(ids) if t == roberta_tokenizer.sep_token_id]
        second[i, seps[1] + 1: seps[2] + 1] = 1
    with torch.no_grad():
        typed = model(**enc, token_type_ids=second).logits[:, 0]
    assert (typed - _hf_scores(model, roberta_tokenizer)).abs().max() > 1e-2


def test_bert_keeps_its_document_token_type():
    from transformers import BertConfig

    from mice_bench.backbone import packaged_tokenizer

    model = random_hf_model(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                       num_attention_heads=4, intermediate_size=64,
                                       num_labels=1, initializer_range=0.3), seed=2)
    tok = packaged_tokenizer()
    bb = from_hf(model, tok)
    assert bb.has_token_types
    enc = tok(QUERIES, DOCS, padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = model(**enc).logits[:, 0]
    assert (make_executor("ce", bb).score_pairs(QUERIES, DOCS) - ref).abs().max() < 1e-4
