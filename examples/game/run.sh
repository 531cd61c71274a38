#!/usr/bin/env bash
# The game demo: builds the daemon and both versions of the game module,
# puts the modules in examples/game/modules/, shows what to try, then runs
# the daemon in the foreground (Ctrl-C stops it and saves the state).
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
cargo build --release -p hotswap-daemon -p game1 -p game2

# The daemon refuses module files and folders that others could rewrite.
mkdir -p "$here/modules"
chmod 755 "$here/modules"
install -m 644 "$target/release/libgame1.so" "$target/release/libgame2.so" "$here/modules/"

hotswap="$target/release/hotswap"
config="examples/game/hotswap.toml"

cat <<TRY

The game demo serves on http://127.0.0.1:8080. In another terminal:

  curl -w '\n' 127.0.0.1:8080/hello
  curl -w '\n' -d alice 127.0.0.1:8080/join
  curl -w '\n' -d 'alice 120' 127.0.0.1:8080/score
  curl -w '\n' 127.0.0.1:8080/state

Swap to game2 (players become records with a level), keeping the state:

  curl -w '\n' '127.0.0.1:8080/load?name=game2'
  curl -w '\n' 127.0.0.1:8080/hello
  curl -w '\n' 127.0.0.1:8080/state

And back to game1:

  curl -w '\n' '127.0.0.1:8080/load?name=game1'

What runs, with counters (from $root):

  $hotswap status --config $config

Replace the daemon process itself, keeping the players and every connection
(the new process prints its log here too; it is no longer this terminal's
job, so stop it afterwards with kill \$(cat $here/run/hotswap.pid)):

  $hotswap --config $config upgrade
  curl -si -w '\n' 127.0.0.1:8080/state | grep -i -e hotswap-pid -e alice

Stop the daemon with Ctrl-C (it saves the state) and run this script again:
the players, their scores and the hit count come back from
$here/run/state. The daemon starts on the configured file,
modules/libgame1.so: stopped on game1, the hello line is the same as before;
stopped on game2, game1 takes over game2's state and says so.

TRY

exec "$hotswap" serve --config "$config"
