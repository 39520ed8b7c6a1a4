#!/usr/bin/env bash
# Every GPU check of `mice-bench latency` in one go (budget: 8 minutes on one H100/H200).
#
#   bash benchmarks/gpu.sh                  # on the GPU machine, from the repository root
#
# Runs, for ce,mice-l4+3,colbert at batch 128 x 512-token sequences:
#   paper protocol  (128 pairs, documents of 512 tokens, with and without precomputed docs)
#   rerank protocol (1 query, depth 512 in batches of 128, query 32 + document 477 tokens =
#                    512 positions for the cross-encoder, documents precomputed)
# in fp32 and bf16, eager first, then with --compile; then (time permitting) rerank with the
# per-layer K/V cache. Each result goes to results/latency/gpu-<tag>-*.json, the printed
# tables to results/latency/gpu-<tag>.log. A step that would not finish inside the budget is
# skipped and listed as skipped.
#
# CPU check of this script (tiny sizes), e.g.:
#   MB_DEVICE=cpu MB_BATCH=4 MB_DOC=64 MB_QUERY=8 MB_DEPTH=8 MB_RUNS=2 MB_WARMUP=1 \
#   MB_DTYPES=fp32 MB_OUT=/tmp/gpu-sh bash benchmarks/gpu.sh
set -u
cd "$(dirname "$0")/.."

DEVICE=${MB_DEVICE:-cuda}
MODEL=${MB_MODEL:-minilm-l12}
VARIANTS=${MB_VARIANTS:-ce,mice-l4+3,colbert}
BATCH=${MB_BATCH:-128}
DOC=${MB_DOC:-512}
QUERY=${MB_QUERY:-32}
DEPTH=${MB_DEPTH:-$((BATCH * 4))}
RERANK_DOC=${MB_RERANK_DOC:-$((DOC - QUERY - 3))}   # the pair fills DOC positions
DTYPES=${MB_DTYPES:-fp32 bf16}
COMPILE_MODES=${MB_COMPILE:-eager compile}
WARMUP=${MB_WARMUP:-}
RUNS=${MB_RUNS:-}
MIN_SECONDS=${MB_MIN_SECONDS:-1}
OUT=${MB_OUT:-results/latency}
BUDGET=${MB_BUDGET_S:-470}
TAG=${MB_TAG:-$(date -u +%Y%m%d-%H%M%S)}
MB=${MICE_BENCH:-python -m mice_bench.cli}

mkdir -p "$OUT"
LOG="$OUT/gpu-$TAG.log"
START=$(date +%s)
FAILED=0
SKIPPED=()
export PYTHONWARNINGS=ignore TOKENIZERS_PARALLELISM=false

{
  echo "# mice-bench gpu.sh  tag=$TAG  device=$DEVICE  model=$MODEL  $(date -u)"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv,noheader
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
} 2>&1 | tee "$LOG"

step() {  # step NAME ESTIMATE_S ARGS...
  local name=$1 est=$2; shift 2
  local now=$(( $(date +%s) - START ))
  local left=$(( BUDGET - now ))
  if (( left < est )); then
    echo ">> SKIP $name (${left}s left, needs ~${est}s)" | tee -a "$LOG"
    SKIPPED+=("$name"); return 0
  fi
  echo ">> $name  (t=${now}s)  $MB latency $*" | tee -a "$LOG"
  local extra=()
  [[ -n "$WARMUP" ]] && extra+=(--warmup "$WARMUP")
  [[ -n "$RUNS" ]] && extra+=(--runs "$RUNS")
  if ! timeout "$left" $MB latency --device "$DEVICE" --model "$MODEL" --variants "$VARIANTS" \
      "${extra[@]}" --output "$OUT/gpu-$TAG-$name.json" "$@" >>"$LOG" 2>&1; then
    echo ">> FAILED $name (see $LOG)" | tee -a "$LOG"; FAILED=$((FAILED + 1))
  fi
}

for mode in $COMPILE_MODES; do
  flag=(); est=25
  [[ $mode == compile ]] && flag=(--compile) && est=90
  for dt in $DTYPES; do
    step "paper-$dt-$mode" "$est" --protocol paper --batch-size "$BATCH" --doc-tokens "$DOC" \
      --dtype "$dt" "${flag[@]}"
    step "rerank-$dt-$mode" "$est" --protocol rerank --batch-size "$BATCH" \
      --query-tokens "$QUERY" --doc-tokens "$RERANK_DOC" --depth "$DEPTH" \
      --min-seconds "$MIN_SECONDS" --dtype "$dt" "${flag[@]}"
  done
done
for dt in $DTYPES; do
  step "rerank-kv-$dt-eager" 25 --protocol rerank --batch-size "$BATCH" --query-tokens "$QUERY" \
    --doc-tokens "$RERANK_DOC" --depth "$DEPTH" --min-seconds "$MIN_SECONDS" --dtype "$dt" \
    --kv-cache
done

ELAPSED=$(( $(date +%s) - START ))
{
  echo "# done in ${ELAPSED}s; failed: $FAILED; skipped: ${SKIPPED[*]:-none}"
  ls -1 "$OUT"/gpu-"$TAG"-*.json 2>/dev/null
} | tee -a "$LOG"
exit $(( FAILED > 0 ))
