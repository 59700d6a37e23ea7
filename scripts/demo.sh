#!/usr/bin/env bash
# The demo: on a fresh machine (Python 3.11+ and the package index), install everything, start the
# bundled Log Search emulator, run `meltano run tap-rapid7 target-parquet-parts` twice (the second
# run only brings the events that arrived meanwhile: incremental state at work), check the dataset
# against the API's counts, draw the first run's timeline, stop the emulator and print a summary.
# Safe to run again: each invocation starts from a clean dataset and a cleared demo state.
# Everything it writes lands in demo-output/ (git-ignored); `rm -rf demo-output` removes it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh

PORT="${DEMO_PORT:-8765}"
OUT="demo-output"
STATE_ID="dev:tap-rapid7-to-target-parquet-parts"
export MELTANO_ENVIRONMENT=dev
export MELTANO_CLI_DISABLE_VERSION_CHECK=true
export MELTANO_SEND_ANONYMOUS_USAGE_STATS=false
if [ "$PORT" != 8765 ]; then
  export TAP_RAPID7_BASE_URL="http://127.0.0.1:$PORT"  # env beats meltano.yml's dev base_url
fi

say() { printf '\n== %s\n' "$*"; }

say "installing (dev venv for the emulator and tools, Meltano, then the plugins)"
INSTALL_LOG="$(mktemp)"
quietly() {  # run an install step; show its output only if it fails
  if ! "$@" >>"$INSTALL_LOG" 2>&1; then
    cat "$INSTALL_LOG" >&2; rm -f "$INSTALL_LOG"; echo "install step failed: $*" >&2; exit 1
  fi
}
quietly install_dev_env
quietly install_tool meltano 'meltano==4.4.1'
MELTANO="$PWD/.tools/meltano/bin/meltano"
PY="$PWD/.venv/bin/python"
quietly "$MELTANO" install
rm -f "$INSTALL_LOG"
echo "ok: .venv, .tools/meltano, .meltano/ (plugin venvs)"

rm -rf "$OUT"
mkdir -p "$OUT"

if "$PY" - "$PORT" <<'EOF'
import socket, sys
with socket.socket() as s:
    sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)
EOF
then
  echo "port $PORT on 127.0.0.1 is already in use; stop what listens there or set DEMO_PORT" >&2
  exit 1
fi

say "starting the Log Search emulator on 127.0.0.1:$PORT"
.venv/bin/tap-rapid7-emulator --port "$PORT" --api-key emulator-key --seed 7 \
  >"$OUT/emulator.log" 2>&1 &
EMULATOR_PID=$!
stop_emulator() {
  if kill -0 "$EMULATOR_PID" 2>/dev/null; then
    kill -TERM "$EMULATOR_PID" 2>/dev/null || true
    wait "$EMULATOR_PID" 2>/dev/null || true
  fi
}
trap stop_emulator EXIT
trap 'exit 130' INT TERM

# Wait until it answers an authenticated request (polling, bounded), or fail with its log.
"$PY" - "$PORT" "$EMULATOR_PID" <<'EOF' || { cat "$OUT/emulator.log" >&2; exit 1; }
import os, sys, time, urllib.request
port, pid = sys.argv[1], int(sys.argv[2])
request = urllib.request.Request(f"http://127.0.0.1:{port}/management/logs",
                                 headers={"X-Api-Key": "emulator-key"})
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit("the emulator exited before it was ready")
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            if response.status == 200:
                sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit("the emulator did not answer within 60 s")
EOF

"$MELTANO" state clear --force "$STATE_ID" >/dev/null 2>&1 || true

run_pipeline() {  # $1 = run number; the full Meltano output goes to demo-output/run-N.log
  local started ended
  started=$(date +%s)
  if ! "$MELTANO" run tap-rapid7 target-parquet-parts >"$OUT/run-$1.log" 2>&1; then
    tail -n 40 "$OUT/run-$1.log" >&2
    echo "meltano run $1 failed; full log: $OUT/run-$1.log" >&2
    exit 1
  fi
  ended=$(date +%s)
  "$PY" - "$OUT/dataset" "$1" "$((ended - started))" "$OUT/run-$1.log" <<'EOF'
import sys
from pathlib import Path
import pyarrow.dataset as ds
root, run, seconds, log = Path(sys.argv[1]), sys.argv[2], sys.argv[3], Path(sys.argv[4])
files = sorted(str(p) for p in (root / "events").rglob("part-*.parquet"))
rows = ds.dataset(files, format="parquet").count_rows() if files else 0
pages = sum("logsearch_page_complete" in line for line in log.open())
new = sum(int(word.split("=", 1)[1]) for line in log.open() if "logsearch_window_complete" in line
          for word in line.split() if word.startswith("events="))
print(f"run {run}: {seconds}s, {new} new events in {pages} pages; "
      f"the dataset now holds {rows} events in {len(files)} parts")
EOF
}

