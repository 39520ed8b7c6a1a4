"""What a checkpoint directory says about how its authors score with it.

:func:`read_checkpoint_settings` reads a checkpoint's own configuration files into a typed
:class:`CheckpointSettings` (every value with the file it came from). The executors'
tokenizer and heads consume it (:mod:`mice_bench.executors.inputs`, ``Executor.settings()``);
the backbone only carries it (``Backbone.checkpoint``), nothing modifies it.

Formats read:

* **sentence-transformers bi-encoders**: ``sentence_bert_config.json`` (``max_seq_length``),
  ``modules.json`` (a ``Pooling`` module and its ``config.json``: ``cls`` / ``mean`` / ``max`` /
  ``mean_sqrt_len_tokens`` / ``lasttoken``; a ``Normalize`` module), and
  ``config_sentence_transformers.json`` (``prompts``: the ``query`` prompt and the
  ``document`` / ``passage`` / ``corpus`` prompt are prepended to the texts);
* **cross-encoders**: ``config.json`` (``num_labels``; the sentence-transformers
  ``CrossEncoder`` activation, ``sentence_transformers.activation_fn`` or the older
  ``sbert_ce_default_activation_function``), the tokenizer's ``model_max_length`` and a
  ``CrossEncoder``'s ``max_length`` / ``max_seq_length``;
* **ColBERT, original format** (``colbert-ir/colbertv2.0``: ``architectures: [HF_ColBERT]``,
  ``linear.weight``; ``artifact.metadata``): ``query_maxlen`` / ``doc_maxlen`` (tokens in all,
  markers and specials included), the ``[unused0]`` / ``[unused1]`` markers inserted after
  ``[CLS]``, queries padded with ``[MASK]`` to ``query_maxlen`` (attended only with
  ``attend_to_mask_tokens``), the punctuation skip-list (``mask_punctuation``);
* **PyLate** (``config_sentence_transformers.json`` with ``query_length`` /
  ``document_length`` / ``query_prefix`` / ``document_prefix`` / ``do_query_expansion`` /
  ``attend_to_expansion_tokens`` / ``skiplist_words``; the ``Dense`` projection in
  ``1_Dense/``).

Precedence, for every setting: an explicit flag (``--query-max-tokens``, ``--doc-max-tokens``)
> the checkpoint's own configuration > the variant's reference default
(:meth:`~mice_bench.spec.InteractionSpec.default_lengths`). ``Executor.settings()`` reports the
effective value of each and where it came from (``flag``, ``checkpoint:<file>``, ``preset``).
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import UsageError

#: sentence-transformers Pooling config keys -> our pooling mode names (ST concatenates the
#: modes in this order)
POOLING_KEYS = (("pooling_mode_cls_token", "cls"), ("pooling_mode_max_tokens", "max"),
                ("pooling_mode_mean_tokens", "mean"),
                ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len"),
                ("pooling_mode_weightedmean_tokens", "weightedmean"),
                ("pooling_mode_lasttoken", "lasttoken"))
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len", "lasttoken")

_ST_DOC_PROMPTS = ("document", "passage", "corpus", "doc")


@dataclass
class CheckpointSettings:
    """A checkpoint's own scoring settings (``None``: the checkpoint says nothing).

    Lengths: ``max_seq_length`` is a sentence-transformers limit per encoded sequence
    (special tokens included); ``model_max_length`` the tokenizer's; ``query_length`` /
    ``doc_length`` are ColBERT / PyLate totals (``[CLS]``, marker and ``[SEP]`` included;
    queries padded to ``query_length`` when ``query_expansion``).
    """

    kind: str = "none"  # none | hf | sentence-transformers | cross-encoder | colbert | pylate
    max_seq_length: int | None = None
    model_max_length: int | None = None
    pooling: tuple[str, ...] | None = None
    normalize: bool | None = None
    query_prompt: str | None = None
    doc_prompt: str | None = None
    query_marker: str | None = None
    doc_marker: str | None = None
    query_length: int | None = None
    doc_length: int | None = None
    query_expansion: bool | None = None
    attend_expansion: bool | None = None
    skiplist: tuple[str, ...] | None = None
    num_labels: int | None = None
    activation: str | None = None
    projection_dim: int | None = None
    #: field -> the file (and key) it was read from
    sources: dict[str, str] = field(default_factory=dict)

    def set(self, name: str, value: Any, source: str) -> None:
        if value is None:
            return
        setattr(self, name, value)
        self.sources[name] = source

    def source(self, name: str) -> str:
        return f"checkpoint:{self.sources[name]}" if name in self.sources else "checkpoint"

    @property
    def empty(self) -> bool:
        return not self.sources

    def as_dict(self) -> dict:
        """Only what the checkpoint said (for results and ``mice_bench.json``)."""
        out = {"kind": self.kind}
        for f in fields(self):
            if f.name in ("kind", "sources"):
                continue
            v = getattr(self, f.name)
            if v is not None:
                out[f.name] = list(v) if isinstance(v, tuple) else v
        out["sources"] = dict(self.sources)
        return out

    @classmethod
    def from_dict(cls, d: dict | None) -> "CheckpointSettings":
        if not d:
            return cls()
        names = {f.name for f in fields(cls)}
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in names}
        kw["sources"] = dict(d.get("sources") or {})
        return cls(**kw)

    def skip_ids(self, tokenizer) -> list[int]:
        """Token ids of the skip-list words (PyLate: ``convert_tokens_to_ids``)."""
        if not self.skiplist:
            return []
        ids = tokenizer.convert_tokens_to_ids(list(self.skiplist))
        return sorted({int(i) for i in ids if i is not None})


#: the file in which mice-bench keeps a checkpoint's variant, lengths and provenance
SAVED_META = "mice_bench.json"


def read_saved_meta(directory: str | Path) -> dict:
    """A mice-bench checkpoint's ``mice_bench.json`` (``{}`` where there is none), every
    setting it holds checked as the flags are (``query_max_tokens`` / ``doc_max_tokens``:
    :func:`~mice_bench.errors.positive_int`) and every field of the type its writer gives
    it; a :class:`UsageError` naming the file and the field otherwise."""
    from .errors import positive_int

    path = Path(str(directory)).expanduser() / SAVED_META
    meta = _json(path)
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise UsageError(f"{path} holds a {type(meta).__name__}, not a JSON object: save the "
                         "checkpoint again (InteractionModel.save_pretrained)")
    kinds = {"variant": (str, "string"), "base_model": (str, "string"),
             "random_init": (list, "list"), "trained": (dict, "object"),
             "checkpoint_settings": (dict, "object")}
    for key, (kind, json_name) in kinds.items():
        v = meta.get(key)
        if v is not None and not isinstance(v, kind):
            raise UsageError(f"{path}: {key} must be a JSON {json_name}, got {v!r:.60}")
    if not all(isinstance(x, str) for x in meta.get("random_init") or []):
        raise UsageError(f"{path}: random_init must list names (strings), got "
                         f"{meta['random_init']!r:.60}")
    for key in ("query_max_tokens", "doc_max_tokens"):
        positive_int(f"{path}: {key}", meta.get(key), optional=True)
    return meta


def _json(path: Path) -> dict | list | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise UsageError(f"{path} is not readable JSON: {e}") from None


def _local_dir(name: str) -> Path | None:
    p = Path(str(name)).expanduser()
    if p.is_dir():
        return p
    if "/" not in str(name):
        return None
    try:  # a hub id already in the local cache: read its small config files from there
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(name), local_files_only=True,
                                      allow_patterns=["*.json", "artifact.metadata",
                                                      "*/config.json"]))
    except Exception:  # noqa: BLE001 - not cached: the checkpoint says nothing we can read
        return None


def read_checkpoint_settings(name: str | Path, tokenizer=None,
                             hf_config=None) -> CheckpointSettings:
    """Read the settings of the checkpoint ``name`` (a local directory, or a hub id present in
    the local cache); an empty :class:`CheckpointSettings` when there is nothing to read."""
    cs = CheckpointSettings()
    path = _local_dir(str(name))
    mml = getattr(tokenizer, "model_max_length", None) if tokenizer is not None else None
    if isinstance(mml, int) and 0 < mml < 1_000_000:
        cs.set("model_max_length", int(mml), "tokenizer_config.json:model_max_length")
    if path is None:
        return cs
    cs.kind = "hf"
    cfg = _json(path / "config.json") or {}
    archs = cfg.get("architectures") or []
    st_cfg = _json(path / "config_sentence_transformers.json") or {}
    modules = _json(path / "modules.json") or []
    sbert = _json(path / "sentence_bert_config.json") or {}

    if "max_seq_length" in sbert and sbert["max_seq_length"]:
        cs.set("max_seq_length", int(sbert["max_seq_length"]),
               "sentence_bert_config.json:max_seq_length")

    # ---- ColBERT, original format
    if "HF_ColBERT" in archs:
        cs.kind = "colbert"
        meta = _json(path / "artifact.metadata") or {}
        src = "artifact.metadata" if meta else "ColBERT defaults"
        cs.set("query_marker", meta.get("query_token_id", "[unused0]"), src)
        cs.set("doc_marker", meta.get("doc_token_id", "[unused1]"), src)
        cs.set("query_length", int(meta.get("query_maxlen", 32)), src)
        cs.set("doc_length", int(meta.get("doc_maxlen", 180)), src)
        cs.set("query_expansion", True, src)
        cs.set("attend_expansion", bool(meta.get("attend_to_mask_tokens", False)), src)
        if meta.get("mask_punctuation", True):
            cs.set("skiplist", tuple(string.punctuation), src)
        if meta.get("dim"):
            cs.set("projection_dim", int(meta["dim"]), src)
        return cs

    # ---- PyLate
    is_pylate = any(k in st_cfg for k in ("query_length", "document_length", "query_prefix",
                                            "do_query_expansion")) or \
        st_cfg.get("model_type") == "ColBERT"
    if is_pylate:
        cs.kind = "pylate"
        src = "config_sentence_transformers.json"
        qp = st_cfg.get("query_prefix", "[Q] ")
        dp = st_cfg.get("document_prefix", "[D] ")
        cs.set("query_marker", qp if qp else None, src + ":query_prefix")
        cs.set("doc_marker", dp if dp else None, src + ":document_prefix")
        cs.set("query_length", int(st_cfg.get("query_length") or 32), src + ":query_length")
        cs.set("doc_length", int(st_cfg.get("document_length") or 180),
               src + ":document_length")
        expand = st_cfg.get("do_query_expansion")
        cs.set("query_expansion", True if expand is None else bool(expand),
               src + ":do_query_expansion")
        att = st_cfg.get("attend_to_expansion_tokens")
        cs.set("attend_expansion", bool(att) and cs.query_expansion is not False,
               src + ":attend_to_expansion_tokens")
        sk = st_cfg.get("skiplist_words")
        cs.set("skiplist", tuple(sk) if sk is not None else tuple(string.punctuation),
               src + ":skiplist_words")
        for m in modules:
            if str(m.get("type", "")).endswith("Dense"):
                dcfg = _json(path / m.get("path", "") / "config.json") or {}
                _check_dense(dcfg, path / m.get("path", ""))
                cs.set("projection_dim", dcfg.get("out_features"), f"{m.get('path')}/config.json")
        return cs

    is_classifier = any(a.endswith("ForSequenceClassification") for a in archs)
    # ---- sentence-transformers bi-encoder
    if modules and not is_classifier:
        cs.kind = "sentence-transformers"
        for m in modules:
            t = str(m.get("type", ""))
            if t.endswith("Pooling"):
                pc = _json(path / m.get("path", "") / "config.json") or {}
                modes = tuple(ours for key, ours in POOLING_KEYS if pc.get(key))
                if pc.get("pooling_mode") and not modes:  # sentence-transformers >= 6
                    pm = pc["pooling_mode"]
                    pm = [pm] if isinstance(pm, str) else list(pm)
                    modes = tuple(str(x).replace("_tokens", "").replace("_token", "")
                                  for x in pm)
                bad = [x for x in modes if x not in POOLING_MODES]
                if bad:
                    raise UsageError(f"{path}: pooling {bad} is not supported (mice-bench "
                                     f"pools {', '.join(POOLING_MODES)})")
                cs.set("pooling", modes or ("mean",), f"{m.get('path')}/config.json")
            elif t.endswith("Normalize"):
                cs.set("normalize", True, "modules.json")
            elif t.endswith("Dense"):
                raise UsageError(f"{path}: a sentence-transformers Dense module after pooling "
                                 "is not supported")
        if cs.max_seq_length is None and cs.model_max_length is not None:
            # sentence-transformers >= 6 keeps max_seq_length as the tokenizer's limit
            cs.set("max_seq_length", cs.model_max_length,
                   "tokenizer_config.json:model_max_length")
        if cs.pooling is not None and cs.normalize is None:
            cs.set("normalize", False, "modules.json")
        prompts = st_cfg.get("prompts") or {}
        if prompts.get("query"):
            cs.set("query_prompt", prompts["query"], "config_sentence_transformers.json:prompts")
        for k in _ST_DOC_PROMPTS:
            if prompts.get(k):
                cs.set("doc_prompt", prompts[k], "config_sentence_transformers.json:prompts")
                break
        return cs

    # ---- cross-encoders (Hugging Face sequence classifiers, sentence-transformers CrossEncoder)
    if is_classifier:
        cs.kind = "cross-encoder"
        n = cfg.get("num_labels") or len(cfg.get("id2label") or {}) or None
        cs.set("num_labels", int(n) if n else None, "config.json:id2label")
        st = cfg.get("sentence_transformers") or {}
        act = st.get("activation_fn") or cfg.get("sbert_ce_default_activation_function")
        if act:
            cs.set("activation", str(act), "config.json:sentence_transformers.activation_fn")
        for key in ("max_length", "max_seq_length"):
            if st.get(key) and cs.max_seq_length is None:
                cs.set("max_seq_length", int(st[key]),
                       f"config.json:sentence_transformers.{key}")
    return cs


def _check_dense(dcfg: dict, where: Path) -> None:
    act = str(dcfg.get("activation_function", "torch.nn.modules.linear.Identity"))
    if dcfg.get("bias") or not act.endswith("Identity") or dcfg.get("use_residual"):
        raise UsageError(f"{where}: a Dense projection with bias, activation or residual is not "
                         "supported (mice-bench applies a bias-free linear projection)")


__all__ = ["CheckpointSettings", "read_checkpoint_settings", "POOLING_MODES"]
