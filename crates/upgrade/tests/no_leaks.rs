//! The old process keeps no descriptor of an upgrade, failed or committed.
//! Alone in its test binary: a test running beside it would open and close
//! descriptors of its own.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;

use hotswap_upgrade::handover::Options;

use common::new_side::{self, REJECTION};
use common::{PATIENCE, Recorder};

#[test]
fn new_side() {
    new_side::run_if_asked();
}

/// This process's open descriptors and what each is, but the directory
/// being listed.
fn open_descriptors() -> BTreeMap<String, String> {
    let listing = std::fs::read_dir("/proc/self/fd").unwrap();
    let mut open = BTreeMap::new();
    for entry in listing {
        let entry = entry.unwrap();
        // The listing's own descriptor is gone by the time it is read.
        if let Ok(target) = std::fs::read_link(entry.path()) {
            open.insert(entry.file_name().to_string_lossy().into_owned(), target.display().to_string());
        }
    }
    open
}

/// One upgrade that moves a connection with the state and one after the
/// commit; the host's copies and the test's sockets are gone when it returns.
fn upgrade_once(behaviour: &str) -> Result<u32, String> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    client.write_all(b"x").unwrap();
    let (accepted, _) = listener.accept().unwrap();
    let mut host =
        Recorder::new(|out| out.send(16, b"state", &[accepted.as_fd()]).map_err(|err| err.to_string()));
    host.after = Box::new(|after| after.send(17, b"after", &[accepted.as_fd()]).unwrap());
    let run = common::upgrade(behaviour, &[("public", listener.as_fd())], &mut host, &Options::new(PATIENCE));
    drop(host);
    drop((accepted, listener, client));
    run.outcome.map(|upgraded| upgraded.new_pid).map_err(|err| format!("{err}\n{}", run.log))
}

#[test]
fn an_upgrade_failed_or_committed_leaves_no_descriptor_open() {
    let before = open_descriptors();
    let failed = upgrade_once("reject_at_end").expect_err("the new process rejects");
    assert!(failed.contains(REJECTION), "{failed}");
    assert_eq!(open_descriptors(), before, "descriptors left open after a failed upgrade");
    let pid = upgrade_once("record_frames").unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(common::reap(pid), "exit status: 0");
    assert_eq!(open_descriptors(), before, "descriptors left open after a committed upgrade");
}
