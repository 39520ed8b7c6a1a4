#!/usr/bin/env bash
# The CPU precision comparison, for an idle Intel Xeon with AMX (amx_bf16 in lscpu): every
# variant in fp32, bf16 (weights cast), bf16-autocast and int8, and the cross-encoder peers as
# deployed (transformers eager in fp32 and bf16, CrossEncoder ONNX int8 and OpenVINO where
# they install, mice-bench's ONNX export in fp32 and int8), all timed in ONE interleaved run
# per thread count, run twice in alternation (2 threads, then 1, then 2 and 1 again), so that
# a change of load hits every row alike. Then the training step in fp32 and bf16.
#
#   bash scripts/cpu_peak.sh [OUT_DIR]        # default: results/latency/cpu-amx
#
# Run it on an otherwise idle machine; every file records the CPU's matrix features
# (environment.cpu_features) and its matmul peak in each precision.
set -euo pipefail
OUT=${1:-results/latency/cpu-amx}
mkdir -p "$OUT" results/benchmarks
lscpu | grep -qw amx_bf16 || echo "warning: this CPU has no AMX (amx_bf16); the run is labelled with its own features" >&2
COMMON=(--device cpu --model minilm-l12 --variants ce,mice-l4+3,colbert
        --dtype fp32,bf16,bf16-autocast,int8
        --peers hf,hf-bf16,st-onnx-int8,st-openvino,st-openvino-int8,ort,ort-int8
        --batch-size 32 --query-tokens 32 --doc-tokens 256 --depth 32
        --warmup 2 --runs 5 --min-seconds 2 --no-progress)
for round in 1 2; do
  for t in 2 1; do
    mice-bench latency "${COMMON[@]}" --threads "$t" \
      --output "$OUT/precisions-${t}t-round${round}.json"
  done
done
# training: pairs/s of one optimizer step in fp32 and bf16 (autocast) on the same batch
OMP_NUM_THREADS=2 python -m pytest tests/benchmarks/test_bench_training.py --benchmark-enable \
  --benchmark-only -o addopts="" --benchmark-json results/benchmarks/training-cpu-amx.json
python scripts/benchmark_table.py results/benchmarks/training-cpu-amx.json
