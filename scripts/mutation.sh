#!/usr/bin/env bash
# Mutation testing of the core math: the variant specs (spec.py, families.py,
# layerspec.py), executors/, the effectiveness
# statistics and summary, the latency row math. Tool: mutmut 3.x (docs/testing.md,
# "Mutation testing"). Mutants are written ONLY into a private copy of the repository,
# never into this checkout.
#
#   bash scripts/mutation.sh                       # every group, one after the other
#   bash scripts/mutation.sh latency spec          # some groups
#   MUT_SAMPLE=150 bash scripts/mutation.sh spec   # a seeded random sample of the group's mutants
#
# Environment: MUT_DIR (private copies, default /tmp/mice-bench-mutation), MUT_CHILDREN
# (parallel mutants, default 2), MUT_SAMPLE (0 = all), MUT_SEED (sample seed, default 0),
# MUTMUT (the mutmut executable, default `mutmut`; `pip install "mutmut>=3.8,<4"`).
# Per group it prints `mutmut results` (the survivors) and writes
# $MUT_DIR/<group>/mutants/mutmut-cicd-stats.json (killed / survived / no tests / timeout).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
MUT_DIR=${MUT_DIR:-/tmp/mice-bench-mutation}
MUT_CHILDREN=${MUT_CHILDREN:-2}
MUT_SAMPLE=${MUT_SAMPLE:-0}
MUT_SEED=${MUT_SEED:-0}
MUTMUT=${MUTMUT:-mutmut}
# forked mutant runs after torch is imported: keep OpenMP single-threaded (fork-safe, and
# 2 shared cores are better used by MUT_CHILDREN parallel mutants than by threads)
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false

# group -> "files to mutate | the targeted tests (each selection runs in well under a minute)"
declare -A GROUPS_=(
  [spec]="mice_bench/spec.py mice_bench/families.py mice_bench/layerspec.py|tests/test_spec.py tests/test_families.py tests/test_cli_core.py"
  [executors]="mice_bench/executors/*.py|tests/test_executors.py tests/test_reference_parity.py"
  [effectiveness]="mice_bench/evaluation/stats.py mice_bench/evaluation/summary.py|tests/test_statistics.py tests/test_summary.py tests/test_effectiveness_units.py tests/test_effectiveness_pipeline.py"
  [latency]="mice_bench/latency/stats.py mice_bench/latency/rows.py|tests/test_latency.py tests/test_prepack.py"
)
ORDER=(spec executors effectiveness latency)
[ $# -gt 0 ] && ORDER=("$@")

for g in "${ORDER[@]}"; do
  [ -n "${GROUPS_[$g]:-}" ] || { echo "unknown group $g; valid: ${!GROUPS_[*]}" >&2; exit 2; }
  files=${GROUPS_[$g]%%|*}; tests=${GROUPS_[$g]#*|}
  work="$MUT_DIR/$g"
  rm -rf "$work" && mkdir -p "$work"
  # the private copy: sources, tests, pyproject and the committed results some tests read
  # (no .git)
  cp -r "$REPO/mice_bench" "$REPO/tests" "$REPO/pyproject.toml" "$REPO/results" \
    "$REPO/.gitignore" "$work/"
  find "$work" -name __pycache__ -prune -exec rm -rf {} +
  # this group's [tool.mutmut] replaces the committed one (in the copy only)
  python - "$work/pyproject.toml" "$files" "$tests" <<'PY'
import re, sys
path, files, tests = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
text = re.sub(r"(?ms)^\[tool\.mutmut\]\n.*?(?=^\[|\Z)", "", open(path).read())
q = lambda xs: "[" + ", ".join(f'"{x}"' for x in xs) + "]"
text += (f"\n[tool.mutmut]\nsource_paths = [\"mice_bench\"]\nonly_mutate = {q(files)}\n"
         f"pytest_add_cli_args = [\"-p\", \"no:cacheprovider\", \"-q\"]\n"
         f"pytest_add_cli_args_test_selection = {q(tests)}\n"
         f"also_copy = [\"results\", \".gitignore\"]\n")
open(path, "w").write(text)
PY
  echo "== $g: mutating $files; tests: $tests"
  start=$(date +%s)
  (
    cd "$work"
    if [ "$MUT_SAMPLE" -gt 0 ]; then
      # generate the mutants (a run of zero names), then run a seeded sample of them
      "$MUTMUT" run --max-children "$MUT_CHILDREN" "no-such-mutant" >/dev/null 2>&1 || true
      names=$(python - "$MUT_SAMPLE" "$MUT_SEED" <<'PY'
import json, pathlib, random, sys
n, seed = int(sys.argv[1]), int(sys.argv[2])
names = sorted(k for m in pathlib.Path("mutants").rglob("*.py.meta")
               for k in json.loads(m.read_text())["exit_code_by_key"])
random.Random(seed).shuffle(names)
print("\n".join(sorted(names[:n])))
PY
)
      # shellcheck disable=SC2086
      "$MUTMUT" run --max-children "$MUT_CHILDREN" $names
    else
      "$MUTMUT" run --max-children "$MUT_CHILDREN"
    fi
    "$MUTMUT" export-cicd-stats >/dev/null 2>&1 || true
    echo "-- $g survivors:"; "$MUTMUT" results || true
    cat mutants/mutmut-cicd-stats.json 2>/dev/null || true
  )
  echo "== $g: $(( $(date +%s) - start )) s"
done
