#!/usr/bin/env bash
# The whole benchmark from nothing, on this machine (task bench):
#   a fresh PostgreSQL database, a NATS JetStream server with file storage,
#   `wes api` and two `wes executor` processes (mock provider), then
#   1. the ceilings: PostgreSQL single-row inserts/s and JetStream publishes/s;
#   2. a sweep of `wes bench` over client concurrency (table, JSON lines, SVG chart);
#   3. memory: an idle executor's RSS, the API's peak RSS under load;
#      latency below capacity: submit, dispatch and end to end at BENCH_RATE/s;
#      the submission target: BENCH_SUBMIT_RATE/s offered by 64 clients;
#   4. scaling: slot-bound runs on one executor, then on two;
#   5. GET /runs latency over BENCH_FILL (1,000,000) runs;
#   6. submissions alone: the API with the executors paused, 64 clients.
#
#   bash deployments/bench.sh            # or: task bench
#
# Environment: BENCH_PG (admin URL, default postgres://postgres@127.0.0.1:5432/postgres),
# BENCH_LEVELS (default 1,4,16,64), BENCH_DURATION (per level, default 20s),
# BENCH_RATE (submissions/s of the below-capacity latency run, default 100),
# BENCH_SUBMIT_RATE (submissions/s offered by 64 clients in the sustained-rate run, default 3000),
# BENCH_PG_PARAMS (query of the wes processes' database URL, default ?sslmode=disable),
# BENCH_FILL (default 1000000; 0 skips the list benchmark), BENCH_OUT (default
# ./.wes-bench: results.jsonl, bench.svg, logs).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${BENCH_OUT:-$ROOT/.wes-bench}
PG=${BENCH_PG:-postgres://postgres@127.0.0.1:5432/postgres}
LEVELS=${BENCH_LEVELS:-1,4,16,64}
DURATION=${BENCH_DURATION:-20s}
FILL=${BENCH_FILL:-1000000}
RATE=${BENCH_RATE:-100}
SUBMIT_RATE=${BENCH_SUBMIT_RATE:-3000}
NATS_PORT=${BENCH_NATS_PORT:-4251}
API_ADDR=127.0.0.1:${BENCH_API_PORT:-5091}
DB=wes_bench_$$
mkdir -p "$OUT/logs"
rm -rf "$OUT/nats" "$OUT/runs"

NATS_SERVER=/usr/sbin/nats-server
[[ -x $NATS_SERVER ]] || NATS_SERVER=$(command -v nats-server) || { echo "bench: nats-server not found" >&2; exit 1; }

pids=()
cleanup() {
  # A paused executor takes its TERM only once it runs again.
  for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  psql "$PG" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$OUT/nats" "$OUT/runs"
}
trap cleanup EXIT

echo "== building wes"
(cd "$ROOT" && go build -o "$OUT/wes" ./cmd/wes)
WES=$OUT/wes

echo "== machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(psql "$PG" -Atc 'SHOW server_version' | cut -d' ' -f1 | sed 's/^/PostgreSQL /'), $($NATS_SERVER --version)"
psql "$PG" -qc "CREATE DATABASE $DB"
"$NATS_SERVER" -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$OUT/nats" >"$OUT/logs/nats.log" 2>&1 &
pids+=($!)

# Loopback: no TLS (the server may offer it; the handshake costs every connection).
export WES_DATABASE_URL=${PG%/*}/$DB${BENCH_PG_PARAMS-?sslmode=disable}
export WES_NATS_URL=nats://127.0.0.1:$NATS_PORT
export WES_NATS_NAMESPACE=BENCH
export WES_API_URL=http://$API_ADDR/ga4gh/wes/v1
export WES_LOG_LEVEL=warn
export DEFAULT_WES_PROVIDER=mock
export WES_WORK_DIR=$OUT/runs
for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null && break; sleep 0.1; done

"$WES" migrate up >/dev/null
WES_LISTEN_ADDR=$API_ADDR "$WES" api >"$OUT/logs/api.log" 2>&1 &
api=$!; pids+=($api)
# start_executor N [SLOTS]: executor bench-N, a child of this shell (so
# that it can be waited for), its pid in $started.
start_executor() {
  WES_EXECUTOR_ID=bench-$1 WES_EXECUTOR_SLOTS=${2:-32} WES_EXECUTOR_METRICS_ADDR=127.0.0.1:$((9470 + $1)) \
    "$WES" executor >"$OUT/logs/executor-$1.log" 2>&1 &
  started=$!
  pids+=($started)
}
start_executor 1; ex1=$started
start_executor 2; ex2=$started
for _ in $(seq 1 100); do
  curl -sf "$WES_API_URL/service-info" | grep -q '"mock"' && break
  sleep 0.2
done
curl -sf "$WES_API_URL/service-info" | grep -q '"mock"' || { echo "bench: the API did not list the mock engine"; tail "$OUT"/logs/*.log; exit 1; }

rss() { awk -v k="$2:" '$1 == k {printf "%.1f", $2/1024}' "/proc/$1/status"; }
sleep 3
echo "== memory: idle executor RSS $(rss "$ex1" VmRSS) MB, idle API RSS $(rss "$api" VmRSS) MB"

echo
echo "== ceilings (64 clients, 5 s each)"
"$WES" bench ceilings --concurrency 64 --duration 5s --json >"$OUT/ceilings.json"
"$WES" bench ceilings --concurrency 4 --duration 5s --json >>"$OUT/ceilings.json"
cat "$OUT/ceilings.json"
# The machine in the terms the targets were set in: pgbench, one single-row
# INSERT per transaction (~12,000 tx/s at 4 clients, ~6,000 at 1 where they
# were set), on the connection the wes processes use (no TLS). A pgbench
# that fails says so and the benchmark goes on.
if command -v pgbench >/dev/null; then
  echo "INSERT INTO pgbench_insert (v) VALUES ('x');" >"$OUT/pgbench-insert.sql"
  if psql "$WES_DATABASE_URL" -qc "CREATE TABLE pgbench_insert (id bigserial PRIMARY KEY, v text)"; then
    for c in 4 1; do
      if tps=$(pgbench -n -f "$OUT/pgbench-insert.sql" -c "$c" -j "$(( c < 2 ? 1 : 2 ))" -T 5 "$WES_DATABASE_URL" 2>"$OUT/logs/pgbench.err" |
        awk '/^tps/ {printf "%.0f", $3}') && [[ -n $tps ]]; then
        echo "pgbench insert-only, $c client(s): $tps tx/s"
      else
        echo "pgbench insert-only, $c client(s): failed (see $OUT/logs/pgbench.err)"
      fi
    done | tee "$OUT/pgbench.txt"
    psql "$WES_DATABASE_URL" -qc "DROP TABLE pgbench_insert" || true
  fi
fi
echo
echo "== sweep: zero-duration mock runs, $DURATION per level, concurrency $LEVELS"
"$WES" bench --concurrency "$LEVELS" --duration "$DURATION" --json --svg "$OUT/bench.svg" | tee "$OUT/results.jsonl"
python3 - "$OUT/results.jsonl" "$OUT/ceilings.json" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ceil = [json.loads(l) for l in open(sys.argv[2]) if l.strip()][0]
print()
print(f"{'clients':>7} {'submit/s':>9} {'p50':>6} {'p99':>6} {'disp p50':>8} {'disp p99':>8} {'e2e/s':>7} {'e2e p99':>8} {'errors':>6} {'of PG inserts':>13}")
for r in rows:
    print(f"{r['concurrency']:>7} {r['submit_per_sec']:>9.0f} {r['submit_p50_ms']:>6.1f} {r['submit_p99_ms']:>6.1f} "
          f"{r['dispatch_p50_ms']:>8.1f} {r['dispatch_p99_ms']:>8.1f} {r['e2e_per_sec']:>7.0f} {r['e2e_p99_ms']:>8.0f} "
          f"{r['errors_total']:>6} {100*r['submit_per_sec']/ceil['pg_insert_per_sec']:>12.0f}%")
print(f"(PostgreSQL alone: {ceil['pg_insert_per_sec']:.0f} single-row insert tx/s; JetStream alone: "
      f"{ceil['js_publish_per_sec']:.0f} publishes/s waiting for acks, {ceil['js_async_publish_per_sec']:.0f} async, with {ceil['concurrency']} clients)")
PY
echo "== memory: API peak RSS $(rss "$api" VmHWM) MB, executor peak RSS $(rss "$ex1" VmHWM) MB"

echo
echo "== latency below capacity: $RATE submissions/s for 20 s from 8 clients"
"$WES" bench --concurrency 8 --duration 20s --rate "$RATE" --json | tee "$OUT/rate.json" | python3 -c "
import json,sys
r=json.loads(sys.stdin.read())
print(f\"submit p50 {r['submit_p50_ms']:.1f} ms, p99 {r['submit_p99_ms']:.1f} ms; dispatch p50 {r['dispatch_p50_ms']:.1f} ms, p99 {r['dispatch_p99_ms']:.1f} ms; end to end p50 {r['e2e_p50_ms']:.1f} ms, p99 {r['e2e_p99_ms']:.1f} ms; {r['errors_total']} errors\")
"

echo
echo "== sustained: $SUBMIT_RATE submissions/s offered by 64 clients for 20 s"
"$WES" bench --concurrency 64 --duration 20s --rate "$SUBMIT_RATE" --json | tee "$OUT/sustained.json" | python3 -c "
import json,sys
r=json.loads(sys.stdin.read())
print(f\"{r['submit_per_sec']:.0f} submissions/s: p50 {r['submit_p50_ms']:.1f} ms, p99 {r['submit_p99_ms']:.1f} ms; {r['e2e_per_sec']:.0f} completed/s; {r['errors_total']} errors\")
"

echo
echo "== scaling: 400 mock runs of 250 ms, 16 slots per executor"
kill -TERM "$ex1" "$ex2"; wait "$ex1" "$ex2" 2>/dev/null || true
start_executor 1 16; ex1=$started
sleep 2
one=$("$WES" bench --concurrency 32 --runs 400 --mock-duration 250ms --json)
start_executor 2 16; ex2=$started
sleep 2
two=$("$WES" bench --concurrency 32 --runs 400 --mock-duration 250ms --json)
python3 -c "
import json,sys
a,b=json.loads(sys.argv[1]),json.loads(sys.argv[2])
print(f\"one executor: {a['e2e_per_sec']:.1f} runs/s; two executors: {b['e2e_per_sec']:.1f} runs/s; speed-up {b['e2e_per_sec']/a['e2e_per_sec']:.2f}x (ideal 2x: 64 slot-seconds/s)\")
" "$one" "$two"

if [[ $FILL -gt 0 ]]; then
  echo
  echo "== list: GET /runs over $FILL more runs"
  "$WES" bench fill --runs "$FILL"
  "$WES" bench list --page-size 100 | tee "$OUT/list.txt"
fi

# Last, because the runs it submits stay queued: the executors are paused
# (SIGSTOP keeps them listed for the registry's TTL, 30 s, so that the API
# still accepts the mock engine for these 20 s) and
# the API, NATS, PostgreSQL and the load generator have the machine to
# themselves.
echo
echo "== submissions alone: executors paused, 64 clients for 20 s"
kill -STOP "$ex1" "$ex2"
status=0
"$WES" bench --submit-only --concurrency 64 --duration 20s --json >"$OUT/alone.json" || status=$?
kill -CONT "$ex1" "$ex2"
[[ $status -eq 0 ]] || { echo "bench: submissions alone failed"; exit "$status"; }
python3 -c "
import json,sys
r=json.loads(sys.stdin.read())
print(f\"{r['submit_per_sec']:.0f} submissions/s: p50 {r['submit_p50_ms']:.1f} ms, p99 {r['submit_p99_ms']:.1f} ms; {r['errors_total']} errors\")
" <"$OUT/alone.json"
echo
echo "bench: results in $OUT (results.jsonl, ceilings.json, rate.json, sustained.json, alone.json, bench.svg, list.txt, logs/)"
