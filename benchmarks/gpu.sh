#!/usr/bin/env bash
# Every GPU check in one go, from a checkout: a wrapper of benchmarks/gpu/run.sh, i.e.
# `mice-bench offline-node run gpu-carry` (see docs/gpu.md).
#
#   bash benchmarks/gpu.sh                  # on the GPU node, from the repository root
exec bash "$(dirname "$0")/gpu/run.sh" "$@"
