#!/usr/bin/env bash
# Rehearse the node run on the CPU, in an environment pinned like a GPU node's image, before
# the staged folder travels (docs/gpu.md):
#
#   bash benchmarks/gpu/rehearse.sh          # first time ~2 min of installs, then ~10 min
#
# 1. Once (cached in .offline-node-cache/rehearsal-venv, ignored by git): a Python 3.12 venv
#    with torch 2.11.0 (the PyPI build, CUDA 13 libraries included, ~4.7 GB: it imports and
#    runs on a machine without a GPU), transformers 5.17.0, tokenizers 0.23.2, safetensors
#    0.8.0, huggingface_hub 1.33.0, sentence-transformers 6.0.1, numpy 2.5.2, typer, rich,
#    pandas, scipy, matplotlib, pytest; and, as on a typical node, NO ir_datasets,
#    ir_measures, bm25s or PyStemmer.
# 2. gpu-carry/ (mice-bench offline-node stage, with the project's own environment) unless
#    present.
# 3. benchmarks/gpu/run.sh --rehearse: the same steps at tiny sizes on the CPU (GPU checks on
#    the CPU with the CUDA-only checks skipped, latency with --device cpu, a few training
#    steps), the archive written to .offline-node-cache/rehearsal-out/.
# 4. mice-bench offline-node collect on that archive (into .offline-node-cache/rehearsal-eval/,
#    not results/; no report), with the project's environment (ir_measures).
# Exit status: non-zero when a step failed or timed out, or the archive is missing.
#
# Environment: MICE_REHEARSAL_PYTHON (a Python 3.12; default the pyenv 3.12.1, else
# python3.12), MICE_GPU_STEPS / MICE_GPU_PYTEST_K / MICE_GPU_BUDGET_S (passed to the run).
set -euo pipefail
{ # one compound command: read whole before it runs (safe against edits during a run)
cd "$(dirname "$0")/../.."
REPO=$PWD
T0=$(date +%s)
CACHE=$REPO/.offline-node-cache
VENV=$CACHE/rehearsal-venv
STAMP=$VENV/.mice-rehearsal-v1
PY312=${MICE_REHEARSAL_PYTHON:-/root/.pyenv/versions/3.12.1/bin/python}
[[ -x $PY312 ]] || PY312=$(command -v python3.12 || true)
[[ -n $PY312 ]] || { echo "rehearse: no Python 3.12 (set MICE_REHEARSAL_PYTHON)" >&2; exit 2; }

if [[ ! -f $STAMP ]]; then
  echo "# creating $VENV (Python 3.12, torch 2.11.0, transformers 5.17.0)"
  rm -rf "$VENV"
  "$PY312" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q "torch==2.11.0"
  "$VENV/bin/python" -m pip install -q "transformers==5.17.0" "tokenizers==0.23.2" \
    "safetensors==0.8.0" "huggingface_hub==1.33.0" "sentence-transformers==6.0.1" \
    "numpy==2.5.2" typer rich pandas scipy matplotlib pytest pytest-benchmark pytest-timeout
  if "$VENV/bin/python" -c "import ir_datasets" 2>/dev/null ||
     "$VENV/bin/python" -c "import ir_measures" 2>/dev/null ||
     "$VENV/bin/python" -c "import bm25s" 2>/dev/null; then
    echo "rehearse: an IR library slipped into the venv; a typical node has none" >&2; exit 2
  fi
  touch "$STAMP"
fi
"$VENV/bin/python" -c "import sys, torch, transformers; print('# rehearsal venv: Python',
  sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__)"

if [[ ! -f gpu-carry/MANIFEST.json ]]; then
  echo "# staging gpu-carry/ (mice-bench offline-node stage)"
  python -m mice_bench.cli offline-node stage gpu-carry --no-source --count-checkout
fi

OUTDIR=$CACHE/rehearsal-out
rm -rf "$OUTDIR"
mkdir -p "$OUTDIR"
T1=$(date +%s)
PYTHON="$VENV/bin/python" bash benchmarks/gpu/run.sh --rehearse --out "$OUTDIR"
T2=$(date +%s)

status=0
[[ -f $OUTDIR/mice-gpu-results.tar.gz ]] || { echo "rehearse: no archive" >&2; status=1; }
if [[ -f $OUTDIR/mice-gpu-results.tar.gz ]]; then
  if tar -xzOf "$OUTDIR/mice-gpu-results.tar.gz" ./steps.tsv | grep -P '\t(failed|timeout)\t' >&2
  then
    echo "rehearse: failed steps (above)" >&2
    status=1
  fi
  rm -rf "$CACHE/rehearsal-eval/rehearsal"
  python -m mice_bench.cli offline-node collect "$OUTDIR/mice-gpu-results.tar.gz" \
    --staged gpu-carry --dest "$CACHE/rehearsal-eval" --tag rehearsal --no-report || status=1
fi
echo "# rehearsal: the node run $(( T2 - T1 ))s, in all $(( $(date +%s) - T0 ))s; status $status"
exit $status
}
