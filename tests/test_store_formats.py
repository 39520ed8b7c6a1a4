"""The document-state store in every format: residual codes, their codec file, faults, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mice_bench.store.packing import compress
from mice_bench.store.shards import token_ranges
from mice_bench.store.docstore import DocStateStore
from mice_bench.store.index import StoreFormatError
from mice_bench.executors import DocStates

pytest.importorskip("faiss", reason="residual stores need faiss-cpu (the storage extra)")

TEXTS = {f"d{i:02d}": "w" * (3 + (7 * i) % 23) for i in range(40)}


def fake_encode(tx: list[str], H: int = 16) -> DocStates:
    """Deterministic states per text (clustered, like real token states), right-padded."""
    T = max(len(t) for t in tx) + 2
    hidden = torch.zeros(len(tx), T, H)
    mask = torch.zeros(len(tx), T, dtype=torch.bool)
    centres = torch.randn(8, H, generator=torch.Generator().manual_seed(0)) * 3
    for i, t in enumerate(tx):
        g = torch.Generator().manual_seed(len(t))
        n = len(t) + 2
        hidden[i, :n] = centres[(torch.arange(n) + len(t)) % 8] + 0.3 * torch.randn(n, H,
                                                                                  generator=g)
        mask[i, :n] = True
    seg = torch.where(mask, torch.full_like(mask, 1, dtype=torch.long), -1)
    seg[:, 0] = torch.where(mask[:, 0], 0, -1)
    return DocStates(hidden, mask, seg)


def build(d: Path, fmt: str, ids=None, **kw) -> DocStateStore:
    st = DocStateStore(d, meta={"k": 1}, fmt=fmt, flush_s=0, max_shard_docs=8, **kw)
    st.ensure(list(ids or TEXTS), lambda ids: {i: TEXTS[i] for i in ids}, fake_encode,
              batch_size=4)
    return st


def reference(ids):
    return DocStates.cat([fake_encode([TEXTS[i]]) for i in ids])


@pytest.mark.parametrize("fmt,tol", [("fp32", 0.0), ("fp16", 2e-3), ("int8", 2e-2),
                                     ("residual4", 0.12), ("residual2", 0.3),
                                     ("residual1", 0.6)])
def test_round_trip_within_the_format_bound(tmp_path, fmt, tol):
    st = build(tmp_path / fmt, fmt)
    ids = list(TEXTS)[::-1]
    got, ref = st.load(ids), reference(ids)
    T = got.mask.shape[1]
    assert torch.equal(got.mask, ref.mask[:, :T]) and torch.equal(got.seg, ref.seg[:, :T])
    m = got.mask
    err = (got.hidden.float()[m] - ref.hidden[:, :T][m]).norm() / ref.hidden[:, :T][m].norm()
    assert err <= tol + 1e-7, (fmt, float(err))
    assert got.hidden.dtype == (torch.float32 if fmt == "fp32" else torch.float16)
    u = st.usage()
    assert u["docs"] == len(TEXTS) and u["bytes_per_token"] > 0
    if fmt.startswith("residual"):
        assert u["codec_bytes"] > 0 and u["centroids"] >= 1
        # a centroid id (int16) + 16 dims x b bits + an int8 segment id per token
        bits = int(fmt[-1])
        assert {k for k in json.loads((st.dir / "index.json").read_text())} >= {"codec"}
        assert u["bytes_per_token"] < 4 * 16 / 2    # well under fp16's 32 bytes per token
        assert bits in (1, 2, 4)


def test_residual_store_reads_the_same_as_in_memory_compression(tmp_path):
    """Codec parameters come from the stored sample: decoding through the store equals
    decoding PackedDocs built from the same sample and parameters."""
    st = build(tmp_path / "s", "residual2")
    ids = list(TEXTS)
    got = st.load(ids)
    enc = st.codec.encode(reference(ids).hidden[reference(ids).mask], st.params)
    dec = st.codec.decode(enc, st.params).float()
    assert torch.allclose(got.hidden.float()[got.mask], dec, atol=1e-3)


def test_seeded_store_is_byte_identical_twice_and_seed_changes_it(tmp_path):
    def files(d):
        return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.name != ".lock"}

    build(tmp_path / "a", "residual2", seed=7)
    build(tmp_path / "b", "residual2", seed=7)
    a, b = files(tmp_path / "a"), files(tmp_path / "b")
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    assert any(k.startswith("codec-") for k in a)
    build(tmp_path / "c", "residual2", seed=8)
    assert files(tmp_path / "c") != a


def test_codec_trained_once_then_reused_for_later_documents(tmp_path):
    ids = list(TEXTS)
    st = build(tmp_path / "s", "residual2", ids=ids[:20])
    codec = st.codec_entry
    st2 = build(tmp_path / "s", "residual2", ids=ids)
    assert st2.codec_entry == codec and st2.encoded_now == 20
    assert len(list((tmp_path / "s").glob("codec-*"))) == 1


@pytest.mark.parametrize("fault", ["truncate", "flip", "delete"])
def test_corrupt_codec_file_is_detected_and_the_store_rebuilt(tmp_path, capsys, fault):
    st = build(tmp_path / "s", "residual2")
    before = st.load(list(TEXTS)).hidden
    (f,) = list((tmp_path / "s").glob("codec-*.safetensors"))
    if fault == "truncate":
        f.write_bytes(f.read_bytes()[:50])
    elif fault == "flip":
        data = bytearray(f.read_bytes())
        data[-1] ^= 0x01
        f.write_bytes(bytes(data))
    else:
        f.unlink()
    capsys.readouterr()
    st2 = build(tmp_path / "s", "residual2")
    err = " ".join(capsys.readouterr().err.split())
    assert "codec file" in err and f.name in err
    assert st2.encoded_now == len(TEXTS)             # every document encoded again
    assert torch.equal(st2.load(list(TEXTS)).hidden, before)   # same seed: same codes


def test_corrupt_residual_shard_is_detected_and_rebuilt(tmp_path, capsys):
    st = build(tmp_path / "s", "residual1")
    victim = st.dir / st.shards[-1]["file"]
    n = len(st.shards[-1]["ids"])
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    capsys.readouterr()
    st2 = build(tmp_path / "s", "residual1")
    assert "SHA-256" in capsys.readouterr().err
    assert st2.encoded_now == n
    assert st2.missing(TEXTS) == []


def test_lost_index_is_rebuilt_from_shards_and_codec_file(tmp_path, capsys):
    st = build(tmp_path / "s", "residual2")
    before = st.load(list(TEXTS)).hidden
    (tmp_path / "s" / "index.json").write_text("{not json")
    st2 = build(tmp_path / "s", "residual2")
    assert st2.encoded_now == 0
    assert torch.equal(st2.load(list(TEXTS)).hidden, before)


def test_shard_of_another_codec_file_is_not_adopted(tmp_path, capsys):
    """An orphan shard whose codes belong to a codec file that is gone is encoded again."""
    st = build(tmp_path / "s", "residual2", ids=list(TEXTS)[:8])
    doc = json.loads((tmp_path / "s" / "index.json").read_text())
    doc["shards"] = []                                 # a kill before the index update
    doc["codec"] = dict(doc["codec"], sha256="0" * 64)  # and a different codec recorded
    (tmp_path / "s" / "index.json").write_text(json.dumps(doc))
    capsys.readouterr()
    st2 = build(tmp_path / "s", "residual2", ids=list(TEXTS)[:8])
    assert st2.encoded_now == 8
    assert "codec file" in capsys.readouterr().err


@pytest.mark.parametrize("written,read", [("fp16", "residual2"), ("residual2", "fp16"),
                                          ("residual1", "residual2"), ("fp32", "int8")])
def test_store_read_as_another_format_is_refused(tmp_path, written, read):
    build(tmp_path / "s", written, ids=list(TEXTS)[:8])
    files = {p.name: p.read_bytes() for p in (tmp_path / "s").iterdir()}
    with pytest.raises(StoreFormatError, match=f"holds store '{written}', not '{read}'"):
        DocStateStore(tmp_path / "s", meta={"k": 1}, fmt=read)
    (tmp_path / "s" / "meta.json").unlink()           # the index still names the format
    with pytest.raises(StoreFormatError, match=f"format '{written}'"):
        DocStateStore(tmp_path / "s", meta={"k": 1}, fmt=read)
    (tmp_path / "s" / "index.json").unlink()           # and so does every shard
    st = DocStateStore(tmp_path / "s", meta={"k": 1}, fmt=read)
    with pytest.raises(StoreFormatError, match=f"'{written}'"):
        st.ensure(list(TEXTS)[:8], lambda ids: {i: TEXTS[i] for i in ids}, fake_encode)
    left = {p.name for p in (tmp_path / "s").iterdir()}
    assert {k for k in files if k.startswith(("shard-", "codec-"))} <= left   # nothing deleted


def test_content_mismatch_is_refused(tmp_path):
    build(tmp_path / "s", "fp16", ids=list(TEXTS)[:4])
    with pytest.raises(StoreFormatError, match="content 'states', not 'pooled'"):
        DocStateStore(tmp_path / "s", meta={"k": 1}, fmt="fp16", content="pooled")


def test_residual_vectors_are_unit_length_after_decoding(tmp_path):
    def unit(tx):
        s = fake_encode(tx)
        return DocStates(torch.nn.functional.normalize(s.hidden, dim=-1) * s.mask[..., None],
                         s.mask, s.seg, None, vectors=True)

    st = DocStateStore(tmp_path / "v", fmt="residual2", flush_s=0, vectors=True)
    st.ensure(list(TEXTS), lambda ids: {i: TEXTS[i] for i in ids}, unit, batch_size=4)
    got = st.load(list(TEXTS))
    assert got.vectors
    norms = got.hidden.float()[got.mask].norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=2e-3)


def test_packed_docs_decode_a_batch_like_the_whole():
    ids = list(TEXTS)[:10]
    pk = compress(reference(ids), "residual2", seed=0, centroids=4)
    whole = pk.decode()
    part = pk.decode(3, 7)
    T = part.mask.shape[1]
    assert torch.equal(part.hidden, whole.hidden[3:7, :T])
    assert torch.equal(part.mask, whole.mask[3:7, :T])
    assert pk.nbytes < reference(ids).hidden[reference(ids).mask].numel() * 2


def test_token_ranges():
    got = token_ranges(torch.tensor([5, 0, 9]), torch.tensor([2, 3, 0]))
    assert got.tolist() == [5, 6, 0, 1, 2]


@pytest.mark.parametrize("variant", ["colbert", "mice-l2+2", "biencoder"])
def test_facade_store_scores_as_its_in_memory_states(tmp_path, variant):
    """Reranker.document_store in any format: fp32 scores equal the in-memory path (the
    variant's own pair scores), residual4 stays close; another format in the same
    directory is refused."""
    from mice_bench import Reranker

    rr = Reranker.from_pretrained("minilm-l6", variant=variant)
    # enough documents for a residual code of 2 centroids or more (78 training vectors, 5 %
    # held out: a bi-encoder stores one vector per document)
    docs = {f"d{i}": " ".join(["cat", "dog", "fish", "bird"][: 1 + i % 4]) + f" {i} x" * (i % 3)
            for i in range(84)}
    ids = list(docs)[::-1]
    ref = rr.predict([("a cat", docs[d]) for d in ids])
    st = rr.document_store(tmp_path / "fp32", docs, store="fp32")
    got = rr.score_documents("a cat", st, doc_ids=ids)
    assert got.shape == (len(ids),)
    assert abs(got - ref).max() < 1e-4
    with pytest.raises(StoreFormatError):
        rr.document_store(tmp_path / "fp32", docs, store="residual2")
    st4 = rr.document_store(tmp_path / "r4", docs, store="residual4")
    assert st4.usage()["bytes_per_token"] < st.usage()["bytes_per_token"]
    close = rr.score_documents("a cat", st4, doc_ids=ids)
    assert abs(close - ref).max() <= 0.5 * (ref.max() - ref.min()) + 1e-6


def test_indexed_shard_naming_another_codec_is_encoded_again(tmp_path, capsys):
    st = build(tmp_path / "s", "residual2")
    doc = json.loads((tmp_path / "s" / "index.json").read_text())
    doc["shards"][0]["codec"] = "f" * 64
    n = len(doc["shards"][0]["ids"])
    (tmp_path / "s" / "index.json").write_text(json.dumps(doc))
    capsys.readouterr()
    st2 = build(tmp_path / "s", "residual2")
    assert "another codec file" in capsys.readouterr().err
    assert st2.encoded_now == n and st2.codec_entry == st.codec_entry


@pytest.mark.parametrize("fmt", ["residual1", "residual4"])
def test_a_residual_store_too_small_for_two_centroids_is_refused_before_writing(tmp_path, fmt):
    from mice_bench.errors import UsageError
    from mice_bench.store.codecs import residual_centroids

    ids = list(TEXTS)[:3]
    tokens = int(reference(ids).mask.sum())
    assert tokens < 78 and residual_centroids(tokens) == 1   # 39 vectors per centroid
    with pytest.raises(UsageError, match="at least 2") as e:
        build(tmp_path / fmt, fmt, ids=ids)
    assert "\n" not in str(e.value) and "fp16 or int8" in str(e.value)
    assert not list((tmp_path / fmt).glob("codec-*")) and not list((tmp_path / fmt).glob("shard-*"))
    assert build(tmp_path / "more", fmt, ids=list(TEXTS)[:12]).usage()["centroids"] >= 2
