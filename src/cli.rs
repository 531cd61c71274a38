//! The commands that talk to a running daemon through its admin API. Each
//! waits for the outcome, prints it for a person (or the API's JSON with
//! `--json`) and fails with the reason.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;

use crate::api;
use crate::config::Config;

/// Where the admin API is.
#[derive(Debug, Clone)]
pub enum Target {
    Socket(PathBuf),
    Tcp { authority: String, token: Option<String> },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Socket(path) => write!(f, "{}", path.display()),
            Target::Tcp { authority, .. } => write!(f, "http://{authority}"),
        }
    }
}

/// `--admin` (a socket path or an `http://host:port` URL) wins over the
/// admin socket named by `--config`.
pub fn target(config: &Path, admin: Option<&str>, token_file: Option<&Path>) -> Result<Target, String> {
    let token = token_file
        .map(|file| {
            std::fs::read_to_string(file)
                .map(|token| token.trim().to_owned())
                .map_err(|err| format!("cannot read the token file {}: {err}", file.display()))
        })
        .transpose()?
        .or_else(|| std::env::var("HOTSWAP_ADMIN_TOKEN").ok());
    if let Some(admin) = admin {
        return Ok(match admin.strip_prefix("http://") {
            Some(authority) => Target::Tcp { authority: authority.trim_end_matches('/').to_owned(), token },
            None => Target::Socket(admin.into()),
        });
    }
    if !config.exists() {
        return Err(format!(
            "no config at {}; pass --config FILE or --admin SOCKET_OR_URL to say which daemon to talk to",
            config.display()
        ));
    }
    let config = Config::load(config).map_err(|err| err.to_string())?;
    Ok(Target::Socket(config.admin.socket))
}

/// One request to the admin API; returns the status and the body.
pub fn request(target: &Target, method: Method, path: &str, body: Vec<u8>) -> Result<(u16, Vec<u8>), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| format!("cannot start the runtime: {err}"))?;
    runtime.block_on(async {
        let unreachable = |err: std::io::Error| {
            format!("cannot reach the hotswap daemon at {target}: {err} (is `hotswap serve` running?)")
        };
        let mut request =
            Request::builder().method(method).uri(path).header(hyper::header::HOST, "localhost");
        match target {
            Target::Socket(path) => {
                let stream = tokio::net::UnixStream::connect(path).await.map_err(unreachable)?;
                send(stream, request.body(Full::new(Bytes::from(body))).expect("a valid request")).await
            }
            Target::Tcp { authority, token } => {
                if let Some(token) = token {
                    request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
                }
                let stream = tokio::net::TcpStream::connect(authority.as_str()).await.map_err(unreachable)?;
                send(stream, request.body(Full::new(Bytes::from(body))).expect("a valid request")).await
            }
        }
    })
}

async fn send<S>(stream: S, request: Request<Full<Bytes>>) -> Result<(u16, Vec<u8>), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|err| format!("the admin API did not answer: {err}"))?;
    tokio::spawn(connection);
    let response =
        sender.send_request(request).await.map_err(|err| format!("the admin API did not answer: {err}"))?;
    let status = response.status().as_u16();
    let body =
        response.into_body().collect().await.map_err(|err| format!("the answer was cut short: {err}"))?;
    Ok((status, body.to_bytes().to_vec()))
}

/// Fails with the API's `{"error": ...}` message when the status is not 2xx.
fn expect_success(status: u16, body: &[u8]) -> Result<(), String> {
    if (200..300).contains(&status) {
        return Ok(());
    }
    let message = serde_json::from_slice::<api::Error>(body)
        .map(|error| error.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned());
    Err(message)
}

fn print_json_or<T: serde::de::DeserializeOwned>(
    json: bool,
    body: &[u8],
    human: impl FnOnce(T) -> String,
) -> Result<(), String> {
    if json {
        std::io::stdout().write_all(body).map_err(|err| err.to_string())?;
        return Ok(());
    }
    let value: T = serde_json::from_slice(body)
        .map_err(|err| format!("the daemon sent an answer this CLI does not understand: {err}"))?;
    println!("{}", human(value));
    Ok(())
}

