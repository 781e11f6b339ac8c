//! `.lock` through a real mount over the Glacier emulator: the whole vault-lock state machine,
//! refusals with their reasons, malformed input, expiry, and owner-only writes.
// A test fails by panicking, so unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::emulator::Emulator;
use support::mount::{fuse_available, Mount};

const POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"deny-deletes","Principal":"*","Effect":"Deny","Action":"glacier:DeleteArchive","Resource":"arn:aws:glacier:us-east-1:123456789012:vaults/v"}]}"#;

fn lock_of(vault: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(vault.join(".lock")).expect(".lock opens by name");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn write(vault: &Path, command: &str) -> std::io::Result<()> {
    std::fs::write(vault.join(".lock"), command)
}

#[test]
fn the_vault_lock_state_machine_through_dot_lock() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    for v in ["v", "w", "x"] {
        emu.create_vault(v);
    }
    let cache = tempfile::tempdir().unwrap();
    let mount = Mount::start(&emu.endpoint(), cache.path(), &[]);
    let v = mount.path("v");
    assert_eq!(lock_of(&v)["State"], "None");

    write(&v, POLICY).unwrap();
    let l = lock_of(&v);
    assert_eq!(l["State"], "InProgress");
    assert!(l["ExpirationDate"].is_string(), "{l}");
    let id = l["LockId"]
        .as_str()
        .expect("a lock id after initiating")
        .to_owned();
    assert_eq!(emu.lock_state("v").unwrap().state, "InProgress");

    write(&v, &format!("complete {id}")).unwrap();
    assert_eq!(lock_of(&v)["State"], "Locked");
    let refused = write(&v, "abort").unwrap_err();
    assert_eq!(refused.raw_os_error(), Some(libc::EACCES));
    let l = lock_of(&v);
    assert_eq!(l["State"], "Locked");
    assert!(
        l["StatusMessage"].as_str().is_some_and(|m| !m.is_empty()),
        "no reason given: {l}"
    );

    // Abort while in progress returns to no lock.
    let w = mount.path("w");
    write(&w, POLICY).unwrap();
    write(&w, "abort").unwrap();
    assert_eq!(lock_of(&w)["State"], "None");

    // Malformed input is refused before anything is sent.
    for bad in ["{not json", "lock it please", "[1, 2]"] {
        assert_eq!(
            write(&w, bad).unwrap_err().raw_os_error(),
            Some(libc::EINVAL),
            "{bad}"
        );
    }

    // An InProgress lock expires after 24 h on the service's clock.
    let x = mount.path("x");
    write(&x, POLICY).unwrap();
    assert_eq!(lock_of(&x)["State"], "InProgress");
    emu.advance(Duration::from_secs(25 * 3600));
    assert_eq!(lock_of(&x)["State"], "None");

    // Only the mount's owner may write.
    let other = Command::new("sh")
        .arg("-c")
        .arg(format!("echo abort > '{}'", x.join(".lock").display()))
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(!other.status.success(), "another user changed the lock");
    assert!(String::from_utf8_lossy(&other.stderr).contains("Permission denied"));
}
