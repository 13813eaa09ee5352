#!/usr/bin/env bash
# wes as a small cluster on one machine, without Docker: a 3-node NATS
# JetStream cluster (deployments/nats/cluster), `wes migrate up`, two
# `wes api` replicas and three `wes executor` processes. Ctrl-C (or
# `local-cluster.sh down` from another shell) stops everything: executors
# first (they hand unfinished runs back), then the APIs, then NATS.
#
#   WES_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres bash deployments/local-cluster.sh [up]
#   bash deployments/local-cluster.sh down
#   WES_DATABASE_URL=… bash deployments/local-cluster.sh smoke
#
# smoke brings the cluster up with the mock provider, submits runs through
# both APIs, checks that every run completes and that the runs were spread
# over the executors, and stops the cluster again (CI runs it).
#
# Needs: go, curl, PostgreSQL at $WES_DATABASE_URL, and nats-server
# (/usr/sbin/nats-server or on PATH). Ports: NATS 4231-4233 (clients),
# 6231-6233 (routes), 8231-8233 (monitoring), API $WES_LISTEN_ADDR
# (default 127.0.0.1:5000). NATS data stays in $DIR/nats-{1,2,3}.
#
# Environment: DIR (default ./.wes-cluster) holds the binary, the logs
# ($DIR/logs/*.log) and the executors' run directories. Every other WES_*
# variable (e.g. DEFAULT_WES_PROVIDER=mock, WES_EXECUTOR_SHUTDOWN_GRACE) is
# passed through to the wes processes.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${DIR:-./.wes-cluster}
MODE=${1:-up}
mkdir -p "$DIR/logs"
DIR=$(cd "$DIR" && pwd)
LOGS=$DIR/logs

case $MODE in
  down)
    if [[ -f $DIR/cluster.pid ]] && kill -TERM "$(cat "$DIR/cluster.pid")" 2>/dev/null; then
      while kill -0 "$(cat "$DIR/cluster.pid")" 2>/dev/null; do sleep 0.2; done
      echo "local-cluster: stopped"
    else
      echo "local-cluster: not running"
    fi
    exit 0 ;;
  up) ;;
  smoke)
    export DEFAULT_WES_PROVIDER=mock
    # Few slots, so that the runs must spread over the executors.
    export WES_EXECUTOR_SLOTS=1
    # Streams of its own, so that nothing left in the NATS data dirs interferes.
    export WES_NATS_NAMESPACE=SMOKE$$ ;;
  *) echo "usage: local-cluster.sh [up|down|smoke]" >&2; exit 2 ;;
esac
: "${WES_DATABASE_URL:?is required, e.g. WES_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres}"
echo $$ >"$DIR/cluster.pid"

if [[ -x /usr/sbin/nats-server ]]; then
  NATS_SERVER=/usr/sbin/nats-server
elif NATS_SERVER=$(command -v nats-server); then
  :
else
  echo "local-cluster: nats-server not found (apt-get install nats-server)" >&2
  exit 1
fi
command -v curl >/dev/null || { echo "local-cluster: curl is required" >&2; exit 1; }

export WES_NATS_URL=nats://127.0.0.1:4231,nats://127.0.0.1:4232,nats://127.0.0.1:4233
export WES_NATS_REPLICAS=3
export WES_DATABASE_URL
API_ADDR=${WES_LISTEN_ADDR:-127.0.0.1:5000}
API2_ADDR=${WES_LISTEN_ADDR_2:-127.0.0.1:5001}

# Every background process gets its own process group (job control on), so
# that Ctrl-C reaches this script only and the stop below keeps its order.
set -m
nats_pids=() api_pids=() exec_pids=()

stop() {
  local p
  for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "$@"; do wait "$p" 2>/dev/null || true; done
}

