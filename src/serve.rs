//! `hotswap serve`: the daemon's life, from the config to a clean exit.
//!
//! Start: read the config, load every module (restoring its saved state),
//! then open the public port and the admin socket, so no client ever sees a
//! daemon whose modules are not ready. Run: serve, watch files, save state
//! every `state.snapshot_every`, re-read the config on SIGHUP. Stop (SIGTERM
//! or SIGINT): stop accepting, let open requests finish (each connection
//! closes after its request in flight) within `server.shutdown_timeout`,
//! save every module's state, remove the admin socket, exit 0.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::admin::{self, Token};
use crate::config::Config;
use crate::daemon::Daemon;
use crate::state::StateStore;
use crate::watch::Watch;
use crate::{http, public};

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub config: PathBuf,
    pub discard_corrupt_state: bool,
}

pub fn run(options: &ServeOptions) -> Result<(), String> {
    let config = Config::load(&options.config).map_err(|err| err.to_string())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("hotswap-worker")
        .build()
        .map_err(|err| format!("cannot start the runtime: {err}"))?;
    runtime.block_on(serve(config, options.discard_corrupt_state))
}

async fn serve(config: Config, discard_corrupt_state: bool) -> Result<(), String> {
    let store = StateStore::open(&config.state_dir).map_err(|err| err.to_string())?;
    let daemon = Arc::new(Daemon::new(config.clone(), store));
    let starting = daemon.clone();
    tokio::task::spawn_blocking(move || starting.start_modules(discard_corrupt_state))
        .await
        .map_err(|err| format!("starting the modules failed: {err}"))??;

    let public = TcpListener::bind(config.listen)
        .await
        .map_err(|err| format!("cannot listen on {} (server.listen): {err}", config.listen))?;
    let public_addr = public.local_addr().map_err(|err| err.to_string())?;
    let _ = daemon.public_addr.set(public_addr);
    let admin_socket = bind_admin_socket(&config.admin.socket)?;
    let admin_tcp = match &config.admin.tcp {
        Some((addr, token_file)) => {
            let token = read_token(token_file)?;
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|err| format!("cannot listen on {addr} (admin.listen): {err}"))?;
            Some((listener, token))
        }
        None => None,
    };

    let (stop, stopped) = watch::channel(false);
    let drain = config.shutdown_timeout;
    let mut servers = JoinSet::new();
    let public = Arc::new(public);
    servers.spawn(http::serve(
        "public port",
        move || {
            let public = public.clone();
            async move { public.accept().await.map(|(stream, _)| stream) }
        },
        stopped.clone(),
        drain,
        {
            let daemon = daemon.clone();
            move |request| public::handle(daemon.clone(), request)
        },
    ));
    let admin_socket = Arc::new(admin_socket);
    servers.spawn(http::serve(
        "admin socket",
        move || {
            let admin_socket = admin_socket.clone();
            async move { admin_socket.accept().await.map(|(stream, _)| stream) }
        },
        stopped.clone(),
        drain,
        {
            let daemon = daemon.clone();
            move |request| admin::handle(daemon.clone(), None, request)
        },
    ));
    if let Some((listener, token)) = admin_tcp {
        let listener = Arc::new(listener);
        servers.spawn(http::serve(
            "TCP admin",
            move || {
                let listener = listener.clone();
                async move { listener.accept().await.map(|(stream, _)| stream) }
            },
            stopped.clone(),
            drain,
            {
                let daemon = daemon.clone();
                move |request| admin::handle(daemon.clone(), Some(token.clone()), request)
            },
        ));
    }
    let watch = Watch::start(daemon.clone())?;
    servers.spawn(save_periodically(daemon.clone(), stopped.clone()));

    tracing::info!(
        pid = std::process::id(),
        "serving on http://{public_addr}, admin socket {}",
        config.admin.socket.display()
    );
    let signal_error = |err| format!("cannot handle signals: {err}");
    let mut hangup = signal(SignalKind::hangup()).map_err(signal_error)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(signal_error)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(signal_error)?;
    loop {
        tokio::select! {
            _ = hangup.recv() => reload(&daemon, &watch).await,
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }

    tracing::info!("stopping: finishing open requests (at most {drain:?}), then saving state");
    daemon.draining.store(true, Relaxed);
    let _ = stop.send(true);
    while servers.join_next().await.is_some() {}
    let saving = daemon.clone();
    let run = tokio::task::spawn_blocking(move || saving.snapshot_all()).await;
    let _ = std::fs::remove_file(&config.admin.socket);
    match run {
        Ok(run) if run.failed.is_empty() => {
            tracing::info!("state saved for {} module(s); bye", run.written.len());
            Ok(())
        }
        Ok(run) => {
            Err(format!("could not save the state of {} module(s); see the log above", run.failed.len()))
        }
        Err(err) => Err(format!("saving the state failed: {err}")),
    }
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
    if let Err(err) = tokio::task::spawn_blocking(move || applying.reconcile(config)).await {
        tracing::error!("SIGHUP: applying the config failed: {err}");
    }
    watch.refresh(&daemon.config());
}

async fn save_periodically(daemon: Arc<Daemon>, mut stopped: watch::Receiver<bool>) {
    let every = daemon.config().snapshot_every;
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
        let saving = daemon.clone();
        let _ = tokio::task::spawn_blocking(move || saving.snapshot_all()).await;
    }
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
