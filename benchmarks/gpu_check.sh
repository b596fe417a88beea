#!/usr/bin/env bash
# The prepared GPU check (issue 10): one run of at most ~8 minutes on one H100/H200-class GPU.
# On a bare Python with PyTorch, vidssl and its missing dependencies install from a folder of
# wheels carried with the tree (prepare it on a machine with the registries:
#   pip download -d wheels/ timm lightning av faiss-cpu safetensors pyyaml tqdm tensorboard scipy scikit-learn matplotlib
# ), or from the registries where they are reachable.
# Usage: bash benchmarks/gpu_check.sh [--minutes 3]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python -c "import vidssl" 2>/dev/null; then
  if [ -d wheels ]; then
    python -m pip install -q --no-index --find-links wheels/ --no-deps -e .
    python -m pip install -q --no-index --find-links wheels/ timm lightning av faiss-cpu safetensors pyyaml tqdm tensorboard scipy scikit-learn matplotlib
  else
    python -m pip install -q -e .
  fi
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
exec python benchmarks/gpu_check.py "$@"
