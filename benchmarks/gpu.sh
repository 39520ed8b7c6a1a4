#!/usr/bin/env bash
# Every GPU check in one go: a wrapper of benchmarks/gpu/run.sh (see docs/gpu.md).
#
#   bash benchmarks/gpu.sh                  # on the GPU machine, from the repository root
#
# run.sh runs the GPU tests, the latency measurements (paper protocol 128 pairs x 512 tokens
# in fp32 and bf16, with and without precomputed documents; rerank protocol in bf16 eager and
# --compile, with and without the K/V cache) for ce,prettr-l4,mice-l4+3,colbert,
# then the training mini-replication, inside a 450-second budget, and writes
# $OUT/mice-gpu-results.tar.gz, summary.txt and run.log. Its environment variables
# (MICE_GPU_BUDGET_S, MICE_GPU_STEPS, MICE_GPU_LATENCY, MICE_GPU_REHEARSAL, ...) are listed in
# its header; benchmarks/gpu/rehearse.sh rehearses it on the CPU. The MB_* variables of the
# earlier version of this script are gone.
exec bash "$(dirname "$0")/gpu/run.sh" "$@"
