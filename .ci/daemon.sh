# Sourced by e2e/run.sh and .ci/schemathesis.sh: start a real `sluice
# serve` on a free loopback port and learn its address from the line it
# prints (`sluice listening on http://ADDR`).

# wait_for_line FILE PREFIX PID: prints the rest of the first line of FILE
# that starts with PREFIX; fails if PID ends first or after 30 s.
wait_for_line() {
  local file=$1 prefix=$2 pid=$3 line
  for _ in $(seq 1 300); do
    line="$(grep -m1 "^$prefix" "$file" 2>/dev/null || true)"
    if [[ -n "$line" ]]; then
      echo "${line#"$prefix"}"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "process $pid ended before it said '$prefix'" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "timed out waiting for '$prefix' in $file" >&2
  return 1
}

# serve_sluice BIN CONFIG WORK: starts the daemon (output in
# WORK/daemon.out and WORK/daemon.err) and sets SLUICE_PID and SLUICE_ADDR.
serve_sluice() {
  local bin=$1 config=$2 work=$3
  SLUICE_LOG=warn "$bin" serve --config "$config" --listen 127.0.0.1:0 \
    >"$work/daemon.out" 2>"$work/daemon.err" &
  SLUICE_PID=$!
  if ! SLUICE_ADDR="$(wait_for_line "$work/daemon.out" "sluice listening on http://" "$SLUICE_PID")"; then
    echo "the daemon did not start:" >&2
    tail -n 30 "$work/daemon.err" >&2
    kill "$SLUICE_PID" 2>/dev/null || true
    return 1
  fi
}
