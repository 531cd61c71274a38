//! nginx, the comparison for the daemon's process upgrades: a master
//! started in a private prefix with a config of our own on loopback, its
//! binary upgrade (`kill -USR2` the master, wait for the new master and its
//! workers, `kill -WINCH` and `kill -QUIT` the old one), and every master
//! it started stopped at the end by its pid. Used by `upgrade-load --nginx`
//! (keep-alive HTTP answered by nginx) and `sessions-load --nginx`
//! (WebSocket sessions proxied to a backend).
//!
//! The binary is Debian's (`apt-get install -y nginx`); nothing in CI or the
//! tests needs it.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hotswap_test_support::folder;
use hotswap_test_support::process::{has_children, is_running, read_pid, runs_binary, signal, wait_gone};
use tempfile::TempDir;

/// How long nginx may take to serve after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a binary upgrade may take to show a new master with workers.
const NEW_MASTER_TIMEOUT: Duration = Duration::from_secs(10);
/// What nginx logs when a master whose old master still runs gets USR2.
pub const USR2_IGNORED: &str = "the changing binary signal is ignored";
/// How long a master asked to quit at the end may take before SIGKILL.
const QUIT_TIMEOUT: Duration = Duration::from_secs(15);

/// What `nginx -v` says.
pub fn version(nginx: &Path) -> String {
    Command::new(nginx)
        .arg("-v")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stderr).trim().to_owned())
        .unwrap_or_else(|err| format!("cannot run it: {err}"))
}

/// The parts of the config that differ between the comparisons.
#[derive(Debug, Clone)]
pub struct Config {
    /// `worker_connections` (a proxied session takes two: client and upstream).
    pub worker_connections: u32,
    /// Directives of the main context (say `worker_shutdown_timeout 1s;`).
    pub main: String,
    /// What the `server` block holds after its `listen`.
    pub server: String,
}

/// One binary upgrade up to the old master told to quit.
#[derive(Debug, Clone)]
pub struct BinaryUpgrade {
    pub old: u32,
    pub new: u32,
    /// From USR2 until the new master has workers (nginx's "took").
    pub took: Duration,
}

/// A running nginx and its prefix (removed when dropped, after every master
/// it started was stopped).
#[derive(Debug)]
pub struct Nginx {
    binary: PathBuf,
    pub addr: SocketAddr,
    pid_file: PathBuf,
    /// Every master seen, the first one and each upgrade's new one, in order.
    masters: Mutex<Vec<u32>>,
    stopped: bool,
    dir: TempDir,
}