pub fn status(target: &Target, json: bool) -> Result<(), String> {
    let (status, body) = request(target, Method::GET, "/v1/status", Vec::new())?;
    expect_success(status, &body)?;
    print_json_or(json, &body, |status: api::Status| {
        let mut out = format!(
            "hotswap {} pid {} up {:.0}s, serving http://{}{}\n",
            status.daemon_version,
            status.pid,
            status.uptime_seconds,
            status.public_addr,
            if status.draining { " (draining)" } else { "" }
        );
        if !status.running.is_empty() {
            out += &format!("running now: {}\n", status.running.join(", "));
        }
        out += &format!(
            "\n{:<16} {:<12} {:>9} {:>11} {:>7} {:>7} {:>6}  {}\n",
            "MODULE", "VERSION", "INSTANCES", "CALLS", "ERRORS", "PANICS", "SWAPS", "FILE"
        );
        for module in &status.modules {
            out += &format!(
                "{:<16} {:<12} {:>9} {:>11} {:>7} {:>7} {:>6}  {}\n",
                module.name,
                module.version,
                module.instances,
                module.calls,
                module.errors,
                module.panics,
                module.swaps,
                module.file
            );
            if let Some(swap) = &module.swap_in_progress {
                out += &format!("  {}\n", swap.summary());
            }
            if let Some(swap) = &module.last_swap {
                out += &format!("  last: {}\n", swap.summary());
            }
            if let Some(origin) = &module.origin {
                out +=
                    &format!("  from: {} ({}), stored as {}\n", origin.source, origin.trigger, origin.stored);
            }
            if !module.resident_retired.is_empty() {
                out += &format!(
                    "  still mapped after retirement: {} (thread-local destructors pending)\n",
                    module.resident_retired.join(", ")
                );
            }
            if let Some(error) = &module.last_error {
                out += &format!("  last refused swap: {error}\n");
            }
        }
        let timers = &status.timers;
        if timers.pending + timers.fired > 0 {
            out += &format!(
                "\ntimers: {} pending, {} run ({} failed)",
                timers.pending, timers.fired, timers.failed
            );
            if let (Some(p50), Some(p99)) = (timers.late_p50_ms, timers.late_p99_ms) {
                out += &format!(", started late by {p50:.1} ms (median), {p99:.1} ms (p99)");
            }
            out += "\n";
        }
        if !status.slow_calls.is_empty() {
            out += &format!("\nslow calls (running for {} ms or longer):\n", status.slow_call_ms);
            for call in &status.slow_calls {
                let running = api::format_us(call.running_ms.saturating_mul(1000));
                out += &format!(
                    "  {} '{}' {}, running for {running}\n",
                    call.module, call.instance, call.method
                );
            }
        }
        if let Some(upgrade) = &status.upgrade {
            let pid = upgrade.new_pid.map(|pid| format!(" to pid {pid}")).unwrap_or_default();
            out += &format!(
                "\nupgrade{pid}: {} ({} module(s), {} instance(s), {} bytes of state)",
                upgrade.outcome.as_deref().unwrap_or(&upgrade.phase),
                upgrade.modules_sent,
                upgrade.instances_sent,
                upgrade.bytes_sent
            );
        }
        if let Some(run) = &status.last_snapshot {
            out += &format!("\nstate saved to {}: {} module(s)", status.state_dir, run.written.len());
            if !run.failed.is_empty() {
                out += &format!(", {} failed", run.failed.len());
            }
        }
        out.trim_end().to_owned()
    })
}

/// The error of a command that has printed its own account of the failure
/// (a JSON report): the CLI exits with a failure and prints nothing more.
pub const ALREADY_REPORTED: &str = "";