cleanup() {
  trap - EXIT INT TERM
  echo "local-cluster: stopping" >&2
  stop ${exec_pids[@]+"${exec_pids[@]}"}
  stop ${api_pids[@]+"${api_pids[@]}"}
  stop ${nats_pids[@]+"${nats_pids[@]}"}
  rm -f "$DIR/cluster.pid"
  echo "local-cluster: stopped; logs in $LOGS" >&2
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_until SECONDS WHAT CHECK...: run CHECK until it succeeds; fail if it
# does not in time or if a process started here has died.
wait_until() {
  local timeout=$1 what=$2 p
  shift 2
  for ((i = 0; i < timeout * 4; i++)); do
    if "$@"; then return 0; fi
    for p in ${nats_pids[@]+"${nats_pids[@]}"} ${api_pids[@]+"${api_pids[@]}"} ${exec_pids[@]+"${exec_pids[@]}"}; do
      if ! kill -0 "$p" 2>/dev/null; then
        echo "local-cluster: a process died while waiting for $what; see $LOGS" >&2
        tail -n 5 "$LOGS"/*.log >&2
        return 1
      fi
    done
    sleep 0.25
  done
  echo "local-cluster: $what not ready after ${timeout}s; see $LOGS" >&2
  tail -n 5 "$LOGS"/*.log >&2
  return 1
}

nats_ready() {
  local n
  for n in 1 2 3; do
    curl -fsS "http://127.0.0.1:823$n/healthz" >/dev/null 2>&1 || return 1
  done
  # JetStream's meta group has elected a leader.
  curl -fsS http://127.0.0.1:8231/jsz 2>/dev/null | grep -q '"leader"'
}

api_ready() { curl -fsS "http://$1/readyz" >/dev/null 2>&1; }

echo "local-cluster: building $DIR/wes"
(cd "$ROOT" && go build -o "$DIR/wes" ./cmd/wes)

echo "local-cluster: starting NATS (clients on 127.0.0.1:4231-4233)"
# Each node keeps its JetStream data in $DIR (smoke: a fresh directory), not
# in the configuration's shared /tmp/wes-nats-N: streams that an earlier
# cluster left there must catch up before /healthz says ready, and could
# keep a new cluster from being ready at all.
sed_dir=${DIR//\\/\\\\}; sed_dir=${sed_dir//&/\\&}; sed_dir=${sed_dir//#/\\#}
for n in 1 2 3; do
  sed "s#^\( *store_dir:\).*#\1 \"$sed_dir/nats-$n\"#" "$ROOT/deployments/nats/cluster/nats-$n.conf" >"$DIR/nats-$n.conf"
  "$NATS_SERVER" -c "$DIR/nats-$n.conf" >"$LOGS/nats-$n.log" 2>&1 &
  nats_pids+=($!)
done
wait_until 30 "the NATS cluster" nats_ready

echo "local-cluster: migrating the database"
"$DIR/wes" migrate up

# The API first: it creates the streams and buckets, so that three processes
# do not race to create the same replicated stream (with which nats-server
# 2.9 may leave requests unanswered, and each process then retries after 10s).
echo "local-cluster: starting wes api on $API_ADDR and $API2_ADDR"
WES_LISTEN_ADDR=$API_ADDR "$DIR/wes" api >"$LOGS/api-1.log" 2>&1 &
api_pids+=($!)
wait_until 60 "the first API" api_ready "$API_ADDR"
WES_LISTEN_ADDR=$API2_ADDR "$DIR/wes" api >"$LOGS/api-2.log" 2>&1 &
api_pids+=($!)
wait_until 60 "the second API" api_ready "$API2_ADDR"

echo "local-cluster: starting executors exec-1, exec-2 and exec-3"
for n in 1 2 3; do
  WES_EXECUTOR_ID=exec-$n WES_DATA_DIR="$DIR/exec-$n" WES_EXECUTOR_METRICS_ADDR="127.0.0.1:946$n" \
    "$DIR/wes" executor >"$LOGS/exec-$n.log" 2>&1 &
  exec_pids+=($!)
done

if [[ $MODE == smoke ]]; then
  lists_mock() { WES_API_URL=http://$1/ga4gh/wes/v1 "$DIR/wes" service-info 2>/dev/null | grep -q '"mock"'; }
  smoke() {
    local wf=$DIR/smoke.cwl ids=() id n=0 api
    printf 'cwlVersion: v1.2\nclass: CommandLineTool\nbaseCommand: echo\ninputs: []\noutputs: []\n' >"$wf"
    for api in $API_ADDR $API2_ADDR; do
      wait_until 60 "the mock engine at $api" lists_mock "$api" || return 1
    done
    local e
    for e in 1 2 3; do
      wait_until 60 "executor exec-$e" curl -fsS -o /dev/null "http://127.0.0.1:946$e/readyz" || return 1
    done
    for i in $(seq 1 12); do
      api=$API_ADDR; ((i % 2)) || api=$API2_ADDR
      ids+=("$(WES_API_URL=http://$api/ga4gh/wes/v1 "$DIR/wes" runs submit "$wf" --engine-param duration=1s)")
    done
    for id in "${ids[@]}"; do
      if WES_API_URL=http://$API2_ADDR/ga4gh/wes/v1 timeout 120 "$DIR/wes" runs wait "$id" >/dev/null; then
        n=$((n + 1))
      fi
    done
    local used
    used=$(for id in "${ids[@]}"; do WES_API_URL=http://$API_ADDR/ga4gh/wes/v1 "$DIR/wes" runs get "$id"; done |
      grep -o 'on executor exec-[0-9]' | sort -u | wc -l)
    echo "local-cluster smoke: $n of ${#ids[@]} runs submitted through two APIs completed, on $used executors"
    [[ $n -eq ${#ids[@]} && $used -ge 2 ]]
  }
  if smoke; then echo "local-cluster smoke: passed"; exit 0; fi
  echo "local-cluster smoke: FAILED; see $LOGS" >&2
  tail -n 20 "$LOGS"/*.log >&2
  exit 1
fi

echo "local-cluster: ready: http://$API_ADDR/ga4gh/wes/v1 and http://$API2_ADDR/ga4gh/wes/v1 (logs in $LOGS; Ctrl-C or 'local-cluster.sh down' stops)"
# Wait until Ctrl-C or until one process exits, which stops the others.
set +e
wait -n
status=$?
set -e
echo "local-cluster: a process exited (status $status); see $LOGS" >&2
exit 1
