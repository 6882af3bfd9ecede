#!/usr/bin/env bash
# The Prefect side of rtp-capture-tool, as an operator runs it (called by `make start|server|deploy|worker`).
#
#   desk.sh server   prefect server on the host:port of PREFECT_API_URL (foreground)
#   desk.sh deploy   the work pool (created once) + `prefect deploy --all` from this checkout
#   desk.sh worker   a process worker of the pool, running the flows from RTPHELPER_HOME (foreground)
#   desk.sh serve    `rtphelper serve`: the outputs of local sessions to browsers (signed links), SIP pcaps in
#   desk.sh start    all of the above on this machine; prints the UI address; Ctrl-C stops everything
#
# Environment (all optional):
#   PREFECT_API_URL          where the server answers (default http://127.0.0.1:4200/api)
#   RTPHELPER_WORK_POOL      the process work pool (default rtphelper, as in prefect.yaml)
#   RTPHELPER_WORK_QUEUES    worker only: queues to poll, space separated (default "default"), e.g. "EU" for a
#                            worker next to the EU media hosts, "default EU" for both (see prefect.yaml)
#   RTPHELPER_HOME           worker only: the checkout the flows run from (default: this checkout)
#   PY                       the Python with prefect installed (default .venv/bin/python of this checkout)
#   RTPHELPER_SERVE_ADDRESS  serve/start: where `rtphelper serve` listens (default 127.0.0.1:8765)
#   RTPHELPER_SERVE_URL      start: the address browsers reach it at (default http://<RTPHELPER_SERVE_ADDRESS>)
#   RTPHELPER_SERVE_SECRET   serve/start: the links' HMAC secret; `start` makes a random one for the session
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEFAULT_API_URL="http://127.0.0.1:4200/api"
HEALTH_TIMEOUT_S=5          # one health probe
STARTUP_TIMEOUT_S=120       # `start`: how long the server may take to answer
STOP_TIMEOUT_S=30           # `start`, Ctrl-C: how long each part may take to stop before it is killed

export PREFECT_API_URL="${PREFECT_API_URL:-$DEFAULT_API_URL}"
POOL="${RTPHELPER_WORK_POOL:-rtphelper}"
if [[ -z "${PY:-}" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY="python3"; fi
fi
# The flows and rtpcore of THIS checkout, before any installed copy (an editable install may point elsewhere).
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

die() { echo "desk: $*" >&2; exit 2; }

ui_url() { echo "${PREFECT_API_URL%/api}"; }

server_up() {
  "$PY" - "$PREFECT_API_URL" "$HEALTH_TIMEOUT_S" <<'EOF'
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1].rstrip("/") + "/health", timeout=float(sys.argv[2])) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception:
    sys.exit(1)
EOF
}

serve_up() {
  # any HTTP answer from `rtphelper serve` (an unsigned request gets 403) means it listens
  "$PY" - "$RTPHELPER_SERVE_URL" "$HEALTH_TIMEOUT_S" <<'EOF'
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(sys.argv[1].rstrip("/") + "/files/", timeout=float(sys.argv[2]))
except urllib.error.HTTPError:
    sys.exit(0)
except Exception:
    sys.exit(1)
EOF
}

require_server() {
  server_up || die "no Prefect server at $PREFECT_API_URL: run make server or set PREFECT_API_URL"
}

host_port() {
  # host and port of PREFECT_API_URL, e.g. "127.0.0.1 4200"
  "$PY" - "$PREFECT_API_URL" <<'EOF'
import sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
if u.scheme not in ("http", "https") or not u.hostname:
    sys.exit(f"PREFECT_API_URL={sys.argv[1]!r} is not an http(s) URL such as http://127.0.0.1:4200/api")
print(u.hostname, u.port or (443 if u.scheme == "https" else 80))
EOF
}

cmd_server() {
  if server_up; then die "a Prefect server already answers at $PREFECT_API_URL (UI $(ui_url))"; fi
  read -r host port < <(host_port) || die "cannot read host and port from PREFECT_API_URL=$PREFECT_API_URL"
  echo "desk: Prefect server on $host:$port (UI $(ui_url), API $PREFECT_API_URL)"
  # SQLite answers "database is locked" while a writer holds it; the server turns that into a 503 the UI shows as
  # "Oops. Something went wrong." Wait longer for the lock on a busy desk machine, and log each such 503.
  export PREFECT_SERVER_DATABASE_TIMEOUT="${PREFECT_SERVER_DATABASE_TIMEOUT:-30}"
  export PREFECT_SERVER_LOG_RETRYABLE_ERRORS="${PREFECT_SERVER_LOG_RETRYABLE_ERRORS:-true}"
  exec "$PY" -m prefect server start --host "$host" --port "$port"
}

cmd_deploy() {
  require_server
  cd "$ROOT"
  if ! "$PY" -m prefect work-pool inspect "$POOL" >/dev/null 2>&1; then
    "$PY" -m prefect work-pool create "$POOL" --type process
  fi
  # prefect deploy resets each schedule to prefect.yaml's `active:`; keep what was enabled/paused since.
  local states
  states="$(mktemp)"
  trap 'rm -f "$states"' RETURN
  "$PY" "$ROOT/scripts/schedule_states.py" save "$states"
  "$PY" -m prefect --no-prompt deploy --all
  "$PY" "$ROOT/scripts/schedule_states.py" restore "$states"
}

