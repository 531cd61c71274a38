//! The comparison: nginx under the same load, with its binary upgrade
//! (USR2, WINCH, QUIT; [`hotswap_bench::nginx`]) where the daemon has its
//! process upgrades.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use hotswap_bench::nginx::{Config, Nginx};
use hotswap_test_support::process::wait_gone;

use crate::load::drive;
use crate::options::{Options, Plan};
use crate::plan::{Action, Event, schedule};
use crate::report::{RunSummary, report};

/// How long an old master may take to exit after QUIT.
const GONE_TIMEOUT: Duration = Duration::from_secs(15);

/// One run against nginx: a private prefix and config answering every
/// request itself, the load with a binary upgrade at each upgrade time of
/// the load plan, then the master that serves stopped.
pub fn run(options: &Options, nginx: &Path, name: &str) -> RunSummary {
    let config = Config {
        worker_connections: 1024,
        main: String::new(),
        server: "    location / { add_header hotswap-pid $pid always; return 200 \"ok\\n\"; }".into(),
    };
    let mut nginx = Nginx::start(nginx, &config);
    let addr = nginx.addr;
    println!(
        "nginx master pid {} serving on {addr}, prefix {}",
        nginx.master().unwrap_or(0),
        nginx.prefix().display()
    );
    // nginx replaces its binary in place of each hotswap upgrade; no swaps.
    let plan: Vec<(f64, Action)> =
        schedule(Plan::Load).into_iter().filter(|(_, action)| matches!(action, Action::Upgrade)).collect();
    let (results, events) = drive(options, addr, &plan, |at: Instant, _: &Action| upgrade(&nginx, at));
    let extra = nginx.stop();
    let _ = fs::write(options.out.join(format!("{name}-error.log")), nginx.error_log());
    report(options, name, results, events, extra)
}

/// nginx's binary upgrade, then the wait until the old master has exited.
fn upgrade(nginx: &Nginx, at: Instant) -> Event {
    let start_s = at.elapsed().as_secs_f64();
    let mut event = Event { start_s, kind: "upgrade".into(), ..Event::default() };
    match nginx.upgrade() {
        Err(why) => event.detail = why,
        Ok(done) => {
            event.old_pid = done.old;
            event.new_pid = done.new;
            // The new master serves: the time from USR2 to here is nginx's "took".
            event.took_ms = done.took.as_secs_f64() * 1e3;
            event.ok = wait_gone(done.old, GONE_TIMEOUT).is_some();
            if !event.ok {
                event.detail = format!("old master {} still alive {GONE_TIMEOUT:?} after QUIT", done.old);
            }
        }
    }
    event.end_s = at.elapsed().as_secs_f64();
    event
}
