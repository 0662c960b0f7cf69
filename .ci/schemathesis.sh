#!/usr/bin/env bash
# Property-based API testing: schemathesis reads the daemon's own OpenAPI
# document (GET /api/v1/openapi.json) and throws valid and invalid requests
# at every operation of a real `sluice serve`. It fails on any 500, any
# status, content type, header or body that the document does not promise,
# and any invalid input that is not rejected with a 4xx.
#
# Usage: .ci/schemathesis.sh [more schemathesis options]
#   The script makes an admin token for the daemon it starts (`sluice token
#   create`), so every operation is reached with its role, and the
#   `ignored_auth` check proves each one refuses a request without it.
#   ST_MAX_EXAMPLES=30      examples per operation and phase
#   ST_SEED=20261124        Hypothesis seed (fixed: the same run every time)
#
# Needs python3 (with venv) and PyPI; schemathesis is installed into
# target/st-venv on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=.ci/daemon.sh
. .ci/daemon.sh

ST_VERSION='schemathesis==3.39.16'
# Newer Hypothesis releases dropped an internal that schemathesis 3 and
# hypothesis-jsonschema call ('many' object has no attribute 'more').
HYPOTHESIS='hypothesis==6.131.0'
VENV=target/st-venv
MAX_EXAMPLES="${ST_MAX_EXAMPLES:-30}"
SEED="${ST_SEED:-20261124}"
BIN="${CARGO_TARGET_DIR:-target}/debug/sluice"

if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -qF "${ST_VERSION#*==}" ||
  ! "$VENV/bin/pip" freeze 2>/dev/null | grep -qxF "$HYPOTHESIS"; then
  echo "== installing $ST_VERSION into $VENV"
  mkdir -p target
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "$ST_VERSION" "$HYPOTHESIS"
fi

