#!/usr/bin/env bash
# One command on the GPU machine (docs/gpu.md): install the wheels the machine lacks, run benchmarks/gpu_cotrain.py.
#
#   benchmarks/gpu_cotrain.sh WHEELS_DIR [arguments of gpu_cotrain.py, e.g. --out "$OUT/gpu_cotrain.json"]
#
# WHEELS_DIR holds gymnasium, farama-notifications, stable-baselines3, sb3-contrib and simplejpeg
# wheels for CPython 3.12 manylinux x86_64 (the GPU machine has torch, torchvision, h5py and rich).
set -euo pipefail
if [ $# -lt 1 ] || [ ! -d "$1" ]; then
    echo "usage: $0 WHEELS_DIR [arguments of gpu_cotrain.py]; WHEELS_DIR must be a folder of .whl files, got '${1:-}'" >&2
    exit 2
fi
wheels=$1
shift
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
# --upgrade: a warm machine keeps /tmp/site from an earlier run
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site "$wheels"/*.whl
export PYTHONPATH="/tmp/site:$repo${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
# the I3D trunk by pool implementation first (seconds on a GPU); its table lands beside the main check's
if [ -n "${OUT:-}" ]; then python3 "$here/i3d_pools.py" --json "$OUT/i3d_pools.json" || echo "i3d_pools.py failed (exit $?)"; fi
# the agent loop on the GPU: env steps/s of mmir-dqn on the batched env beside SB3's DQN (a minute)
if [ -n "${OUT:-}" ]; then
    python3 "$here/agent_throughput.py" --device cuda --timesteps 20000 --episodes 500 --json "$OUT/agent_throughput.json" ||
        echo "agent_throughput.py failed (exit $?)"
fi
exec python3 "$here/gpu_cotrain.py" "$@"
