//! What the daemon reports about itself: the admin API's status document
//! and the metrics text.

use super::Daemon;
use crate::api;

impl Daemon {
    pub fn status(&self) -> api::Status {
        let config = self.config();
        let engine = self.engine.status();
        let last_errors = self.last_errors.lock().expect("error lock").clone();
        let last_triggers = self.last_triggers.lock().expect("trigger lock").clone();
        let saves_failed = self.metrics.saves_failed();
        let last_save_errors = self.last_save_errors.lock().expect("save error lock").clone();
        let modules = engine
            .modules
            .iter()
            .map(|module| api::Module {
                name: module.name.clone(),
                version: module.current.version.clone(),
                file: module.current.file.display().to_string(),
                sdk_version: module.current.sdk_version.clone(),
                rustc_version: module.current.rustc_version.clone(),
                since_unix_ms: api::unix_ms(module.since),
                watch: config.module(&module.name).is_some_and(|m| m.watch),
                instances: module.instances,
                calls: module.calls,
                errors: module.errors,
                panics: module.panics,
                by_version: module
                    .by_version
                    .iter()
                    .map(|line| api::VersionCalls {
                        version: line.version.clone(),
                        calls: line.calls,
                        errors: line.errors,
                        panics: line.panics,
                    })
                    .collect(),
                swaps: module.swaps,
                rollback_version: module.rollback_version.clone(),
                resident_retired: module.resident_retired.iter().map(|r| r.version.clone()).collect(),
                reclaimed: module.reclaimed,
                last_swap: module.last_swap.as_ref().map(|report| {
                    // A swap the daemon did not record was the load at start.
                    let trigger = last_triggers.get(&module.name).map_or("start", |trigger| trigger.as_str());
                    api::SwapReport::from_engine(report, trigger)
                }),
                last_error: last_errors.get(&module.name).cloned(),
                saves_failed: saves_failed.get(&module.name).copied().unwrap_or(0),
                last_save_error: last_save_errors.get(&module.name).cloned(),
                origin: self.origin(&module.name),
                swap_in_progress: module.swap_in_progress.as_ref().map(api::SwapInProgress::from_engine),
            })
            .collect();
        api::Status {
            pid: std::process::id(),
            daemon_version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            config: config.file.display().to_string(),
            public_addr: self.public_addr.get().map(ToString::to_string).unwrap_or_default(),
            admin_socket: config.admin.socket.display().to_string(),
            state_dir: self.store.dir().display().to_string(),
            draining: self.draining.load(std::sync::atomic::Ordering::Relaxed),
            phase: self.lifecycle.phase().to_string(),
            running: self.lifecycle.running(),
            last_snapshot: self.last_snapshot.lock().expect("snapshot lock").clone(),
            upgrade: self.progress(),
            modules,
            slow_call_ms: self.calls.slow_call().as_millis() as u64,
            slow_calls: self.calls.slow_calls().iter().map(api::SlowCall::from_running).collect(),
            timers: self.timers.status(self.engine.pending_timers()),
            sessions: self.sockets.status(),
        }
    }

    pub fn metrics_text(&self) -> String {
        let mut text =
            self.metrics.render(&self.engine.status(), &self.calls.slow_calls(), self.started.elapsed());
        self.timers.render(&mut text, self.engine.pending_timers());
        self.sockets.render(&mut text);
        text
    }
}
