#!/usr/bin/env bash
# nirbench main job. On a fresh clone with only python3 (>= 3.11) it sets itself up in .venv from
# the pinned constraints.txt, runs the default grid on the embedded offline datasets (finished runs
# are skipped, interrupted ones resume), writes the tables and says where everything is.
#
#   ./run_all.sh            set up (once) + default grid + tables
#   ./run_all.sh --tests    set up (once) + the test suite (extra args go to pytest)
#   ./run_all.sh --setup    set up only
#   ./run_all.sh --help
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

VENV=.venv
PY="$VENV/bin/python"
STAMP="$VENV/.nirbench-install-stamp"
GRID=harness/configs/grids/default.yaml

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }

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

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  --setup) setup; exit 0 ;;
  --tests) shift; setup; ensure_chromium; exec "$PY" -m pytest "$@" ;;
  "") ;;
  *) echo "run_all.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
esac

setup
started=$SECONDS
status=0
progress=()
[ -t 2 ] || progress=(--no-progress)  # per-epoch bars only on a terminal; logs get one line per run
"$VENV/bin/nirbench" grid "$GRID" "${progress[@]}" || status=$?
"$VENV/bin/nirbench" aggregate --grid default --quiet
"$VENV/bin/nirbench" report --quiet
echo
echo "== main job took $((SECONDS - started))s"
echo "tables:    results/tables/table1.md (also .tex/.html/.csv; NIR vs baseline in comparison.md;"
echo "           best-test/ and best-val/ for the other model-selection policies)"
echo "report:    results/report/index.html (figures in results/report/figures/, PNG + PDF)"
echo "MLflow UI: $("$VENV/bin/nirbench" ui --quiet)   then open http://127.0.0.1:5000"
if [ "$status" -ne 0 ]; then
  echo "some runs FAILED (see above and their 'error' tag in MLflow); rerun ./run_all.sh to retry them" >&2
fi
exit "$status"
