#!/usr/bin/env bash
# Requests/s through the daemon's HTTP front, with and without swaps running.
#
#   crates/bench/scripts/http_load.sh
#
# Builds the release daemon (`cargo build --release -p hotswap-daemon`) and the
# release test modules, writes a config into a private temporary folder
# (mode 0700, loopback only), starts `hotswap serve`, and runs wrk
# (`apt-get install -y wrk`) with http_load.lua: keep-alive
# `POST /call/counter/add?instance=kN`, body "1", 16 instance keys.
#   run A: steady load;
#   run B: the same while a loop swaps counter v1 <-> v2 through the admin
#          API (`POST /v1/modules/counter/load` over the Unix socket), then
#          sleeps SWAP_PAUSE seconds, over and over.
# A and B alternate, REPEATS times each; medians are printed at the end. The
# daemon is stopped with SIGTERM (by its pid) when the script ends.
#
# Settings (environment): THREADS=2 CONNECTIONS=32 DURATION=10s REPEATS=3
# SWAP_PAUSE=0.1 KEYS=16 HOTSWAP_BIN=target/release/hotswap (skips the build
# of the daemon when set).
set -euo pipefail

THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-32}
DURATION=${DURATION:-10s}
REPEATS=${REPEATS:-3}
SWAP_PAUSE=${SWAP_PAUSE:-0.1}
KEYS=${KEYS:-16}

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=common.sh
source "$here/common.sh"

dir=$(mktemp -d /tmp/hotswap-http-load.XXXXXX)   # mode 0700
daemon_pid=
cleanup() {
    if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
        kill -TERM "$daemon_pid"
        for _ in $(seq 100); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -rf "$dir"
}
trap cleanup EXIT

mkdir -m 700 "$dir/modules" "$dir/versions"
install -m 644 "$COUNTER_V1" "$dir/modules/libcounter.so"
install -m 644 "$COUNTER_V1" "$dir/versions/counter-1.so"
install -m 644 "$COUNTER_V2" "$dir/versions/counter-2.so"
cat >"$dir/hotswap.toml" <<EOF
allowed_dirs = ["versions"]

[server]
listen = "127.0.0.1:0"

[admin]
socket = "hotswap.sock"

[state]
dir = "state"

[[module]]
name = "counter"
path = "modules/libcounter.so"
EOF

"$HOTSWAP_BIN" serve --config "$dir/hotswap.toml" --log-level warn 2>"$dir/daemon.log" &
daemon_pid=$!
socket="$dir/hotswap.sock"
admin() { curl -sS --max-time 10 --unix-socket "$socket" "$@"; }
status_field() { admin http://x/v1/status | sed -n "s/.*\"$1\": *\"\{0,1\}\([^\",]*\).*/\1/p" | head -1; }
for _ in $(seq 300); do
    admin http://x/v1/status >/dev/null 2>&1 && break
    kill -0 "$daemon_pid" 2>/dev/null || { cat "$dir/daemon.log" >&2; exit 1; }
    sleep 0.1
done
addr=$(status_field public_addr)
[ -n "$addr" ] || { echo "no public_addr in the status" >&2; cat "$dir/daemon.log" >&2; exit 1; }
url="http://$addr"

echo "machine: $(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), Linux $(uname -r)"
echo "wrk: $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2), $THREADS threads, $CONNECTIONS connections, $DURATION per run"
echo "daemon: $HOTSWAP_BIN (pid $daemon_pid) on $url"
echo "load: POST /call/counter/add?instance=k0..k$((KEYS - 1)), body \"1\""
echo

run_wrk() { HOTSWAP_KEYS=$KEYS wrk -t"$THREADS" -c"$CONNECTIONS" -d"$1" --latency -s "$here/http_load.lua" "$url" | grep '^RESULT'; }

# Swaps counter to v2, v1, v2, ... until $dir/stop exists; one HTTP code a line.
swap_loop() {
    local next=2
    while [ ! -e "$dir/stop" ]; do
        admin -o /dev/null -w '%{http_code}\n' -X POST -H 'Content-Type: application/json' \
            -d "{\"path\": \"$dir/versions/counter-$next.so\"}" \
            http://x/v1/modules/counter/load >>"$dir/swap-codes" || echo curl-failed >>"$dir/swap-codes"
        next=$((3 - next))
        sleep "$SWAP_PAUSE"
    done
}


counted=0
warm=$(run_wrk 2s)
counted=$((counted + $(field requests "$warm")))
declare -a a_rps a_p50 a_p99 b_rps b_p50 b_p99 b_swaps
for i in $(seq "$REPEATS"); do
    for run in A B; do
        swaps_before=$(status_field swaps)
        if [ "$run" = B ]; then
            rm -f "$dir/stop" "$dir/swap-codes"
            swap_loop &
            loop_pid=$!
        fi
        result=$(run_wrk "$DURATION")
        if [ "$run" = B ]; then
            touch "$dir/stop"
            wait "$loop_pid"
        fi
        swaps=$(( $(status_field swaps) - swaps_before ))
        counted=$((counted + $(field requests "$result")))
        line="$(run_line "$run$i" "$result"), swaps $swaps"
        if [ "$run" = B ]; then
            ok=$(grep -c '^200$' "$dir/swap-codes" || true)
            other=$(grep -vc '^200$' "$dir/swap-codes" || true)
            line="$line (admin loads: $ok answered 200, $other other)"
            b_rps+=("$(field rps "$result")"); b_p50+=("$(field p50_us "$result")")
            b_p99+=("$(field p99_us "$result")"); b_swaps+=("$swaps")
        else
            a_rps+=("$(field rps "$result")"); a_p50+=("$(field p50_us "$result")"); a_p99+=("$(field p99_us "$result")")
        fi
        echo "$line"
    done
done

echo
echo "medians of $REPEATS runs:"
echo "  A steady:          $(median "${a_rps[@]}") req/s, p50 $(median "${a_p50[@]}") µs, p99 $(median "${a_p99[@]}") µs"
echo "  B swapping:        $(median "${b_rps[@]}") req/s, p50 $(median "${b_p50[@]}") µs, p99 $(median "${b_p99[@]}") µs, $(median "${b_swaps[@]}") swaps per run"

check_totals "$url" "$counted"
echo "daemon: $(status_field swaps) swaps, $(status_field errors) call errors, last error: $(status_field last_error)"
