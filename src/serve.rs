//! `hotswap serve`: the daemon's life, from the config to a clean exit.
//!
//! Start: read the config, load every module (restoring its saved state),
//! then open the public port and the admin socket, so no client ever sees a
//! daemon whose modules are not ready. Sockets inherited through
//! `LISTEN_FDS` (from systemd socket activation, or from the process this
//! one replaces) are used instead of binding. Run: serve, watch files, save
//! state every `state.snapshot_every`, re-read the config on SIGHUP, replace
//! this process on SIGUSR2 or `POST /v1/upgrade`. Stop (SIGTERM or SIGINT):
//! stop accepting, let open requests finish (each connection closes after
//! its request in flight) within `server.shutdown_timeout`, save every
//! module's state, remove the admin socket, exit 0.
//!
//! The new process of an upgrade (it inherited a `control` socket) starts
//! differently: it loads its modules without state, takes the state from the
//! old process, starts serving, and says READY (see `upgrade.rs`).

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use hotswap_upgrade::listen;
use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::admin::{self, Token};
use crate::config::Config;
use crate::daemon::Daemon;
use crate::http::Listening;
use crate::state::StateStore;
use crate::watch::Watch;
use crate::{http, public, upgrade};

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub config: PathBuf,
    pub discard_corrupt_state: bool,
}

pub fn run(options: &ServeOptions) -> Result<(), String> {
    // Held back (queued by the kernel) until their handlers are installed:
    // until then their default action would end the process.
    let held = HeldSignals::hold();
    // Owned before any other descriptor is opened, and marked close-on-exec.
    let inherited = listen::take().map_err(|err| format!("cannot take the inherited sockets: {err}"))?;
    let mut inherited: HashMap<String, OwnedFd> = inherited.into_iter().map(|i| (i.name, i.fd)).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("hotswap-worker")
        .build()
        .map_err(|err| format!("cannot start the runtime: {err}"))?;
    let control = inherited.remove(hotswap_upgrade::protocol::CONTROL);
    let served = runtime.block_on(async {
        // Before anything slow (restoring a large state can take seconds):
        // from here on SIGHUP, SIGUSR2 and SIGTERM wait until the daemon
        // serves instead of killing it with their default action.
        let signals = Signals::install()?;
        drop(held);
        let config = Config::load(&options.config).map_err(|err| err.to_string())?;
        serve(config, options.discard_corrupt_state, inherited, control, signals).await
    });
    // Dropping the runtime would wait for every blocking thread, and a
    // module call that never returns would then keep the process forever.
    // The state is saved by now; such a call is reported and left behind.
    runtime.shutdown_timeout(std::time::Duration::from_millis(250));
    served
}

/// SIGHUP, SIGUSR2, SIGTERM and SIGINT blocked on this thread (and on the
/// runtime's threads, which inherit the mask) until dropped. The kernel
/// keeps one of each pending meanwhile; once unblocked they reach the
/// handlers. Child processes start with an empty mask (std resets it).
struct HeldSignals(libc::sigset_t);

impl HeldSignals {
    fn hold() -> HeldSignals {
        // SAFETY: sigset_t is plain data that sigemptyset initialises; the
        // calls only read and write the local set and this thread's mask.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for signal in [libc::SIGHUP, libc::SIGUSR2, libc::SIGTERM, libc::SIGINT] {
                libc::sigaddset(&mut set, signal);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            HeldSignals(set)
        }
    }
}

impl Drop for HeldSignals {
    fn drop(&mut self) {
        // SAFETY: unblocks the signals this value blocked, on this thread.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &self.0, std::ptr::null_mut()) };
    }
}

/// The signals the daemon handles, registered at its first instant.
struct Signals {
    hangup: Signal,
    terminate: Signal,
    interrupt: Signal,
    user2: Signal,
}

impl Signals {
    fn install() -> Result<Signals, String> {
        let install = |kind: SignalKind| signal(kind).map_err(|err| format!("cannot handle signals: {err}"));
        Ok(Signals {
            hangup: install(SignalKind::hangup())?,
            terminate: install(SignalKind::terminate())?,
            interrupt: install(SignalKind::interrupt())?,
            user2: install(SignalKind::user_defined2())?,
        })
    }
}

