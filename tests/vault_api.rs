//! The rest of the vault API through a real mount over the Glacier emulator: the vault
//! attributes `user.glacier.tags`, `access_policy` and `notifications` with `setfattr` and
//! `getfattr` (round trips through the API, a second mount reads the same, ENOTSUP from an
//! endpoint without the calls, owner-only access policy), and the account's limits: the
//! data-retrieval policy and provisioned capacity in `status --json`, the warning of
//! `glacierfs retrieve`, the time `export --dry-run` says the plan needs, and an export that
//! paces itself to a `BytesPerHour` policy so Glacier refuses none of its retrievals.
// A test fails by panicking, so unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{json, Value};

use support::emulator::{Emulator, FaultKind, Op};
use support::export::{pattern, plain, Archive, Export, Vault};
use support::mount::{aws_env, binary, fuse_available, wait_until, Mount};
use support::sdk_client;

const POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"no-deletes","Principal":"*","Effect":"Deny","Action":"glacier:DeleteArchive","Resource":"arn:aws:glacier:us-east-1:123456789012:vaults/v"}]}"#;
const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:done";

fn setfattr(path: &Path, name: &str, value: Option<&str>) -> Output {
    let mut cmd = Command::new("setfattr");
    cmd.arg("-n").arg(name);
    if let Some(v) = value {
        cmd.arg("-v").arg(v);
    }
    cmd.arg(path).output().unwrap()
}

