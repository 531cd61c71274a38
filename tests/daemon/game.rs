//! The seed's demo, with the shipped config and the real game modules.

use crate::{Setup, json, modules};

const HELLO_1001: &str =
    "hello test, this is hotswap test!, version=1001, name=game1, oldversion=0, oldName=";
const HELLO_1002: &str =
    "hello test, this is hotswap test!, version=1002, name=game2, oldversion=1001, oldName=game1";

fn game_setup() -> Setup {
    let shipped = include_str!("../../examples/game/hotswap.toml");
    let config = shipped
        .replace("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:0\"")
        .replace("socket = \"run/hotswap.sock\"", "socket = \"hotswap.sock\"");
    assert_ne!(config, shipped, "the test adapts the shipped config");
    let setup = Setup::new(&config);
    setup.install(modules::GAME1, "libgame1.so");
    setup.install(modules::GAME2, "libgame2.so");
    setup
}

#[test]
fn hello_knows_what_it_replaced_and_the_game_survives_swaps_and_restarts() {
    let setup = game_setup();
    let daemon = setup.start();
    assert_eq!(daemon.text("GET", "/hello", ""), HELLO_1001);
    daemon.text("POST", "/join", "alice");
    daemon.text("POST", "/score", "alice 42");

    let swapped = daemon.text("GET", "/load?name=game2", "");
    assert!(swapped.starts_with("swapped game 1001 -> 1002"), "{swapped}");
    assert_eq!(daemon.text("GET", "/hello", ""), HELLO_1002);
    let state = json(daemon.text("GET", "/state", "").as_bytes());
    assert_eq!(state["players"][0]["name"], "alice");
    assert_eq!(state["players"][0]["score"], 42);
    assert_eq!(state["hits"], 2);

    // Only files in the demo's module folder can be named.
    assert_eq!(daemon.http("GET", "/load?name=../modules/game2", b"").0, 404);
    assert_eq!(daemon.http("GET", "/load?name=nothing", b"").0, 404);

    assert!(daemon.stop().success());
    let daemon = setup.start();
    // The restart runs what the route installed (issue 7, item 20), with its state.
    let state = json(daemon.text("GET", "/state", "").as_bytes());
    assert_eq!(state["players"][0]["name"], "alice", "restored into 1002: {state}");
    assert_eq!(state["players"][0]["score"], 42, "{state}");
    assert_eq!(daemon.text("GET", "/hello", ""), HELLO_1002);
    assert_eq!(daemon.status()["modules"][0]["origin"]["trigger"], "route");
}
