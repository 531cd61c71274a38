//! The seed's demo, with the shipped config and the real game modules.

use crate::{Setup, json, modules};

// `hello` replies the seed's line as a JSON string.
const HELLO_1001: &str =
    r#""hello test, this is hotswap test!, version=1001, name=game1, oldversion=0, oldName=""#;
const HELLO_1002: &str =
    r#""hello test, this is hotswap test!, version=1002, name=game2, oldversion=1001, oldName=game1""#;

pub(crate) fn game_setup() -> Setup {
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
    assert_eq!(daemon.text("POST", "/join", r#"{"name": "alice"}"#), r#""alice joined; 1 in the game""#);
    let scored = daemon.text("POST", "/score", r#"{"name": "alice", "points": 42}"#);
    assert_eq!(scored, r#"{"name":"alice","score":42}"#);

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

#[test]
fn a_swap_back_to_game1_keeps_every_score_and_bad_bodies_are_refused_with_their_reason() {
    let setup = game_setup();
    let daemon = setup.start();
    for name in ["zoe", "alice"] {
        daemon.text("POST", "/join", &format!(r#"{{"name": "{name}"}}"#));
    }
    daemon.text("POST", "/score", r#"{"name": "zoe", "points": 99}"#);

    // game2 lines game1's players up by name and gives each a level.
    assert!(daemon.text("GET", "/load?name=game2", "").starts_with("swapped game 1001 -> 1002"));
    let scored = daemon.text("POST", "/score", r#"{"name": "zoe", "points": 1}"#);
    assert_eq!(scored, r#"{"name":"zoe","score":100,"level":2,"level_up":true}"#);
    assert_eq!(daemon.text("POST", "/join", r#"{"name": "bob"}"#), r#""bob joined as player 3""#);
    let state = json(daemon.text("GET", "/state", "").as_bytes());
    let players: Vec<(&str, u64)> = state["players"]
        .as_array()
        .unwrap()
        .iter()
        .map(|player| (player["name"].as_str().unwrap(), player["score"].as_u64().unwrap()))
        .collect();
    assert_eq!(players, [("alice", 0), ("zoe", 100), ("bob", 0)], "{state}");

    // Refusals: 422 with the reason, and the state as it was.
    let refusals = [
        ("/join", r#"{"name": "bob"}"#, "bob has already joined (0 points)"),
        ("/join", r#"{"name": "two words"}"#, "a player name is one word of 1 to 32 characters"),
        ("/score", r#"{"name": "eve", "points": 1}"#, "no player named \"eve\": join first"),
        ("/score", "zoe 1", "score: the payload is not a Score: expected value at line 1 column 1"),
        ("/score", r#"{"name": "zoe", "points": -1}"#, "score: the payload is not a Score: invalid value"),
        ("/join", "", "join: the payload is not a Join: invalid type: null"),
    ];
    for (path, body, reason) in refusals {
        let (status, reply) = daemon.http("POST", path, body.as_bytes());
        let error = json(&reply)["error"].as_str().unwrap().to_owned();
        assert_eq!(status, 422, "{path} {body}: {error}");
        assert!(error.starts_with(&format!("game 1002 refused '{}': {reason}", &path[1..])), "{error}");
    }

    // And back: game1 reads game2's layout, keeping every name and score.
    assert!(daemon.text("GET", "/load?name=game1", "").starts_with("swapped game 1002 -> 1001"));
    let hello = "hello test, this is hotswap test!, version=1001, name=game1, oldversion=1002, oldName=game2";
    assert_eq!(json(daemon.text("GET", "/hello", "").as_bytes()), hello);
    let state = json(daemon.text("GET", "/state", "").as_bytes());
    assert_eq!(state["players"], serde_json::json!({"alice": 0, "bob": 0, "zoe": 100}), "{state}");
    assert_eq!((state["version"].as_str(), state["hits"].as_u64()), (Some("1001"), Some(1)), "{state}");
}
