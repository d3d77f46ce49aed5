#!/usr/bin/env bash
# The wheels that hebbjax needs on a GPU machine whose image already holds JAX (CUDA), flax,
# optax, orbax-checkpoint, numpy, pyarrow, protobuf, etils, absl-py, psutil, wrapt and the other
# common packages, but not Hydra or tensorflow-datasets (Python 3.12, x86-64). Run here, where pip
# reaches the registry; writes .whl/ (ignored by git) for `benchmarks/gpu/check.sh` to install.
# The versions are this machine's .venv (the ones the suite passed with).
#
#   bash benchmarks/gpu/wheels.sh            # then carry .whl to the GPU machine
set -euo pipefail
cd "$(dirname "$0")/../.."
py=.venv/bin/python
dest=.whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo /.whl/ >> .git/info/exclude; }
rm -rf "$dest"; mkdir -p "$dest"
version() { "$py" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"; }
# compiled: manylinux wheels for CPython 3.12
for name in array-record dm-tree; do
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$dest" "$name==$(version "$name")"
done
# pure Python (two of them, antlr4-python3-runtime and promise, are published as sources only)
pure=(hydra-core omegaconf antlr4-python3-runtime tensorflow-datasets tensorflow-metadata googleapis-common-protos
      immutabledict promise simple-parsing docstring-parser termcolor toml importlib-resources)
"$py" -m pip wheel -q --no-deps -w "$dest" $(for n in "${pure[@]}"; do echo "$n==$(version "$n")"; done)
du -sh "$dest"; ls "$dest"
