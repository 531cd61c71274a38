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