cmd_worker() {
  require_server
  export RTPHELPER_HOME="${RTPHELPER_HOME:-$ROOT}"
  [[ -d "$RTPHELPER_HOME/flows" ]] || die "RTPHELPER_HOME=$RTPHELPER_HOME is not a rtp-capture-tool checkout (no flows/): point it at one"
  RTPHELPER_HOME="$(cd "$RTPHELPER_HOME" && pwd)"  # the pull step runs in another folder: absolute
  export PYTHONPATH="$RTPHELPER_HOME${PYTHONPATH:+:$PYTHONPATH}"
  export PREFECT_LOGGING_EXTRA_LOGGERS="${PREFECT_LOGGING_EXTRA_LOGGERS:-rtpcore}"
  local queues="${RTPHELPER_WORK_QUEUES:-default}" args=(--pool "$POOL")
  for queue in $queues; do args+=(--work-queue "$queue"); done
  echo "desk: worker of pool $POOL (queues: $queues) runs flows from $RTPHELPER_HOME, API $PREFECT_API_URL"
  cd "$RTPHELPER_HOME"
  exec "$PY" -m prefect worker start "${args[@]}"
}

cmd_serve() {
  [[ -n "${RTPHELPER_SERVE_SECRET:-}" ]] || die "RTPHELPER_SERVE_SECRET is not set: set it (the same value for the worker and the laptops)"
  echo "desk: rtphelper serve on ${RTPHELPER_SERVE_ADDRESS:-127.0.0.1:8765} (links signed with RTPHELPER_SERVE_SECRET)"
  exec "$PY" -m rtpcore.cli serve
}

PIDS=()
cmd_start() {
  stop_all() {
    # Last started, first stopped: the worker leaves while the server still answers it (with the server gone first
    # it keeps retrying the API on its way out), then serve, then the server. One that does not end is killed.
    trap - INT TERM EXIT
    local i pid deadline
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
      pid="${PIDS[i]}"
      kill -TERM "$pid" 2>/dev/null || continue
      deadline=$((SECONDS + STOP_TIMEOUT_S))
      while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.5; done
      if kill -0 "$pid" 2>/dev/null; then
        echo "desk: process $pid did not stop within ${STOP_TIMEOUT_S}s of SIGTERM: killed" >&2
        kill -KILL "$pid" 2>/dev/null || true
      fi
    done
    wait || true
  }
  if server_up; then
    die "a Prefect server already answers at $PREFECT_API_URL: use make deploy and make worker with it, or set PREFECT_API_URL to a free port"
  fi
  trap stop_all INT TERM EXIT
  "$ROOT/scripts/desk.sh" server & PIDS+=($!)
  local deadline=$((SECONDS + STARTUP_TIMEOUT_S))
  until server_up; do
    kill -0 "${PIDS[0]}" 2>/dev/null || die "the Prefect server exited before answering at $PREFECT_API_URL"
    ((SECONDS < deadline)) || die "the Prefect server did not answer at $PREFECT_API_URL within ${STARTUP_TIMEOUT_S}s"
    sleep 1
  done
  "$ROOT/scripts/desk.sh" deploy
  # Output links of local sessions: the worker signs them, `rtphelper serve` answers them (one secret, this session).
  export RTPHELPER_SERVE_ADDRESS="${RTPHELPER_SERVE_ADDRESS:-127.0.0.1:8765}"
  export RTPHELPER_SERVE_URL="${RTPHELPER_SERVE_URL:-http://$RTPHELPER_SERVE_ADDRESS}"
  if [[ -z "${RTPHELPER_SERVE_SECRET:-}" ]]; then
    RTPHELPER_SERVE_SECRET="$("$PY" -c 'import secrets; print(secrets.token_urlsafe(32))')"
    export RTPHELPER_SERVE_SECRET
  fi
  "$ROOT/scripts/desk.sh" serve & PIDS+=($!)
  deadline=$((SECONDS + HEALTH_TIMEOUT_S * 6))
  until serve_up; do
    kill -0 "${PIDS[1]}" 2>/dev/null || die "rtphelper serve exited (is $RTPHELPER_SERVE_ADDRESS free? RTPHELPER_SERVE_ADDRESS picks another)"
    ((SECONDS < deadline)) || die "rtphelper serve did not answer at $RTPHELPER_SERVE_URL"
    sleep 1
  done
  "$ROOT/scripts/desk.sh" worker & PIDS+=($!)
  echo
  echo "desk: ready. Open the UI at $(ui_url)   (outputs served at $RTPHELPER_SERVE_URL; Ctrl-C stops everything)"
  wait -n "${PIDS[@]}" || true
}

case "${1:-}" in
  server) cmd_server ;;
  deploy) cmd_deploy ;;
  worker) cmd_worker ;;
  serve) cmd_serve ;;
  start) cmd_start ;;
  *) echo "usage: $0 server|deploy|worker|serve|start" >&2; exit 2 ;;
esac
