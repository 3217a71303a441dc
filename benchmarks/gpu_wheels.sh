#!/usr/bin/env bash
# The Python packages the lent GPU machine lacks, as wheels in .whl/ (ignored by git) for its Python 3.12:
# Keras at this checkout's version and its two dependencies that image does not hold (namex, optree). Then run
# the GPU script there in one call of the device tool, carrying .whl (see /work/.library/device/README.md):
#   benchmarks/gpu_wheels.sh
#   run(command='python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade
#        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit; benchmarks/gpu_round3.sh $OUT',
#       carry=['.whl'], timeout_s=600)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
keras_version=$($python -c "import keras; print(keras.__version__)")
rm -rf .whl && mkdir .whl
for package in "keras==$keras_version" "namex==0.1.0" "optree==0.20.0"; do
    $python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$package"
done
ls -l .whl