async fn serve(
    config: Config,
    discard_corrupt_state: bool,
    mut inherited: HashMap<String, OwnedFd>,
    control: Option<OwnedFd>,
    mut signals: Signals,
) -> Result<(), String> {
    let store = StateStore::open(&config.state_dir).map_err(|err| err.to_string())?;
    let daemon = Arc::new(Daemon::new(config.clone(), store));
    let starting = daemon.clone();
    let upgrading_in = control.is_some();
    tokio::task::spawn_blocking(move || match upgrading_in {
        true => starting.load_modules(),
        false => starting.start_modules(discard_corrupt_state),
    })
    .await
    .map_err(|err| format!("starting the modules failed: {err}"))??;

    // A socket from systemd socket activation may be unnamed: then it is the public one.
    let public_fd = inherited.remove("public").or_else(|| inherited.remove("unknown"));
    let public = match public_fd {
        Some(fd) => tcp_from(fd, "public")?,
        None => TcpListener::bind(config.listen)
            .await
            .map_err(|err| format!("cannot listen on {} (server.listen): {err}", config.listen))?,
    };
    let public_addr = public.local_addr().map_err(|err| err.to_string())?;
    let _ = daemon.public_addr.set(public_addr);
    let admin_socket = match inherited.remove("admin") {
        Some(fd) => {
            let socket = std::os::unix::net::UnixListener::from(fd);
            socket.set_nonblocking(true).map_err(|err| err.to_string())?;
            UnixListener::from_std(socket)
                .map_err(|err| format!("cannot use the inherited admin socket: {err}"))?
        }
        None => bind_admin_socket(&config.admin.socket)?,
    };
    let admin_tcp = match &config.admin.tcp {
        Some((addr, token_file)) => {
            let token = read_token(token_file)?;
            let listener = match inherited.remove("admin-tcp") {
                Some(fd) => tcp_from(fd, "admin-tcp")?,
                None => TcpListener::bind(addr)
                    .await
                    .map_err(|err| format!("cannot listen on {addr} (admin.listen): {err}"))?,
            };
            Some((listener, token))
        }
        None => None,
    };
    for name in inherited.keys() {
        tracing::warn!("an inherited socket named {name:?} is not used by this config; closing it");
    }
    let keep = |name: &str, socket: &dyn std::os::fd::AsFd| {
        daemon
            .keep_for_handoff(name, &socket.as_fd())
            .map_err(|err| format!("cannot keep the {name} socket: {err}"))
    };
    keep("public", &public)?;
    keep("admin", &admin_socket)?;
    if let Some((listener, _)) = &admin_tcp {
        keep("admin-tcp", listener)?;
    }

    // The new process of an upgrade takes the state, and accepts nothing
    // until the old process has committed the hand-over.
    if control.is_some() {
        // `send_replace`: no accept loop listens yet, and `send` would then
        // leave the mode unchanged.
        daemon.listening.send_replace(Listening::Pause);
    }
    let taken = match control {
        Some(control) => {
            let taking = daemon.clone();
            let taken = tokio::task::spawn_blocking(move || upgrade::receive_state(&taking, control))
                .await
                .map_err(|err| format!("taking the state failed: {err}"))?;
            Some(taken?)
        }
        None => None,
    };

    let mut servers = tokio::task::JoinSet::new();
    let handler = |daemon: &Arc<Daemon>| {
        let daemon = daemon.clone();
        move |request| public::handle(daemon.clone(), request)
    };
    let max_connections = crate::connections::fit_to_descriptors(config.max_connections)?;
    let public = crate::connections::Capped::new(public, max_connections, daemon.metrics.connections.clone());
    let admission = public.admission();
    let (moved_in, incoming) = tokio::sync::mpsc::unbounded_channel();
    let moves = http::Moves { out: Some(park_to_new_process(&daemon)), incoming: Some(incoming) };
    spawn_server(&mut servers, &daemon, "public port", public, handler(&daemon), moves);
    let admin_handler = |daemon: &Arc<Daemon>, token: Option<Token>| {
        let daemon = daemon.clone();
        move |request| admin::handle(daemon.clone(), token.clone(), request)
    };
    let admin = admin_handler(&daemon, None);
    spawn_server(&mut servers, &daemon, "admin socket", admin_socket, admin, http::Moves::none());
    if let Some((listener, token)) = admin_tcp {
        let admin = admin_handler(&daemon, Some(token));
        spawn_server(&mut servers, &daemon, "TCP admin", listener, admin, http::Moves::none());
    }
    match taken {
        Some(mut taken) => {
            pause_before_ready_for_tests().await;
            let moved = std::mem::take(&mut taken.sessions);
            let control = tokio::task::spawn_blocking(move || upgrade::ready_then_commit(taken))
                .await
                .map_err(|err| format!("saying ready failed: {err}"))??;
            // Committed: the sessions that moved here go on, before anything
            // new is accepted.
            let count = moved.len();
            crate::sockets::resume_moved(&daemon, moved, &admission);
            if count > 0 {
                tracing::info!("took over {count} WebSocket session(s) with their connections");
            }
            adopt_connections(control, admission, moved_in);
            let _ = daemon.listening.send(Listening::Accept);
        }
        None => {
            let _ = daemon.notifier.ready();
        }
    }
    daemon.lifecycle.serving();
    let watch = Watch::start(daemon.clone())?;
    servers.spawn(save_periodically(daemon.clone()));
    // Once serving: in an upgrade's new process, only after the commit.
    servers.spawn(crate::timers::run(daemon.clone()));
    crate::sockets::ticks::spawn_all(&daemon, &mut servers);
    if let Some(pid_file) = &config.pid_file {
        write_pid_file(pid_file)?;
    }
    tracing::info!(
        pid = std::process::id(),
        "serving on http://{public_addr}, admin socket {}",
        config.admin.socket.display()
    );

    let handed_over = loop {
        tokio::select! {
            _ = signals.hangup.recv() => reload(&daemon, &watch).await,
            _ = signals.user2.recv() => {
                let daemon = daemon.clone();
                tokio::spawn(async move {
                    tracing::info!("SIGUSR2: upgrading to {}", daemon.binary.display());
                    admin::upgrade(daemon, None).await;
                });
            }
            _ = daemon.exit.notified() => break true,
            _ = signals.terminate.recv() => break false,
            _ = signals.interrupt.recv() => break false,
        }
    };

    if handed_over {
        // The new process serves, owns the state and the admin socket:
        // finish the connections still open here, and leave.
        daemon.draining.store(true, Relaxed);
        while servers.join_next().await.is_some() {}
        // The public port's connections parked or closed: the last ones
        // that parked go out to the new process.
        let sending = daemon.clone();
        let _ = tokio::task::spawn_blocking(move || sending.outgoing.wait_sent()).await;
        // Sessions that did not move got 1001 at the hand-over; let the
        // close frames go out.
        daemon.sockets.wait_all_ended(tokio::time::Instant::now() + config.shutdown_timeout).await;
        // Once this process is gone its status cannot be asked: say how its
        // sessions ended (moved, or closed with 1001 as `going_away`).
        let closes = daemon.sockets.status().closes;
        let closes: Vec<String> = closes.iter().map(|(why, count)| format!("{why}={count}")).collect();
        tracing::info!(
            "handed over; the last connection of this process (pid {}) closed, bye; sessions ended here: [{}]",
            std::process::id(),
            closes.join(" ")
        );
        return Ok(());
    }
    let drain = config.shutdown_timeout;
    tracing::info!("stopping: finishing open requests (at most {drain:?}), then saving state");
    let _ = daemon.notifier.stopping();
    daemon.draining.store(true, Relaxed);
    let _ = daemon.listening.send(Listening::Stop);
    while servers.join_next().await.is_some() {}
    // Sessions get 1001 and their on_leave runs before the final save.
    daemon.sockets.wait_all_ended(tokio::time::Instant::now() + drain).await;
    let saving = daemon.clone();
    let run = tokio::task::spawn_blocking(move || {
        // Swaps and saves still running finish first; none starts any more.
        let still_running = saving.lifecycle.begin_stop(std::time::Instant::now() + drain);
        if !still_running.is_empty() {
            tracing::warn!("still running at shutdown: {}", still_running.join(", "));
        }
        saving.final_save()
    })
    .await;
    let _ = std::fs::remove_file(&config.admin.socket);
    if let Some(pid_file) = &config.pid_file {
        let _ = std::fs::remove_file(pid_file);
    }
    match run {
        Ok(None) => {
            tracing::info!("handed over while stopping; the new process owns the state; bye");
            Ok(())
        }
        Ok(Some(run)) if run.failed.is_empty() && run.written.iter().all(|w| w.busy.is_empty()) => {
            tracing::info!("state saved for {} module(s); bye", run.written.len());
            Ok(())
        }
        Ok(Some(run)) if run.failed.is_empty() => Err(format!(
            "stopped while calls had not returned on {}; the log says what the state file keeps of each",
            run.written
                .iter()
                .flat_map(|w| w.busy.iter().map(move |key| format!("{} '{key}'", w.module)))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Ok(Some(run)) => {
            Err(format!("could not save the state of {} module(s); see the log above", run.failed.len()))
        }
        Err(err) => Err(format!("saving the state failed: {err}")),
    }
}

/// Fault injection for the test of the upgrade's point of no return
/// (tests/daemon/upgrade_commit.rs): the new process of an upgrade waits
/// this long between taking the state and saying READY, so the old process
/// gives up on it. Read only by such a new process.
async fn pause_before_ready_for_tests() {
    let pause = std::env::var("HOTSWAP_TEST_PAUSE_BEFORE_READY_MS").ok().and_then(|ms| ms.parse().ok());
    if let Some(ms) = pause {
        tracing::warn!("HOTSWAP_TEST_PAUSE_BEFORE_READY_MS: waiting {ms} ms before READY");
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}

fn tcp_from(fd: OwnedFd, name: &str) -> Result<TcpListener, String> {
    let socket = std::net::TcpListener::from(fd);
    socket.set_nonblocking(true).map_err(|err| err.to_string())?;
    TcpListener::from_std(socket).map_err(|err| format!("cannot use the inherited {name} socket: {err}"))
}

/// The public port's connections, parked at an upgrade's hand-over, leave
/// for the new process if it takes them (`upgrade/connections.rs`).
fn park_to_new_process(
    daemon: &Arc<Daemon>,
) -> Box<dyn FnOnce() -> Option<http::ParkSink<PublicStream>> + Send> {
    let daemon = daemon.clone();
    Box::new(move || {
        let sink = daemon.outgoing.take_sink()?;
        let to: http::ParkSink<PublicStream> = Arc::new(move |parked: http::parked::Parked<PublicStream>| {
            // Its place in this process's count ends here.
            let (stream, _place) = parked.stream.into_parts();
            match stream.into_std() {
                // A failed send means the sender gave up (the deadline): it closes.
                Ok(stream) => drop(sink.send((stream, parked.read_ahead))),
                Err(err) => tracing::warn!("cannot move a parked connection ({err}); closing it"),
            }
        });
        Some(to)
    })
}

/// A public connection: counted against `server.max_connections`.
type PublicStream = crate::connections::Counted<tokio::net::TcpStream>;

/// In the new process of an upgrade, after the commit: the connections the
/// old process moved here join the public port's, counted against its cap
/// like accepted ones (one past the cap is closed, and counted refused).
fn adopt_connections(
    control: hotswap_upgrade::takeover::Arrivals,
    admission: crate::connections::Admission,
    moved_in: tokio::sync::mpsc::UnboundedSender<http::parked::Parked<PublicStream>>,
) {
    let (arriving, mut arrived) = tokio::sync::mpsc::unbounded_channel();
    let receiving = std::thread::Builder::new()
        .name("hotswap-take-connections".into())
        .spawn(move || upgrade::connections::receive_all(control, |moving| drop(arriving.send(moving))));
    if let Err(err) = receiving {
        tracing::error!("cannot take the open connections of the old process: {err}");
        return;
    }
    tokio::spawn(async move {
        let mut refused = 0usize;
        while let Some((stream, read_ahead)) = arrived.recv().await {
            let stream = match upgrade::connections::into_tokio(stream) {
                Ok(stream) => stream,
                Err(err) => {
                    tracing::warn!("cannot serve a connection moved here ({err}); closing it");
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            match admission.admit(stream) {
                Ok(stream) => drop(moved_in.send(http::parked::Parked { stream, read_ahead })),
                Err(_closed) => refused += 1,
            }
        }
        if refused > 0 {
            tracing::warn!(
                "closed {refused} connection(s) moved from the old process: {} were open already \
                 (server.max_connections)",
                admission.max()
            );
        }
    });
}

/// Serves `listener` with `handler` as the daemon's accept mode says.
fn spawn_server<L, H, F>(
    servers: &mut tokio::task::JoinSet<()>,
    daemon: &Daemon,
    what: &'static str,
    listener: L,
    handler: H,
    moves: http::Moves<L::Stream>,
) where
    L: http::Listener,
    H: Fn(hyper::Request<hyper::body::Incoming>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = http::Response> + Send + 'static,
{
    let listener = Arc::new(listener);
    let accept = move || {
        let listener = listener.clone();
        async move { listener.accept_one().await }
    };
    let drain = daemon.config().shutdown_timeout;
    servers.spawn(http::serve(what, accept, daemon.listening.subscribe(), drain, handler, moves));
}

/// SIGHUP: re-read the config; a bad one is reported and the running one stays.
async fn reload(daemon: &Arc<Daemon>, watch: &Watch) {
    let file = daemon.config().file.clone();
    let config = match Config::load(&file) {
        Ok(config) => config,
        Err(err) => {
            tracing::error!("SIGHUP: {err}; keeping the running config");
            return;
        }
    };
    tracing::info!("SIGHUP: applying {}", file.display());
    let applying = daemon.clone();
    match tokio::task::spawn_blocking(move || applying.reconcile(config)).await {
        Ok(Ok(())) => {}
        // An upgrade in progress: the new process reads the config itself.
        Ok(Err(not_now)) => tracing::warn!("SIGHUP: {not_now}"),
        Err(err) => tracing::error!("SIGHUP: applying the config failed: {err}"),
    }
    watch.refresh(&daemon.config());
}

/// Saves every module's state every `state.snapshot_every`, except while the
/// daemon does not serve (an upgrade moves the state; after it the new
/// process owns it).
async fn save_periodically(daemon: Arc<Daemon>) {
    let every = daemon.config().snapshot_every;
    let mut listening = daemon.listening.subscribe();
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = listening.wait_for(|mode| matches!(mode, Listening::Stop | Listening::HandOver)) => return,
        }
        let saving = daemon.clone();
        let _ = tokio::task::spawn_blocking(move || saving.snapshot_all()).await;
    }
}

/// Writes this process's pid to `file`, atomically (so readers never see
/// an empty or half-written file, even while an upgrade replaces it).
fn write_pid_file(file: &Path) -> Result<(), String> {
    let temporary = file.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&temporary, format!("{}\n", std::process::id()))
        .and_then(|()| std::fs::rename(&temporary, file))
        .map_err(|err| format!("cannot write the pid file {}: {err}", file.display()))
}

/// Binds the admin socket with mode 0600 from the first moment: it is bound
/// under a temporary name, restricted, then renamed into place.
fn bind_admin_socket(path: &Path) -> Result<UnixListener, String> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(format!(
                "another daemon answers on the admin socket {}; stop it first (or set admin.socket)",
                path.display()
            ));
        }
        std::fs::remove_file(path)
            .map_err(|err| format!("cannot remove the stale admin socket {}: {err}", path.display()))?;
    }
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|err| format!("cannot create {}: {err}", parent.display()))?;
    let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let temporary = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&temporary);
    let error = |err: std::io::Error| format!("cannot create the admin socket {}: {err}", path.display());
    let listener = UnixListener::bind(&temporary).map_err(error)?;
    std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600)).map_err(error)?;
    std::fs::rename(&temporary, path).map_err(error)?;
    Ok(listener)
}

/// Reads the TCP admin token; refuses a file others can read.
fn read_token(file: &Path) -> Result<Token, String> {
    let meta = std::fs::metadata(file)
        .map_err(|err| format!("cannot read admin.token_file {}: {err}", file.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "admin.token_file {} is readable by others (mode {mode:o}); run `chmod 600 {}`",
            file.display(),
            file.display()
        ));
    }
    let token =
        std::fs::read_to_string(file).map_err(|err| format!("cannot read {}: {err}", file.display()))?;
    let token = token.trim();
    if token.len() < 16 {
        return Err(format!(
            "admin.token_file {} holds fewer than 16 characters; use a long random token",
            file.display()
        ));
    }
    Ok(Token::new(token))
}
