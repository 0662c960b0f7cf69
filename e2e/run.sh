#!/usr/bin/env bash
# The dashboard's end-to-end test in a real Chromium.
#
#   bash e2e/run.sh            # screenshots in e2e/screenshots/
#   bash e2e/run.sh --docs     # also refreshes the README's pictures (docs/dashboard.png, docs/images/)
#
# Builds the daemon, writes a two-site configuration into a temporary folder,
# makes an admin, an operator and a viewer token, starts a
# small HTTP target and `sluice serve`, and a cluster of two nodes (n1, n2)
# on a PostgreSQL database it makes for them; runs e2e/dashboard.test.mjs
# against them, stops everything it started and drops the database.
# Screenshots go to e2e/screenshots/ and the README's pictures, with --docs,
# to docs/dashboard.png and docs/images/ (charts.png, errors.png).
#
# Needs: cargo, node >= 20 with npm, and Chromium (`apt-get install -y
# chromium`; another binary with CHROMIUM=/path/to/chrome). The cluster
# needs `psql` and PostgreSQL at SLUICE_E2E_PG_URL (default
# postgres://postgres@127.0.0.1:5432/postgres, a user that may create a
# database); without them its test is skipped, saying why.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
E2E="$ROOT/e2e"
# shellcheck source=../.ci/daemon.sh
. "$ROOT/.ci/daemon.sh"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET_DIR/debug/sluice"
export SLUICE_E2E_DOCS=""
if [[ "${1:-}" == "--docs" ]]; then
  SLUICE_E2E_DOCS=1
fi

if [[ ! -x "$CHROMIUM" ]]; then
  echo "e2e: no Chromium at $CHROMIUM (apt-get install -y chromium, or set CHROMIUM)" >&2
  exit 2
fi

echo "e2e: building the daemon"
(cd "$ROOT" && cargo build --quiet)

