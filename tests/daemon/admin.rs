//! The admin API and the CLI: swaps, rollbacks, refusals, access control.

use std::os::unix::fs::PermissionsExt;

use crate::{COUNTER_CONFIG, Setup, json, modules, stderr, stdout};

#[test]
fn admin_socket_is_private() {
    let setup = Setup::new(COUNTER_CONFIG);
    let daemon = setup.start();
    let mode = std::fs::metadata(&daemon.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "admin socket mode {mode:o}");
}

#[test]
fn cli_swaps_rolls_back_calls_and_reports() {
    let setup = Setup::new(COUNTER_CONFIG);
    let v2 = setup.install(modules::COUNTER_V2, "libcounter_v2.so");
    let daemon = setup.start();
    daemon.text("POST", "/call/counter/add?instance=lobby", "10");

    let output = setup.cli(&["load", "counter", v2.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).starts_with("swapped counter 1.0.0 -> 2.0.0 in "), "{}", stdout(&output));
    assert_eq!(daemon.version(), "2.0.0");

    let output = setup.cli(&["call", "counter", "add", "5", "--instance", "lobby"]);
    assert_eq!(stdout(&output), "15", "{}", stderr(&output));

    let output = setup.cli(&["rollback", "counter"]);
    assert!(stdout(&output).starts_with("swapped counter 2.0.0 -> 1.0.0"), "{}", stderr(&output));
    assert_eq!(daemon.text("GET", "/total", ""), "15", "state survived both swaps");

    let output = setup.cli(&["status"]);
    let text = stdout(&output);
    assert!(text.contains("counter") && text.contains("1.0.0"), "{text}");
    let output = setup.cli(&["--json", "status"]);
    let status = json(&output.stdout);
    assert_eq!(status["pid"], daemon.pid());
    assert_eq!(status["modules"][0]["swaps"], 2);
    assert_eq!(status["modules"][0]["rollback_version"], "2.0.0");

    // Global flags go before or after the subcommand.
    let output = setup.cli(&["status", "--json"]);
    assert_eq!(json(&output.stdout)["pid"], daemon.pid());
}

#[test]
fn admin_http_load_with_and_without_a_path() {
    let setup = Setup::new(COUNTER_CONFIG);
    let v2 = setup.install(modules::COUNTER_V2, "libcounter_v2.so");
    let daemon = setup.start();
    let body = format!("{{\"path\": {:?}}}", v2.to_str().unwrap());
    let (status, report) = daemon.admin("POST", "/v1/modules/counter/load", body.as_bytes()).unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&report));
    let report = json(&report);
    assert_eq!(
        (report["from_version"].as_str(), report["to_version"].as_str()),
        (Some("1.0.0"), Some("2.0.0"))
    );
    assert_eq!(report["trigger"], "admin");

    // No path: the configured file (still v1).
    let (status, report) = daemon.admin("POST", "/v1/modules/counter/load", b"").unwrap();
    assert_eq!(status, 200);
    assert_eq!(json(&report)["to_version"], "1.0.0");
    assert_eq!(daemon.version(), "1.0.0");
}

