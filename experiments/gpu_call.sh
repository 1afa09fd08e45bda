#!/usr/bin/env bash
# One call on a lent GPU machine, which has its own python3 with torch, timm and torchvision and no
# package registry: unpack the data carried in .device/, make operad importable without installing
# anything, and run the GPU suite into $OUT (the folder the device tool brings back).
#
# On the GPU machine, from the project root (carry .device, packed by ../shared/tools/device-data cifar10,
# with airbench94.py beside it for the speed recipe's race):
#   bash experiments/gpu_call.sh 480                         # the suite within 480 s
#   bash experiments/gpu_call.sh 300 --sections camvid       # extra options go to operad gpu-suite
# Settings from the environment: OUT (default runs/gpu-call), DATA_DIR (/tmp/data), PYTHON (python3),
# PEER (default .device/airbench94.py where it exists), UNPACK=0 to use DATA_DIR as it is, SMOKE=1 for
# the CPU smoke mode.
set -euo pipefail
budget="${1:-480}"
shift || true
python="${PYTHON:-python3}"
data="${DATA_DIR:-/tmp/data}"
out="${OUT:-runs/gpu-call}/gpu/$(date -u +%Y-%m-%d)"
if [ "${UNPACK:-1}" != 0 ] && [ -f .device/unpack.py ]; then
    "$python" .device/unpack.py "$data"
fi
pkg="$(mktemp -d)"
trap 'rm -rf "$pkg"' EXIT
ln -s "$PWD" "$pkg/operad"  # the checkout is the package (package-dir "operad" = ".")
peer=()
if [ -n "${PEER:-}" ]; then
    peer=(--peer "$PEER")
elif [ -f .device/airbench94.py ]; then
    peer=(--peer .device/airbench94.py)
fi
smoke=()
if [ -n "${SMOKE:-}" ]; then
    smoke=(--smoke)
fi
PYTHONPATH="$pkg${PYTHONPATH:+:$PYTHONPATH}" "$python" -m operad.experiments.cli gpu-suite \
    --budget "$budget" --out "$out" --data "$data" "${smoke[@]}" "${peer[@]}" "$@"
echo "gpu-call: outputs in $out"
