#!/usr/bin/env bash
# GPU check: every package's parity tests on the GPU, a short training run of each package there,
# and the four benchmarks against torch.nn on the GPU; then one summary table.
#
#   scripts/gpu_check.sh            # on a machine with CUDA and PyTorch (about 5 minutes)
#   scripts/gpu_check.sh cpu        # the same checks on the CPU (a dry run of this script)
#   scripts/gpu_check.sh --help     # usage; a bad DEVICE or an extra argument exits 2 before anything runs
#
# It installs nothing but this repository's packages: with pip and hatchling present they are
# installed (no dependencies, no index); otherwise their src/ folders go on PYTHONPATH.
# Environment: SCRATCH_DATA_DIR (MNIST, Tiny Shakespeare, eng-fra for the training runs),
# GPU_CHECK_OUT (default runs/gpu-check), PYTHON (default python3), GPU_CHECK_WORKERS
# (pytest-xdist workers when xdist is installed, default 4), GPU_CHECK_PHASES (default
# "tests train bench": any of them, e.g. "tests" for the parity tests alone).
set -uo pipefail
USAGE="usage: scripts/gpu_check.sh [-h] [DEVICE]"
usage() {
    echo "$USAGE"
    cat <<'EOF'

GPU check: every package's parity tests on DEVICE, a short training run of each package there, and
the four benchmarks against torch.nn on it; then one summary table (OUT/summary.md, exit 1 on a failure).

positional arguments:
  DEVICE      where to run: cuda (the default), cuda:N, cpu (a dry run of this script), mps or auto

options:
  -h, --help  show this help message and exit

It installs nothing but this repository's packages: with pip and hatchling present they are installed
(no dependencies, no index); otherwise their src/ folders go on PYTHONPATH.

environment:
  SCRATCH_DATA_DIR   MNIST, Tiny Shakespeare and eng-fra for the training runs
  GPU_CHECK_OUT      where the logs, results and summary go (default runs/gpu-check)
  PYTHON             the interpreter (default python3)
  GPU_CHECK_WORKERS  pytest-xdist workers when xdist is installed (default 4)
  GPU_CHECK_PHASES   any of "tests train bench" (the default), e.g. "tests" for the parity tests alone
EOF
}
case "${1:-}" in
    -h | --help) usage; exit 0 ;;
