#!/usr/bin/env bash
# GPU smoke test (issue 13, item 7): one training step and one evaluation of each task family
# with --device cuda, on the embedded data, in a temporary run directory. Prints one line per
# command with its exit status (logs are kept in the temporary directory on failure).
#
# Commands whose CLI has no --device option (jiio eval generative|inverse|adversarial, and
# jiio train|eval meta) run on their default device, the CPU; the evaluations then load the
# checkpoints trained on the GPU.
#
# Usage: scripts/gpu_smoke.sh [PYTHON]   (default: .venv/bin/python if present, else python3)
# Without a CUDA device it prints that it skipped and exits 0; otherwise it exits 1 if any
# command failed.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=${1:-}
if [[ -z $py ]]; then
  if [[ -x $root/.venv/bin/python ]]; then py=$root/.venv/bin/python; else py=python3; fi
fi
if ! "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu_smoke: skipped (no CUDA device: torch.cuda.is_available() is False for $py)"
  exit 0
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/jiio-gpu-smoke.XXXXXX")
cd "$root" || exit 1
failed=0
n=0

run() {  # run LABEL ARGS...: one `jiio ARGS...` command, one status line
  local label=$1
  shift
  n=$((n + 1))
  local log=$tmp/$n.log
  local start=$SECONDS
  timeout 900 "$py" -c 'import sys; from jiio_tasks.cli import main; sys.exit(main())' "$@" >"$log" 2>&1
  local rc=$?
  local status=ok
  if [[ $rc -ne 0 ]]; then status=FAIL; failed=$((failed + 1)); fi
  printf '%-4s rc=%-3d %4ds  [%s] jiio %s\n' "$status" "$rc" $((SECONDS - start)) "$label" "$*"
  if [[ $rc -ne 0 ]]; then tail -n 5 "$log" | sed 's/^/       | /'; fi
}

cuda="cuda"
cpu="cpu: no --device option"
run "$cuda" train generative --run-dir "$tmp/gen" --steps 1 --batch-size 2 --iterations 2 \
  --no-progress --device cuda
run "$cpu" eval generative --weights "$tmp/gen/model.pt" --out "$tmp/gen-eval" --count 2 \
  --iterations 5 --adam-steps 2 --no-progress
run "$cuda" train inverse --task inpaint --run-dir "$tmp/inv" --steps 1 --batch-size 2 --iterations 2 \
  --no-progress --device cuda
run "$cpu" eval inverse --weights "$tmp/gen/model.pt" --supervised "inpaint=$tmp/inv/model.pt" \
  --out "$tmp/inv-eval" --count 2 --iterations 5 --tasks inpaint denoise0.2 --no-progress
run "$cuda" train adversarial --method jiio --run-dir "$tmp/adv" --steps 1 --batch-size 4 \
  --eval-size 8 --pgd-steps 2 --jiio-iterations 3 --no-progress --device cuda
run "$cpu" eval adversarial "$tmp/adv" --out "$tmp/adv-eval" --size 8 --pgd-steps 2 --jiio-iterations 3
run "$cpu" train meta --run-dir "$tmp/meta" --steps 1 --meta-batch 2 --eval-tasks 2 --no-progress
run "$cpu" eval meta --run-dir "$tmp/meta" --eval-tasks 2

if [[ $failed -eq 0 ]]; then
  echo "gpu_smoke: all $n commands passed"
  rm -rf "$tmp"
  exit 0
fi
echo "gpu_smoke: $failed of $n commands failed; logs in $tmp"
exit 1
