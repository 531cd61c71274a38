#!/usr/bin/env bash
# Requests/s through the daemon's HTTP front with wrk, steady and while the
# whole process is replaced (`POST /v1/upgrade`) about once a second: a
# cross-check of `upgrade-load` with a load generator that is not ours.
#
#   crates/bench/scripts/upgrade_load.sh
#
# Builds the release daemon (`cargo build --release -p hotswap-daemon`) and the
# release test modules, writes a config into a private temporary folder
# (mode 0700, loopback only; counter v1, no watch), starts `hotswap serve`, and
# runs wrk (`apt-get install -y wrk`) with http_load.lua: keep-alive
# `POST /call/counter/add?instance=kN`, body "1", 16 instance keys.
#   run A: steady load;
#   run B: the same while a loop upgrades the daemon through the admin API
#          (`POST /v1/upgrade` over the Unix socket, which answers once the
#          new process serves; each upgrade starts the same binary again),
#          then sleeps UPGRADE_PAUSE seconds, over and over.
# A and B alternate, REPEATS times each; medians are printed at the end. wrk
# reconnects when an answer says `Connection: close` (what the replaced
# process sends on its open connections). At the end the 16 totals must add
# up to the adds wrk counted; every replaced process must have exited; the
# serving one (its pid from `GET /v1/status`) gets SIGTERM.
#
# Settings (environment): THREADS=2 CONNECTIONS=32 DURATION=10s REPEATS=3
# UPGRADE_PAUSE=1 KEYS=16 HOTSWAP_BIN=target/release/hotswap (skips the build
# of the daemon when set).
set -euo pipefail

THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-32}
DURATION=${DURATION:-10s}
REPEATS=${REPEATS:-3}
UPGRADE_PAUSE=${UPGRADE_PAUSE:-1}
KEYS=${KEYS:-16}

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=common.sh
source "$here/common.sh"

