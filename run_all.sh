#!/usr/bin/env bash
# nirbench main job. On a fresh clone with only python3 (>= 3.11) it sets itself up in .venv from
# the pinned constraints.txt, runs the default grid on the embedded offline datasets (finished runs
# are skipped, interrupted ones resume), writes the tables and says where everything is.
#
#   ./run_all.sh            set up (once: .venv, the embedded pretraining) + default grid + tables
#   ./run_all.sh --tests    set up (once) + the test suite (extra args go to pytest)
#   ./run_all.sh --setup    set up only (.venv, the embedded pretraining)
#   ./run_all.sh --profile paper|fair [--data-root DIR] [--datasets cub200,cars196,sop]
#                [--controls] [ARGS]
#                           the paper grid on the real datasets under DIR (ResNet50, presets in
#                           harness/configs/presets/); --controls adds the NIR arm without its flow
#                           (regularizer.flow=false: where NIR's effect comes from, issue 14);
#                           ARGS go to every `nirbench grid`
#   ./run_all.sh --help
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

VENV=.venv
PY="$VENV/bin/python"
STAMP="$VENV/.nirbench-install-stamp"
GRID=harness/configs/grids/default.yaml

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0" | sed 's/^# \{0,1\}//'; }

setup() {
  if ! command -v python3 >/dev/null; then
    echo "run_all.sh: python3 (>= 3.11) is required and was not found on PATH" >&2; exit 1
  fi
  if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "run_all.sh: python3 >= 3.11 is required, found $(python3 --version 2>&1)" >&2; exit 1
  fi
  if [ ! -x "$PY" ]; then
    echo "== creating $VENV"
    python3 -m venv "$VENV"
  fi
  # Reinstall only when the pins or the package metadata changed (or an earlier install broke).
  want="$(cat constraints.txt pyproject.toml | "$PY" -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')"
  if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ] || [ ! -x "$VENV/bin/nirbench" ]; then
    echo "== installing nirbench and its pinned dependencies into $VENV (first run only)"
    started=$SECONDS
    "$PY" -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
    echo "$want" > "$STAMP"
    echo "== set-up took $((SECONDS - started))s"
  fi
}

# Set-up, part two: the embedded pretraining the default grid's runs start from (the stand-in for
# downloading ImageNet weights; about 1 min on 2 cores, once per results folder), before the main
# job's clock starts.
# (`nirbench grid` prints how long it took when it had to build it.)
prepare() {
  "$VENV/bin/nirbench" grid "$GRID" --prepare-only
}

# The report test opens the HTML report in headless Chromium; a fresh CI machine has none. Install
# it from apt when we are root (otherwise that one test is skipped and says why).
ensure_chromium() {
  if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then return 0; fi
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "run_all.sh: chromium not found (not root or no apt-get): the browser test will be skipped" >&2
    return 0
  fi
  echo "== installing chromium (headless browser for the report test)"
  if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
         && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; then
    echo "run_all.sh: installing chromium failed: the browser test will be skipped" >&2
  fi
}

