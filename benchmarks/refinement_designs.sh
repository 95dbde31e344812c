#!/usr/bin/env bash
# The refinement-design search on the feature benchmark's VALIDATION seeds (default 100-109): the paper's
# MMIR, each refinement design alone and the combinations, beside the controls. The robust preset
# (experiments/configs/feature-benchmark/mmir-robust.toml) was chosen from this grid's output; test
# seeds 0-19 are run separately (docs/results-refinement.md).
#   benchmarks/refinement_designs.sh [OUT] [SEEDS]
set -euo pipefail
OUT=${1:-runs/refinement-designs}
SEEDS=${2:-100-109}
PY=${PYTHON:-python}
bench() { OMP_NUM_THREADS=1 "$PY" -m experiments.feature_benchmark --seeds "$SEEDS" --workers "${WORKERS:-2}" "$@"; }
bench --out "$OUT/controls" --methods adversarial-only,random-removal,ground-truth-removal,mmir
declare -A DESIGNS=(
  [critic]="refinement.relevance=critic"
  [relabel]="refinement.relabel=true"
  [warmup]="refinement.warmup_steps=50"
  [rank]="env.reward=rank"
  [margin]="env.reward=margin"
  [critic+relabel]="refinement.relevance=critic refinement.relabel=true"
  [critic+relabel+warmup]="refinement.relevance=critic refinement.relabel=true refinement.warmup_steps=50"
  [critic+relabel+margin]="refinement.relevance=critic refinement.relabel=true env.reward=margin"
  [critic+relabel+rank]="refinement.relevance=critic refinement.relabel=true env.reward=rank"
  [critic+margin]="refinement.relevance=critic env.reward=margin"
  [relevance-oracle]="refinement.policy=relevance"
  [critic-oracle]="refinement.policy=relevance refinement.relevance=critic"
)
for name in "${!DESIGNS[@]}"; do
  sets=()
  for kv in ${DESIGNS[$name]}; do sets+=(--set "$kv"); done
  bench --out "$OUT/$name" --methods mmir "${sets[@]}"
done
