#!/usr/bin/env bash
# The run on a GPU node without a network: each step is a call of a mice-bench command or of
# pytest, under its own time limit inside one budget; steps, limits, sizes and options are in
# docs/gpu.md ("2. Run"). Started by `mice-bench offline-node run FOLDER` (or FOLDER/run.sh),
# which checks the options and passes them as environment variables: MICE_GPU_CARRY (the
# staged folder), MICE_NODE_SRC (the folder holding the mice_bench package), MICE_NODE_TESTS
# (the GPU checks; empty: skipped), MICE_NODE_SCRATCH (an empty temporary folder that the
# caller removes: the files before they are archived, the restored model, the training
# study's checkpoints), OUT, PYTHON, MICE_GPU_BUDGET_S, MICE_GPU_STEPS, MICE_GPU_LATENCY,
# MICE_GPU_TRAIN_VARIANTS, MICE_GPU_PYTEST_K, MICE_GPU_REHEARSAL, MICE_GPU_CAP_SCALE (times
# every step's limit; 12 when rehearsing).
#
# Writes to $OUT only: mice-gpu-results.tar.gz (rewritten after every step, so a killed run
# still leaves what it finished), summary.txt, run.log.
set -u
{ # the whole script is one compound command: bash reads it completely before running it,
  # so editing this file during a run cannot derail that run
SRC=${MICE_NODE_SRC:?MICE_NODE_SRC: the folder that holds the mice_bench package}
CARRY=${MICE_GPU_CARRY:?MICE_GPU_CARRY: the staged folder}
TESTS=${MICE_NODE_TESTS:-}
SCRATCH=${MICE_NODE_SCRATCH:?MICE_NODE_SCRATCH: an empty temporary folder}
PY=${PYTHON:-python3}
OUT=${OUT:-$PWD/offline-node-out}
REHEARSAL=${MICE_GPU_REHEARSAL:-0}
if [[ $REHEARSAL == 1 ]]; then
  BUDGET=${MICE_GPU_BUDGET_S:-3600}; CAP_SCALE=${MICE_GPU_CAP_SCALE:-12}
else
  BUDGET=${MICE_GPU_BUDGET_S:-450}; CAP_SCALE=${MICE_GPU_CAP_SCALE:-1}
fi
STEPS=${MICE_GPU_STEPS:-env tests latency train}
LAT_STEPS=${MICE_GPU_LATENCY:-paper-bf16 rerank-bf16-eager rerank-bf16-eager-kv paper-fp32 rerank-bf16-compile rerank-bf16-compile-kv}
TRAIN_VARIANTS=${MICE_GPU_TRAIN_VARIANTS:-ce,mice-l2+2}
WORK=$SCRATCH/work     # what the archive holds
MODEL_DIR=$SCRATCH/model
RESERVE=20            # seconds kept for the summary and the archive
START=$(date +%s)

mkdir -p "$OUT"
rm -f "$OUT/mice-gpu-results.tar.gz" "$OUT/summary.txt" "$OUT/run.log"  # an earlier run's
mkdir -p "$WORK/latency" "$WORK/tests" "$WORK/training" "$WORK/runs" "$WORK/logs"
: >"$WORK/steps.tsv"
exec > >(tee -a "$WORK/run.log") 2>&1

export PYTHONPATH="$SRC${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg
export MICE_GPU_REPORT_DIR="$WORK/tests"

if [[ $REHEARSAL == 1 ]]; then
  DEVICE=cpu
  export MICE_GPU_TEST_DEVICE=cpu
  PAPER_SIZE=(--batch-size 4 --doc-tokens 64 --warmup 1 --runs 2)
  RERANK_SIZE=(--batch-size 4 --query-tokens 8 --doc-tokens 48 --depth 8 --warmup 1 --runs 2
               --min-seconds 0)
  MIN_STEP=5
else
  DEVICE=cuda
  PAPER_SIZE=(--batch-size 128 --doc-tokens 512)
  RERANK_SIZE=(--batch-size 128 --query-tokens 32 --doc-tokens 477 --depth 512
               --min-seconds 1)
  MIN_STEP=20
fi
LAT_MODEL=minilm-l12
LAT_VARIANTS=ce,prettr-l4,mice-l4+3,colbert

elapsed() { echo $(( $(date +%s) - START )); }
want() { [[ " $STEPS " == *" $1 "* ]]; }

pack() {  # the archive that comes back; rewritten after every step
  tar -czf "$OUT/.mice-gpu-results.tar.gz.tmp" -C "$WORK" . 2>/dev/null &&
    mv -f "$OUT/.mice-gpu-results.tar.gz.tmp" "$OUT/mice-gpu-results.tar.gz"
  cp -f "$WORK/run.log" "$OUT/run.log" 2>/dev/null
  [[ -f $WORK/summary.txt ]] && cp -f "$WORK/summary.txt" "$OUT/summary.txt"
  return 0
}

step() {  # step NAME CAP_S CMD...   (log: logs/NAME.log; row in steps.tsv)
  local name=$1 cap=$(( $2 * CAP_SCALE )); shift 2
  local left=$(( BUDGET - RESERVE - $(elapsed) ))
  local lim=$cap
  (( left < lim )) && lim=$left
  if (( lim < MIN_STEP )); then
    echo ">> SKIP $name (${left}s of the budget left)"
    printf '%s\tskipped\t0\t0\n' "$name" >>"$WORK/steps.tsv"
    return 0
  fi
  echo ">> $name  (t=$(elapsed)s, limit ${lim}s)"
  local t0=$(date +%s) rc
  timeout -k 10 "$lim" "$@" >"$WORK/logs/$name.log" 2>&1
  rc=$?
  local dt=$(( $(date +%s) - t0 ))
  local status=ok
  (( rc == 124 || rc == 137 )) && status=timeout
  (( rc != 0 && rc != 124 && rc != 137 )) && status=failed
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" "$dt" >>"$WORK/steps.tsv"
  echo "   $name: $status (exit $rc) in ${dt}s"
  [[ $status != ok ]] && tail -n 15 "$WORK/logs/$name.log" | sed 's/^/   | /'
  pack
  return 0
}

echo "# mice-bench offline-node run  $(date -u +%FT%TZ)  device=$DEVICE  budget=${BUDGET}s  steps: $STEPS"

# ---- the model (staged byte-shuffled, checked against the manifest; restored outside $WORK
# so it is not archived)
MODEL_OK=0
if [[ ! -d $CARRY/model ]]; then
  echo "!! $CARRY/model is missing: stage the folder with mice-bench offline-node stage"
elif $PY -m mice_bench.offline_node.formats unpack-model "$CARRY" "$MODEL_DIR" >/dev/null; then
  export MICE_GPU_MODEL="$MODEL_DIR"
  MODEL_OK=1
fi
cp "$CARRY/MANIFEST.json" "$WORK/carry-manifest.json"

# ---- env
if want env; then
  step env 60 bash -c "
    { command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
      $PY - <<'EOF'
import json, platform
from importlib import metadata, util
import torch
info = {'python': platform.python_version(), 'torch': torch.__version__,
        'cuda': torch.version.cuda, 'cuda_available': torch.cuda.is_available()}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(gpu=p.name, sms=p.multi_processor_count, mem_gb=round(p.total_memory / 2**30, 1),
                capability='.'.join(map(str, torch.cuda.get_device_capability(0))))
for m in ('transformers', 'tokenizers', 'safetensors', 'numpy', 'typer', 'rich', 'pytest',
          'triton', 'ir_datasets', 'ir_measures', 'bm25s', 'mice_bench'):
    try:  # versions without importing (importing ir_datasets writes into HOME)
        info[m] = metadata.version(m)
    except metadata.PackageNotFoundError:
        info[m] = 'present' if util.find_spec(m) else None
print(json.dumps(info, indent=1))
EOF
    } | tee $WORK/env.txt"
fi

# ---- GPU tests
if want tests && [[ -z $TESTS ]]; then
  echo ">> SKIP tests (the staged folder has no GPU checks)"
  printf 'tests\tskipped\t0\t0\n' >>"$WORK/steps.tsv"
elif want tests; then
  # the latency --compile steps check `latency --compile` themselves (summary: "compiled")
  kexpr=(-k "${MICE_GPU_PYTEST_K-not latency_compile_flag}")
  [[ -z ${kexpr[1]} ]] && kexpr=()
  # one hung test must not take the whole step (pytest-timeout is in the image)
  $PY -c "import pytest_timeout" 2>/dev/null && kexpr+=(--timeout $(( 90 * CAP_SCALE )))
  step tests 150 $PY -m pytest "$TESTS" -m gpu -o addopts= -p no:cacheprovider -v -rA \
    --junitxml="$WORK/tests/junit.xml" "${kexpr[@]}"
fi

# ---- latency
lat() {  # lat NAME CAP ARGS...
  local name=$1 cap=$2; shift 2
  [[ " $LAT_STEPS " == *" $name "* ]] || return 0
  step "latency-$name" "$cap" $PY -m mice_bench.cli latency --device "$DEVICE" \
    --model "$LAT_MODEL" --variants "$LAT_VARIANTS" --output "$WORK/latency/$name.json" "$@"
}
if want latency; then  # the steps that the paper table and the two targets need first
  lat paper-bf16 40 --protocol paper "${PAPER_SIZE[@]}" --dtype bf16
  lat rerank-bf16-eager 40 --protocol rerank "${RERANK_SIZE[@]}" --dtype bf16
  lat rerank-bf16-eager-kv 40 --protocol rerank "${RERANK_SIZE[@]}" --dtype bf16 --kv-cache
  lat paper-fp32 45 --protocol paper "${PAPER_SIZE[@]}" --dtype fp32
  lat rerank-bf16-compile 100 --protocol rerank "${RERANK_SIZE[@]}" --dtype bf16 --compile
  lat rerank-bf16-compile-kv 80 --protocol rerank "${RERANK_SIZE[@]}" --dtype bf16 --compile \
    --kv-cache
  lat rerank-fp32-eager 40 --protocol rerank "${RERANK_SIZE[@]}" --dtype fp32
fi

# ---- training study (optional)
if want train; then
  if [[ $MODEL_OK != 1 ]]; then
    echo ">> SKIP train (the staged model could not be restored: see above)"
    printf 'train\tskipped\t0\t0\n' >>"$WORK/steps.tsv"
  elif $PY -c "import mice_bench.training" 2>/dev/null; then
    left=$(( BUDGET - RESERVE - $(elapsed) ))
    extra=()
    [[ $REHEARSAL == 1 ]] && extra=(--rehearsal)
    step train $(( 900 / CAP_SCALE + 1 )) $PY -m mice_bench.offline_node.study --work "$WORK" --carry "$CARRY" \
      --model "$MODEL_DIR" --tmp "$SCRATCH/train" --device "$DEVICE" \
      --variants "$TRAIN_VARIANTS" --budget-s $(( left - 10 )) "${extra[@]}"
  else
    echo ">> SKIP train (mice_bench.training is not importable)"
    printf 'train\tskipped\t0\t0\n' >>"$WORK/steps.tsv"
  fi
fi

# ---- summary (printed last: the end of the output is the summary)
timeout -k 5 30 $PY -m mice_bench.offline_node.summary "$WORK" >"$WORK/logs/summary.log" 2>&1 ||
  echo "!! summary failed (see logs/summary.log)"
echo
cat "$WORK/summary.txt" 2>/dev/null || tail -n 20 "$WORK/logs/summary.log"
echo "# done in $(elapsed)s; results: $OUT/mice-gpu-results.tar.gz, summary.txt, run.log"
sleep 1  # let tee write the last lines into run.log
pack
exit 0
}