/// Swaps a module, or with `dry_run` prints what the swap would do. A dry
/// run whose swap would be refused prints its report and fails, so that
/// `hotswap load NAME PATH --dry-run && hotswap load NAME PATH` swaps only
/// what the dry run passed.
pub fn load(
    target: &Target,
    json: bool,
    module: &str,
    path: Option<&Path>,
    dry_run: bool,
) -> Result<(), String> {
    let path = path
        .map(|path| std::path::absolute(path).map(|p| p.display().to_string()))
        .transpose()
        .map_err(|err| format!("cannot resolve the path: {err}"))?;
    let body = serde_json::to_vec(&api::LoadRequest { path, dry_run }).expect("serializes");
    let (status, body) =
        request(target, Method::POST, &format!("/v1/modules/{}/load", encode(module)), body)?;
    expect_success(status, &body)?;
    if dry_run {
        print_json_or(json, &body, |report: api::DryRunReport| report.summary())?;
        let report: api::DryRunReport = serde_json::from_slice(&body)
            .map_err(|err| format!("the daemon sent an answer this CLI does not understand: {err}"))?;
        if !report.would_swap {
            // With --json the report is the whole answer; it says why.
            return Err(if json {
                ALREADY_REPORTED.to_owned()
            } else {
                format!(
                    "the swap of {module} would be refused (the report above says why); nothing was changed"
                )
            });
        }
        return Ok(());
    }
    print_json_or(json, &body, |report: api::SwapReport| report.summary())
}

pub fn rollback(target: &Target, json: bool, module: &str) -> Result<(), String> {
    let (status, body) =
        request(target, Method::POST, &format!("/v1/modules/{}/rollback", encode(module)), Vec::new())?;
    expect_success(status, &body)?;
    print_json_or(json, &body, |report: api::SwapReport| report.summary())
}

/// Prints the reply's bytes as they are.
pub fn call(
    target: &Target,
    module: &str,
    method: &str,
    payload: Option<&str>,
    instance: Option<&str>,
) -> Result<(), String> {
    let payload = match payload {
        Some("-") => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .map_err(|err| format!("cannot read the payload from stdin: {err}"))?;
            bytes
        }
        Some(text) => text.as_bytes().to_vec(),
        None => Vec::new(),
    };
    // Without --instance the daemon's default instance answers.
    let query = instance.map(|key| format!("?instance={}", encode(key))).unwrap_or_default();
    let path = format!("/v1/modules/{}/call/{}{query}", encode(module), encode(method));
    let (status, body) = request(target, Method::POST, &path, payload)?;
    expect_success(status, &body)?;
    let mut stdout = std::io::stdout();
    stdout.write_all(&body).map_err(|err| err.to_string())?;
    if !body.ends_with(b"\n") && std::io::IsTerminal::is_terminal(&stdout) {
        let _ = stdout.write_all(b"\n");
    }
    Ok(())
}

pub fn snapshot(target: &Target, json: bool) -> Result<(), String> {
    let (status, body) = request(target, Method::POST, "/v1/snapshot", Vec::new())?;
    if status == 500
        && let Ok(run) = serde_json::from_slice::<api::SnapshotRun>(&body)
    {
        let failures: Vec<String> = run.failed.iter().map(|f| format!("{}: {}", f.module, f.error)).collect();
        return Err(format!("could not save every module: {}", failures.join("; ")));
    }
    expect_success(status, &body)?;
    print_json_or(json, &body, |run: api::SnapshotRun| {
        let lines: Vec<String> = run
            .written
            .iter()
            .map(|w| {
                format!("saved {}: {} instance(s), {} bytes -> {}", w.module, w.instances, w.bytes, w.file)
            })
            .collect();
        if lines.is_empty() { "no modules loaded; nothing to save".to_owned() } else { lines.join("\n") }
    })
}

/// Shows a module's WebSocket sessions per instance (from `/v1/status`),
/// and the daemon's session counts.
pub fn sessions(target: &Target, json: bool, module: &str) -> Result<(), String> {
    let (status, body) = request(target, Method::GET, "/v1/status", Vec::new())?;
    expect_success(status, &body)?;
    let status: api::Status =
        serde_json::from_slice(&body).map_err(|err| format!("the daemon's status is not readable: {err}"))?;
    if !status.modules.iter().any(|loaded| loaded.name == module) {
        return Err(format!("module '{module}' is not loaded (see `hotswap status`)"));
    }
    let mut sessions = status.sessions;
    sessions.rooms.retain(|room| room.module == module);
    if json {
        println!("{}", serde_json::to_string_pretty(&sessions).unwrap_or_default());
        return Ok(());
    }
    let mut out = format!("{:<32} {:>8}\n", "INSTANCE", "SESSIONS");
    for room in &sessions.rooms {
        out += &format!("{:<32} {:>8}\n", room.instance, room.sessions);
    }
    let ticks = &sessions.ticks;
    let ms = |ms: Option<f64>| ms.map_or("-".to_owned(), |ms| format!("{ms:.1} ms"));
    out += &format!(
        "\nall modules: {} open, {} messages in, {} out, {} pushes dropped, {} to closing sessions, queue depth max {}\n\
         closes: {}\nticks: {} ran, {} failed, {} skipped, late p50 {} p99 {}\n",
        sessions.open,
        sessions.messages_in,
        sessions.messages_out,
        sessions.pushes_dropped,
        sessions.pushes_after_close,
        sessions.queue_depth_max,
        if sessions.closes.is_empty() {
            "none".to_owned()
        } else {
            sessions.closes.iter().map(|(why, n)| format!("{why} {n}")).collect::<Vec<_>>().join(", ")
        },
        ticks.ran,
        ticks.failed,
        ticks.skipped,
        ms(ticks.late_p50_ms),
        ms(ticks.late_p99_ms),
    );
    print!("{out}");
    Ok(())
}