/// Each refusal names what was wrong, and the running version keeps serving its state.
#[test]
fn refused_loads_leave_the_module_serving() {
    let setup = Setup::new(COUNTER_CONFIG);
    let outside = tempfile::tempdir().unwrap();
    let elsewhere = outside.path().join("libcounter_v2.so");
    std::fs::copy(modules::COUNTER_V2, &elsewhere).unwrap();
    let writable = setup.install(modules::COUNTER_V2, "libwritable.so");
    std::fs::set_permissions(&writable, std::fs::Permissions::from_mode(0o666)).unwrap();
    let broken = setup.install(modules::COUNTER_INIT_FAILS, "libbroken.so");
    let daemon = setup.start();
    daemon.text("POST", "/call/counter/add?instance=lobby", "3");

    let cases: [(&str, std::path::PathBuf, u16, &str); 4] = [
        ("outside", elsewhere, 403, "not in a folder modules may be loaded from"),
        ("writable", writable, 403, "world-writable (mode 666)"),
        ("broken", broken, 422, "this version refuses to start"),
        ("missing", setup.path("modules/libmissing.so"), 403, "cannot open"),
    ];
    for (case, path, expected, says) in cases {
        let body = format!("{{\"path\": {:?}}}", path.to_str().unwrap());
        let (status, reply) = daemon.admin("POST", "/v1/modules/counter/load", body.as_bytes()).unwrap();
        let message = json(&reply)["error"].as_str().unwrap().to_owned();
        assert_eq!(status, expected, "{case}: {message}");
        assert!(message.contains(says), "{case}: {message}");
        assert_eq!(daemon.version(), "1.0.0", "{case}");
        assert_eq!(daemon.text("GET", "/total", ""), "3", "{case}");
    }
    let (status, _) = daemon.admin("POST", "/v1/modules/ledger/load", b"").unwrap();
    assert_eq!(status, 404, "an unconfigured module");

    // The CLI says why, and fails.
    let output = setup.cli(&["load", "counter", setup.path("modules/libbroken.so").to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("this version refuses to start"), "{}", stderr(&output));
    let status = daemon.status();
    assert!(status["modules"][0]["last_error"].as_str().unwrap().contains("refuses to start"));
}

#[test]
fn pinned_sha256_refuses_other_content() {
    let v1_hash = sha256_hex(&std::fs::read(modules::COUNTER_V1).unwrap());
    let config = COUNTER_CONFIG.replace("watch = true", &format!("watch = false\nsha256 = \"{v1_hash}\""));
    let setup = Setup::new(&config);
    let v2 = setup.install(modules::COUNTER_V2, "libcounter_v2.so");
    let daemon = setup.start();
    let output = setup.cli(&["load", "counter", v2.to_str().unwrap()]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains(&format!("the config expects {v1_hash}")), "{message}");
    assert_eq!(daemon.version(), "1.0.0");
}

#[test]
fn cli_without_a_daemon_says_so() {
    let setup = Setup::new(COUNTER_CONFIG);
    let output = setup.cli(&["status"]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("cannot reach the hotswap daemon"), "{}", stderr(&output));
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hotswap"))
        .args(["--config", "/nonexistent/hotswap.toml", "status"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(stderr(&output).contains("no config at /nonexistent/hotswap.toml"), "{}", stderr(&output));
}

#[test]
fn tcp_admin_needs_the_token() {
    let token = "0123456789abcdef-test-token";
    let config =
        format!("{COUNTER_CONFIG}\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"admin.token\"\n");
    // Port 0 cannot be discovered for the admin port: pick a free one first.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = config.replace(
        "listen = \"127.0.0.1:0\"\ntoken_file",
        &format!("listen = \"127.0.0.1:{port}\"\ntoken_file"),
    );
    let setup = Setup::new(&config);
    std::fs::write(setup.path("admin.token"), format!("{token}\n")).unwrap();
    std::fs::set_permissions(setup.path("admin.token"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let daemon = setup.start();
    let url = format!("http://127.0.0.1:{port}");
    let ask = |headers: &[(&str, &str)]| {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        crate::send(&mut stream, "GET", "/v1/status", b"", headers);
        crate::read_response(&mut std::io::BufReader::new(stream)).unwrap().0
    };
    assert_eq!(ask(&[]), 401);
    assert_eq!(ask(&[("Authorization", "Bearer wrong-token")]), 401);
    assert_eq!(ask(&[("Authorization", &format!("Bearer {token}"))]), 200);

    let output = setup.cli(&["--admin", &url, "status"]);
    assert!(!output.status.success(), "no token, no status");
    let output =
        setup.cli(&["--admin", &url, "--token-file", setup.path("admin.token").to_str().unwrap(), "status"]);
    assert!(output.status.success(), "{}", stderr(&output));
    drop(daemon);
}

#[test]
fn metrics_in_prometheus_text() {
    let setup = Setup::new(COUNTER_CONFIG);
    let v2 = setup.install(modules::COUNTER_V2, "libcounter_v2.so");
    let daemon = setup.start();
    daemon.text("POST", "/call/counter/add?instance=a", "1");
    assert!(setup.cli(&["load", "counter", v2.to_str().unwrap()]).status.success());
    daemon.text("POST", "/call/counter/add?instance=a", "1");
    let (status, body) = daemon.admin("GET", "/metrics", b"").unwrap();
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    for line in [
        "hotswap_calls_total{module=\"counter\",version=\"1.0.0\"} 1",
        "hotswap_calls_total{module=\"counter\",version=\"2.0.0\"} 1",
        "hotswap_swaps_total{module=\"counter\",outcome=\"ok\"} 1",
        "hotswap_swap_duration_seconds_count{module=\"counter\"} 1",
        "hotswap_module_info{module=\"counter\",version=\"2.0.0\"} 1",
        "hotswap_resident_versions{module=\"counter\"} 1",
        "hotswap_inflight_calls 0",
        "# TYPE hotswap_swap_duration_seconds histogram",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