if [[ ! -d "$E2E/node_modules/playwright-core" ]]; then
  echo "e2e: installing playwright-core (npm ci)"
  (cd "$E2E" && npm ci --no-audit --no-fund --silent)
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/sluice-e2e.XXXXXX")"
PIDS=()
PG_URL="${SLUICE_E2E_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
CLUSTER_DB=
# A copy of the binary just built: a target folder shared with another
# checkout may get another build of it while the test runs.
cp "$BIN" "$WORK/sluice"
BIN="$WORK/sluice"
cleanup() {
  local status=$?
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
    # The node the test froze (SIGSTOP) takes its TERM when it wakes.
    kill -CONT "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [[ $status -ne 0 && -f "$WORK/daemon.err" ]]; then
    echo "e2e: the daemon's stderr (last lines):" >&2
    tail -n 30 "$WORK/daemon.err" >&2 || true
  fi
  for node in n1 n2; do
    if [[ $status -ne 0 && -s "$WORK/cluster/$node/err" ]]; then
      echo "e2e: node $node's stderr (last lines):" >&2
      tail -n 30 "$WORK/cluster/$node/err" >&2 || true
    fi
  done
  if [[ -n "$CLUSTER_DB" ]]; then
    psql "$PG_URL" -qc "DROP DATABASE IF EXISTS $CLUSTER_DB WITH (FORCE)" >/dev/null || true
  fi
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT

# The HTTP target of integrations `orders`, `contacts` and `signups`.
node "$E2E/receiver.mjs" >"$WORK/receiver.out" 2>&1 &
PIDS+=($!)
RECEIVER_PORT="$(wait_for_line "$WORK/receiver.out" "receiver listening on " "${PIDS[-1]}")"
# The test asks it what it took, and tells it when to take what it refused.
export SLUICE_E2E_RECEIVER="http://127.0.0.1:$RECEIVER_PORT"

# STAGE reads customers from a file, one JSON record a line.
for i in 1 2 3 4 5 6; do
  printf '{"id":"C-%d","name":"Customer %d","updated_at":"2026-11-2%dT10:00:00Z"}\n' "$i" "$i" "$i"
done >"$WORK/customers.jsonl"

CONFIG="$WORK/sluice.toml"
cat >"$CONFIG" <<TOML
listen = "127.0.0.1:0"
data_dir = "data"

# ---------------------------------------------------------------- LIVE
[sites.LIVE]
log_level = 4

[sites.LIVE.endpoints.shop]
kind = "webhook"                 # POST /hooks/LIVE/orders/web-orders

[sites.LIVE.endpoints.forms]
kind = "webhook"                 # POST /hooks/LIVE/contacts/contact-forms

[sites.LIVE.endpoints.web-store]
kind = "generator"
count = 3

[sites.LIVE.endpoints.fulfilment]
kind = "http"                    # the test's receiver, a few ms a record
url = "http://127.0.0.1:$RECEIVER_PORT/orders"

[sites.LIVE.endpoints.ledger]
kind = "file"
path = "stock.jsonl"

[sites.LIVE.endpoints.crm]
kind = "http"
url = "http://127.0.0.1:$RECEIVER_PORT/records"

[sites.LIVE.endpoints.signup-form]
kind = "webhook"                 # POST /hooks/LIVE/signups/newsletter

[sites.LIVE.endpoints.mailer]
kind = "http"                    # refuses records for two causes: the Errors panel
url = "http://127.0.0.1:$RECEIVER_PORT/signups"

[sites.LIVE.integrations.orders]
on_error = "skip"

[[sites.LIVE.integrations.orders.flows]]
name = "web-orders"
source = "shop"
target = "fulfilment"
key = "id"

[sites.LIVE.integrations.contacts]
on_error = "skip"

[[sites.LIVE.integrations.contacts.flows]]
name = "contact-forms"
source = "forms"
target = "crm"
key = "email"

[sites.LIVE.integrations.signups]
on_error = "skip"

[[sites.LIVE.integrations.signups.flows]]
name = "newsletter"
source = "signup-form"
target = "mailer"
key = "id"

[sites.LIVE.integrations.stock]
on_error = "block"

[[sites.LIVE.integrations.stock.flows]]
name = "stock-levels"
source = "web-store"
target = "ledger"
key = "id"

# ---------------------------------------------------------------- STAGE
[sites.STAGE]
log_level = 4

[sites.STAGE.endpoints.erp]
kind = "file"
path = "customers.jsonl"
page_size = 2

[sites.STAGE.endpoints.legacy]
kind = "http"                    # nothing listens there: Offline
url = "http://127.0.0.1:9/import"
probe_every = "1m"

# One endpoint of each kind that reaches a real system: the dashboard shows
# each one's state and last test (PostgreSQL and MariaDB run on every
# machine of this project, CI's included).
[sites.STAGE.endpoints.warehouse-db]
kind = "postgres"
url = "${SLUICE_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/test}"
table = "stock"
key = ["sku"]

[sites.STAGE.endpoints.shop-db]
kind = "mysql"
url = "${SLUICE_TEST_MYSQL_URL:-mysql://root@127.0.0.1:3306/test}"
table = "orders"

[sites.STAGE.endpoints.orders-api]
kind = "http_poll"
url = "http://127.0.0.1:$RECEIVER_PORT/records"
records = "/data"

[sites.STAGE.integrations.customers]
on_error = "skip"

[[sites.STAGE.integrations.customers.flows]]
name = "customers"
source = "erp"
target = "legacy"
schedule = "every 1h"
key = "id"
cursor = "updated_at"
TOML

SLUICE_ADMIN_TOKEN="$("$BIN" token create --config "$CONFIG" --role admin --name alice)"
SLUICE_OPERATOR_TOKEN="$("$BIN" token create --config "$CONFIG" --role operator --name olga)"
SLUICE_VIEWER_TOKEN="$("$BIN" token create --config "$CONFIG" --role viewer --name victor)"
export SLUICE_ADMIN_TOKEN SLUICE_OPERATOR_TOKEN SLUICE_VIEWER_TOKEN
echo "e2e: made tokens for alice (admin), olga (operator) and victor (viewer)"

serve_sluice "$BIN" "$CONFIG" "$WORK"
PIDS+=("$SLUICE_PID")
export SLUICE_URL="http://$SLUICE_ADDR"
export CHROMIUM
export SLUICE_E2E_WORK="$WORK"
echo "e2e: daemon on $SLUICE_URL, target on 127.0.0.1:$RECEIVER_PORT"

# ---------------------------------------------------------------- a cluster
# Two nodes of one site on a database of their own, in open mode (loopback,
# no tokens): the dashboard's Nodes panel and each integration's sender.
# The test freezes n2 (SIGSTOP to SLUICE_CLUSTER_N2_PID) to see it gone and
# n1 take over; cleanup wakes it to stop it.
start_node() {
  local name=$1 dir="$WORK/cluster/$1" pid addr
  mkdir -p "$dir"
  SLUICE_LOG=warn SLUICE_E2E_STORE_URL="$CLUSTER_URL" "$BIN" serve --config "$WORK/cluster/sluice.toml" \
    --node "$name" --data-dir "$dir/data" --listen 127.0.0.1:0 >"$dir/out" 2>"$dir/err" &
  pid=$!
  PIDS+=("$pid")
  addr="$(wait_for_line "$dir/out" "sluice listening on http://" "$pid")"
  NODE_URL="http://$addr"
  NODE_PID="$pid"
}
if ! command -v psql >/dev/null; then
  export SLUICE_CLUSTER_SKIP="no psql to make the cluster's database"
elif ! psql "$PG_URL" -qAtc 'SELECT 1' >/dev/null 2>"$WORK/psql.err"; then
  # Not the URL itself: it may hold a password.
  export SLUICE_CLUSTER_SKIP="cannot reach PostgreSQL (SLUICE_E2E_PG_URL): $(head -n 1 "$WORK/psql.err")"
else
  CLUSTER_DB="sluice_e2e_$$_$RANDOM"
  psql "$PG_URL" -qc "CREATE DATABASE $CLUSTER_DB" >/dev/null
  CLUSTER_URL="$(node -e 'const u = new URL(process.argv[1]); u.pathname = "/" + process.argv[2]; console.log(u.href)' \
    "$PG_URL" "$CLUSTER_DB")"
  mkdir -p "$WORK/cluster"
  cat >"$WORK/cluster/sluice.toml" <<TOML
listen = "127.0.0.1:0"
data_dir = "data"
store = "postgres"
store_url_env = "SLUICE_E2E_STORE_URL"
lease = "2s"

[sites.LIVE.endpoints.shop]
kind = "webhook"

[sites.LIVE.endpoints.forms]
kind = "webhook"

[sites.LIVE.endpoints.fulfilment]
kind = "http"
url = "http://127.0.0.1:$RECEIVER_PORT/orders"

[sites.LIVE.endpoints.crm]
kind = "http"
url = "http://127.0.0.1:$RECEIVER_PORT/records"

[sites.LIVE.integrations.orders]
[[sites.LIVE.integrations.orders.flows]]
name = "web-orders"
source = "shop"
target = "fulfilment"
key = "id"

[sites.LIVE.integrations.contacts]
[[sites.LIVE.integrations.contacts.flows]]
name = "contact-forms"
source = "forms"
target = "crm"
key = "email"
TOML
  start_node n1
  export SLUICE_CLUSTER_N1_URL="$NODE_URL"
  start_node n2
  export SLUICE_CLUSTER_N2_URL="$NODE_URL" SLUICE_CLUSTER_N2_PID="$NODE_PID"
  echo "e2e: cluster on database $CLUSTER_DB: n1 on $SLUICE_CLUSTER_N1_URL, n2 on $SLUICE_CLUSTER_N2_URL"
fi

mkdir -p "$E2E/screenshots" "$ROOT/docs"
cd "$E2E"
node --test --test-concurrency=1 --test-reporter=spec dashboard.test.mjs
