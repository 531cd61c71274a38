# Shared by the benchmark scripts beside it (sourced, not run): moves to the
# workspace root, checks for wrk and curl, builds the release daemon unless
# HOTSWAP_BIN names one, and sets COUNTER_V1 and COUNTER_V2 to the built
# test modules.

workspace=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
cd "$workspace"

for tool in wrk curl; do
    command -v "$tool" >/dev/null || { echo "$tool is needed (apt-get install -y $tool)" >&2; exit 1; }
done
if [ -z "${HOTSWAP_BIN:-}" ]; then
    cargo build --release -q -p hotswap-daemon
    HOTSWAP_BIN=target/release/hotswap
fi
HOTSWAP_BIN=$(realpath "$HOTSWAP_BIN")
eval "$(cargo run --release -q -p hotswap-bench --bin module-paths)"   # COUNTER_V1, COUNTER_V2

# A field `name=value` of a wrk RESULT line (see http_load.lua).
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }
# The median of numbers.
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
# The common part of one run's line: throughput, latency, errors.
run_line() {
    echo "run $1: $(field rps "$2") req/s, p50 $(field p50_us "$2") µs, p90 $(field p90_us "$2") µs," \
        "p99 $(field p99_us "$2") µs, max $(field max_us "$2") µs, non-2xx $(field non2xx "$2")," \
        "socket errors connect/read/write/timeout $(field connect "$2")/$(field read "$2")/$(field write "$2")/$(field timeout "$2")"
}
# Every add that wrk counted must be in the totals of the KEYS instances at
# URL (requests in flight when a run stopped were served but not counted: up
# to one per connection and run).
check_totals() {
    local url=$1 counted=$2 sum=0
    for k in $(seq 0 $((KEYS - 1))); do
        sum=$((sum + $(curl -sS --max-time 10 -X POST "$url/call/counter/get?instance=k$k")))
    done
    echo "state check: sum of the $KEYS totals $sum, adds counted by wrk $counted (difference $((sum - counted)))"
}
