#!/usr/bin/env bash
# The GPU acceptance check: one script for a machine with a CUDA device, a Python that has CUDA
# PyTorch (and numpy, scipy, pytest, hypothesis, ...) but no package index. Prepare the missing
# pure-Python wheels where pip can download (scripts/gpu_wheels.sh → .whl/), then there, from a
# copy of the working tree with .whl/ beside it:
#
#   bash scripts/gpu_check.sh                        # outputs under $OUT (default ./gpu_check_out)
#   GESSL_CHECK_DEVICE=cpu bash scripts/gpu_check.sh # rehearsal without a GPU (tiny benchmark)
#
# Steps, each under its own time limit (together at most 8 minutes):
#   setup         a venv layered over that Python (its CUDA torch stays visible), the wheels and
#                 this package installed into it
#   tests         the device tests with GESSL_TEST_DEVICE=cuda (tests/gessl/test_devices.py,
#                 tests/experiments/test_device_check.py, tests/experiments/test_benchmark_peer.py)
#   device_check  python -m experiments.device_check: 3 float64 GeSSL steps give the same
#                 parameters on the CPU and on CUDA (≤ 1e-6 relative)
#   benchmark     python -m experiments.benchmark with profile=gpu (ResNet-18, float32 and bf16)
# Files under $OUT: <step>.txt for each step, device_check.json, benchmark_gpu.json (the run's
# result), summary.txt. Exit status 0 when every step passed, 1 otherwise, 2 when the machine
# has no usable Python/torch/CUDA. Variables: GESSL_GPU_PYTHON (default python3), GESSL_WHEELS
# (default .whl), GESSL_GPU_VENV (default /tmp/gessl-gpu-venv).
set -uo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
OUT="${OUT:-$root/gpu_check_out}"
mkdir -p "$OUT"
PY="${GESSL_GPU_PYTHON:-python3}"
WHEELS="${GESSL_WHEELS:-$root/.whl}"
VENV="${GESSL_GPU_VENV:-/tmp/gessl-gpu-venv}"
DEVICE="${GESSL_CHECK_DEVICE:-cuda}"
export PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=ci WANDB_MODE=disabled WANDB_SILENT=true
export MPLBACKEND=Agg PIP_DISABLE_PIP_VERSION_CHECK=1
export WANDB_DIR=/tmp/gessl-gpu-wandb GESSL_RUNS_DIR=/tmp/gessl-gpu-runs
start=$SECONDS
results=()

# step NAME LIMIT_S COMMAND...: run it with a time limit, output to the console and $OUT/NAME.txt
step() {
  local name="$1" limit="$2" t0=$SECONDS rc
  shift 2
  echo "=== $name (limit ${limit} s) ==="
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUT/$name.txt"
  rc=${PIPESTATUS[0]}
  [ "$rc" -eq 124 ] && echo "$name: stopped at its ${limit} s limit"
  results+=("$name: exit $rc, $((SECONDS - t0)) s")
  echo "=== $name: exit $rc after $((SECONDS - t0)) s ==="
  return "$rc"
}

if ! "$PY" -c 'import torch' 2>/dev/null; then
  echo "gpu_check: $PY cannot import torch (set GESSL_GPU_PYTHON)" >&2
  exit 2
fi
if [ "$DEVICE" = cuda ] && ! "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
  echo "gpu_check: torch.cuda.is_available() is False for $PY" >&2
  exit 2
fi

# where a venv cannot be made: the wheels in a folder on PYTHONPATH, the base Python itself
SITE=/tmp/gessl-gpu-site
fallback() {
  echo "gpu_check: no venv could be made; the wheels go to $SITE, used through PYTHONPATH"
  rm -rf "$SITE"
  mkdir -p "$SITE"
  if compgen -G "$WHEELS/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-cache-dir --target "$SITE" \
      "$WHEELS"/*.whl || return 1
  fi
}

