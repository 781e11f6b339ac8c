//! Runs the examples of SEMANTICS.md against a real mount over the Glacier emulator, so the
//! document stays true. Each ```sh block runs in order; a `#=>` line after a command is what
//! its output must contain (`error: ...` means it must fail with that message), and `#!`
//! lines are instructions to this harness.
// A test fails by panicking, so unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;

use support::emulator::Emulator;
use support::mount::{aws_env, fuse_available, wait_until, Mount};

const DOC: &str = include_str!("../SEMANTICS.md");

/// One command and what it must print.
struct Step {
    command: String,
    expect: Vec<String>,
}

enum Item {
    Run(Step),
    Directive(Vec<String>),
}

fn examples() -> Vec<Item> {
    let mut items = Vec::new();
    let mut in_block = false;
    for line in DOC.lines() {
        if line.trim() == "```sh" {
            in_block = true;
            continue;
        }
        if in_block && line.trim() == "```" {
            in_block = false;
            continue;
        }
        if !in_block {
            continue;
        }
        if let Some(rest) = line.strip_prefix("#=>") {
            match items.last_mut() {
                Some(Item::Run(step)) => step.expect.push(rest.trim().to_owned()),
                _ => panic!("an expectation with no command before it: {line}"),
            }
        } else if let Some(rest) = line.strip_prefix("#!") {
            items.push(Item::Directive(
                rest.split_whitespace().map(str::to_owned).collect(),
            ));
        } else if !line.trim().is_empty() {
            items.push(Item::Run(Step {
                command: line.to_owned(),
                expect: Vec::new(),
            }));
        }
    }
    items
}

fn demo_vault(emu: &Emulator) {
    emu.create_vault("demo");
    let mt2 =
        URL_SAFE_NO_PAD.encode(r#"{"filename":"photos/beach.jpg","mtime":"20230712T160000Z"}"#);
    emu.put_archive("demo", &format!("mt2 {mt2}"), b"\xff\xd8 a photo", None);
    let fg = format!(
        "<m><v>4</v><p>{}</p><lm>20190301T000000Z</lm></m>",
        STANDARD.encode("old-tool/backup.tar")
    );
    emu.put_archive("demo", &fg, &[b't'; 300], None);
    emu.put_archive("demo", "notes.md", b"plain notes\n", None);
    emu.take_inventory("demo");
}

#[test]
fn the_examples_in_semantics_md_hold() {
    if !fuse_available() {
        return;
    }
    let items = examples();
    assert!(items.len() > 20, "SEMANTICS.md lost its examples");
    let emu = Emulator::start();
    demo_vault(&emu);
    let cache = tempfile::tempdir().unwrap();
    let mount = Mount::start(
        &emu.endpoint(),
        cache.path(),
        &["--write-back-delay", "60s"],
    );
    let demo = mount.path("demo");
    let _ = std::fs::read_dir(&demo).map(|d| d.count());
    let loaded = wait_until(Duration::from_secs(60), || {
        emu.complete_all_jobs();
        demo.join("notes.md").exists() && demo.join("photos/beach.jpg").exists()
    });
    assert!(
        loaded,
        "the demo vault never loaded; log:\n{}",
        mount.log_text()
    );
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_glacierfs"))
        .parent()
        .unwrap()
        .to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    for item in items {
        match item {
            Item::Directive(words) => match words
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .as_slice()
            {
                ["complete-jobs"] => emu.complete_all_jobs(),
                ["wait-readable", rel] => assert!(
                    wait_until(Duration::from_secs(30), || std::fs::read(mount.path(rel))
                        .is_ok()),
                    "{rel} never became readable; log:\n{}",
                    mount.log_text()
                ),
                ["wait-state", rel, state] => assert!(
                    wait_until(Duration::from_secs(30), || {
                        support::xattr(&mount.path(rel), "user.glacier.state").as_deref()
                            == Ok(*state)
                    }),
                    "{rel} never reached {state}"
                ),
                other => panic!("unknown directive {other:?}"),
            },
            Item::Run(step) => {
                let out = aws_env(&mut Command::new("bash"))
                    .args(["-c", &step.command])
                    .env("MNT", mount.path(""))
                    .env("PATH", &path)
                    .output()
                    .unwrap();
                let stdout = String::from_utf8_lossy(&out.stdout);
                let stderr = String::from_utf8_lossy(&out.stderr);
                let wants_error = step.expect.iter().any(|e| e.starts_with("error:"));
                if wants_error {
                    assert!(
                        !out.status.success(),
                        "`{}` should have failed",
                        step.command
                    );
                } else {
                    assert!(out.status.success(), "`{}` failed: {stderr}", step.command);
                }
                for e in &step.expect {
                    match e.strip_prefix("error:") {
                        Some(msg) => {
                            assert!(stderr.contains(msg.trim()), "`{}`: {stderr}", step.command)
                        }
                        None => assert!(
                            stdout.contains(e.as_str()),
                            "`{}` printed:\n{stdout}\nnot {e:?}",
                            step.command
                        ),
                    }
                }
            }
        }
    }
}
