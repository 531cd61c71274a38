//! The game demo's page (examples/game/web) in real headless Chromium,
//! driven over the DevTools protocol (a WebSocket, like the page's own):
//! it joins, plays, and sees a swap to game2 on the same open connection,
//! without a reload. A screenshot of the page is written next to the test's
//! folder, and to docs/game-demo.png with HOTSWAP_WRITE_SCREENSHOT=1.
//!
//! Chromium is Debian's `chromium` (`.ci/install-browser` installs it). In
//! CI (CI=true) the test fails without it; elsewhere it says why and passes.

use std::io::BufReader;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hotswap_test_support::{http, process};
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

use crate::game::game_setup;

/// The flags that work on this kind of machine (closed network, root).
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
    "--window-size=1100,640",
];

const DEADLINE: Duration = Duration::from_secs(90);

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join("chromium")).find(|file| file.is_file())
}

/// Chromium, stopped (SIGTERM, then SIGKILL) when the test ends.
struct Browser(Child);

impl Drop for Browser {
    fn drop(&mut self) {
        process::terminate_child(&mut self.0, Duration::from_secs(10));
    }
}

/// The page's DevTools connection.
struct Page {
    socket: WebSocket<TcpStream>,
    next_id: u64,
}

impl Page {
    fn command(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.socket
            .send(Message::text(json!({"id": id, "method": method, "params": params}).to_string()))
            .unwrap();
        loop {
            let Message::Text(text) = self.socket.read().expect("a DevTools message") else { continue };
            let message: Value = serde_json::from_str(text.as_str()).unwrap();
            if message["id"] == id {
                assert!(message.get("error").is_none(), "{method}: {message}");
                return message["result"].clone();
            }
        }
    }

    /// What the page saw (`window.demo`), or null before its script ran.
    fn demo(&mut self) -> Value {
        let result = self.command(
            "Runtime.evaluate",
            json!({"expression": "JSON.stringify(window.demo || null)", "returnByValue": true}),
        );
        serde_json::from_str(result["result"]["value"].as_str().unwrap_or("null")).unwrap()
    }

    /// Polls `window.demo` until `done` holds.
    fn wait_for(&mut self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let demo = self.demo();
            if done(&demo) {
                return demo;
            }
            assert!(start.elapsed() < DEADLINE, "the page never showed {what}: {demo}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Waits for Chromium's DevTools port (DevToolsActivePort in its profile)
/// and connects to the page showing `url`.
fn open_page(profile: &Path, url: &str, browser: &mut Browser) -> Page {
    let start = Instant::now();
    let port = loop {
        if let Some(port) = std::fs::read_to_string(profile.join("DevToolsActivePort"))
            .ok()
            .and_then(|text| text.lines().next().and_then(|line| line.parse::<u16>().ok()))
        {
            break port;
        }
        if let Ok(Some(status)) = browser.0.try_wait() {
            panic!("chromium exited ({status}) before it served DevTools");
        }
        assert!(start.elapsed() < DEADLINE, "chromium wrote no DevToolsActivePort");
        std::thread::sleep(Duration::from_millis(100));
    };
    let debugger = loop {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let list = http::exchange(&mut BufReader::new(stream), "GET", "/json/list", b"", &[]).unwrap();
        let targets: Value = serde_json::from_slice(&list.body).unwrap();
        let page = targets.as_array().unwrap().iter().find(|target| target["url"] == url);
        if let Some(page) = page {
            break page["webSocketDebuggerUrl"].as_str().unwrap().to_owned();
        }
        assert!(start.elapsed() < DEADLINE, "no page at {url} in {targets}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let (socket, _) = tungstenite::client(debugger.as_str(), stream).expect("the page's DevTools socket");
    Page { socket, next_id: 0 }
}

#[test]
fn the_page_plays_and_sees_a_swap_on_the_same_open_connection_in_headless_chromium() {
    let Some(chromium) = chromium() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must run the browser test: chromium is not on PATH (run .ci/install-browser)"
        );
        eprintln!("skipped: chromium is not on PATH (install it with .ci/install-browser)");
        return;
    };
    let setup = game_setup();
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/game/web");
    std::fs::create_dir(setup.path("web")).unwrap();
    for file in ["index.html", "game.js", "game.css"] {
        std::fs::copy(web.join(file), setup.path("web").join(file)).unwrap();
    }
    let daemon = setup.start();
    let url = format!("http://{}/?autoplay=1&name=ana&instance=arena", daemon.public());
    let profile = setup.path("chromium-profile");
    let log = std::fs::File::create(setup.path("chromium.log")).unwrap();
    let mut browser = Browser(
        Command::new(chromium)
            .args(CHROMIUM_FLAGS)
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(&url)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start chromium"),
    );
    let mut page = open_page(&profile, &url, &mut browser);

    let before = page.wait_for("ticks from game1 and acked moves", |demo| {
        demo["version"] == "1001" && demo["ticks"].as_u64() > Some(3) && demo["acked"].as_u64() > Some(3)
    });
    let session = before["session"].clone();
    assert!(session.is_u64(), "{before}");

    let swapped = daemon.text("GET", "/load?name=game2", "");
    assert!(swapped.starts_with("swapped game 1001 -> 1002"), "{swapped}");
    let acked_at_swap = page.demo()["acked"].as_u64().unwrap();
    let after = page.wait_for("game2 serving and moves acked after the swap", |demo| {
        demo["version"] == "1002" && demo["acked"].as_u64() > Some(acked_at_swap + 3)
    });
    assert_eq!(after["swaps"].as_array().map(Vec::len), Some(1), "one swap seen: {after}");
    let swap = &after["swaps"][0];
    assert_eq!((swap["from"].as_str(), swap["to"].as_str()), (Some("1001"), Some("1002")), "{after}");
    assert_eq!(swap["session"], session, "the same session across the swap: {after}");
    assert_eq!(after["session"], session, "{after}");
    assert_eq!(after["connections"], 1, "the page never reconnected: {after}");
    assert_eq!((after["open"].as_bool(), after["closed"].is_null()), (Some(true), true), "{after}");
    let text = page.command(
        "Runtime.evaluate",
        json!({"expression": "document.getElementById('swaps').textContent", "returnByValue": true}),
    );
    let shown = text["result"]["value"].as_str().unwrap();
    assert!(shown.contains("1001 → 1002") && shown.contains("same connection"), "{shown}");

    let shot = page.command("Page.captureScreenshot", json!({"format": "png"}));
    let png = base64_decode(shot["data"].as_str().unwrap());
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG screenshot");
    std::fs::write(setup.path("game-demo.png"), &png).unwrap();
    if std::env::var("HOTSWAP_WRITE_SCREENSHOT").as_deref() == Ok("1") {
        std::fs::write(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/game-demo.png"), &png).unwrap();
    }
    drop(page);
    drop(browser);
    assert!(daemon.stop().success());
}

/// Standard base64 (DevTools sends screenshots so).
fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let (mut bits, mut count, mut out) = (0u32, 0u32, Vec::with_capacity(text.len() * 3 / 4));
    for byte in text.bytes().filter(|&byte| byte != b'=') {
        let value = ALPHABET.iter().position(|&a| a == byte).expect("a base64 character") as u32;
        bits = (bits << 6) | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    out
}
