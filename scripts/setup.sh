#!/usr/bin/env bash
# Installs what robust-recipes needs on a fresh machine (Python >= 3.11):
#   - the real Fashion-MNIST IDX files (Debian package dataset-fashion-mnist),
#     where apt-get is available and we are root (else: set FASHION_MNIST_DIR,
#     or let tensorflow-datasets download it);
#   - TensorFlow (tensorflow[and-cuda] when an NVIDIA GPU is visible, else
#     tensorflow-cpu) and JAX (jax[cuda12] / jax[cpu]: the second Keras
#     backend, KERAS_BACKEND=jax), requirements.txt and requirements-test.txt
#     (the peer libraries ART and foolbox that the cross-library tests
#     compare with).
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
FMNIST=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
if [ ! -f "$FMNIST" ] && [ -z "${FASHION_MNIST_DIR:-}" ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist
  else
    echo "note: Fashion-MNIST IDX files not found; install the Debian" \
         "package dataset-fashion-mnist or set FASHION_MNIST_DIR" >&2
  fi
fi

if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  TF="tensorflow[and-cuda]>=2.21,<2.22"
  JAX="jax[cuda12]>=0.10"
else
  TF="tensorflow-cpu>=2.21,<2.22"
  JAX="jax[cpu]>=0.10"
fi
"$PY" -m pip install -q --disable-pip-version-check "$TF" "$JAX" \
  -r requirements.txt -r requirements-test.txt
