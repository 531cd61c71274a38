#!/usr/bin/env bash
# The game demo: builds the daemon and both versions of the game module,
# puts the modules in examples/game/modules/, starts the daemon, runs a
# 10-second tour (players score nonstop over HTTP and bots play over WebSockets
# while the daemon process is replaced and the game's code swapped; it checks
# that nothing was lost and no session was dropped by the swap), shows what
# to try, and keeps serving until Ctrl-C (which stops the daemon; it saves
# the state). `run.sh --no-tour` skips the tour.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

# Cargo reads a relative CARGO_TARGET_DIR against the current folder: pin it
# down before moving to the workspace root.
target="${CARGO_TARGET_DIR:-$root/target}"
case "$target" in
    /*) ;;
    *) target="$PWD/$target" ;;
esac
export CARGO_TARGET_DIR="$target"

cd "$root"
cargo build --release -p hotswap-daemon -p game1 -p game2 -p game-tour

# The daemon refuses module files and folders that others could rewrite.
mkdir -p "$here/modules"
chmod 755 "$here/modules"
install -m 644 "$target/release/libgame1.so" "$target/release/libgame2.so" "$here/modules/"

hotswap="$target/release/hotswap"
config="examples/game/hotswap.toml"
pid_file="$here/run/hotswap.pid"
log="$here/run/daemon.log"
mkdir -p "$here/run"

"$hotswap" serve --config "$config" 2> "$log" &
started=$!
# The daemon's pid changes with every upgrade: the pid file names the current one.
current() { cat "$pid_file" 2>/dev/null || echo "$started"; }
stop() {
    kill -TERM "$(current)" 2>/dev/null || true
    while kill -0 "$(current)" 2>/dev/null; do sleep 0.2; done
    exit "${1:-0}"
}
trap 'echo; stop 0' INT TERM
for _ in $(seq 1 100); do
    curl -sf -o /dev/null 127.0.0.1:8080/healthz && break
    kill -0 "$started" 2>/dev/null || { echo "the daemon did not start:"; cat "$log"; exit 1; }
    sleep 0.1
done
echo "The game demo serves on http://127.0.0.1:8080 (its log: $log)."
echo "Play it in a browser: http://127.0.0.1:8080/"

if [ "${1:-}" != "--no-tour" ]; then
    "$target/release/game-tour" 127.0.0.1:8080 "$hotswap" "$config" || stop 1
fi

cat <<TRY

Play it in a browser at http://127.0.0.1:8080/ (arrow keys move you), or in
another terminal:

  curl -w '\n' 127.0.0.1:8080/hello
  curl -w '\n' -d '{"name": "alice"}' 127.0.0.1:8080/join
  curl -w '\n' -d '{"name": "alice", "points": 120}' 127.0.0.1:8080/score
  curl -w '\n' 127.0.0.1:8080/state

Swap the game's code (game1 <-> game2, a different state layout), keeping the
state and every open WebSocket session (the page shows the new version):

  curl -w '\n' '127.0.0.1:8080/load?name=game1'
  curl -w '\n' 127.0.0.1:8080/hello
  curl -w '\n' '127.0.0.1:8080/load?name=game2'

Replace the daemon process itself, keeping the players, their state and every
open connection (WebSocket sessions and keep-alive HTTP connections move to the
new process with their sockets):

  $hotswap --config $config upgrade

What runs, with counters (from $root):

  $hotswap --config $config status

Ctrl-C here stops the daemon; it saves the state. Run this script again and
the players, their scores and the hit count come back from $here/run/state.
The daemon starts on the version that served last (kept with the state, see
\`hotswap status\`), or on modules/libgame1.so if that file changed since.

TRY

# Serve until Ctrl-C, following the daemon across upgrades.
while kill -0 "$(current)" 2>/dev/null; do sleep 1; done
echo "the daemon stopped; its log is $log"