dir=$(mktemp -d /tmp/hotswap-upgrade-load.XXXXXX)   # mode 0700
socket="$dir/hotswap.sock"
admin() { curl -sS --max-time 60 --unix-socket "$socket" "$@"; }
json_field() { sed -n "s/.*\"$1\": *\"\{0,1\}\([^\",]*\).*/\1/p" | head -1; }
status_field() { admin http://x/v1/status | json_field "$1"; }
# Every daemon pid this script started, one a line.
pids_file="$dir/pids"
stop_daemons() {
    local serving
    serving=$(status_field pid 2>/dev/null || true)
    # Replaced processes drain and exit by themselves (server.shutdown_timeout).
    for pid in $(cat "$pids_file" 2>/dev/null); do
        [ "$pid" = "$serving" ] && continue
        for _ in $(seq 150); do
            grep -q '^[^)]*) [^ZX]' "/proc/$pid/stat" 2>/dev/null || break
            sleep 0.1
        done
        if grep -q '^[^)]*) [^ZX]' "/proc/$pid/stat" 2>/dev/null; then
            echo "replaced process $pid still alive after 15 s; SIGTERM" >&2
            kill -TERM "$pid" || true
        fi
    done
    if [ -n "$serving" ] && grep -qx "$serving" "$pids_file" 2>/dev/null; then
        kill -TERM "$serving"
        for _ in $(seq 150); do grep -q '^[^)]*) [^ZX]' "/proc/$serving/stat" 2>/dev/null || break; sleep 0.1; done
        echo "daemon $serving stopped with SIGTERM"
    fi
}
cleanup() {
    stop_daemons || true
    rm -rf "$dir"
}
trap cleanup EXIT

mkdir -m 700 "$dir/modules"
install -m 644 "$COUNTER_V1" "$dir/modules/libcounter.so"
cat >"$dir/hotswap.toml" <<EOF
[server]
listen = "127.0.0.1:0"

[admin]
socket = "hotswap.sock"

[state]
dir = "state"

[[module]]
name = "counter"
path = "modules/libcounter.so"
watch = false
EOF

"$HOTSWAP_BIN" serve --config "$dir/hotswap.toml" --log-level warn 2>"$dir/daemon.log" &
echo $! >"$pids_file"
for _ in $(seq 300); do
    admin http://x/v1/status >/dev/null 2>&1 && break
    sleep 0.1
done
addr=$(status_field public_addr)
[ -n "$addr" ] || { echo "no public_addr in the status" >&2; cat "$dir/daemon.log" >&2; exit 1; }
url="http://$addr"

echo "machine: $(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), Linux $(uname -r)"
echo "wrk: $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2), $THREADS threads, $CONNECTIONS connections, $DURATION per run"
echo "daemon: $HOTSWAP_BIN (pid $(cat "$pids_file")) on $url"
echo "load: POST /call/counter/add?instance=k0..k$((KEYS - 1)), body \"1\"; run B upgrades, then sleeps ${UPGRADE_PAUSE}s, repeatedly"
echo

run_wrk() { HOTSWAP_KEYS=$KEYS wrk -t"$THREADS" -c"$CONNECTIONS" -d"$1" --latency -s "$here/http_load.lua" "$url" | grep '^RESULT'; }

# Upgrades until $dir/stop exists; one answer a line (the JSON, or an error).
upgrade_loop() {
    local answer
    while [ ! -e "$dir/stop" ]; do
        answer=$(admin -w ' %{http_code}' -X POST http://x/v1/upgrade | tr -d '\n ' || echo curl-failed)
        echo "$answer" >>"$dir/upgrades"
        json_field new_pid <<<"$answer" >>"$pids_file"
        sleep "$UPGRADE_PAUSE"
    done
}


counted=0
warm=$(run_wrk 2s)
counted=$((counted + $(field requests "$warm")))
declare -a a_rps a_p50 a_p99 b_rps b_p50 b_p99 b_ups
for i in $(seq "$REPEATS"); do
    for run in A B; do
        if [ "$run" = B ]; then
            rm -f "$dir/stop" "$dir/upgrades"
            touch "$dir/upgrades"
            upgrade_loop &
            loop_pid=$!
        fi
        result=$(run_wrk "$DURATION")
        ups=0
        if [ "$run" = B ]; then
            touch "$dir/stop"
            wait "$loop_pid"
            ok=$(grep -c '200$' "$dir/upgrades" || true)
            other=$(grep -vc '200$' "$dir/upgrades" || true)
            ups=$ok
            took=$(sed -n 's/.*"took_ms":\([0-9]*\).*/\1/p' "$dir/upgrades" | sort -n | tr '\n' ' ')
        fi
        counted=$((counted + $(field requests "$result")))
        line="$(run_line "$run$i" "$result")"
        if [ "$run" = B ]; then
            line="$line, upgrades $ok answered 200, $other other (took_ms: $took)"
            b_rps+=("$(field rps "$result")"); b_p50+=("$(field p50_us "$result")")
            b_p99+=("$(field p99_us "$result")"); b_ups+=("$ups")
        else
            a_rps+=("$(field rps "$result")"); a_p50+=("$(field p50_us "$result")"); a_p99+=("$(field p99_us "$result")")
        fi
        echo "$line"
    done
done

echo
echo "medians of $REPEATS runs:"
echo "  A steady:          $(median "${a_rps[@]}") req/s, p50 $(median "${a_p50[@]}") µs, p99 $(median "${a_p99[@]}") µs"
echo "  B upgrading:       $(median "${b_rps[@]}") req/s, p50 $(median "${b_p50[@]}") µs, p99 $(median "${b_p99[@]}") µs, $(median "${b_ups[@]}") upgrades per run"

check_totals "$url" "$counted"
echo "daemon: pid $(status_field pid), $(grep -c . "$pids_file") processes in all, $(status_field errors) call errors"
grep -i 'error\|warn' "$dir/daemon.log" | head -5 || true
