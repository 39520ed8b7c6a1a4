#!/usr/bin/env bash
# The node run from a checkout, with the staged folder at gpu-carry/ (docs/gpu.md):
#
#   mice-bench offline-node stage gpu-carry --no-source     # on a connected machine
#   bash benchmarks/gpu/run.sh [options of `mice-bench offline-node run`]   # on the node
#
# The checkout itself is imported through PYTHONPATH (nothing to install on the node). The
# options may also come as environment variables: OUT, MICE_GPU_BUDGET_S, MICE_GPU_STEPS,
# MICE_GPU_LATENCY, MICE_GPU_TRAIN_VARIANTS, MICE_GPU_PYTEST_K, MICE_GPU_REHEARSAL, PYTHON.
set -u
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" -m mice_bench.cli offline-node run "${MICE_GPU_CARRY:-gpu-carry}" "$@"