# The paper profile: check every requested dataset first (a missing or broken copy stops the job
# at once, with the expected layout and where to download it), then run the two arms of each
# dataset with their presets, then the tables and the report of that grid.
profile() {
  local variant="$1"; shift
  local data_root="" grid_name datasets="cub200,cars196,sop" extra=() controls=0
  while [ $# -gt 0 ]; do
    case "$1" in
      --data-root) data_root="${2:?--data-root needs a folder}"; shift 2 ;;
      --controls) controls=1; shift ;;
      --datasets) datasets="${2:?--datasets needs a comma-separated list}"; shift 2 ;;
      *) extra+=("$1"); shift ;;
    esac
  done
  case "$variant" in
    paper) grid_name=paper ;;
    fair) grid_name=paper-fair ;;
    *) echo "run_all.sh: unknown profile '$variant' (valid: paper, fair)" >&2; exit 2 ;;
  esac
  if [ -z "$data_root" ]; then
    data_root="${NIRBENCH_DATA:-data}"
    echo "== no --data-root given: looking for the datasets under $data_root/ (\$NIRBENCH_DATA)"
  fi
  # A partial copy (missing class ids, other image counts) stops the profile too, unless the
  # runs themselves are told to accept it (--set dataset.allow_partial=true): then the check
  # accepts it as well, and the runs are tagged dataset.partial=true.
  local ds failed=0 partial=() arg
  for arg in "${extra[@]}"; do
    [ "$arg" = "dataset.allow_partial=true" ] && partial=(--allow-partial)
  done
  for ds in ${datasets//,/ }; do
    echo "== checking $ds under $data_root"
    "$VENV/bin/nirbench" data check --dataset "$ds" --root "$data_root" "${partial[@]}" || failed=1
  done
  if [ "$failed" -ne 0 ]; then
    echo "run_all.sh: fix the datasets above (or restrict with --datasets) and start again" >&2
    exit 2
  fi
  local status=0 started=$SECONDS arm
  for ds in ${datasets//,/ }; do
    for arm in baseline nir; do
      "$VENV/bin/nirbench" grid "harness/configs/grids/$variant/$ds-$arm.yaml" \
        --set "dataset.root=$data_root" "${extra[@]}" || status=$?
    done
    if [ "$controls" -eq 1 ]; then  # the NIR arm exactly, minus the flow: the attribution ladder
      "$VENV/bin/nirbench" grid "harness/configs/grids/$variant/$ds-nir.yaml" \
        --set "dataset.root=$data_root" --set regularizer.flow=false "${extra[@]}" || status=$?
    fi
  done
  "$VENV/bin/nirbench" aggregate --grid "$grid_name" --quiet
  "$VENV/bin/nirbench" report --quiet
  echo "== profile $variant took $((SECONDS - started))s; tables in results/tables/, report in results/report/"
  exit "$status"
}

# The PostgreSQL store test starts its own throwaway server; install the binaries when we are
# root and they are missing (otherwise that one test is skipped and says why).
ensure_postgres() {
  if command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    return 0
  fi
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "run_all.sh: PostgreSQL not found (not root or no apt-get): its store test will be skipped" >&2
    return 0
  fi
  echo "== installing postgresql (throwaway server for the shared-store test)"
  if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
         && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }; then
    echo "run_all.sh: installing postgresql failed: its store test will be skipped" >&2
  fi
}

# The Slurm executor test starts its own one-node cluster (munged, slurmctld, slurmd on
# localhost); install Debian's Slurm 22.05 and munge when we are root and they are missing
# (about a minute; otherwise that test is skipped and says why).
ensure_slurm() {
  local have=1 bin
  for bin in slurmctld slurmd sbatch munged; do
    command -v "$bin" >/dev/null || [ -x "/usr/sbin/$bin" ] || have=0
  done
  if [ "$have" -eq 1 ]; then return 0; fi
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "run_all.sh: Slurm not found (not root or no apt-get): the Slurm test will be skipped" >&2
    return 0
  fi
  echo "== installing slurmctld, slurmd, slurm-client and munge (one-node cluster for the Slurm test)"
  if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
         && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client \
              munge >/dev/null; }; then
    echo "run_all.sh: installing Slurm failed: the Slurm test will be skipped" >&2
  fi
}

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  --setup) setup; prepare; exit 0 ;;
  --tests) shift; setup; ensure_chromium; ensure_postgres; ensure_slurm
    exec "$PY" -m pytest "$@" ;;
  --profile) shift; profile_name="${1:?--profile needs paper or fair}"; shift; setup
    profile "$profile_name" "$@" ;;
  "") ;;
  *) echo "run_all.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
esac

setup
prepare
started=$SECONDS
status=0
progress=()
[ -t 2 ] || progress=(--no-progress)  # per-epoch bars only on a terminal; logs get one line per run
# --workers auto: 2 worker processes on a multi-core CPU (one per GPU where there are GPUs).
"$VENV/bin/nirbench" grid "$GRID" --workers auto "${progress[@]}" || status=$?
"$VENV/bin/nirbench" aggregate --grid default --quiet
"$VENV/bin/nirbench" report --quiet
echo
echo "== main job took $((SECONDS - started))s"
echo "tables:    results/tables/table1.md (also .tex/.html/.csv; NIR vs baseline in comparison.md;"
echo "           best-test/ and best-val/ for the other model-selection policies)"
echo "report:    results/report/index.html (figures in results/report/figures/, PNG + PDF)"
echo "MLflow UI: $("$VENV/bin/nirbench" ui --quiet)   then open http://127.0.0.1:5000"
if [ "$status" -ne 0 ]; then
  echo "some runs FAILED (their 'error' tag in MLflow); interrupted runs resume on the next" \
       "./run_all.sh, failed ones only with: nirbench grid $GRID --retry-failed" >&2
fi
exit "$status"
