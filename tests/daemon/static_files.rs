//! `[[static]]`: a folder served read-only on the public port. The attacks
//! try to read the config next to the folder (and a file a symlink points
//! at) through every way out of it a URL path can spell.

use std::io::BufReader;
use std::net::TcpStream;
use std::time::Duration;

use hotswap_test_support::http::{Response, exchange};

use crate::{COUNTER_CONFIG, Daemon, Setup};

/// In the config, outside the folder: no response may carry it.
const SECRET: &str = "secret-outside-the-folder";

fn setup(max_file: &str) -> Setup {
    let config = format!(
        "{COUNTER_CONFIG}\n# {SECRET}\n[[static]]\npath = \"/\"\ndir = \"web\"\nmax_file = \"{max_file}\"\n"
    );
    let setup = Setup::new(&config);
    let web = setup.path("web");
    std::fs::create_dir_all(web.join("sub")).unwrap();
    std::fs::write(web.join("index.html"), "<!doctype html><title>demo</title>").unwrap();
    std::fs::write(web.join("game.js"), "console.log('hi');").unwrap();
    std::fs::write(web.join("sub/style.css"), "body { margin: 0 }").unwrap();
    std::fs::write(web.join(".hidden"), SECRET).unwrap();
    std::os::unix::fs::symlink(setup.config(), web.join("link-out")).unwrap();
    std::os::unix::fs::symlink(setup.dir.path(), web.join("dir-out")).unwrap();
    std::os::unix::fs::symlink("game.js", web.join("link-in.js")).unwrap();
    setup
}

fn get(daemon: &Daemon, method: &str, path: &str) -> Response {
    let stream = TcpStream::connect(daemon.public()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    exchange(&mut BufReader::new(stream), method, path, b"", &[])
        .unwrap_or_else(|err| panic!("{path}: {err}"))
}

#[test]
fn static_files_are_served_with_their_content_types_and_routes_come_first() {
    let setup = setup("1MiB");
    let daemon = setup.start();
    for (path, content_type, body) in [
        ("/", "text/html; charset=utf-8", "<!doctype html><title>demo</title>"),
        ("/index.html", "text/html; charset=utf-8", "<!doctype html><title>demo</title>"),
        ("/game.js", "text/javascript; charset=utf-8", "console.log('hi');"),
        ("/sub/style.css", "text/css; charset=utf-8", "body { margin: 0 }"),
        ("/sub/style%2Ecss", "text/css; charset=utf-8", "body { margin: 0 }"),
        ("/link-in.js", "text/javascript; charset=utf-8", "console.log('hi');"),
    ] {
        let response = get(&daemon, "GET", path);
        assert_eq!(response.status, 200, "{path}: {}", String::from_utf8_lossy(&response.body));
        assert_eq!(response.header("content-type"), Some(content_type), "{path}");
        assert_eq!(response.header("x-content-type-options"), Some("nosniff"), "{path}");
        assert_eq!(response.body, body.as_bytes(), "{path}");
    }
    // A configured route is not shadowed by the folder at "/".
    assert_eq!(daemon.text("GET", "/total", ""), "0");
    assert_eq!(get(&daemon, "GET", "/nothing.html").status, 404);
    assert_eq!(get(&daemon, "GET", "/sub").status, 404, "a folder is not a file");
    let posted = get(&daemon, "POST", "/game.js");
    assert_eq!(posted.status, 405, "read-only: {}", String::from_utf8_lossy(&posted.body));
}

#[test]
fn no_path_reads_outside_the_static_folder() {
    let setup = setup("1MiB");
    let daemon = setup.start();
    for path in [
        "/../hotswap.toml",
        "/sub/../../hotswap.toml",
        "/%2e%2e/hotswap.toml",
        "/%2E%2E/hotswap.toml",
        "/.%2e/hotswap.toml",
        "/..%2fhotswap.toml",
        "/%2e%2e%2fhotswap.toml",
        "/..%5chotswap.toml",
        "/%2e%2e%5chotswap.toml",
        "//etc/passwd",
        "/%2fetc%2fpasswd",
        "/%2Fetc/passwd",
        "/hotswap.toml%00.html",
        "/.hidden",
        "/%2ehidden",
        "/link-out",
        "/dir-out/hotswap.toml",
        "/dir-out/web/../hotswap.toml",
    ] {
        let response = get(&daemon, "GET", path);
        let body = String::from_utf8_lossy(&response.body);
        assert!(matches!(response.status, 400 | 404), "{path} answered {}: {body}", response.status);
        assert!(!body.contains(SECRET) && !body.contains("[server]"), "{path} leaked: {body}");
        assert!(!body.contains("root:"), "{path} leaked /etc/passwd: {body}");
    }
    // The refusals say why.
    let dotdot = get(&daemon, "GET", "/%2e%2e/hotswap.toml");
    assert!(String::from_utf8_lossy(&dotdot.body).contains("'..'"), "{dotdot:?}");
}

#[test]
fn a_file_past_max_file_is_refused_413_naming_both_sizes() {
    let setup = setup("1KiB");
    std::fs::write(setup.path("web/big.js"), vec![b'x'; 2048]).unwrap();
    std::fs::write(setup.path("web/edge.js"), vec![b'x'; 1024]).unwrap();
    let daemon = setup.start();
    assert_eq!(get(&daemon, "GET", "/edge.js").body.len(), 1024, "a file of exactly max_file is served");
    let big = get(&daemon, "GET", "/big.js");
    let body = String::from_utf8_lossy(&big.body);
    assert_eq!(big.status, 413, "{body}");
    assert!(body.contains("2048") && body.contains("1024"), "{body}");
}