echo "== building the daemon"
cargo build --quiet --bin sluice
WORK="$(mktemp -d)"
DAEMON_PID=""
cleanup() {
  if [ -n "$DAEMON_PID" ]; then
    kill "$DAEMON_PID" 2>/dev/null || true
    wait "$DAEMON_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
# A copy: a target directory shared with other builds may be rewritten
# while the daemon runs.
cp "$BIN" "$WORK/sluice"
BIN="$WORK/sluice"

# The names match the examples in the document (LIVE, orders, web-orders,
# generated-orders, receiver), so schemathesis's example phase reaches real resources: a
# webhook source and a generator source, both into a file target, and an
# HTTP endpoint on a closed loopback port (for test and reauthorize).
cat >"$WORK/sluice.toml" <<'TOML'
listen = "127.0.0.1:0"
data_dir = "data"

[sites.LIVE]
log_level = 4

[sites.LIVE.endpoints.shop]
kind = "webhook"

[sites.LIVE.endpoints.web-store]
kind = "generator"
count = 3

[sites.LIVE.endpoints.receiver]
kind = "file"
path = "received.jsonl"

[sites.LIVE.endpoints.partner]
kind = "http"
url = "http://127.0.0.1:9/records"
timeout = "1s"

[sites.LIVE.integrations.orders]
on_error = "block"

[[sites.LIVE.integrations.orders.flows]]
name = "web-orders"
source = "shop"
target = "receiver"
key = "id"

[[sites.LIVE.integrations.orders.flows]]
name = "generated-orders"
source = "web-store"
target = "receiver"
key = "id"

[[sites.LIVE.integrations.pushes.flows]]
name = "to-partner"
source = "shop"
target = "partner"
TOML

echo "== starting the daemon"
serve_sluice "$BIN" "$WORK/sluice.toml" "$WORK"
DAEMON_PID=$SLUICE_PID
ADDR=$SLUICE_ADDR
echo "daemon on http://$ADDR (pid $DAEMON_PID)"

SLUICE_TOKEN="$("$BIN" token create --config "$WORK/sluice.toml" --role admin --name schemathesis 2>/dev/null)"
AUTH="Authorization: Bearer $SLUICE_TOKEN"

# A few transactions, so that the examples' seq 1 exists.
curl -fsS -X POST -H 'Content-Type: application/json' \
  -d '[{"id": "A-1001"}, {"id": "A-1002"}]' "http://$ADDR/hooks/LIVE/orders/web-orders"
echo

ARGS=(
  "http://$ADDR/api/v1/openapi.json"
  # The document's paths are absolute (/api/v1/..., /hooks/...).
  --base-url "http://$ADDR"
  # utoipa 5 writes OpenAPI 3.1; schemathesis 3 reads it behind this flag.
  --experimental=openapi-3.1
  --validate-schema true
  --checks all
  # Valid and invalid data alike: invalid input must be a 4xx, never a 500.
  --data-generation-method all
  --hypothesis-max-examples "$MAX_EXAMPLES"
  --hypothesis-seed "$SEED"
  --request-timeout 10000
  # The log stream never ends by design (it is a live tail until the client
  # hangs up), and schemathesis reads whole bodies; its 400/404 answers
  # come from the same parsing as /log, which is tested.
  --exclude-path-regex '/log/stream$'
  --no-color
  # The Authorization header is ours to set (below), not generated: the
  # NUL and control bytes schemathesis puts in made-up ones are refused by
  # the HTTP parser itself (an empty 400 before any handler runs), which
  # says nothing of the API; ignored_auth covers requests without it.
  --generation-with-security-parameters false
)
# Replaced by no_undocumented_server_error (.ci/schemathesis_hooks.py):
# the webhook's documented 503 + Retry-After is an answer, not a crash.
ARGS+=(-H "$AUTH" --exclude-checks not_a_server_error "$@")

shown="${ARGS[*]}"
echo "== schemathesis ${shown//$SLUICE_TOKEN/***}"
status=0
SCHEMATHESIS_HOOKS=schemathesis_hooks PYTHONPATH=.ci \
  "$VENV/bin/schemathesis" run "${ARGS[@]}" || status=$?

# The log stream, left out above, by hand: its errors are JSON, and a good
# request opens an event stream (cut after a second).
expect() { # STATUS CONTENT-TYPE-PREFIX URL
  local got
  got="$(curl -sS -o /dev/null --max-time 1 -H "$AUTH" -w '%{http_code} %{content_type}' "$3" 2>/dev/null || true)"
  case "$got" in
    "$1 $2"*) echo "ok: $got  $3" ;;
    *) echo "FAILED: $3 answered '$got', expected $1 $2" >&2; status=1 ;;
  esac
}
expect 400 application/json "http://$ADDR/api/v1/sites/LIVE/log/stream?level=x"
expect 400 application/json "http://$ADDR/api/v1/sites/LIVE/log/stream?tail=-1"
expect 404 application/json "http://$ADDR/api/v1/sites/NOPE/log/stream"
expect 200 text/event-stream "http://$ADDR/api/v1/sites/LIVE/log/stream?tail=5"
# The run's own token still works (no generated request revoked it, so
# every operation was reached signed in), and without it: refused.
got="$(curl -sS -o /dev/null --max-time 2 -H "$AUTH" -w '%{http_code}' "http://$ADDR/api/v1/sites" || true)"
if [ "$got" != 200 ]; then
  echo "FAILED: the run's admin token no longer works ($got): the results above say little" >&2
  status=1
fi
got="$(curl -sS -o /dev/null --max-time 1 -w '%{http_code}' "http://$ADDR/api/v1/sites/LIVE/log/stream" || true)"
if [ "$got" != 401 ]; then
  echo "FAILED: the log stream without a token answered $got, expected 401" >&2
  status=1
fi

if ! kill -0 "$DAEMON_PID" 2>/dev/null; then
  echo "the daemon died during the run:" >&2
  tail -n 50 "$WORK/daemon.err" >&2
  status=1
fi
if grep -q "internal error" "$WORK/daemon.err"; then
  echo "the daemon logged internal errors:" >&2
  grep "internal error" "$WORK/daemon.err" | head -n 20 >&2
  status=1
fi
exit "$status"
