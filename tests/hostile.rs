//! Hostile input, bounded in time: property tests over the description decoders and name
//! checks (`names`), the inventory parsers (`inventory::parse`) and the `.jobs` command parser
//! (`control`), then the same kinds of names and commands pushed through a real mount.
//!
//! The unit tests inside those modules already cover arbitrary strings and format lookalikes;
//! these add path tricks inside every description format, the round trips each decoder
//! promises, the name a user gives coming back unchanged from its own description, huge numbers,
//! deep nesting and truncation in inventories, and the exact shape of parsed commands.
//!
//! The properties run a few hundred cases by default; set GLACIERFS_FUZZ_CASES to run more.
// A test fails by panicking, so unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use proptest::prelude::*;

use glacierfs::codec::names::{self, Format};
use glacierfs::codec::timefmt;
use glacierfs::config::{parse_tiers, Tiers};
use glacierfs::engine::inventory::parse::{self as inventory, InventoryArchive, InventoryFormat};
use glacierfs::fs::control::{self, Command as JobCommand, Entry};
use glacierfs::glacier::Tier;
use support::emulator::Emulator;
use support::mount::{aws_env, binary, fuse_available, sync_wait, wait_until, Mount};
use support::{walk, xattr};

const ARCHIVE_ID: &str =
    "NkbByEejwEggmBz2fTHgJrg0XBoDfjP4q6iu87-TjhqG6eGoOY9Z8i1_AUyUsuhPAdTqLHy8pTl5nfCFJmDl2yEZ";

/// Cases per property: a quick run by default, a long one when GLACIERFS_FUZZ_CASES says so.
fn config() -> ProptestConfig {
    let cases = std::env::var("GLACIERFS_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    ProptestConfig {
        cases,
        // Properties that skip inputs (prop_assume!) may skip a share of a long run.
        max_global_rejects: cases.max(1024),
        // Failures are reported with their minimal input; no regression files in the tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// What "inside the vault" means

/// Every promise a decoded name makes: segments that are real names (not empty, `.` or `..`),
/// hold no `/`, `\`, NUL or control character, fit NAME_MAX, and together form a relative path
/// that a lexical join can only take downwards.
fn check_inside(segments: &[String]) -> Result<(), TestCaseError> {
    prop_assert!(!segments.is_empty(), "no name at all");
    for s in segments {
        prop_assert!(
            !s.is_empty() && s != "." && s != "..",
            "segment {:?} of {:?}",
            s,
            segments
        );
        prop_assert!(!s.contains(['/', '\\', '\0']), "separator in {:?}", s);
        prop_assert!(!s.chars().any(char::is_control), "control in {:?}", s);
        prop_assert!(s.len() <= names::MAX_SEGMENT, "{} bytes", s.len());
    }
    let joined = segments.join("/");
    let components: Vec<Component> = Path::new(&joined).components().collect();
    prop_assert_eq!(components.len(), segments.len(), "{:?}", joined);
    prop_assert!(
        components.iter().all(|c| matches!(c, Component::Normal(_))),
        "{:?}",
        joined
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Strategies

/// One piece of a hostile path: traversal, drive and UNC pieces, look-alikes, control
/// characters, names too long for a segment, and anything at all.
fn hostile_segment() -> BoxedStrategy<String> {
    let fixed: Vec<&'static str> = vec![
        "..",
        ".",
        "",
        "...",
        "C:",
        "c:",
        "?",
        "UNC",
        "\0",
        "\0..",
        ".. ",
        " ..",
        "..\u{200b}",
        "\u{2024}\u{2024}",
        "\u{ff0e}\u{ff0e}",
        "%2e%2e",
        "..%2f..",
        "..\u{2215}..",
        "\u{202e}gpj.exe",
        ".jobs",
        ".lock",
        "00undefined",
        "~",
        "-rf",
    ];
    prop_oneof![
        4 => prop::sample::select(fixed).prop_map(str::to_owned),
        1 => "[\\x00-\\x1f\\x7f\u{80}-\u{9f}]{1,4}",
        2 => "\\PC{1,12}",
        1 => "[a-z]{250,400}",
        1 => "[é€😀]{60,140}",
        1 => any::<String>(),
    ]
    .boxed()
}

fn separator() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["/", "\\", "//", "/./", "/../", "\\..\\", "/\0/"])
}

fn hostile_prefix() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "",
        "",
        "/",
        "//",
        "\\\\",
        "\\\\?\\",
        "\\\\?\\UNC\\srv\\share\\",
        "\\\\.\\",
        "\\\\srv\\share\\",
        "C:",
        "C:\\",
        "B:/",
        "../../",
        "/..",
        "~/",
    ])
}

/// A path made to escape: a prefix, then segments joined by separators that climb.
fn hostile_path() -> BoxedStrategy<String> {
    (
        hostile_prefix(),
        prop::collection::vec((hostile_segment(), separator()), 0..8),
    )
        .prop_map(|(prefix, parts)| {
            let mut out = prefix.to_owned();
            for (segment, sep) in parts {
                out.push_str(&segment);
                out.push_str(sep);
            }
            out
        })
        .boxed()
}

/// The description formats glacierfs reads, each wrapping `path`.
#[derive(Debug, Clone, Copy)]
enum Wrap {
    Mt2,
    Mt2Loose,
    Mt1,
    FastGlacier,
    FastGlacierQuoted,
    FastGlacierV1,
    CloudBerry,
    Qnap,
    Raw,
}

fn wrap_kind() -> impl Strategy<Value = Wrap> {
    prop::sample::select(vec![
        Wrap::Mt2,
        Wrap::Mt2Loose,
        Wrap::Mt1,
        Wrap::FastGlacier,
        Wrap::FastGlacierQuoted,
        Wrap::FastGlacierV1,
        Wrap::CloudBerry,
        Wrap::Qnap,
        Wrap::Raw,
    ])
}

fn mt_json(path: &str, mtime: &str) -> String {
    serde_json::json!({ "filename": path, "mtime": mtime }).to_string()
}

/// mt1 is mt2 with each JSON byte taken as a Latin-1 character and written as UTF-8.
fn mt1(path: &str, mtime: &str) -> String {
    let doubled: String = mt_json(path, mtime).bytes().map(char::from).collect();
    format!("mt1 {}", URL_SAFE_NO_PAD.encode(doubled))
}

fn wrap(kind: Wrap, path: &str, mtime: i64) -> String {
    let date = timefmt::format_compact(mtime);
    match kind {
        Wrap::Mt2 => names::encode_mt2(path, mtime),
        // Padding, extra white space and a tab, which mt-aws-glacier's reader also accepts.
        Wrap::Mt2Loose => format!(" mt2\t {}\n", URL_SAFE.encode(mt_json(path, &date))),
        Wrap::Mt1 => mt1(path, &date),
        Wrap::FastGlacier => format!(
            "<m><v>4</v><p>{}</p><lm>{date}</lm></m>",
            STANDARD.encode(path)
        ),
        Wrap::FastGlacierQuoted => format!(
            " \"<m> <v> 2 </v>\n<p> \"{}\" </p>\t<lm>{date}</lm> </m>\" ",
            STANDARD.encode(path)
        ),
        Wrap::FastGlacierV1 => format!(
            "<ArchiveMetadata><Path>{}</Path></ArchiveMetadata>",
            STANDARD.encode(path)
        ),
        Wrap::CloudBerry => {
            serde_json::json!({ "Path": path, "UTCDateModified": date, "Size": 1 }).to_string()
        }
        Wrap::Qnap => serde_json::json!({ "path": path }).to_string(),
        Wrap::Raw => path.to_owned(),
    }
}

