#!/usr/bin/env bash
# The dashboard's end-to-end test in a real Chromium.
#
#   bash e2e/run.sh            # screenshots in e2e/screenshots/
#   bash e2e/run.sh --docs     # also refreshes docs/dashboard.png (the README's)
#
# Builds the daemon, writes a two-site configuration into a temporary folder,
# makes an admin, an operator and a viewer token, starts a
# small HTTP target and `sluice serve`, runs e2e/dashboard.test.mjs against it
# and stops everything it started. Screenshots go to e2e/screenshots/ and the
# README's picture, with --docs, to docs/dashboard.png.
#
# Needs: cargo, node >= 20 with npm, and Chromium (`apt-get install -y
# chromium`; another binary with CHROMIUM=/path/to/chrome).
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
# A copy of the binary just built: a target folder shared with another
# checkout may get another build of it while the test runs.
cp "$BIN" "$WORK/sluice"
BIN="$WORK/sluice"
cleanup() {
  local status=$?
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [[ $status -ne 0 && -f "$WORK/daemon.err" ]]; then
    echo "e2e: the daemon's stderr (last lines):" >&2
    tail -n 30 "$WORK/daemon.err" >&2 || true
  fi
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT

# The HTTP target of integrations `orders` and `contacts`.
node "$E2E/receiver.mjs" >"$WORK/receiver.out" 2>&1 &
PIDS+=($!)
RECEIVER_PORT="$(wait_for_line "$WORK/receiver.out" "receiver listening on " "${PIDS[-1]}")"

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

mkdir -p "$E2E/screenshots" "$ROOT/docs"
cd "$E2E"
node --test --test-concurrency=1 --test-reporter=spec dashboard.test.mjs
