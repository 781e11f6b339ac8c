//! `glacierfs completions SHELL` and `glacierfs man`: the scripts load in the shell that uses
//! them and complete glacierfs's commands and options, and man(1) renders the page, which
//! covers every command.
// A test fails by panicking, so unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_glacierfs")
}

fn glacierfs(args: &[&str]) -> Output {
    Command::new(binary()).args(args).output().unwrap()
}

fn ok(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Runs a bash script that has loaded the completions, with the binary under test as
/// `glacierfs`.
fn bash(script: &str) -> Output {
    Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source <(\"$GLACIERFS\" completions bash) || exit 9\n{script}"
        ))
        .env("GLACIERFS", binary())
        .output()
        .unwrap()
}

#[test]
fn the_bash_completions_load_and_register_glacierfs() {
    let out = bash("complete -p glacierfs");
    let said = ok("complete -p glacierfs", &out);
    assert!(said.contains("glacierfs"), "{said}");
    assert!(said.starts_with("complete "), "{said}");
}

#[test]
fn the_bash_completions_complete_commands_and_mount_options() {
    // What bash does on TAB: set the words and call the registered function.
    let complete = |words: &str, cword: usize| {
        let out = bash(&format!(
            "COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE=\"${{COMP_WORDS[*]}}\"; \
             COMP_POINT=${{#COMP_LINE}}; \
             f=$(complete -p glacierfs | sed -E 's/.* -F ([^ ]+) .*/\\1/'); \
             \"$f\" glacierfs \"${{COMP_WORDS[$COMP_CWORD]}}\" \"${{COMP_WORDS[$COMP_CWORD-1]}}\"; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\""
        ));
        ok("completing", &out)
    };
    let subcommands = complete("glacierfs ''", 1);
    for c in ["mount", "export", "status", "completions", "man"] {
        assert!(
            subcommands.lines().any(|l| l.trim() == c),
            "{c} is not offered: {subcommands}"
        );
    }
    let options = complete("glacierfs mount --cache-s", 2);
    assert_eq!(options.trim(), "--cache-size", "{options}");
    let shells = complete("glacierfs completions ''", 2);
    for s in ["bash", "zsh", "fish"] {
        assert!(shells.lines().any(|l| l.trim() == s), "{s}: {shells}");
    }
}

#[test]
fn zsh_and_fish_scripts_name_the_commands() {
    let zsh = ok("completions zsh", &glacierfs(&["completions", "zsh"]));
    assert!(zsh.starts_with("#compdef glacierfs"), "{zsh}");
    let fish = ok("completions fish", &glacierfs(&["completions", "fish"]));
    assert!(
        fish.contains("complete -c glacierfs") && fish.contains("mount"),
        "{fish}"
    );
    for (shell, text) in [("zsh", &zsh), ("fish", &fish)] {
        assert!(
            text.contains("cache-size"),
            "{shell} lacks the mount options"
        );
        // Where the shell is installed, it must parse the script.
        let check = match shell {
            "zsh" => Command::new("zsh").arg("-n").stdin(Stdio::piped()).spawn(),
            _ => Command::new("fish")
                .arg("--no-execute")
                .stdin(Stdio::piped())
                .spawn(),
        };
        let Ok(mut child) = check else {
            eprintln!("{shell} is not installed: its script was checked by content only");
            continue;
        };
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        assert!(
            child.wait().unwrap().success(),
            "{shell} rejects its script"
        );
    }
}

#[test]
fn elvish_and_powershell_scripts_are_written_too() {
    for shell in ["elvish", "powershell"] {
        let text = ok(shell, &glacierfs(&["completions", shell]));
        assert!(
            text.contains("glacierfs") && text.contains("--cache-size"),
            "{shell}: {text}"
        );
    }
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    let out = glacierfs(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tcsh"));
}

/// The page as man(1) shows it: `glacierfs man | man -l -`.
fn rendered_page() -> String {
    let page = ok("glacierfs man", &glacierfs(&["man"]));
    let mut man = Command::new("man")
        .args(["-l", "-"])
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("man(1) is installed (package man-db; scripts/test.sh installs it)");
    man.stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = man.wait_with_output().unwrap();
    let text = ok("man -l -", &out);
    assert!(
        out.stderr.is_empty(),
        "man warned: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn man_renders_the_page_with_every_command() {
    let text = rendered_page();
    assert!(text.contains("NAME") && text.contains("SYNOPSIS"), "{text}");
    for section in [
        "GLACIERFS MOUNT",
        "GLACIERFS STATUS",
        "GLACIERFS INVENTORY IMPORT",
        "GLACIERFS INVENTORY EXPORT",
        "GLACIERFS CATALOG REBUILD",
        "GLACIERFS RETRIEVE",
        "GLACIERFS SYNC",
        "GLACIERFS EXPORT",
        "GLACIERFS TREEHASH",
        "GLACIERFS COMPLETIONS",
        "GLACIERFS MAN",
    ] {
        assert!(text.contains(section), "no {section} section:\n{text}");
    }
    // Options of the commands, with their defaults, and the mount(8) convention.
    for words in [
        "--cache-size <SIZE> [default: 10GiB]",
        "--max-bytes-in-flight",
        "--dry-run",
        "mount -t fuse.glacierfs glacierfs /mnt/glacier",
        "glacierfs /mnt/glacier fuse.glacierfs _netdev,nofail,region=eu-west-1,allow_other 0 0",
    ] {
        assert!(
            text.contains(words),
            "{words:?} is not on the page:\n{text}"
        );
    }
}
