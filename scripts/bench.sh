#!/usr/bin/env bash
# `make bench`: run every bench/*.py one after the other and collect what each prints, with the
# machine it ran on, into bench-results/ (one file per bench plus summary.txt).
#
#   BENCH_SIZE=full  (default) each bench's own default sizes: the figures in docs/performance.md
#   BENCH_SIZE=quick smaller sizes, for a first look (minutes instead of an hour)
#   BENCH_ONLY="store ingest"  run only these
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

VENV=${VENV:-.venv}
PY=$VENV/bin/python
OUT=${BENCH_OUT:-bench-results}
SIZE=${BENCH_SIZE:-full}
mkdir -p "$OUT"

# The peers measured beside ours (nfstream, cicflowmeter) live in the `bench` extra.
if ! "$PY" -c "import nfstream, cicflowmeter" 2>/dev/null; then
  echo "bench: installing the bench extra (nfstream, cicflowmeter)"
  "$VENV/bin/pip" install -q -e '.[bench]' || echo "bench: bench extra not installed; peers skipped" >&2
fi

declare -A QUICK=(
  [store]="--gb 0.05"
  [agent]="--rounds 1 --rss-flows 200000"
  [ingest]="--events 200000"
  [live]="--quick"
  [analysis]="--flows 50000 --seconds 10"
  [archive]="--mb 50"
  [dashboard]="--events 200000 --runs 10"
  [auth]="--requests 300 --records 500"
)

machine() {
  echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "nproc:   $(nproc)"
  echo "cpu:     $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "memory:  $(free -g | awk '/Mem:/ {print $2 " GiB"}')"
  echo "load:    $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "python:  $("$PY" --version 2>&1)"
}

summary=$OUT/summary.txt
{ echo "== machine"; machine; } | tee "$summary"
status=0
for script in bench/*.py; do
  name=$(basename "$script" .py)
  [[ $name == agent_pcapgen ]] && continue  # a helper of bench/agent.py, not a bench
  if [[ -n ${BENCH_ONLY:-} && " $BENCH_ONLY " != *" $name "* ]]; then
    continue
  fi
  args=""
  [[ $SIZE == quick ]] && args=${QUICK[$name]:-}
  echo "== $name: $PY $script $args (load before: $(cut -d' ' -f1 /proc/loadavg))" | tee -a "$summary"
  start=$(date +%s)
  # shellcheck disable=SC2086  # the size options are meant to split
  if ! "$PY" "$script" $args 2>&1 | tee "$OUT/$name.txt"; then
    echo "bench: $name FAILED (see $OUT/$name.txt)" | tee -a "$summary"
    status=1
  fi
  echo "   $name took $(($(date +%s) - start)) s, load after: $(cut -d' ' -f1 /proc/loadavg)" \
    | tee -a "$summary"
done
exit $status
