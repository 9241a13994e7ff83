#!/usr/bin/env bash
# The wheels scripts/gpu_check.sh installs on a GPU machine that has Python, CUDA PyTorch, numpy,
# scipy, pytest, hypothesis and the like, but no package index: the pure-Python packages it lacks
# (Sacred and its dependencies, `higher` for the benchmark's peer, setuptools < 82 because Sacred
# imports pkg_resources). Run it where pip can download, from the repository root:
#
#   scripts/gpu_wheels.sh            # into .whl/ (added to .git/info/exclude: never committed)
#   scripts/gpu_wheels.sh DIR        # into DIR
#
# Versions are constraints.txt's. They are all py3-none-any wheels, so the Python version and
# platform of the machine that downloads them do not matter. About 1.6 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${1:-.whl}"
packages=(sacred docopt-ng jsonpickle munch GitPython gitdb smmap setuptools higher)
pins=()
for name in "${packages[@]}"; do
  pin="$(grep -i "^${name}==" constraints.txt || true)"
  if [ -z "$pin" ]; then
    echo "gpu_wheels: constraints.txt does not pin $name" >&2
    exit 1
  fi
  pins+=("$pin")
done
mkdir -p "$dest"
python3 -m pip download -q --no-deps --only-binary=:all: -d "$dest" "${pins[@]}"
case "$(cd "$dest" && pwd)/" in
  "$PWD"/*)  # inside the checkout: keep it out of git without touching .gitignore
    exclude="$(git rev-parse --git-path info/exclude)"
    rel="/$(realpath --relative-to="$PWD" "$dest")/"
    mkdir -p "$(dirname "$exclude")"
    grep -qxF "$rel" "$exclude" 2>/dev/null || echo "$rel" >>"$exclude"
    ;;
esac
ls "$dest"
