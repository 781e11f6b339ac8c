//! End-to-end checks against moto's Glacier, an implementation nobody on this project wrote.
//! `scripts/test.sh` starts moto and sets GLACIERFS_MOTO_ENDPOINT. moto differs from Glacier
//! in documented ways (DESIGN.md §3): archive ids are MD5s, its inventory is live, and its jobs
//! finish after a few real seconds, so these tests wait in real time.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_glacier::primitives::ByteStream;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;

use glacierfs::timefmt::format_compact;
use support::emulator::sdk_client;
use support::mount::{fuse_available, wait_until, Mount};
use support::xattr;

fn moto_endpoint() -> Option<String> {
    match std::env::var("GLACIERFS_MOTO_ENDPOINT") {
        Ok(e) if !e.is_empty() => Some(e),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "GLACIERFS_MOTO_ENDPOINT is not set: run the tests through scripts/test.sh"
            );
            eprintln!("skipping: GLACIERFS_MOTO_ENDPOINT is not set (scripts/test.sh sets it)");
            None
        }
    }
}

fn unique(prefix: &str) -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{}", std::process::id(), n % 1_000_000_000)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn vault_exists(
    rt: &tokio::runtime::Runtime,
    client: &aws_sdk_glacier::Client,
    name: &str,
) -> bool {
    rt.block_on(client.list_vaults().account_id("-").send())
        .expect("ListVaults")
        .vault_list()
        .iter()
        .any(|v| v.vault_name() == Some(name))
}

#[test]
fn moto_vaults_and_archives_end_to_end() {
    let Some(endpoint) = moto_endpoint() else {
        return;
    };
    if !fuse_available() {
        return;
    }
    let rt = runtime();
    let client = sdk_client(&endpoint);
    let vault = unique("e2e");
    rt.block_on(
        client
            .create_vault()
            .account_id("-")
            .vault_name(&vault)
            .send(),
    )
    .unwrap();

    let upload = |desc: &str, body: &[u8]| {
        rt.block_on(
            client
                .upload_archive()
                .account_id("-")
                .vault_name(&vault)
                .archive_description(desc)
                .body(ByteStream::from(body.to_vec()))
                .send(),
        )
        .expect("UploadArchive")
        .archive_id()
        .unwrap()
        .to_owned()
    };
    let mt2 = |path: &str, mtime: i64| {
        let json = format!(
            r#"{{"filename":"{path}","mtime":"{}"}}"#,
            format_compact(mtime)
        );
        format!("mt2 {}", URL_SAFE_NO_PAD.encode(json))
    };
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mt2_id = upload(&mt2("docs/report.txt", 1_352_924_178), b"mt2 body");
    upload(
        &format!(
            "<m><v>2</v><p>{}</p><lm>20200102T030405Z</lm></m>",
            STANDARD.encode("fg/photo.jpg")
        ),
        b"fastglacier body!",
    );
    upload("raw/notes.md", b"raw");
    let after = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;

    let cache = tempfile::tempdir().unwrap();
    let mount = Mount::start(&endpoint, cache.path(), &[]);
    let root = mount.path(&vault);
    let _ = std::fs::read_dir(&root)
        .expect("the vault is listed")
        .count();
    let report = root.join("docs/report.txt");
    assert!(
        wait_until(Duration::from_secs(90), || report.exists()
            && root.join("raw/notes.md").exists()),
        "archives never appeared; log:\n{}",
        mount.log_text()
    );
    let meta = std::fs::metadata(&report).unwrap();
    assert_eq!(meta.len(), 8);
    assert_eq!(mtime(&meta), 1_352_924_178);
    let fg = std::fs::metadata(root.join("fg/photo.jpg")).unwrap();
    assert_eq!((fg.len(), mtime(&fg)), (17, 1_577_934_245));
    let raw = std::fs::metadata(root.join("raw/notes.md")).unwrap();
    assert_eq!(raw.len(), 3);
    assert!(
        (before - 2..=after + 2).contains(&mtime(&raw)),
        "raw mtime is the upload date"
    );

    let dump = std::process::Command::new("getfattr")
        .args(["-d", "-m", "user.glacier"])
        .arg(&report)
        .output()
        .expect("getfattr runs (scripts/test.sh installs attr)");
    let text = String::from_utf8_lossy(&dump.stdout);
    assert!(
        text.contains(&mt2_id) && text.contains("user.glacier.state=\"cold\""),
        "{text}"
    );
    assert_eq!(xattr(&report, "user.glacier.archive_id"), Ok(mt2_id));

    // A vault with archives cannot go; an empty one created through the mount can.
    let busy = std::fs::remove_dir(&root).unwrap_err();
    assert_eq!(busy.raw_os_error(), Some(libc::ENOTEMPTY));
    let bad = std::fs::create_dir(mount.path("no spaces allowed")).unwrap_err();
    assert_eq!(bad.raw_os_error(), Some(libc::EINVAL));
    let fresh = unique("made-by-mkdir");
    std::fs::create_dir(mount.path(&fresh)).unwrap();
    assert!(
        vault_exists(&rt, &client, &fresh),
        "mkdir did not create the vault in moto"
    );
    std::fs::remove_dir(mount.path(&fresh)).unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || !vault_exists(
            &rt, &client, &fresh
        )),
        "rmdir did not delete the vault in moto; log:\n{}",
        mount.log_text()
    );
}

fn mtime(m: &std::fs::Metadata) -> i64 {
    m.modified()
        .unwrap()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