/// Lists a module's instances.
pub fn instances(target: &Target, json: bool, module: &str) -> Result<(), String> {
    let (status, body) =
        request(target, Method::GET, &format!("/v1/modules/{}/instances", encode(module)), Vec::new())?;
    expect_success(status, &body)?;
    print_json_or(json, &body, |instances: Vec<api::Instance>| {
        let mut out =
            format!("{:<32} {:<12} {:>11} {:>7} {:>7}\n", "INSTANCE", "VERSION", "CALLS", "ERRORS", "PANICS");
        for instance in &instances {
            out += &format!(
                "{:<32} {:<12} {:>11} {:>7} {:>7}\n",
                instance.key,
                instance.version.as_deref().unwrap_or("(not started)"),
                instance.calls,
                instance.errors,
                instance.panics
            );
        }
        out += &format!("{} instance(s) of {module}", instances.len());
        out
    })
}

/// Ends one instance of a module.
pub fn remove_instance(target: &Target, json: bool, module: &str, key: &str) -> Result<(), String> {
    let path = format!("/v1/modules/{}/instances/{}", encode(module), encode(key));
    let (status, body) = request(target, Method::DELETE, &path, Vec::new())?;
    expect_success(status, &body)?;
    print_json_or(json, &body, |removed: api::RemovedInstance| {
        format!("removed instance '{}' of {}; its state is gone", removed.key, removed.module)
    })
}

fn encode(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Asks for an upgrade and shows its phases while it runs.
pub fn upgrade(target: &Target, json: bool, binary: Option<&Path>) -> Result<(), String> {
    let binary = binary
        .map(|path| std::path::absolute(path).map(|p| p.display().to_string()))
        .transpose()
        .map_err(|err| format!("cannot resolve the binary's path: {err}"))?;
    let body = serde_json::to_vec(&api::UpgradeRequest { binary }).expect("serializes");
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Progress comes from a second connection (the first waits for the outcome).
    let watcher = (!json).then(|| {
        let (target, done) = (target.clone(), done.clone());
        std::thread::spawn(move || {
            let mut shown = String::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok((200, body)) = request(&target, Method::GET, "/v1/status", Vec::new())
                    && let Ok(status) = serde_json::from_slice::<api::Status>(&body)
                    && let Some(upgrade) = status.upgrade
                    && upgrade.phase != shown
                    && upgrade.outcome.is_none()
                {
                    let pid = upgrade.new_pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default();
                    eprintln!("  {}{pid}", upgrade.phase);
                    shown = upgrade.phase;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        })
    });
    let answer = request(target, Method::POST, "/v1/upgrade", body);
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(watcher) = watcher {
        let _ = watcher.join();
    }
    let (status, body) = answer?;
    expect_success(status, &body)?;
    print_json_or(json, &body, |done: api::Upgraded| {
        format!(
            "upgraded: pid {} -> {} in {} ms (the new process started in {} ms); {} instance(s) of {} module(s), \
             {} bytes of state; calls held {} ms",
            done.old_pid,
            done.new_pid,
            done.took_ms,
            done.startup_ms,
            done.instances,
            done.modules,
            done.state_bytes,
            done.frozen_ms
        )
    })
}