setup() {
  rm -rf "$VENV"
  # --without-pip: no ensurepip needed; the base Python's pip and torch are reached through a
  # .pth that adds its site-packages after the venv's own (so the wheels below take precedence)
  if ! "$PY" -m venv --without-pip "$VENV"; then
    rm -rf "$VENV"
    fallback || return 1
    PYTHONPATH="$SITE:$root" "$PY" - <<<"$CHECK_IMPORTS"
    return
  fi
  local own base
  own="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  base="$("$PY" -c 'import site; print(site.getsitepackages() + [site.getusersitepackages()])')"
  echo "import site; list(map(site.addsitedir, $base))" >"$own/_gessl_base_python.pth"
  local vpy="$VENV/bin/python"
  if compgen -G "$WHEELS/*.whl" >/dev/null; then
    "$vpy" -m pip install -q --no-index --no-deps --no-cache-dir --ignore-installed \
      "$WHEELS"/*.whl || return 1
  else
    echo "gpu_check: no wheels in $WHEELS (scripts/gpu_wheels.sh makes them); using what $PY has"
  fi
  # the package itself, editable, built with the venv's setuptools (no index, no isolation)
  if ! "$vpy" -m pip install -q --no-index --no-deps --no-build-isolation -e "$root"; then
    echo "gpu_check: editable install failed; the checkout is put on the path instead"
    echo "$root" >"$own/_gessl_checkout.pth"
  fi
  "$vpy" - <<<"$CHECK_IMPORTS"
}
CHECK_IMPORTS=$(cat <<'EOF'
import importlib, sys
import torch
print(f"python {sys.version.split()[0]} at {sys.executable}")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, available: {torch.cuda.is_available()}")
if torch.cuda.is_available():
    print(f"device: {torch.cuda.get_device_name(0)}")
for name in ("numpy", "scipy", "sacred", "pytest", "hypothesis", "gessl", "higher"):
    try:
        with __import__("warnings").catch_warnings():
            __import__("warnings").simplefilter("ignore")
            mod = importlib.import_module(name)
        print(f"{name}: {getattr(mod, '__version__', 'ok')} ({mod.__file__})")
    except ImportError as err:
        print(f"{name}: MISSING ({err})")
        if name != "higher":
            sys.exit(1)
EOF
)
export -f setup fallback
export PY WHEELS VENV SITE root CHECK_IMPORTS
if ! step setup 60 bash -c setup; then
  echo "gpu_check: setup failed; nothing else can run" >&2
  printf '%s\n' "${results[@]}" >"$OUT/summary.txt"
  exit 1
fi
VPY="$VENV/bin/python"
if [ ! -x "$VPY" ]; then
  VPY="$PY"
  export PYTHONPATH="$SITE:$root${PYTHONPATH:+:$PYTHONPATH}"
fi

tests=()
for t in tests/gessl/test_devices.py tests/experiments/test_device_check.py \
  tests/experiments/test_benchmark_peer.py; do
  [ -f "$t" ] && tests+=("$t")
done
export GESSL_TEST_DEVICE="$DEVICE"
step tests 150 "$VPY" -m pytest -q -p no:cacheprovider "${tests[@]}"

step device_check 60 "$VPY" -m experiments.device_check --device "$DEVICE" \
  --json "$OUT/device_check.json"

if [ "$DEVICE" = cuda ]; then
  bench=(with profile=gpu)
else  # the rehearsal: the same command on the tiny CPU profile
  bench=(with profile=tiny 'methods=["simclr"]' memory=False bounds_end_to_end=False
    tasks_per_step=2 n_samples=8)
fi
rm -rf "$GESSL_RUNS_DIR"
step benchmark_gpu 210 "$VPY" -m experiments.benchmark "${bench[@]}"
run_json="$(ls -d "$GESSL_RUNS_DIR"/*/run.json 2>/dev/null | sort -V | tail -n 1)"
[ -n "$run_json" ] && cp "$run_json" "$OUT/benchmark_gpu.json"

{
  printf '%s\n' "${results[@]}"
  failed=$(printf '%s\n' "${results[@]}" | grep -vc ': exit 0,')
  echo "gpu_check on $DEVICE: $((${#results[@]} - failed))/${#results[@]} steps passed in $((SECONDS - start)) s"
} | tee "$OUT/summary.txt"
grep -q ': exit [^0]' "$OUT/summary.txt" && exit 1
exit 0
