//! A swap that waits for a long call shows in `GET /v1/status` and in
//! `hotswap status`: the version it swaps to, how long it has run and the
//! instance whose call it waits for; once it ends, nothing is shown.

use std::io::BufReader;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::{Setup, json, modules, stderr, stdout};

/// A swap deadline far beyond the long call, so the swap waits and succeeds.
const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
shutdown_timeout = "2s"

[engine]
swap_timeout = "60s"

[[module]]
name = "counter"
path = "modules/libcounter.so"
"#;

/// Long enough for the test to look at the waiting swap on a loaded machine.
const LONG_CALL_MS: &str = "6000";

#[test]
fn status_shows_a_swap_waiting_for_a_long_call() {
    let setup = Setup::new(CONFIG);
    let v2 = setup.install(modules::COUNTER_V2, "libcounter_v2.so");
    let daemon = setup.start();
    std::thread::scope(|scope| {
        let long_call = scope.spawn(|| {
            let mut stream = TcpStream::connect(daemon.public()).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            crate::send(
                &mut stream,
                "POST",
                "/call/counter/sleep?instance=busy",
                LONG_CALL_MS.as_bytes(),
                &[],
            );
            crate::read_response(&mut BufReader::new(stream)).map(|(status, _)| status)
        });
        // The call is counted once it holds its instance: only then can a
        // swap have to wait for it.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (code, body) = daemon.admin("GET", "/v1/modules/counter/instances", b"").unwrap();
            let instances = json(&body);
            let busy =
                instances.as_array().and_then(|all| all.iter().find(|one| one["key"] == "busy")).cloned();
            if code == 200 && busy.is_some_and(|busy| busy["calls"].as_u64() >= Some(1)) {
                break;
            }
            assert!(Instant::now() < deadline, "the long call did not start: {instances}");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(daemon.status()["modules"][0]["swap_in_progress"].is_null());

        let load = scope.spawn(|| setup.cli(&["load", "counter", v2.to_str().unwrap()]));
        let status = daemon.wait_for_status("the waiting swap", |status| {
            status["modules"][0]["swap_in_progress"]["waiting_for"] == "busy"
        });
        let shown = &status["modules"][0]["swap_in_progress"];
        assert_eq!(shown["to_version"], "2.0.0", "{shown}");
        assert!(shown["started_unix_ms"].as_u64().is_some_and(|ms| ms > 0), "{shown}");
        assert!(shown["elapsed_ms"].is_u64(), "{shown}");

        let output = setup.cli(&["status"]);
        let text = stdout(&output);
        let line = text.lines().find(|line| line.contains("under way")).unwrap_or_else(|| panic!("{text}"));
        assert!(line.trim_start().starts_with("swap to 2.0.0 under way for "), "{text}");
        assert!(line.ends_with(" s, waiting for instance 'busy'"), "{text}");
        assert!(!long_call.is_finished(), "the status was read while the long call ran");

        assert_eq!(long_call.join().unwrap().unwrap(), 200);
        let output = load.join().unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        assert!(stdout(&output).starts_with("swapped counter 1.0.0 -> 2.0.0"), "{}", stdout(&output));
    });
    let status = daemon.status();
    assert!(status["modules"][0]["swap_in_progress"].is_null(), "a swap that ended is not shown: {status}");
    let text = stdout(&setup.cli(&["status"]));
    assert!(!text.contains("under way"), "{text}");
}