impl Nginx {
    /// Starts nginx (`daemon on`, 2 workers, 127.0.0.1 on a free port) and
    /// waits until its master has workers and its port takes connections.
    ///
    /// # Panics
    ///
    /// If nginx does not start or does not serve within 30 s (with its logs).
    pub fn start(binary: &Path, config: &Config) -> Nginx {
        let binary = fs::canonicalize(binary).unwrap_or_else(|err| {
            panic!("nginx binary {}: {err} (apt-get install -y nginx)", binary.display())
        });
        let dir = folder::private_dir("hotswap-nginx-");
        let root = dir.path().to_owned();
        fs::create_dir(root.join("logs")).expect("logs folder");
        // A free port on loopback (bound, read, released; nginx binds it next).
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("an address");
        let pid_file = root.join("nginx.pid");
        // `daemon on` (nginx's default): a master whose parent is still the
        // one that started it ignores USR2 ("the changing binary signal is
        // ignored").
        let conf = format!(
            "daemon on;\nmaster_process on;\nworker_processes 2;\nworker_rlimit_nofile {nofile};\npid {pid};\n\
             error_log {root}/logs/error.log notice;\n{main}\n\
             events {{ worker_connections {connections}; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {root}/body;\n  proxy_temp_path {root}/proxy;\n  \
             fastcgi_temp_path {root}/fastcgi;\n  uwsgi_temp_path {root}/uwsgi;\n  scgi_temp_path {root}/scgi;\n  \
             server {{\n    listen 127.0.0.1:{port};\n{server}\n  }}\n}}\n",
            nofile = config.worker_connections * 2,
            connections = config.worker_connections,
            pid = pid_file.display(),
            root = root.display(),
            main = config.main,
            server = config.server,
        );
        let conf_path = root.join("nginx.conf");
        fs::write(&conf_path, conf).expect("write nginx.conf");
        let log = root.join("logs/stderr.log");
        let log_file = fs::File::create(&log).expect("log file");
        // The process started here forks the master and exits.
        let status = Command::new(&binary)
            .arg("-p")
            .arg(&root)
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .status()
            .unwrap_or_else(|err| panic!("start {}: {err}", binary.display()));
        assert!(status.success(), "nginx exited {status}:\n{}", fs::read_to_string(&log).unwrap_or_default());
        let started = Instant::now();
        let master = loop {
            if let Some(master) = read_pid(&pid_file).filter(|&pid| is_running(pid))
                && has_children(master)
                && TcpStream::connect(addr).is_ok()
            {
                break master;
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "nginx did not serve within {START_TIMEOUT:?}:\n{}",
                fs::read_to_string(root.join("logs/error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Nginx { binary, addr, pid_file, masters: Mutex::new(vec![master]), stopped: false, dir }
    }

    /// The binary it runs (resolved).
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The prefix folder (config, pid file, logs).
    pub fn prefix(&self) -> &Path {
        self.dir.path()
    }

    /// The master that serves now (its pid file).
    pub fn master(&self) -> Option<u32> {
        read_pid(&self.pid_file)
    }

    /// How many times nginx has logged that it ignored a USR2.
    pub fn usr2_ignored(&self) -> usize {
        self.error_log().matches(USR2_IGNORED).count()
    }

    /// nginx's error log (level notice) as it is now.
    pub fn error_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("logs/error.log")).unwrap_or_default()
    }

    /// nginx's binary upgrade: USR2 to the master, wait (10 s at most) for
    /// the new master and its workers, then WINCH (its workers stop
    /// gracefully) and QUIT (it exits once they have) to the old master.
    /// Does not wait for the old master to exit.
    ///
    /// # Errors
    ///
    /// What went wrong: no pid file, USR2 ignored (nginx's error log says
    /// so while the master's own old master still runs), or no new master.
    pub fn upgrade(&self) -> Result<BinaryUpgrade, String> {
        let old = read_pid(&self.pid_file).ok_or("no pid file")?;
        let ignored_before = self.usr2_ignored();
        let asked = Instant::now();
        signal(old, "USR2");
        let oldbin = self.pid_file.with_extension("pid.oldbin");
        let new = loop {
            if let Some(new) = read_pid(&self.pid_file).filter(|&new| new != old)
                && oldbin.exists()
                && has_children(new)
            {
                break new;
            }
            if self.usr2_ignored() > ignored_before {
                return Err(format!("master {old} ignored USR2 (error.log: \"{USR2_IGNORED}\")"));
            }
            if asked.elapsed() > NEW_MASTER_TIMEOUT {
                return Err(format!(
                    "no new master with workers within {NEW_MASTER_TIMEOUT:?} of USR2 to {old}"
                ));
            }
            // Each look reads all of /proc: every 1 ms for nginx's usual
            // start (tens of ms), then every 20 ms, not to load the machine
            // under measurement.
            let pause = if asked.elapsed() < Duration::from_millis(200) { 1 } else { 20 };
            std::thread::sleep(Duration::from_millis(pause));
        };
        let took = asked.elapsed();
        self.masters.lock().expect("masters").push(new);
        signal(old, "WINCH");
        signal(old, "QUIT");
        Ok(BinaryUpgrade { old, new, took })
    }

    /// Stops every master it started: the one that serves with QUIT (SIGKILL
    /// after 15 s), then waits for every other one (SIGKILL after 15 s);
    /// what happened, one line each.
    pub fn stop(&mut self) -> Vec<String> {
        if std::mem::replace(&mut self.stopped, true) {
            return Vec::new();
        }
        let mut notes = Vec::new();
        let masters = self.masters.lock().expect("masters").clone();
        match read_pid(&self.pid_file) {
            Some(current) if masters.contains(&current) && runs_binary(current, &self.binary) => {
                signal(current, "QUIT");
                notes.push(self.end(current, "quit (SIGQUIT)"));
            }
            other => {
                notes.push(format!("pid file names {other:?}, not a master this run started ({masters:?})"))
            }
        }
        for &pid in &masters {
            if runs_binary(pid, &self.binary) {
                notes.push(self.end(pid, "had been told to quit; exited"));
            }
        }
        notes
    }

    /// Waits for master `pid` to exit (SIGKILL after 15 s); what happened.
    fn end(&self, pid: u32, what: &str) -> String {
        match wait_gone(pid, QUIT_TIMEOUT) {
            Some(after) => format!("nginx master {pid} {what} after {after:.0?}"),
            None if runs_binary(pid, &self.binary) => {
                signal(pid, "KILL");
                format!("WARNING: nginx master {pid} still ran {QUIT_TIMEOUT:?} after QUIT; killed")
            }
            None => format!("nginx master {pid}: no longer nginx; left alone"),
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        for note in self.stop() {
            eprintln!("{note}");
        }
    }
}
