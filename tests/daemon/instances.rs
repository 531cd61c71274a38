//! Instances a client creates: keys that are valid and bounded, a cap per
//! module, and the admin API and CLI that list and remove them.

use std::time::{Duration, Instant};

use crate::{COUNTER_CONFIG, Setup, json, stderr, stdout};

fn error_of(body: &[u8]) -> String {
    json(body)["error"].as_str().unwrap().to_owned()
}

/// Keys are 1 to 256 bytes of UTF-8: anything else is refused with 400,
/// never decoded lossily into some other instance.
#[test]
fn instance_keys_are_1_to_256_bytes_of_utf8() {
    let setup = Setup::new(COUNTER_CONFIG);
    let daemon = setup.start();
    // U+FFFD itself is a valid key, with an instance of its own.
    assert_eq!(daemon.text("POST", "/call/counter/add?instance=%EF%BF%BD", "5"), "5");
    for key in ["%FF", "%FE", "a%C3", "%ED%A0%80"] {
        let (status, body) = daemon.http("POST", &format!("/call/counter/add?instance={key}"), b"1");
        assert_eq!(status, 400, "{key}: {}", String::from_utf8_lossy(&body));
        assert!(error_of(&body).contains("not UTF-8"), "{key}: {}", error_of(&body));
    }
    assert_eq!(daemon.text("POST", "/call/counter/get?instance=%EF%BF%BD", ""), "5", "untouched");

    let longest = "k".repeat(256);
    assert_eq!(daemon.text("POST", &format!("/call/counter/add?instance={longest}"), "1"), "1");
    for length in [257, 65_000] {
        let (status, body) =
            daemon.http("POST", &format!("/call/counter/add?instance={}", "k".repeat(length)), b"1");
        assert_eq!(status, 400, "{length} bytes");
        let message = error_of(&body);
        assert!(
            message.contains(&format!("{length} bytes long")) && message.contains("1 to 256"),
            "{message}"
        );
    }
    let (status, body) = daemon.http("POST", "/call/counter/add?instance=", b"1");
    assert_eq!(status, 400);
    assert!(error_of(&body).contains("the instance key is empty"), "{}", error_of(&body));
    // Routes and the admin API check keys the same way.
    assert_eq!(daemon.http("GET", "/total?instance=%FF", b"").0, 400);
    let (status, body) = daemon.admin("POST", "/v1/modules/counter/call/add?instance=%FE", b"1").unwrap();
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));

    // No key at all: the instance named `default`.
    assert_eq!(daemon.text("POST", "/call/counter/add", "3"), "3");
    assert_eq!(daemon.text("POST", "/call/counter/get?instance=default", ""), "3");
    let output = setup.cli(&["call", "counter", "get"]);
    assert_eq!(stdout(&output), "3", "{}", stderr(&output));
    let keys: Vec<String> =
        instance_list(&daemon).iter().map(|i| i["key"].as_str().unwrap().to_owned()).collect();
    assert_eq!(keys, ["default", &longest, "\u{FFFD}"], "nothing else was created");
}

fn instance_list(daemon: &crate::Daemon) -> Vec<serde_json::Value> {
    let (status, body) = daemon.admin("GET", "/v1/modules/counter/instances", b"").unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    json(&body).as_array().expect("a JSON list").clone()
}

/// `max_instances` caps what clients can create: one more is refused with
/// 429 and the reason, the existing ones keep working, and a removal makes
/// room. A new limit applies on SIGHUP.
#[test]
fn max_instances_refuses_new_instances_with_429() {
    let config = COUNTER_CONFIG.replace("watch = true", "watch = true\nmax_instances = 3");
    let setup = Setup::new(&config);
    let daemon = setup.start();
    for key in ["a", "b", "c"] {
        assert_eq!(daemon.text("POST", &format!("/call/counter/add?instance={key}"), "1"), "1");
    }
    let (status, body) = daemon.http("POST", "/call/counter/add?instance=d", b"1");
    assert_eq!(status, 429, "{}", String::from_utf8_lossy(&body));
    let message = error_of(&body);
    assert!(message.contains("limit of 3 instances") && message.contains("max_instances"), "{message}");
    assert_eq!(
        daemon.text("POST", "/call/counter/add?instance=a", "1"),
        "2",
        "existing instances keep working"
    );
    assert_eq!(instance_list(&daemon).len(), 3, "the refused call created nothing");
    let (_, metrics) = daemon.admin("GET", "/metrics", b"").unwrap();
    assert!(String::from_utf8(metrics).unwrap().contains("hotswap_http_responses_total{class=\"4xx\"} 1"));

    let (status, _) = daemon.admin("DELETE", "/v1/modules/counter/instances/b", b"").unwrap();
    assert_eq!(status, 200);
    assert_eq!(daemon.text("POST", "/call/counter/add?instance=d", "1"), "1", "a removal makes room");

    setup.write_config(&config.replace("max_instances = 3", "max_instances = 5"));
    daemon.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    while daemon.http("POST", "/call/counter/add?instance=e", b"1").0 == 429 {
        assert!(Instant::now() < deadline, "the new limit was not applied on SIGHUP:\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(daemon.text("POST", "/call/counter/add?instance=f", "1"), "1");
    assert_eq!(daemon.http("POST", "/call/counter/add?instance=g", b"1").0, 429, "5 is the limit now");
}

#[test]
fn instances_are_listed_and_removed_through_the_admin_api_and_cli() {
    let setup = Setup::new(COUNTER_CONFIG);
    let daemon = setup.start();
    daemon.text("POST", "/call/counter/add?instance=alice", "5");
    daemon.text("POST", "/call/counter/add?instance=alice", "5");
    daemon.text("POST", "/call/counter/add?instance=bob", "1");
    daemon.text("POST", "/call/counter/add", "1");

    let list = instance_list(&daemon);
    let alice = list.iter().find(|i| i["key"] == "alice").expect("alice is listed");
    assert_eq!((alice["version"].as_str(), alice["calls"].as_u64()), (Some("1.0.0"), Some(2)));
    assert_eq!(list.len(), 3);

    let output = setup.cli(&["instances", "counter"]);
    let text = stdout(&output);
    assert!(output.status.success(), "{}", stderr(&output));
    for expected in ["alice", "bob", "default", "1.0.0", "3 instance(s) of counter"] {
        assert!(text.contains(expected), "{expected}:\n{text}");
    }
    assert!(!text.contains("''"), "{text}");
    let output = setup.cli(&["instances", "counter", "--json"]);
    assert_eq!(json(&output.stdout).as_array().map(Vec::len), Some(3));

    let output = setup.cli(&["remove-instance", "counter", "alice"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("removed instance 'alice' of counter"), "{}", stdout(&output));
    assert!(instance_list(&daemon).iter().all(|i| i["key"] != "alice"));
    assert_eq!(daemon.text("POST", "/call/counter/get?instance=alice", ""), "0", "a fresh instance");

    let (status, body) = daemon.admin("DELETE", "/v1/modules/counter/instances/nobody", b"").unwrap();
    assert_eq!(status, 404);
    assert!(error_of(&body).contains("no instance 'nobody'"), "{}", error_of(&body));
    let output = setup.cli(&["remove-instance", "counter", "nobody"]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("no instance 'nobody'"), "{}", stderr(&output));
    let output = setup.cli(&["instances", "ledger"]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("module 'ledger' is not configured"), "{}", stderr(&output));
    let (status, _) = daemon.admin("POST", "/v1/modules/counter/instances", b"").unwrap();
    assert_eq!(status, 405);
}
