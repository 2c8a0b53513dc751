#!/usr/bin/env bash
# Build a learn2learn 0.2.0 wheel that works on Python >= 3.11 and cache it in a wheelhouse.
#
# Why: learn2learn 0.2.0 ships no wheel for 3.11+, and the C files generated into its sdist
# do not compile against CPython 3.11. We regenerate them with Cython 3, and drop the
# `gsutil` and `qpth` requirements (only used for dataset downloads and MetaOptNet, neither
# of which jiio uses).
#
# Usage: scripts/build_learn2learn.sh PYTHON WHEELHOUSE
set -euo pipefail
py=${1:?usage: build_learn2learn.sh PYTHON WHEELHOUSE}
wheelhouse=${2:?usage: build_learn2learn.sh PYTHON WHEELHOUSE}
version=0.2.0
mkdir -p "$wheelhouse"
tag=$("$py" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
if ls "$wheelhouse"/learn2learn-"$version"-"$tag"-*.whl >/dev/null 2>&1; then
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$py" -m pip download --quiet --no-deps --no-binary :all: "learn2learn==$version" -d "$work"
tar -xzf "$work/learn2learn-$version.tar.gz" -C "$work"
src="$work/learn2learn-$version"
rm -f "$src"/learn2learn/data/*.c
"$py" - "$src/setup.py" <<'PY'
import re, sys
path = sys.argv[1]
text = open(path, encoding="utf8").read()
text = re.sub(r"use_cython = .*", "use_cython = True", text, count=1)
for dep in ("gsutil", "qpth>=0.0.15"):
    text = text.replace(f"'{dep}',", "")
open(path, "w", encoding="utf8").write(text)
PY
"$py" -m pip install --quiet "cython>=3,<4" numpy setuptools wheel
"$py" -m pip wheel --quiet --no-deps --no-build-isolation -w "$wheelhouse" "$src"
