#!/usr/bin/env bash
# waybill-pipeline, locally, in one command.
#
#   ./run_local.sh [job options]   run the job on the local runner in streaming mode
#                                  (default: a synthetic day of 20,000 messages; --help lists options)
#   ./run_local.sh --batch [job options]
#                                  the same job in batch mode: every timer fires and
#                                  every output is complete; e.g. --days 5 for five synthetic days
#   ./run_local.sh --pubsub [--events N] [--measure] [job options]
#                                  the same job reading and writing Pub/Sub topics on a local
#                                  emulator, fed synthetic traffic (python -m pipeline.local.pubsub)
#   ./run_local.sh --test [pytest args]
#                                  run the test suite
#
# Creates .venv with the package and its test extras the first time (and again when setup.py
# changes); needs only python3 (3.10+) with venv.
set -euo pipefail
cd "$(dirname "$0")"

# Runs "$@" with its output in .venv/install.log, printing the log's newest step (a
# "Collecting ..." or "Installing ..." line) every 2 s meanwhile, so a long install is not silence.
logged_step() {
  "$@" >> .venv/install.log 2>&1 &
  local pid=$! shown=""
  while kill -0 "$pid" 2> /dev/null; do
    sleep 2
    local step
    step=$(grep -E '^(Collecting|Downloading|Building|Installing|Successfully)' .venv/install.log | tail -n 1 | cut -c1-100)
    if [ -n "$step" ] && [ "$step" != "$shown" ]; then echo "  $step" >&2; shown=$step; fi
  done
  wait "$pid"
}

install_failed() {
  tail -n 40 .venv/install.log >&2
  echo "Installing into .venv failed; the whole log is in .venv/install.log" >&2
  exit 1
}

if [ ! -x .venv/bin/python ] || [ setup.py -nt .venv/.installed ]; then
  echo "Setting up .venv (first run: about two minutes; the whole log goes to .venv/install.log)" >&2
  echo "[1/3] creating .venv" >&2
  python3 -m venv .venv
  : > .venv/install.log
  echo "[2/3] upgrading pip" >&2
  logged_step .venv/bin/python -m pip install --upgrade pip || install_failed
  echo "[3/3] installing the package and its test extras" >&2
  logged_step .venv/bin/python -m pip install -e '.[test]' || install_failed
  echo "Set up .venv." >&2
  touch .venv/.installed
fi

# Beam's DirectRunner with the local speed-ups (pipeline/local/runner/); --runner=... overrides it.
LOCAL_RUNNER=pipeline.local.runner.LocalRunner

if [ "${1:-}" = "--test" ]; then
  shift
  for arg in "$@"; do  # test paths given: run those only
    case "$arg" in tests|tests/*|./tests|./tests/*) exec .venv/bin/python -m pytest "$@" ;; esac
  done
  exec .venv/bin/python -m pytest tests "$@"
fi
if [ "${1:-}" = "--batch" ]; then
  shift
  exec .venv/bin/python -m pipeline --runner="$LOCAL_RUNNER" "$@"
fi
if [ "${1:-}" = "--pubsub" ]; then
  shift
  exec .venv/bin/python -m pipeline.local.pubsub "$@"
fi
exec .venv/bin/python -m pipeline --runner="$LOCAL_RUNNER" --streaming --replay_speed=3600 "$@"
