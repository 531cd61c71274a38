//! The bridge from the `log` crate's macros inside a module to the host's
//! log, with the same fields as [`Context::log`](crate::Context::log)
//! (module, version, instance, method) and the record's target.
//!
//! Each module (each version of it) has its own copy of `log`, with its own
//! logger: a record never reaches the host's `log`, or any writer, unless
//! the module's copy has a logger. The SDK installs [`HostLog`] there the
//! first time an instance starts, so `log::info!` in a module goes to the
//! host that lent the entry point running on this thread (`CURRENT_HOST`).
//! A record made outside an entry point has no host to go to and is
//! dropped: nothing in the module writes to stdout or stderr behind the
//! host's back. A module that sets a logger of its own before (or instead
//! of) this one keeps it; `log::set_logger` refuses a second one, so
//! `env_logger::init()` in a module's `init` panics (and that `init` fails).
//!
//! With the `tracing` feature, the module's copy of `tracing` turns its
//! events into `log` records when no subscriber is set (tracing's own `log`
//! feature), and they take the same way.

use std::sync::Once;

use crate::context::{Level, write_log};

/// The logger the SDK installs in the module's copy of `log`.
struct HostLog;

static HOST_LOG: HostLog = HostLog;

/// Installs [`HostLog`] as this module's logger, once. Records of every
/// level are passed on; the host filters them by its own settings.
pub(crate) fn install() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        if log::set_logger(&HOST_LOG).is_ok() {
            log::set_max_level(log::LevelFilter::Trace);
        }
    });
}

impl log::Log for HostLog {
    fn enabled(&self, _metadata: &log::Metadata<'_>) -> bool {
        !crate::entry_points::CURRENT_HOST.with(std::cell::Cell::get).api.is_null()
    }

    fn log(&self, record: &log::Record<'_>) {
        let host = crate::entry_points::CURRENT_HOST.with(std::cell::Cell::get);
        if host.api.is_null() {
            // Outside an entry point: no host to write to.
            return;
        }
        let level = match record.level() {
            log::Level::Error => Level::Error,
            log::Level::Warn => Level::Warn,
            log::Level::Info => Level::Info,
            log::Level::Debug => Level::Debug,
            log::Level::Trace => Level::Trace,
        };
        write_log(&host, level, record.target(), &record.args().to_string());
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::ffi::c_void;

    use hotswap_abi::{HostApi, RawHost, RawStr, level};

    use super::*;
    use crate::entry_points::HostScope;

    thread_local! {
        static RECEIVED: RefCell<Vec<(u32, String, String)>> = const { RefCell::new(Vec::new()) };
    }

    unsafe extern "C" fn record(_call: *mut c_void, level: u32, target: RawStr, message: RawStr) {
        // SAFETY: the bridge passes strings that live for this call.
        let (target, message) = unsafe { (target.to_str().unwrap(), message.to_str().unwrap()) };
        RECEIVED.with(|got| got.borrow_mut().push((level, target.to_owned(), message.to_owned())));
    }

    static API: HostApi = HostApi {
        size: size_of::<HostApi>() as u32,
        reply: None,
        now: None,
        log: Some(record),
        after: None,
        instance: None,
        send: None,
        broadcast: None,
        close: None,
    };

    #[test]
    fn log_macros_reach_the_host_of_the_entry_point_and_are_dropped_outside_one() {
        install();
        log::warn!(target: "ledger::audit", "before any entry point");
        let host = RawHost { api: &API, call: std::ptr::null_mut() };
        {
            // SAFETY: `host` outlives the scope, which stands for an entry point.
            let _scope = unsafe { HostScope::enter(&host) };
            log::warn!(target: "ledger::audit", "balance {} below {}", -5, 0);
            log::trace!("fine detail");
        }
        log::error!("after the entry point");
        let received = RECEIVED.with(|got| got.borrow().clone());
        assert_eq!(
            received,
            [
                (level::WARN, "ledger::audit".to_owned(), "balance -5 below 0".to_owned()),
                (level::TRACE, "hotswap_module::log_bridge::tests".to_owned(), "fine detail".to_owned()),
            ],
            "only the records made inside the entry point, with their level and target"
        );
    }
}
