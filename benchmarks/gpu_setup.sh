# The shared start of the GPU scripts, sourced by gpu_check.sh and gpu_proxy.sh with their arguments and
# DEFAULT_OUT_DIR set: the repository root as working directory, OUT_DIR (first argument, else $OUT, else
# DEFAULT_OUT_DIR), PY (python3 unless $PYTHON), the repository on PYTHONPATH, step() (a timed heading) and the
# device record OUT_DIR/gpu.txt (card, driver, torch and CUDA versions).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT_DIR=${1:-${OUT:-$DEFAULT_OUT_DIR}}
PY=${PYTHON:-python3}
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
start=$(date +%s)
step() { echo "=== [$(( $(date +%s) - start )) s] $*"; }

step "device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT_DIR/gpu.txt"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" \
  | tee -a "$OUT_DIR/gpu.txt"