/// `getfattr --only-values`: the value, or getfattr's complaint.
fn getfattr(path: &Path, name: &str) -> Result<String, String> {
    let out = Command::new("getfattr")
        .args(["--only-values", "-n", name])
        .arg(path)
        .output()
        .unwrap();
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// listxattr(2) of `path`, as Python's `os.listxattr` gives it (`getfattr -d` shows only the
/// attributes that have a value).
fn listed(path: &Path) -> String {
    let out = Command::new("python3")
        .args(["-c", "import os, sys; print(os.listxattr(sys.argv[1]))"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn vault_attributes_round_trip_through_the_api_and_a_second_mount_reads_them() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault("v");
    let cache = tempfile::tempdir().unwrap();
    let mount = Mount::start(&emu.endpoint(), cache.path(), &[]);
    let v = mount.path("v");
    let sdk = sdk_client(&emu.endpoint());
    let rt = tokio::runtime::Runtime::new().unwrap();

    // Nothing set yet: no tags, no policy, no notifications.
    assert_eq!(
        json_of(&getfattr(&v, "user.glacier.tags").unwrap()),
        json!({})
    );
    let none = getfattr(&v, "user.glacier.access_policy").unwrap_err();
    assert!(none.contains("No such attribute"), "{none}");
    assert!(getfattr(&v, "user.glacier.notifications").is_err());
    let names = listed(&v);
    for name in ["tags", "access_policy", "notifications"] {
        assert!(names.contains(&format!("user.glacier.{name}")), "{names}");
    }

    // Tags: a write replaces the set, at Glacier.
    let tags = r#"{"project":"x","owner":"me"}"#;
    ok(&setfattr(&v, "user.glacier.tags", Some(tags)), "set tags");
    assert_eq!(
        json_of(&getfattr(&v, "user.glacier.tags").unwrap()),
        json_of(tags)
    );
    ok(
        &setfattr(&v, "user.glacier.tags", Some(r#"{"project":"y"}"#)),
        "replace tags",
    );
    let at_glacier = rt
        .block_on(sdk.list_tags_for_vault().vault_name("v").send())
        .unwrap();
    let at_glacier: Vec<(String, String)> = at_glacier
        .tags()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(at_glacier, vec![("project".to_owned(), "y".to_owned())]);

    // The access policy and the notifications.
    ok(
        &setfattr(&v, "user.glacier.access_policy", Some(POLICY)),
        "set policy",
    );
    assert_eq!(
        json_of(&getfattr(&v, "user.glacier.access_policy").unwrap()),
        json_of(POLICY)
    );
    let glacier_policy = rt
        .block_on(sdk.get_vault_access_policy().vault_name("v").send())
        .unwrap();
    assert_eq!(
        json_of(glacier_policy.policy().unwrap().policy().unwrap()),
        json_of(POLICY)
    );
    let config = format!(r#"{{"SNSTopic":"{TOPIC}","Events":["ArchiveRetrievalCompleted"]}}"#);
    ok(
        &setfattr(&v, "user.glacier.notifications", Some(&config)),
        "set notifications",
    );
    assert_eq!(
        json_of(&getfattr(&v, "user.glacier.notifications").unwrap()),
        json_of(&config)
    );
    let glacier_config = rt
        .block_on(sdk.get_vault_notifications().vault_name("v").send())
        .unwrap();
    assert_eq!(
        glacier_config
            .vault_notification_config()
            .unwrap()
            .sns_topic(),
        Some(TOPIC)
    );

    // What Glacier refuses, or what is not the attribute's shape, is EINVAL.
    for (name, bad) in [
        ("user.glacier.tags", "[1]"),
        ("user.glacier.access_policy", "not json"),
        (
            "user.glacier.notifications",
            r#"{"SNSTopic":"t","Events":["Nope"]}"#,
        ),
    ] {
        let out = setfattr(&v, name, Some(bad));
        assert!(!out.status.success(), "{name} = {bad} was accepted");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Invalid argument"),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // A second mount, on its own catalog, reads the same from Glacier.
    let cache2 = tempfile::tempdir().unwrap();
    let second = Mount::start(&emu.endpoint(), cache2.path(), &[]);
    let v2 = second.path("v");
    assert_eq!(
        json_of(&getfattr(&v2, "user.glacier.tags").unwrap()),
        json!({"project": "y"})
    );
    assert_eq!(
        json_of(&getfattr(&v2, "user.glacier.access_policy").unwrap()),
        json_of(POLICY)
    );
    assert_eq!(
        json_of(&getfattr(&v2, "user.glacier.notifications").unwrap()),
        json_of(&config)
    );

    // An empty value deletes the policy; the first mount sees that within the poll interval.
    ok(
        &setfattr(&v2, "user.glacier.access_policy", None),
        "delete policy",
    );
    assert!(rt
        .block_on(sdk.get_vault_access_policy().vault_name("v").send())
        .is_err());
    assert!(
        wait_until(Duration::from_secs(10), || getfattr(
            &v,
            "user.glacier.access_policy"
        )
        .is_err()),
        "the first mount still shows the deleted policy"
    );
}

#[test]
fn an_endpoint_without_the_calls_answers_enotsup_and_stops_listing_them() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault("v");
    let cache = tempfile::tempdir().unwrap();
    let mount = Mount::start(&emu.endpoint(), cache.path(), &[]);
    let v = mount.path("v");
    emu.fail_next(Op::ListTagsForVault, FaultKind::NoSuchOperation, 1);
    let err = getfattr(&v, "user.glacier.tags").unwrap_err();
    assert!(err.contains("Operation not supported"), "{err}");
    assert!(
        mount
            .log_text()
            .contains("does not support user.glacier.tags"),
        "no log line; log:\n{}",
        mount.log_text()
    );
    let names = listed(&v);
    assert!(!names.contains("user.glacier.tags"), "{names}");
    assert!(names.contains("user.glacier.notifications"), "{names}");
}

#[test]
fn only_the_mounts_owner_may_write_the_access_policy() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault("v");
    let cache = tempfile::tempdir().unwrap();
    // The mount belongs to another user; this test (root) is not its owner.
    let mount = Mount::start(&emu.endpoint(), cache.path(), &["--uid", "65534"]);
    let v = mount.path("v");
    let out = setfattr(&v, "user.glacier.access_policy", Some(POLICY));
    assert!(!out.status.success(), "a non-owner set the access policy");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(emu.stats().requests_for(Op::SetVaultAccessPolicy), 0);
    // Tags are not the owner's alone.
    ok(
        &setfattr(&v, "user.glacier.tags", Some(r#"{"k":"v"}"#)),
        "tags by a non-owner",
    );
}

fn status_json(cache: &Path) -> Value {
    let mut cmd = Command::new(binary());
    let out = aws_env(&mut cmd)
        .args(["status", "--json", "--cache-dir"])
        .arg(cache)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

#[test]
fn status_shows_the_retrieval_policy_and_the_capacity() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault("v");
    emu.set_retrieval_policy("BytesPerHour", Some(5 << 30));
    let sdk = sdk_client(&emu.endpoint());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(sdk.purchase_provisioned_capacity().send())
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mount = Mount::start(&emu.endpoint(), cache.path(), &[]);
    let mut report = Value::Null;
    assert!(
        wait_until(Duration::from_secs(20), || {
            report = status_json(cache.path());
            !report["AccountLimits"].is_null()
        }),
        "status never showed the limits; log:\n{}",
        mount.log_text()
    );
    let limits = &report["AccountLimits"];
    assert_eq!(
        limits["DataRetrievalPolicy"],
        json!({"Strategy": "BytesPerHour", "BytesPerHour": 5u64 << 30}),
        "{report}"
    );
    let units = limits["ProvisionedCapacity"].as_array().unwrap();
    assert_eq!(units.len(), 1, "{report}");
    assert!(units[0]["ExpirationDate"].as_str().unwrap().ends_with('Z'));

    // A change at Glacier shows after the next poll (every --poll-interval, 1 s here).
    emu.set_retrieval_policy("FreeTier", None);
    assert!(wait_until(Duration::from_secs(20), || {
        status_json(cache.path())["AccountLimits"]["DataRetrievalPolicy"]["Strategy"] == "FreeTier"
    }));
    let mut cmd = Command::new(binary());
    let human = aws_env(&mut cmd)
        .args(["status", "--cache-dir"])
        .arg(cache.path())
        .output()
        .unwrap();
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(human.contains("data-retrieval policy: FreeTier"), "{human}");
    assert!(
        human.contains("provisioned capacity: 1 unit(s), expiring 20"),
        "{human}"
    );
}

/// Six archives of 1,000 bytes under a policy of 2,500 bytes an hour: two fit in an hour.
fn six_archives() -> Vec<Archive> {
    (0..6usize)
        .map(|i| plain(&format!("p/{i}.bin"), pattern(1000, i as u32), i as i64))
        .collect()
}

#[test]
fn retrieve_warns_when_the_plan_exceeds_the_policys_rate() {
    if !fuse_available() {
        return;
    }
    let vault = Vault::new(&six_archives());
    vault.emu.set_retrieval_policy("BytesPerHour", Some(2500));
    let cache = vault.mount.cache_dir.clone();
    assert!(wait_until(Duration::from_secs(20), || status_json(&cache)
        ["AccountLimits"]["DataRetrievalPolicy"]["BytesPerHour"]
        == 2500));
    let mut cmd = Command::new(binary());
    let out = aws_env(&mut cmd)
        .arg("retrieve")
        .arg(vault.root().join("p"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: the data-retrieval policy allows 2.4 KiB/hour")
            && err.contains("needs at least 2h24m"),
        "{err}"
    );
    // Within the rate, no warning.
    let mut cmd = Command::new(binary());
    let out = aws_env(&mut cmd)
        .arg("retrieve")
        .arg(vault.root().join("p/0.bin"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("warning"), "{err}");
}

#[test]
fn export_says_how_long_the_policy_makes_it_and_paces_itself_to_it() {
    if !fuse_available() {
        return;
    }
    let vault = Vault::new(&six_archives());
    vault.emu.set_retrieval_policy("BytesPerHour", Some(2500));
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("copy");

    let mut dry = Export::start(&vault, &dest, &["--dry-run"]);
    assert!(dry.drive(&vault.emu, |_| {}).success(), "{}", dry.stderr());
    // The human plan goes to stderr, as every line of a text-mode export does.
    let text = dry.stderr();
    assert!(
        text.contains(
            "warning: the data-retrieval policy allows 2.4 KiB an hour: retrieving 5.9 KiB \
             takes at least 2h24m under it"
        ),
        "{text}"
    );
    let mut dry = Export::start(&vault, &dest, &["--dry-run", "--json"]);
    assert!(dry.drive(&vault.emu, |_| {}).success(), "{}", dry.stderr());
    let plan = &dry.events()[0];
    assert_eq!(plan["policy_bytes_per_hour"], 2500, "{plan}");
    assert_eq!(plan["seconds_under_policy"], 6000 * 3600 / 2500, "{plan}");

    // The export's hour is 1.5 s here; the emulator's clock moves hours on each completion,
    // so Glacier's trailing hour never holds more than the export's does.
    let hour = std::ffi::OsStr::new("1500");
    let mut export = Export::start_env(
        &vault,
        &dest,
        &["--json"],
        &[("GLACIERFS_EXPORT_HOUR_MS", hour)],
    );
    let ended = export.drive(&vault.emu, |_| {});
    assert!(ended.success(), "{}", export.stderr());
    assert_eq!(vault.emu.policy_refusals(), 0, "{}", export.stderr());
    for (rel, data) in vault.expected() {
        assert_eq!(std::fs::read(dest.join(&rel)).unwrap(), data, "{rel}");
    }
    assert_eq!(export.summary()["failed"], 0, "{}", export.stdout());
}