/// Segments a user might give to create, mkdir or rename: quotes, backslashes, colons, dots,
/// dashes, spaces, look-alikes and multibyte characters, and long ones.
fn user_segment() -> BoxedStrategy<String> {
    prop_oneof![
        3 => "[-. a\"'\\\\:é€😀\u{200b}\u{ff0e}\u{202e}C~%]{1,20}",
        1 => "[a-z\"]{240,260}",
        1 => "[é€]{80,130}",
        1 => "\\PC{1,30}",
    ]
    .boxed()
}

// ---------------------------------------------------------------------------------------------
// Descriptions and names

proptest! {
    #![proptest_config(config())]

    /// Whatever format carries it, a path built to escape decodes to names inside the vault.
    #[test]
    fn hostile_paths_in_every_format_stay_inside(
        path in hostile_path(),
        kind in wrap_kind(),
        mtime in any::<i64>(),
        id in prop_oneof![Just(ARCHIVE_ID.to_owned()), hostile_path()],
    ) {
        let description = wrap(kind, &path, mtime);
        let (segments, _) = names::archive_path(&description, &id);
        check_inside(&segments)?;
    }

    /// mt2, mt1, FastGlacier (v1 and v2+) and CloudBerry/QNAP each give back the path they carry,
    /// however hostile; FastGlacier reads `;` as a separator.
    #[test]
    fn every_decoder_round_trips_its_path(
        path in prop_oneof![hostile_path(), "\\PC{0,60}"],
        kind in wrap_kind(),
        mtime in timefmt::MIN_SECS..=timefmt::MAX_SECS,
    ) {
        let description = wrap(kind, &path, mtime);
        let decoded = names::decode(&description);
        let (format, expected_path, expected_mtime) = match kind {
            Wrap::Mt2 | Wrap::Mt2Loose => (Format::Mt2, path.clone(), Some(mtime)),
            Wrap::Mt1 => (Format::Mt1, path.clone(), Some(mtime)),
            Wrap::FastGlacier | Wrap::FastGlacierQuoted => {
                (Format::FastGlacier, path.replace(';', "/"), Some(mtime))
            }
            Wrap::FastGlacierV1 => (Format::FastGlacier, path.replace(';', "/"), None),
            Wrap::CloudBerry => (Format::CloudBerry, path.clone(), Some(mtime)),
            Wrap::Qnap => (Format::CloudBerry, path.clone(), None),
            // A raw path is whatever the other decoders leave, so only its safety is promised.
            Wrap::Raw => return Ok(()),
        };
        prop_assert_eq!(decoded.format, format, "{:?}", description);
        prop_assert_eq!(decoded.path, expected_path);
        prop_assert_eq!(decoded.mtime, expected_mtime);
    }

    /// An archive whose description leaves no name lands under `00undefined/<id>`, and a hostile
    /// ArchiveId cannot climb out of there either.
    #[test]
    fn empty_names_fall_back_to_a_safe_archive_id(
        empty in prop::sample::select(vec!["", "/", "..", "./../.", "C:\\", "\\\\srv\\share", "\\\\?\\C:\\"]),
        kind in wrap_kind(),
        id in prop_oneof![hostile_path(), any::<String>()],
    ) {
        let description = wrap(kind, empty, 0);
        let (segments, _) = names::archive_path(&description, &id);
        check_inside(&segments)?;
        prop_assert_eq!(segments.len(), 2, "{:?}", segments);
        prop_assert_eq!(segments[0].as_str(), "00undefined");
    }

    /// The name check a FUSE request meets is exact: it accepts what the kernel could hand it
    /// and the vault can hold, and says precisely why it refuses the rest.
    #[test]
    fn user_segment_check_is_exact(
        bytes in prop_oneof![
            prop::collection::vec(prop::sample::select(b"./\\\0a\x01\x7f\xc3\xa9\xff-".to_vec()), 0..8),
            prop::collection::vec(any::<u8>(), 0..300),
            prop::collection::vec(Just(b'a'), 250..260),
        ]
    ) {
        let text = std::str::from_utf8(&bytes).ok();
        let want_ok = !bytes.is_empty()
            && bytes.len() <= names::MAX_SEGMENT
            && text.is_some_and(|t| {
                !t.contains('/') && !t.chars().any(char::is_control) && t != "." && t != ".."
            });
        match names::check_user_segment(&bytes) {
            Ok(name) => {
                prop_assert!(want_ok, "accepted {:?}", bytes);
                // A `\` passes here; `is_stable_path` refuses it when the name becomes a path.
                prop_assert_eq!(name.as_bytes(), &bytes[..]);
            }
            Err(e) => {
                prop_assert!(!want_ok, "refused {:?}: {}", bytes, e);
                let too_long = bytes.len() > names::MAX_SEGMENT;
                prop_assert_eq!(e == names::NameError::TooLong, too_long, "{:?}", e);
            }
        }
    }

    /// What a user names a file comes back unchanged from the description glacierfs writes
    /// for it, so a catalog rebuilt from Glacier shows the same tree. The names that would not
    /// (a `\`, or a drive-like first segment) are exactly the ones `is_stable_path` refuses.
    #[test]
    fn accepted_user_paths_come_back_from_their_description(
        segments in prop::collection::vec(user_segment(), 1..6),
        mtime in any::<i64>(),
    ) {
        let segments: Vec<String> = segments
            .into_iter()
            .filter(|s| names::check_user_segment(s.as_bytes()).is_ok())
            .collect();
        prop_assume!(!segments.is_empty());
        let path = segments.join("/");
        // The create-time check (mtime 0) and the upload (the real mtime) must agree.
        prop_assert_eq!(names::mt2_len(&path, mtime), names::mt2_len(&path, 0));
        if !names::is_stable_path(&path) {
            let drive = matches!(segments[0].as_bytes(), [l, b':'] if l.is_ascii_alphabetic());
            prop_assert!(path.contains('\\') || drive, "{:?} refused", path);
            return Ok(());
        }
        let description = names::encode_mt2(&path, mtime);
        if !names::fits(&path, mtime) {
            prop_assert!(description.len() > names::MAX_DESCRIPTION);
            return Ok(());
        }
        prop_assert!(names::is_valid_description(&description), "{:?}", description);
        let clamped = mtime.clamp(timefmt::MIN_SECS, timefmt::MAX_SECS);
        prop_assert_eq!(
            names::archive_path(&description, ARCHIVE_ID),
            (segments, Some(clamped))
        );
    }

    /// Collision suffixes keep a safe name safe, and never turn it into a control file's name.
    #[test]
    fn suffixed_names_stay_safe(
        path in hostile_path(),
        secs in any::<i64>(),
        id in any::<String>(),
    ) {
        let (segments, _) = names::archive_path(&path, ARCHIVE_ID);
        let last = segments.last().expect("a name");
        for name in [names::suffixed(last, secs), names::suffixed_with_id(last, secs, &id)] {
            check_inside(std::slice::from_ref(&name))?;
            prop_assert!(!names::is_reserved(&name));
        }
    }

    /// A vault name Glacier accepts is a safe directory name.
    #[test]
    fn valid_vault_names_are_safe_names(name in prop_oneof!["[A-Za-z0-9_.-]{1,260}", "\\PC{0,20}"]) {
        if names::is_valid_vault_name(&name) {
            check_inside(&[name])?;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Inventories

fn collect(input: &[u8], format: InventoryFormat) -> (Result<(), String>, Vec<InventoryArchive>) {
    let mut archives = Vec::new();
    let result = inventory::parse(input, format, |a| {
        archives.push(a);
        Ok(())
    })
    .map(|_| ())
    .map_err(|e| e.to_string());
    (result, archives)
}

fn archive(id: String, description: String, size: u64) -> InventoryArchive {
    InventoryArchive {
        archive_id: id,
        description,
        creation_date: "2012-03-20T17:03:43Z".into(),
        size,
        tree_hash: "beb0fe31a1c7ca8c6c04d574ea906e3f97b31fdca7571defb5b44dca89b5af60".into(),
    }
}

fn json_inventory(archives: &[InventoryArchive], extra: &str) -> String {
    let list: Vec<serde_json::Value> = archives
        .iter()
        .map(|a| {
            serde_json::json!({
                "ArchiveId": a.archive_id,
                "ArchiveDescription": a.description,
                "CreationDate": a.creation_date,
                "Size": a.size,
                "SHA256TreeHash": a.tree_hash,
            })
        })
        .collect();
    format!(
        "{{\"VaultARN\":\"arn:aws:glacier:us-east-1:1:vaults/v\",{extra}\"ArchiveList\":{}}}",
        serde_json::to_string(&list).expect("serialises")
    )
}

/// A description as Glacier's CSV writes it: quoted when it holds a comma or quote, with
/// inner quotes as `\"`.
fn csv_inventory(archives: &[InventoryArchive]) -> String {
    let mut out = String::from("ArchiveId,ArchiveDescription,CreationDate,Size,SHA256TreeHash\n");
    for a in archives {
        let d = if a.description.contains([',', '"']) {
            format!("\"{}\"", a.description.replace('"', "\\\""))
        } else {
            a.description.clone()
        };
        out.push_str(&format!(
            "{},{d},{},{},{}\n",
            a.archive_id, a.creation_date, a.size, a.tree_hash
        ));
    }
    out
}

fn nested(depth: usize, open: &str, close: &str) -> String {
    format!("{}1{}", open.repeat(depth), close.repeat(depth))
}

/// Descriptions an inventory may carry: every format of a hostile path, or anything.
fn hostile_description() -> BoxedStrategy<String> {
    prop_oneof![
        (hostile_path(), wrap_kind(), any::<i64>()).prop_map(|(p, k, m)| wrap(k, &p, m)),
        any::<String>(),
    ]
    .boxed()
}

proptest! {
    #![proptest_config(config())]

    /// Hostile ids and descriptions survive the JSON inventory exactly, and every archive it
    /// lists gets a name inside the vault.
    #[test]
    fn hostile_json_inventories_give_safe_names(
        records in prop::collection::vec(
            (prop_oneof![hostile_path(), any::<String>()], hostile_description(), any::<u64>()),
            0..8,
        ),
    ) {
        let archives: Vec<InventoryArchive> = records
            .into_iter()
            .map(|(id, d, size)| archive(id, d, size))
            .collect();
        let doc = json_inventory(&archives, "");
        let (result, parsed) = collect(doc.as_bytes(), InventoryFormat::Json);
        prop_assert_eq!(result, Ok(()));
        prop_assert_eq!(&parsed, &archives);
        for a in &parsed {
            check_inside(&names::archive_path(&a.description, &a.archive_id).0)?;
        }
    }

    /// The same through CSV, for the printable-ASCII descriptions Glacier allows.
    #[test]
    fn hostile_csv_inventories_give_safe_names(
        records in prop::collection::vec(("[A-Za-z0-9_-]{1,40}", "[ -~]{0,200}", any::<u64>()), 0..8),
    ) {
        let archives: Vec<InventoryArchive> = records
            .into_iter()
            .map(|(id, d, size)| archive(id, d, size))
            .collect();
        let (result, parsed) = collect(csv_inventory(&archives).as_bytes(), InventoryFormat::Csv);
        prop_assert_eq!(result, Ok(()));
        prop_assert_eq!(&parsed, &archives);
        for a in &parsed {
            check_inside(&names::archive_path(&a.description, &a.archive_id).0)?;
        }
    }

    /// A Size is taken only when it is a whole byte count that fits in 64 bits: huge, negative,
    /// fractional and exponent forms are errors, quoted or not.
    #[test]
    fn sizes_are_exact_or_refused(
        digits in prop_oneof!["[1-9][0-9]{0,40}", Just("0".to_owned())],
        form in 0u8..6,
        quoted: bool,
    ) {
        let text = match form {
            0 => digits.clone(),
            1 => format!("-{digits}"),
            2 => format!("{digits}.5"),
            3 => format!("{digits}e400"),
            4 => format!("{digits}E2"),
            _ => format!("{digits}0000000000000000000000"),
        };
        let size = if quoted { format!("\"{text}\"") } else { text.clone() };
        let doc = format!(
            r#"{{"ArchiveList":[{{"ArchiveId":"a","ArchiveDescription":"d","CreationDate":"x","Size":{size},"SHA256TreeHash":"h"}}]}}"#
        );
        let (result, parsed) = collect(doc.as_bytes(), InventoryFormat::Json);
        // A JSON number cannot start with a zero it does not need; a quoted size is trimmed and
        // read as a decimal byte count.
        let json_number = !(text.len() > 1 && text.starts_with('0'));
        let expected = (quoted || json_number).then(|| text.parse::<u64>().ok()).flatten();
        // "-0" is a JSON number equal to zero; whether it counts as one is not promised.
        let negative_zero = text == "-0";
        match expected {
            Some(v) => {
                prop_assert_eq!(result, Ok(()));
                prop_assert_eq!(parsed.len(), 1);
                prop_assert_eq!(parsed[0].size, v);
            }
            None if !negative_zero => {
                prop_assert!(result.is_err(), "{} was taken as {:?}", size, parsed);
                prop_assert!(parsed.is_empty());
            }
            None => {}
        }
        let csv = format!("a,d,x,{text},{}\n", "0".repeat(64));
        let (result, parsed) = collect(csv.as_bytes(), InventoryFormat::Csv);
        match text.parse::<u64>() {
            Ok(v) => {
                prop_assert_eq!(result, Ok(()));
                prop_assert_eq!(parsed[0].size, v);
            }
            Err(_) => prop_assert!(result.is_err() && parsed.is_empty(), "{}", text),
        }
    }

    /// Deep nesting anywhere (a skipped key, inside a record, as a field, as the document) is
    /// refused or skipped, never a crash: serde's depth limit holds without a stack overflow.
    #[test]
    fn deep_nesting_never_crashes(
        depth in prop_oneof![1usize..64, 64usize..512, 512usize..100_000],
        arrays: bool,
        place in 0u8..4,
    ) {
        let value = if arrays {
            nested(depth, "[", "]")
        } else {
            nested(depth, "{\"a\":", "}")
        };
        let record = |extra: &str| {
            format!(r#"{{"ArchiveId":"a","CreationDate":"x","Size":1,"SHA256TreeHash":"h"{extra}}}"#)
        };
        let doc = match place {
            0 => format!(r#"{{"Other":{value},"ArchiveList":[]}}"#),
            1 => format!(r#"{{"ArchiveList":[{}]}}"#, record(&format!(",\"Extra\":{value}"))),
            2 => format!(r#"{{"ArchiveList":[{}]}}"#, record(&format!(",\"ArchiveDescription\":{value}"))),
            _ => value.clone(),
        };
        let (result, parsed) = collect(doc.as_bytes(), InventoryFormat::Json);
        match place {
            // A skipped value shallow enough for serde's limit is simply skipped.
            0 | 1 if depth < 100 => {
                prop_assert_eq!(result, Ok(()));
                prop_assert_eq!(parsed.len(), usize::from(place == 1));
            }
            // A description must be a string; a bare value is no inventory.
            2 | 3 => prop_assert!(result.is_err() && parsed.is_empty()),
            _ => {}
        }
        let _ = inventory::parse_auto(doc.as_bytes(), |_| Ok(()));
    }

    /// A document cut short anywhere never yields an archive it did not list: JSON refuses any
    /// cut that loses content, and CSV hands over whole records before the cut exactly.
    #[test]
    fn truncated_inventories_never_invent_archives(
        records in prop::collection::vec(("[A-Za-z0-9_-]{1,20}", "[ -~]{0,40}", any::<u64>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let archives: Vec<InventoryArchive> = records
            .into_iter()
            .map(|(id, d, size)| archive(id, d, size))
            .collect();

        let doc = json_inventory(&archives, "\"InventoryDate\":\"2024-01-01T00:00:00Z\",");
        let at = cut.index(doc.len());
        let (result, parsed) = collect(&doc.as_bytes()[..at], InventoryFormat::Json);
        prop_assert!(result.is_err(), "a JSON inventory cut at {} of {} parsed", at, doc.len());
        prop_assert!(archives.starts_with(&parsed), "{:?}", parsed);

        let doc = csv_inventory(&archives);
        let at = cut.index(doc.len());
        let prefix = &doc.as_bytes()[..at];
        let (result, parsed) = collect(prefix, InventoryFormat::Csv);
        prop_assert!(parsed.len() <= archives.len());
        // Records whose line is complete in the prefix come out exactly.
        let whole_lines = prefix.iter().filter(|&&b| b == b'\n').count().saturating_sub(1);
        let exact = whole_lines.min(parsed.len());
        prop_assert_eq!(&parsed[..exact], &archives[..exact]);
        if prefix.ends_with(b"\n") {
            prop_assert_eq!(result, Ok(()));
            prop_assert_eq!(&parsed[..], &archives[..whole_lines]);
        }
    }

    /// CSV full of NULs, lone carriage returns, invalid UTF-8 and stray quotes: an error or
    /// archives with safe names, never a panic.
    #[test]
    fn hostile_csv_bytes_give_errors_or_safe_names(
        lines in prop::collection::vec(
            prop::collection::vec(prop::sample::select(b"a0,\"\\\r\n\0\xff\xc3/.. ".to_vec()), 0..60),
            0..8,
        ),
    ) {
        let doc: Vec<u8> = lines.join(&b'\n');
        let (_, parsed) = collect(&doc, InventoryFormat::Csv);
        for a in &parsed {
            check_inside(&names::archive_path(&a.description, &a.archive_id).0)?;
        }
        let _ = inventory::parse_auto(&doc[..], |_| Ok(()));
    }

    /// Sniffing agrees with the format the document is in, whatever leads it.
    #[test]
    fn parse_auto_agrees_with_parse(
        lead in prop::sample::select(vec!["", "\n", "  \r\n\t", "\u{feff}", "\u{feff}\n\n "]),
        json: bool,
        records in prop::collection::vec(("[a-z0-9]{1,10}", "[ -~]{0,30}", any::<u64>()), 0..4),
    ) {
        let archives: Vec<InventoryArchive> = records
            .into_iter()
            .map(|(id, d, size)| archive(id, d, size))
            .collect();
        let doc = format!(
            "{lead}{}",
            if json { json_inventory(&archives, "") } else { csv_inventory(&archives) }
        );
        let mut parsed = Vec::new();
        let (format, _) = inventory::parse_auto(doc.as_bytes(), |a| {
            parsed.push(a);
            Ok(())
        })
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let expected = if json { InventoryFormat::Json } else { InventoryFormat::Csv };
        prop_assert_eq!(format, expected);
        prop_assert_eq!(parsed, archives);
    }
}

/// Records far past any real description are refused, not buffered without bound.
#[test]
fn oversized_csv_records_are_refused() {
    let huge = "x".repeat(4 << 20);
    for doc in [
        format!("a,{huge},d,1,h\n"),
        // A quote that never closes: every following line would join the record.
        format!("a,\"{}\n", "b,c,d\n".repeat(1 << 20)),
    ] {
        let (result, parsed) = collect(doc.as_bytes(), InventoryFormat::Csv);
        let err = result.expect_err("an oversized record is an error");
        assert!(
            err.contains("longer than") || err.contains("never closed"),
            "{err}"
        );
        assert!(parsed.is_empty());
    }
}

// ---------------------------------------------------------------------------------------------
// `.jobs` commands

fn tier_word() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "bulk",
        "Standard",
        "EXPEDITED",
        "standard-ish",
        "fast",
    ])
}

/// A path argument: hostile, with inner white space, but no line break and trimmed (that is
/// the shape the parser promises to hand over).
fn command_path() -> BoxedStrategy<String> {
    prop_oneof![
        hostile_path(),
        "\\PC{1,40}",
        Just("../other-vault/secret".to_owned())
    ]
    .prop_map(|p| p.replace(['\n', '\r'], "").trim().to_owned())
    .prop_filter("a path", |p| !p.is_empty())
    .boxed()
}

proptest! {
    #![proptest_config(config())]

    /// Any text: each non-blank line becomes exactly one command, with arguments trimmed and
    /// never empty, and a tier only when the last word names one.
    #[test]
    fn commands_have_the_promised_shape(
        lines in prop::collection::vec(
            (
                prop::sample::select(vec!["retrieve", "inventory", "cancel", "RETRIEVE", "rm", ""]),
                prop::sample::select(vec![" ", "\t", "\u{2003}", "  ", ""]),
                prop_oneof![command_path(), Just(String::new())],
                prop_oneof![Just(""), tier_word()],
            ),
            0..5,
        ),
        crlf: bool,
    ) {
        let text = lines
            .iter()
            .map(|(verb, gap, path, tier)| format!("{verb}{gap}{path} {tier}"))
            .collect::<Vec<_>>()
            .join(if crlf { "\r\n" } else { "\n" });
        let Ok(commands) = control::parse(text.as_bytes()) else {
            return Ok(());
        };
        let non_blank = text.lines().filter(|l| !l.trim().is_empty()).count();
        prop_assert_eq!(commands.len(), non_blank);
        for c in commands {
            match c {
                JobCommand::Retrieve { path, tier } => {
                    prop_assert!(!path.is_empty() && path.trim() == path && !path.contains('\n'));
                    if let Some(t) = tier {
                        prop_assert_eq!(parse_tiers(&t.to_string()), Ok(t));
                    }
                }
                JobCommand::Cancel { target } => {
                    prop_assert!(!target.is_empty() && target.trim() == target);
                }
                JobCommand::Inventory => {}
            }
        }
    }

    /// `retrieve <path> [tier]` gives back the path however hostile, and the tier when given;
    /// a path whose last word is a tier needs the tier spelled out to keep that word.
    #[test]
    fn retrieve_round_trips(path in command_path(), tier in prop::option::of(prop::sample::select(vec![Tier::Bulk, Tier::Standard, Tier::Expedited]))) {
        let last_is_tier = path
            .rsplit(char::is_whitespace)
            .next()
            .is_some_and(|w| parse_tiers(w).is_ok());
        prop_assume!(tier.is_some() || !last_is_tier);
        let line = match tier {
            Some(t) => format!("retrieve {path} {}", t.as_str()),
            None => format!("retrieve {path}"),
        };
        prop_assert_eq!(
            control::parse(line.as_bytes()),
            Ok(vec![JobCommand::Retrieve { path, tier: tier.map(Tiers::from) }])
        );
    }

    /// `cancel` takes its whole argument, spaces and all.
    #[test]
    fn cancel_round_trips(target in command_path()) {
        prop_assert_eq!(
            control::parse(format!("cancel {target}\n").as_bytes()),
            Ok(vec![JobCommand::Cancel { target }])
        );
    }

    /// A hostile path in `.jobs` output stays inside its own line: no entry can forge another.
    #[test]
    fn rendered_jobs_lines_cannot_be_forged(paths in prop::collection::vec(prop_oneof![hostile_path(), any::<String>(), Just("x\"}\n{\"Action\":\"Upload\"".to_owned())], 0..6)) {
        let entries: Vec<Entry> = paths
            .iter()
            .map(|p| Entry::new("Upload", "Queued").set("Path", p.as_str()))
            .collect();
        let text = String::from_utf8(control::render(&entries)).expect("UTF-8");
        let lines: Vec<&str> = text.lines().collect();
        prop_assert_eq!(lines.len(), paths.len());
        for (line, path) in lines.iter().zip(&paths) {
            let v: serde_json::Value = serde_json::from_str(line).expect("one JSON object a line");
            prop_assert_eq!(v["Path"].as_str(), Some(path.as_str()));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Through a real mount

const VAULT: &str = "hostile";
/// Files stay staged until `glacierfs sync` asks for them, so a rename always meets a staged
/// file and its upload goes out once, under the final name (a rename of an archived file would
/// be catalog-only and keep its old description, which is right but not what these check).
const STAGE_UNTIL_SYNC: &[&str] = &["--write-back-delay", "1h"];

fn errno<T>(r: std::io::Result<T>) -> Result<(), i32> {
    r.map(drop).map_err(|e| e.raw_os_error().unwrap_or(-1))
}

fn create_with(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    f.write_all(data)
}

/// The mount still answers: a crashed or wedged daemon fails this.
fn assert_alive(m: &Mount, after: &str) {
    assert!(
        std::fs::read_dir(m.path(VAULT)).is_ok() && std::fs::metadata(m.path("")).is_ok(),
        "the mount stopped answering after {after}; log:\n{}",
        m.log_text()
    );
}

fn name_str(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// After `sync --wait`, Glacier holds exactly one archive per non-empty file of the vault,
/// each described by an mt2 name inside the vault that is that file's path, with its bytes.
fn check_archives_match_the_mount(emu: &Emulator, m: &Mount) -> BTreeMap<String, Vec<u8>> {
    let vault_dir = m.path(VAULT);
    let files: BTreeMap<String, Vec<u8>> = walk(&vault_dir)
        .into_iter()
        .filter_map(|(rel, seen)| seen.filter(|s| s.size > 0).map(|_| rel))
        .map(|rel| {
            let data = std::fs::read(vault_dir.join(&rel)).expect("reads back");
            (rel, data)
        })
        .collect();
    // Deletes (of files whose rename was refused and were then removed) are queued, not
    // waited for by `sync`: give them time to reach Glacier.
    let settled = wait_until(Duration::from_secs(30), || {
        emu.archives(VAULT).len() == files.len()
    });
    assert!(
        settled,
        "{} archives for {} files",
        emu.archives(VAULT).len(),
        files.len()
    );
    let mut archived = BTreeMap::new();
    for a in emu.archives(VAULT) {
        assert!(
            names::is_valid_description(&a.description),
            "{:?}",
            a.description
        );
        assert_eq!(names::decode(&a.description).format, Format::Mt2);
        let (segments, _) = names::archive_path(&a.description, &a.id);
        if let Err(e) = check_inside(&segments) {
            panic!("{:?} decodes outside the vault: {e}", a.description);
        }
        let data = emu.archive_data(VAULT, &a.id).expect("archive data");
        assert!(
            archived.insert(segments.join("/"), data).is_none(),
            "two archives for one path"
        );
    }
    let only_archived: Vec<_> = archived
        .keys()
        .filter(|k| !files.contains_key(*k))
        .collect();
    let only_files: Vec<_> = files
        .keys()
        .filter(|k| !archived.contains_key(*k))
        .collect();
    assert!(
        only_archived.is_empty() && only_files.is_empty(),
        "archives without files: {only_archived:?}; files without archives: {only_files:?}"
    );
    assert!(archived == files, "an archive's bytes differ from its file");
    files
}

/// A second mount with an empty catalog rebuilds the vault from Glacier's inventory alone:
/// every non-empty file must come back under the same name with the same size.
fn check_names_survive_a_fresh_catalog(emu: &Emulator, files: &BTreeMap<String, Vec<u8>>) {
    emu.take_inventory(VAULT);
    let cache = tempfile::tempdir().expect("cache dir");
    let m = Mount::start(&emu.endpoint(), cache.path(), &[]);
    let vault_dir = m.path(VAULT);
    let expected: BTreeMap<String, u64> = files
        .iter()
        .map(|(k, v)| (k.clone(), v.len() as u64))
        .collect();
    let mut seen = BTreeMap::new();
    let loaded = wait_until(Duration::from_secs(60), || {
        emu.complete_all_jobs();
        seen = walk(&vault_dir)
            .into_iter()
            .filter_map(|(rel, s)| s.map(|s| (rel, s.size)))
            .collect();
        seen == expected
    });
    assert!(
        loaded,
        "names changed through Glacier: expected {expected:?}, saw {seen:?}"
    );
}

#[test]
fn hostile_names_get_clean_errors_or_round_trip() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault(VAULT);
    let cache = tempfile::tempdir().unwrap();
    let m = Mount::start(&emu.endpoint(), cache.path(), STAGE_UNTIL_SYNC);
    let vault_dir = m.path(VAULT);

    let ok = Ok(());
    let einval = Err(libc::EINVAL);
    let toolong = Err(libc::ENAMETOOLONG);
    // (name, outcome anywhere in the vault). SEMANTICS.md: names must be
    // UTF-8 without control characters (EINVAL), at most 255 bytes (ENAMETOOLONG), and must
    // come back unchanged from their description, which a `\` would not (read as `/`).
    let cases: Vec<(Vec<u8>, Result<(), i32>)> = vec![
        (b"\xff\xfe.txt".to_vec(), einval),
        (b"ok-\xc3(".to_vec(), einval),
        (vec![b'a'; 255], ok),
        (vec![b'a'; 256], toolong),
        ("é".repeat(127).into_bytes(), ok),
        ("€".repeat(85).into_bytes(), ok),
        ("😀".repeat(64).into_bytes(), toolong),
        ([vec![b'b'; 254], "é".into()].concat(), toolong),
        (b"\x01ctl".to_vec(), einval),
        (b"tab\there".to_vec(), einval),
        (b"new\nline".to_vec(), einval),
        (b"del\x7f".to_vec(), einval),
        ("c1\u{85}".into(), einval),
        (b"esc\x1b[31m".to_vec(), einval),
        (b"back\\slash".to_vec(), einval),
        (b"\\".to_vec(), einval),
        (b"..\\..\\etc".to_vec(), einval),
        (b"-rf".to_vec(), ok),
        (b"--help".to_vec(), ok),
        (b"-".to_vec(), ok),
        (b"...".to_vec(), ok),
        (b". .".to_vec(), ok),
        (b" ..".to_vec(), ok),
        (b".. ".to_vec(), ok),
        ("..\u{200b}".into(), ok),
        ("\u{2024}\u{2024}".into(), ok),
        ("\u{ff0e}\u{ff0e}".into(), ok),
        ("..\u{2215}..\u{2215}etc".into(), ok),
        (b"%2e%2e%2f%2e%2e".to_vec(), ok),
        ("\u{202e}txt.exe".into(), ok),
        ("\u{feff}bom".into(), ok),
        (b"say \"hi\"".to_vec(), ok),
        (b"{\"Path\":\"..\"}".to_vec(), ok),
        (b"mt2 eyJmaWxlbmFtZSI6Ii4uLy4uL2V0YyJ9".to_vec(), ok),
        (b"<m><v>2<\\v><p>Li4=<\\p><\\m>".to_vec(), einval),
        (b"C:x".to_vec(), ok),
        (b"C:".to_vec(), ok),
        (b"00undefined".to_vec(), ok),
        (b".jobs".to_vec(), ok),
        (b" ".to_vec(), ok),
    ];

    let mut expected_files: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    for (op, dir) in [("create", "c"), ("mkdir", "m"), ("rename", "r")] {
        let parent = vault_dir.join(dir);
        std::fs::create_dir(&parent).unwrap();
        for (i, (name, want)) in cases.iter().enumerate() {
            let target = parent.join(OsStr::from_bytes(name));
            let content = format!("{op} case {i}: {}\n", name_str(name)).into_bytes();
            let got = match op {
                "create" => errno(create_with(&target, &content)),
                "mkdir" => errno(std::fs::create_dir(&target)),
                _ => {
                    let src = parent.join(format!("src-{i}"));
                    create_with(&src, &content).unwrap();
                    let got = errno(std::fs::rename(&src, &target));
                    if got.is_err() {
                        assert!(src.exists(), "a refused rename lost its source");
                        std::fs::remove_file(&src).unwrap();
                    }
                    got
                }
            };
            assert_eq!(got, *want, "{op} {:?}", name_str(name));
            assert_alive(&m, &format!("{op} {:?}", name_str(name)));
            if got.is_ok() {
                // The name lists exactly as given.
                let listed = std::fs::read_dir(&parent)
                    .unwrap()
                    .any(|e| e.unwrap().file_name().as_bytes() == &name[..]);
                assert!(listed, "{op} {:?} does not list", name_str(name));
                if op != "mkdir" {
                    expected_files.push((target, content));
                }
            } else {
                assert!(
                    std::fs::symlink_metadata(&target).is_err(),
                    "{op} {:?} failed but left something",
                    name_str(name)
                );
            }
        }
    }

    // At the top of a vault a drive-like name would be read back as a drive and dropped, and
    // the control files' names are taken.
    let create_top = |name: &str| errno(create_with(&vault_dir.join(name), b"top\n"));
    assert_eq!(create_top("C:"), Err(libc::EINVAL));
    assert_eq!(create_top("z:"), Err(libc::EINVAL));
    assert_eq!(create_top(".jobs"), Err(libc::EEXIST));
    assert_eq!(create_top(".lock"), Err(libc::EEXIST));
    assert_eq!(
        errno(std::fs::create_dir(vault_dir.join(".lock"))),
        Err(libc::EEXIST)
    );
    create_with(&vault_dir.join("to-reserve"), b"x\n").unwrap();
    assert_eq!(
        errno(std::fs::rename(
            vault_dir.join("to-reserve"),
            vault_dir.join(".jobs")
        )),
        Err(libc::EPERM)
    );
    expected_files.push((vault_dir.join("to-reserve"), b"x\n".to_vec()));
    assert_alive(&m, "names at the top of the vault");

    // Invalid names never reach the catalog, so they cannot be found or removed either.
    assert_eq!(
        errno(std::fs::metadata(
            vault_dir.join(OsStr::from_bytes(b"c/\xff\xfe.txt"))
        )),
        Err(libc::ENOENT)
    );

    sync_wait(&vault_dir);
    for (path, content) in &expected_files {
        assert_eq!(&std::fs::read(path).unwrap(), content, "{}", path.display());
        assert_eq!(xattr(path, "user.glacier.state").as_deref(), Ok("cached"));
    }
    let files = check_archives_match_the_mount(&emu, &m);
    assert_eq!(files.len(), expected_files.len());
    drop(m);
    check_names_survive_a_fresh_catalog(&emu, &files);
}

/// SEMANTICS.md: a path whose description would pass 1,024 characters is refused with
/// ENAMETOOLONG at create, mkdir and rename, including for staged files under a renamed
/// directory. mt2 is `mt2 ` + base64 of 42 bytes of JSON around the path, so a path of up to
/// 723 JSON bytes fits; a `"` costs two.
#[test]
fn the_description_limit_is_enforced_when_a_name_is_given() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault(VAULT);
    let cache = tempfile::tempdir().unwrap();
    let m = Mount::start(&emu.endpoint(), cache.path(), STAGE_UNTIL_SYNC);
    let vault_dir = m.path(VAULT);

    // Two directories of long multibyte names: 255 + 1 + 254 = 510 bytes.
    let a = "€".repeat(85);
    let b = "ж".repeat(127);
    let deep = format!("{a}/{b}");
    std::fs::create_dir_all(vault_dir.join(&deep)).unwrap();
    let room = 723 - deep.len() - 1;
    assert_eq!(room, 212);
    let fits = "é".repeat(room / 2);
    let over = "x".repeat(room + 1);
    let quoted = format!("{}\"", "q".repeat(room - 1));
    for (name, want) in [(&fits, true), (&over, false), (&quoted, false)] {
        assert_eq!(names::fits(&format!("{deep}/{name}"), 0), want, "{name}");
    }

    let toolong = Err(libc::ENAMETOOLONG);
    let in_deep = |n: &str| vault_dir.join(&deep).join(n);
    assert_eq!(errno(create_with(&in_deep(&over), b"x")), toolong);
    assert_eq!(errno(create_with(&in_deep(&quoted), b"x")), toolong);
    assert_eq!(errno(std::fs::create_dir(in_deep(&over))), toolong);
    create_with(&in_deep(&fits), b"exactly at the limit\n").unwrap();
    assert_eq!(
        names::mt2_len(&format!("{deep}/{fits}"), 0),
        names::MAX_DESCRIPTION
    );

    // A file renamed into the deep directory: refused past the limit, kept where it was.
    create_with(&vault_dir.join("mover"), b"moved\n").unwrap();
    assert_eq!(
        errno(std::fs::rename(vault_dir.join("mover"), in_deep(&over))),
        toolong
    );
    std::fs::rename(vault_dir.join("mover"), in_deep("mover")).unwrap();

    // A directory holding a staged file: its move is judged by the file's new path.
    let staged_dir = vault_dir.join("s");
    std::fs::create_dir(&staged_dir).unwrap();
    let long_leaf = "l".repeat(240);
    let mut held = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(staged_dir.join(&long_leaf))
        .unwrap();
    held.write_all(b"staged while its directory moves\n")
        .unwrap();
    // "s/" + 240 bytes fits under one long directory; under `deep` it passes the limit.
    assert_eq!(
        errno(std::fs::rename(
            &staged_dir,
            vault_dir.join(&deep).join("s")
        )),
        toolong
    );
    assert!(staged_dir.join(&long_leaf).exists());
    std::fs::rename(&staged_dir, vault_dir.join(&a).join("s")).unwrap();
    drop(held);
    assert_alive(&m, "names at the description limit");

    sync_wait(&vault_dir);
    let files = check_archives_match_the_mount(&emu, &m);
    assert_eq!(files.len(), 3, "{:?}", files.keys());
    // The longest one went up with a description of exactly 1,024 characters.
    let longest = emu
        .archives(VAULT)
        .into_iter()
        .find(|a| names::decode(&a.description).path == format!("{deep}/{fits}"))
        .expect("the file at the limit is archived");
    assert_eq!(longest.description.len(), names::MAX_DESCRIPTION);
}

/// An archived file below a directory that is renamed deeper keeps its old description (a
/// catalog-only rename), so the rename is allowed. But overwriting that file later makes new
/// content that must go up under the new path, and that path no longer fits a description:
/// SEMANTICS.md says such a path is refused when it is named. The file system should refuse
/// either the rename or the overwrite with ENAMETOOLONG; what must never happen is a write that
/// succeeds and can then never be archived.
#[test]
fn regression_a_deep_directory_rename_never_strands_a_later_overwrite() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault(VAULT);
    let cache = tempfile::tempdir().unwrap();
    let m = Mount::start(&emu.endpoint(), cache.path(), STAGE_UNTIL_SYNC);
    let vault_dir = m.path(VAULT);
    let a = "€".repeat(85);
    let b = "ж".repeat(127);
    std::fs::create_dir_all(vault_dir.join(&a).join(&b)).unwrap();
    let dir = vault_dir.join("d");
    std::fs::create_dir(&dir).unwrap();
    let leaf = "f".repeat(250);
    create_with(&dir.join(&leaf), b"first\n").unwrap();
    sync_wait(&vault_dir);
    assert_eq!(emu.archives(VAULT).len(), 1);

    let new_dir = vault_dir.join(&a).join(&b).join("d");
    assert!(!names::fits(&format!("{a}/{b}/d/{leaf}"), 0));
    let renamed = errno(std::fs::rename(&dir, &new_dir));
    if renamed.is_err() {
        assert_eq!(renamed, Err(libc::ENAMETOOLONG));
        return;
    }
    let file = new_dir.join(&leaf);
    let overwrite = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&file)
        .and_then(|mut f| f.write_all(b"second\n"));
    if let Err(e) = overwrite {
        assert_eq!(e.raw_os_error(), Some(libc::ENAMETOOLONG), "{e}");
        return;
    }
    // The write was accepted, so it must reach Glacier. `sync --wait` would wait forever on a
    // file that cannot go up, so ask without waiting and watch its state.
    let out = aws_env(&mut Command::new(binary()))
        .arg("sync")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success());
    let uploaded = wait_until(Duration::from_secs(30), || {
        xattr(&file, "user.glacier.state").as_deref() == Ok("cached")
    });
    let jobs = std::fs::read_to_string(vault_dir.join(".jobs")).unwrap_or_default();
    assert!(
        uploaded,
        "the rename and the overwrite both succeeded, but the new content can never be \
         archived (state {:?}); .jobs:\n{jobs}",
        xattr(&file, "user.glacier.state")
    );
}

/// Commands written to `.jobs` and `.lock` that are malformed, oversized, deeply nested or that
/// try to reach another vault get a clean errno and change nothing; the mount keeps answering.
#[test]
fn hostile_control_file_writes_change_nothing() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault(VAULT);
    emu.create_vault("other");
    for name in ["secret.bin", "public.bin"] {
        emu.put_archive(
            "other",
            &names::encode_mt2(name, 1_600_000_000),
            name.as_bytes(),
            None,
        );
    }
    emu.take_inventory("other");
    let cache = tempfile::tempdir().unwrap();
    let m = Mount::start(&emu.endpoint(), cache.path(), &[]);
    let other_dir = m.path("other");
    let _ = std::fs::read_dir(&other_dir).map(|d| d.count());
    assert!(
        wait_until(Duration::from_secs(60), || {
            emu.complete_all_jobs();
            other_dir.join("secret.bin").exists() && other_dir.join("public.bin").exists()
        }),
        "the other vault never loaded"
    );
    let id_of = |name: &str| xattr(&other_dir.join(name), "user.glacier.archive_id").unwrap();
    let (secret_id, public_id) = (id_of("secret.bin"), id_of("public.bin"));
    let retrievals_of = |id: &str| {
        emu.jobs("other")
            .iter()
            .filter(|j| j.archive_id.as_deref() == Some(id))
            .count()
    };
    let write_to = |path: &Path, data: &[u8]| {
        errno(
            std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|mut f| f.write_all(data)),
        )
    };

    let vault_jobs = m.path(VAULT).join(".jobs");
    let root_jobs = m.path(".jobs");
    let garbage: Vec<u8> = (0u64..1 << 20).map(|i| (i * 7919 % 251) as u8).collect();
    let einval = Err(libc::EINVAL);
    let enoent = Err(libc::ENOENT);
    for (file, data, want) in [
        (&vault_jobs, b"format the disk\n".to_vec(), einval),
        (&vault_jobs, b"\xff\xfe retrieve".to_vec(), einval),
        (&vault_jobs, b"retrieve\n".to_vec(), einval),
        (&vault_jobs, b"retrieve \0\n".to_vec(), enoent),
        (&vault_jobs, b"inventory now\n".to_vec(), einval),
        (&vault_jobs, b"cancel\n".to_vec(), einval),
        (
            &vault_jobs,
            b"cancel ../other/secret.bin\n".to_vec(),
            einval,
        ),
        (&vault_jobs, b"\n\n  \n".to_vec(), einval),
        (&vault_jobs, garbage.clone(), einval),
        // Paths are relative to the directory holding `.jobs`, and `..` leads nowhere.
        (
            &vault_jobs,
            b"retrieve ../other/secret.bin\n".to_vec(),
            enoent,
        ),
        (
            &vault_jobs,
            b"retrieve /other/secret.bin\n".to_vec(),
            enoent,
        ),
        (
            &vault_jobs,
            b"retrieve a/../../other/secret.bin\n".to_vec(),
            enoent,
        ),
        (
            &root_jobs,
            b"retrieve hostile/../other/secret.bin\n".to_vec(),
            enoent,
        ),
        (
            &root_jobs,
            b"retrieve ./../other/./secret.bin\n".to_vec(),
            enoent,
        ),
    ] {
        assert_eq!(
            write_to(file, &data),
            want,
            "{:?}",
            name_str(&data[..data.len().min(60)])
        );
        assert_alive(&m, "a hostile .jobs write");
    }

    let lock = m.path(VAULT).join(".lock");
    let deep_policy = format!("{{\"a\":{}}}", nested(50_000, "[", "]"));
    for data in [
        b"lock it\n".to_vec(),
        b"[1,2]".to_vec(),
        b"\"policy\"".to_vec(),
        b"{not json".to_vec(),
        b"complete a b\n".to_vec(),
        b"abort now\n".to_vec(),
        b"abort\0".to_vec(),
        b"\xff{}".to_vec(),
        deep_policy.into_bytes(),
        garbage,
    ] {
        assert_eq!(
            write_to(&lock, &data),
            einval,
            "{:?}",
            name_str(&data[..data.len().min(60)])
        );
        assert_alive(&m, "a hostile .lock write");
    }
    assert!(emu.lock_state(VAULT).is_none(), "a malformed write locked");

    // The refusals above are for a reason, not wholesale: a well-formed command works. Requests
    // are handled in order, so once its job exists any earlier request would have one too.
    assert_eq!(
        write_to(&root_jobs, b"retrieve ./other//public.bin bulk\n"),
        Ok(())
    );
    assert!(
        wait_until(Duration::from_secs(30), || retrievals_of(&public_id) == 1),
        "the well-formed retrieve never started a job"
    );
    assert_eq!(
        retrievals_of(&secret_id),
        0,
        "a path trick reached the other vault"
    );
    assert_eq!(
        xattr(&other_dir.join("secret.bin"), "user.glacier.state").as_deref(),
        Ok("cold")
    );
    assert_alive(&m, "well-formed commands");
}

/// Archives that other tools (or an attacker with vault access) described with paths that
/// climb, absolute and drive paths, control characters and control-file names appear under
/// safe names, one file each, and retrieving one writes only inside the cache.
#[test]
fn a_vault_of_hostile_descriptions_shows_only_safe_names() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault(VAULT);
    let long_climb = "../".repeat(341);
    let descriptions: Vec<String> = vec![
        "../../../../etc/passwd".into(),
        "/etc/shadow".into(),
        "C:\\..\\..\\Windows\\win.ini".into(),
        "\\\\?\\UNC\\server\\share\\..\\x".into(),
        names::encode_mt2("../../escape", 0),
        names::encode_mt2("/abs/olute", 0),
        names::encode_mt2("a/../../b", 0),
        mt1("../ЯAЯ/../..", "19700101T000203Z"),
        format!(
            "<m><v>4</v><p>{}</p><lm>20130214T181623Z</lm></m>",
            STANDARD.encode("..;..;fg.txt")
        ),
        r#"{"Path":"..\\..\\cb.txt"}"#.into(),
        long_climb,
        "ctl\u{1}\u{1b}[2J".into(),
        ".jobs".into(),
        ".lock".into(),
        "".into(),
        "..".into(),
        "mt2 not-base64!".into(),
        "x".repeat(1024),
    ];
    let mut data_of = BTreeMap::new();
    for (i, d) in descriptions.iter().enumerate() {
        let data = format!("archive {i}\n").into_bytes();
        let id = emu.put_archive(VAULT, d, &data, Some(1_500_000_000 + i as i64));
        data_of.insert(id, data);
    }
    emu.take_inventory(VAULT);
    let cache_root = tempfile::tempdir().unwrap();
    let cache = cache_root.path().join("cache");
    let m = Mount::start(&emu.endpoint(), &cache, &[]);
    let vault_dir = m.path(VAULT);
    let _ = std::fs::read_dir(&vault_dir).map(|d| d.count());
    let mut files = BTreeMap::new();
    let loaded = wait_until(Duration::from_secs(60), || {
        emu.complete_all_jobs();
        files = walk(&vault_dir)
            .into_iter()
            .filter_map(|(rel, s)| s.map(|_| rel))
            .map(|rel| {
                let id = xattr(&vault_dir.join(&rel), "user.glacier.archive_id");
                (rel, id)
            })
            .collect::<BTreeMap<_, _>>();
        files.len() == descriptions.len()
    });
    assert!(loaded, "saw {files:?}");
    let ids: std::collections::BTreeSet<_> = files
        .values()
        .map(|id| id.clone().expect("archive id"))
        .collect();
    assert_eq!(ids.len(), descriptions.len(), "an archive is missing");
    for rel in files.keys() {
        let segments: Vec<String> = rel.split('/').map(str::to_owned).collect();
        if let Err(e) = check_inside(&segments) {
            panic!("{rel:?}: {e}");
        }
        let top = segments[0].as_str();
        assert!(
            top != ".jobs" && top != ".lock",
            "{rel:?} shadows a control file"
        );
    }
    // The control files are still the control files.
    assert!(std::fs::read_to_string(vault_dir.join(".lock"))
        .unwrap()
        .contains("State"));

    // Retrieving the one that claimed /etc/passwd fills only the cache.
    let (passwd, id) = files
        .iter()
        .find(|(rel, _)| rel.ends_with("etc/passwd"))
        .expect("listed under its safe name");
    let passwd = vault_dir.join(passwd);
    let id = id.clone().unwrap();
    assert_eq!(
        errno(std::fs::read(&passwd)),
        Err(libc::EAGAIN),
        "cold at first"
    );
    let read = wait_until(Duration::from_secs(60), || {
        emu.complete_all_jobs();
        std::fs::read(&passwd).ok() == data_of.get(&id).cloned()
    });
    assert!(read, "the retrieval never completed");
    assert_eq!(
        std::fs::read_dir(cache_root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect::<Vec<_>>(),
        vec![OsStr::new("cache").to_owned()],
        "something was created beside the cache"
    );
    assert_alive(&m, "hostile descriptions");
}

/// Glacier allows vault names that start with a dot, `.jobs` among them, and such a vault may
/// hold data another tool put there. At the mount's root that name is also the control file's:
/// a lookup finds the control file, while `readdir` (readdirplus) lists the vault under the same
/// name with a directory's attributes, which the kernel then caches. Which one a path reaches
/// depends on whether the root was listed first; after a listing the root `.jobs` control file
/// is gone (an open finds a directory). Archives named `.jobs` take a collision suffix
/// (SEMANTICS.md); a vault by that name needs the same treatment, so both stay reachable.
#[test]
fn regression_a_vault_named_dot_jobs_and_the_root_control_file_both_stay_reachable() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault(".jobs");
    emu.put_archive(
        ".jobs",
        &names::encode_mt2("kept.txt", 1_600_000_000),
        b"in a vault named .jobs",
        None,
    );
    emu.take_inventory(".jobs");
    let cache = tempfile::tempdir().unwrap();
    let m = Mount::start(&emu.endpoint(), cache.path(), &[]);
    let root = m.path("");
    let mut reached = false;
    let loaded = wait_until(Duration::from_secs(30), || {
        emu.complete_all_jobs();
        let Ok(entries) = std::fs::read_dir(&root) else {
            return false;
        };
        for e in entries.flatten() {
            let listed_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
            let stat_dir = std::fs::metadata(e.path())
                .map(|md| md.is_dir())
                .unwrap_or(false);
            assert_eq!(
                listed_dir,
                stat_dir,
                "{:?} is a directory to readdir but not to lookup",
                e.file_name()
            );
            reached |= stat_dir && e.path().join("kept.txt").exists();
        }
        reached
    });
    assert!(
        loaded,
        "the vault named .jobs cannot be reached through the mount"
    );
    // The root's control file must still work, whichever order things were looked up in.
    let jobs = std::fs::read_to_string(m.path(".jobs"));
    assert!(
        jobs.is_ok(),
        "the root .jobs control file is unreachable: {jobs:?}"
    );
}

/// A vault named `.jobs` shows as `.jobs~vault`; removing that directory deletes the vault
/// (its row keeps the real name, which rmdir used to look up by the shown one, and fail).
#[test]
fn regression_a_vault_shown_as_dot_jobs_tilde_vault_can_be_removed() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault(".jobs");
    emu.take_inventory(".jobs");
    let cache = tempfile::tempdir().unwrap();
    let m = Mount::start(&emu.endpoint(), cache.path(), &[]);
    let shown = m.path(".jobs~vault");
    assert!(
        wait_until(Duration::from_secs(30), || shown.is_dir()),
        "the vault named .jobs is not shown as .jobs~vault"
    );
    std::fs::remove_dir(&shown).unwrap_or_else(|e| panic!("rmdir .jobs~vault: {e}"));
    assert!(
        wait_until(Duration::from_secs(30), || !emu
            .vault_names()
            .iter()
            .any(|v| v == ".jobs")),
        "the vault named .jobs was not deleted from Glacier"
    );
    assert!(!shown.exists(), "the directory is still shown after rmdir");
}