esac
if (($# > 1)); then
    { echo "$USAGE"; echo "gpu_check.sh: error: one DEVICE at most, got $#: $*"; } >&2
    exit 2
fi
if [[ -n "${1:-}" && ! "$1" =~ ^(cuda(:[0-9]+)?|cpu|mps|auto)$ ]]; then
    { echo "$USAGE"; echo "gpu_check.sh: error: unknown DEVICE '$1' (cuda, cuda:N, cpu, mps or auto)"; } >&2
    exit 2
fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DEVICE="${1:-cuda}"
OUT="${GPU_CHECK_OUT:-runs/gpu-check}"
PY="${PYTHON:-python3}"
WORKERS="${GPU_CHECK_WORKERS:-4}"
PHASES=" ${GPU_CHECK_PHASES:-tests train bench} "
export GPU_CHECK_PHASES="$PHASES"
mkdir -p "$OUT"
export MPLBACKEND=Agg SCRATCH_DOWNLOAD=0 PYTHONUNBUFFERED=1

PACKAGES=(shared-engine packages/scratch-mlp packages/scratch-cnn packages/scratch-rnn packages/scratch-transformer)
if "$PY" -c "import hatchling" 2>/dev/null; then
    "$PY" -m pip install --quiet --no-deps --no-build-isolation --no-index "${PACKAGES[@]}" || exit 1
    echo "installed the repository's packages into $("$PY" -c 'import sys; print(sys.prefix)')"
else
    PYTHONPATH="$(printf '%s/src:' "${PACKAGES[@]/#/$PWD/}")${PYTHONPATH:-}"
    export PYTHONPATH
    echo "no hatchling here: running the packages from their src/ folders (PYTHONPATH)"
fi
"$PY" - "$DEVICE" "$OUT" <<'PYEOF' || exit 1
import json, platform, sys, torch
from scratch_engine.tools.device import resolve_device
device = resolve_device(sys.argv[1])
name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
print(f"torch {torch.__version__} on {device} ({name})")
environment = {"torch": torch.__version__, "device": str(device), "platform": platform.platform()}
if device.type == "cuda":
    environment["cuda_device"] = name
open(f"{sys.argv[2]}/environment.json", "w").write(json.dumps(environment, indent=2))
PYEOF

# 1. parity tests (forward vs torch.nn, backward vs autograd, bfloat16 vs float32) with the GPU as default device
declare -A TESTS=(
    [engine]="shared-engine/tests/test_layers.py shared-engine/tests/test_activations.py shared-engine/tests/test_batchnorm.py shared-engine/tests/test_losses.py shared-engine/tests/test_metrics.py shared-engine/tests/test_optim.py shared-engine/tests/test_precision.py"
    [mlp]="packages/scratch-mlp/tests/test_model.py packages/scratch-mlp/tests/test_precision.py"
    [cnn]="packages/scratch-cnn/tests/test_conv.py packages/scratch-cnn/tests/test_pooling.py packages/scratch-cnn/tests/test_flatten.py packages/scratch-cnn/tests/test_precision.py"
    [rnn]="packages/scratch-rnn/tests/test_recurrent.py packages/scratch-rnn/tests/test_charlm.py packages/scratch-rnn/tests/test_precision.py"
    [transformer]="packages/scratch-transformer/tests/test_attention.py packages/scratch-transformer/tests/test_layers.py packages/scratch-transformer/tests/test_layernorm.py packages/scratch-transformer/tests/test_embedding.py packages/scratch-transformer/tests/test_feedforward.py packages/scratch-transformer/tests/test_model.py packages/scratch-transformer/tests/test_decoding.py packages/scratch-transformer/tests/test_precision.py"
)
XDIST=()
if "$PY" -c "import xdist" 2>/dev/null; then XDIST=(-n "$WORKERS"); fi
[[ "$PHASES" == *" tests "* ]] && for package in engine mlp cnn rnn transformer; do
    echo "== parity tests: $package on $DEVICE"
    # shellcheck disable=SC2086
    SCRATCH_TEST_DEVICE="$DEVICE" timeout 150 "$PY" -m pytest ${TESTS[$package]} -q -p no:cacheprovider "${XDIST[@]}" \
        --junitxml "$OUT/tests-$package.xml" > "$OUT/tests-$package.log" 2>&1
    tail -n 3 "$OUT/tests-$package.log"
done

# 2. a short training run of each package
run() {  # name, command...
    local name="$1"; shift
    echo "== train: $name"
    if timeout 120 "$@" --out "$OUT/train-$name" --quiet > "$OUT/train-$name.log" 2>&1; then
        tail -n 4 "$OUT/train-$name.log"
    else
        echo "FAILED: $*"; tail -n 20 "$OUT/train-$name.log"
    fi
}
if [[ "$PHASES" == *" train "* ]]; then
run mlp "$PY" -m scratch_mlp train mnist --device "$DEVICE" --dtype bfloat16 --epochs 1
run cnn "$PY" -m scratch_cnn train mnist --device "$DEVICE" --dtype bfloat16 --epochs 1
run rnn "$PY" -m scratch_rnn train shakespeare --arch lstm --device "$DEVICE" --max-steps 200
run transformer "$PY" -m scratch_transformer train eng-fra --device "$DEVICE" --dtype bfloat16 --max-steps 300 \
    --test-limit 200
fi

# 3. the benchmarks against torch.nn, on the device
[[ "$PHASES" == *" bench "* ]] && for package in mlp cnn rnn transformer; do
    echo "== bench: $package"
    timeout 120 "$PY" -m "scratch_$package.bench" --device "$DEVICE" --repeats 10 --json "$OUT/bench-$package.json" \
        > "$OUT/bench-$package.log" 2>&1 || { echo "FAILED"; tail -n 20 "$OUT/bench-$package.log"; }
done

# 4. one summary
"$PY" scripts/gpu_check_summary.py "$OUT" "$DEVICE"
