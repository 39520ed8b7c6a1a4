"""The identity of document states: what made them, so that nothing else scores them.

Document states (:class:`~mice_bench.executors.fast.DocStates` from ``encode_documents``) and
a document-state store (:class:`~mice_bench.store.docstore.DocStateStore`) carry a dict:

* ``model``: the weights' fingerprint (:func:`~mice_bench.backbones.weights.weights_fingerprint`,
  first 16 hex digits), ``name``: where they came from (shown, not compared);
* ``variant``: the variant that encoded them (shown, not compared: ``mice-l4+3`` and
  ``mice-l4+2`` encode the same states), ``split_layer``, and ``doc_encoding``: a hash of what
  shapes a document's states besides the weights (the layers before the split, the document
  side's input conventions, the head's projection or pooling for head vectors);
* ``content``: ``states`` (split-layer hidden states) | ``vectors`` (a late-interaction head's
  vectors) | ``pooled`` (a bi-encoder's one pooled vector);
* ``doc_max_tokens``: the document length limit.

:func:`check_same` refuses states whose compared fields differ from the scorer's, with one
line naming both identities.
"""

from __future__ import annotations

from ..errors import UsageError

__all__ = ["COMPARED", "describe_identity", "same_identity", "check_same",
           "MismatchedStates"]

#: the fields that change what is stored (the others name it for people)
COMPARED = ("model", "split_layer", "doc_encoding", "content", "doc_max_tokens")


class MismatchedStates(UsageError):
    """Document states (or a store) made by another model, variant, content or length limit."""


def describe_identity(ident: dict | None) -> str:
    """One phrase naming an identity: ``minilm-l6 (weights 1a2b...), mice-l4+3, split layer
    4, states, doc_max_tokens 256``."""
    if not isinstance(ident, dict) or not ident:
        return "no recorded model"
    return (f"{ident.get('name', '?')} (weights {ident.get('model', '?')}), "
            f"{ident.get('variant', '?')}, split layer {ident.get('split_layer', '?')}, "
            f"{ident.get('content', '?')}, doc_max_tokens {ident.get('doc_max_tokens')}, "
            f"document encoding {ident.get('doc_encoding', '?')}")


def same_identity(a: dict | None, b: dict | None) -> bool:
    """Whether states of identity ``a`` are what a scorer of identity ``b`` reads."""
    if not isinstance(a, dict) or not isinstance(b, dict):
        return False
    return all(a.get(k) == b.get(k) for k in COMPARED)


def check_same(have: dict | None, want: dict, what: str) -> None:
    """Refuse (:class:`MismatchedStates`, one line naming both) ``what`` of identity ``have``
    for a scorer of identity ``want``."""
    if not same_identity(have, want):
        raise MismatchedStates(f"{what} were made by {describe_identity(have)}; this model "
                               f"reads {describe_identity(want)}: encode the documents again "
                               "with this model and variant")