say "run 1: meltano run tap-rapid7 target-parquet-parts (first sync, from start_date)"
run_pipeline 1
say "run 2: the same command again (resumes from the saved state: only new events)"
run_pipeline 2

say "checking the dataset against the API's counts (tap-rapid7-reconcile)"
# Fast polls: the emulator answers at once, the default 1-5 s poll interval only adds silence.
printf '{"api_key": "emulator-key", "base_url": "http://127.0.0.1:%s", "poll_interval_seconds": 0.05, "poll_interval_max_seconds": 0.2}\n' "$PORT" \
  >"$OUT/tap-config.json"
RECONCILE_STATUS=0
.venv/bin/tap-rapid7-reconcile --config "$OUT/tap-config.json" --dataset "$OUT/dataset" \
  --clocks >"$OUT/reconcile.txt" 2>&1 || RECONCILE_STATUS=$?

.venv/bin/tap-rapid7-timeline "$OUT/run-1.log" -o "$OUT/timeline-run-1.png" \
  --title "demo run 1: query polling, pages and flushes" >/dev/null

"$MELTANO" state get "$STATE_ID" >"$OUT/state.json" 2>/dev/null
stop_emulator

say "summary"
"$PY" - "$OUT" <<'EOF'
import json, sys
from datetime import datetime, timezone
from pathlib import Path
import pyarrow.dataset as ds
import pyarrow.compute as pc

out = Path(sys.argv[1])
root = out / "dataset"
def iso(ms):
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="seconds")
print(f"dataset: {root}/")
for stream in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("_")):
    files = sorted(str(p) for p in stream.rglob("part-*.parquet"))
    dataset = ds.dataset(files, format="parquet")
    rows = dataset.count_rows() if files else 0
    line = f"  {stream.name:<8} {len(files):>3} parts {rows:>8} rows"
    if stream.name == "events" and rows:
        identity = ["log_id", "timestamp", "sequence_number_str"]  # an entry's identity
        table = dataset.to_table(columns=[*identity, "event_time"])
        span = pc.min_max(table["timestamp"]).as_py()
        logs = len(pc.unique(table["log_id"]))
        keys = table.group_by(identity).aggregate([]).num_rows
        timed = rows - table["event_time"].null_count
        line += (f" ({keys} distinct keys, {timed} with an event_time), {logs} logs, received "
                 f"{iso(span['min'])} .. {iso(span['max'])}")
    elif rows and "id" in dataset.schema.names:
        ids = len(pc.unique(dataset.to_table(columns=["id"])["id"]))
        line += f" ({ids} distinct ids: a full snapshot per run)"
    print(line)
state = json.loads((out / "state.json").read_text())
print("state (meltano state get dev:tap-rapid7-to-target-parquet-parts), per log:")
for partition in state["singer_state"]["bookmarks"]["events"].get("partitions", []):
    context, bookmark = partition.get("context", {}), dict(partition)
    for drop in ("context", "replication_key", "replication_key_signpost",
                 "starting_replication_value", "progress_markers"):
        bookmark.pop(drop, None)
    nxt = bookmark.get("next_from_millis")
    shown = ", ".join(f"{k}={v if v != '' else '(none)'}" for k, v in bookmark.items())
    print(f"  {context.get('log_id', context)}: {shown}" + (f"  ({iso(int(nxt))})" if nxt else ""))
EOF
echo "reconcile (tap-rapid7-reconcile, exit status $RECONCILE_STATUS):"
sed -n '1,60p' "$OUT/reconcile.txt" | sed 's/^/  /'
echo "timeline of run 1: $OUT/timeline-run-1.png; Meltano logs: $OUT/run-1.log, $OUT/run-2.log"
echo "emulator stopped. Query the dataset with DuckDB (installed in .venv):"
echo "  .venv/bin/python -c \"import duckdb; duckdb.sql(\\\"select log_id, count(*) from '$OUT/dataset/events/**/*.parquet' group by 1\\\").show()\""
exit "$RECONCILE_STATUS"
