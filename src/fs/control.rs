//! The `.jobs` control file: rendering this mount's background work as JSON Lines, and
//! parsing the commands written to it (SEMANTICS.md, "Control files").
//!
//! Keys follow the Glacier API where they exist (`Action`, `StatusCode`, `JobId`, ...). Work of
//! this mount's own (uploads, deletes, vault deletes) gets the same shape, with actions
//! `Upload`, `Delete` and `DeleteVault`.

use serde_json::{json, Map, Value};

use crate::config::{parse_tiers, Tiers};

/// One command written to `.jobs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `retrieve <path> [tier]`: path relative to the directory holding the `.jobs`; the tier
    /// may name a fallback, as `--tier` does (`expedited,standard`).
    Retrieve { path: String, tier: Option<Tiers> },
    /// `inventory`: look for a newer inventory now.
    Inventory,
    /// `cancel <JobId|path>`: stop this mount's queued work.
    Cancel { target: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("commands are text")]
    NotText,
    #[error(
        "unknown command {0:?}: use retrieve <path> [tier], inventory, or cancel <JobId|path>"
    )]
    Unknown(String),
    #[error("{0}")]
    Usage(&'static str),
    #[error("{0:?} is not a tier: use expedited, standard or bulk")]
    BadTier(String),
}

/// Parses the commands of one write: one per line, blank lines ignored. A path may hold
/// spaces; a trailing word that is a tier (or a tier list) is taken as the tier.
pub fn parse(input: &[u8]) -> Result<Vec<Command>, CommandError> {
    let text = std::str::from_utf8(input).map_err(|_| CommandError::NotText)?;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (verb, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        out.push(match verb {
            "retrieve" => {
                if rest.is_empty() {
                    return Err(CommandError::Usage("retrieve needs a path"));
                }
                let split = rest.rsplit_once(char::is_whitespace);
                match split.map(|(path, word)| (path, parse_tiers(word))) {
                    Some((path, Ok(tiers))) => Command::Retrieve {
                        path: path.trim().to_owned(),
                        tier: Some(tiers),
                    },
                    _ => Command::Retrieve {
                        path: rest.to_owned(),
                        tier: None,
                    },
                }
            }
            "inventory" if rest.is_empty() => Command::Inventory,
            "inventory" => return Err(CommandError::Usage("inventory takes no argument")),
            "cancel" if !rest.is_empty() => Command::Cancel {
                target: rest.to_owned(),
            },
            "cancel" => return Err(CommandError::Usage("cancel needs a JobId or a path")),
            other => return Err(CommandError::Unknown(other.to_owned())),
        });
    }
    if out.is_empty() {
        return Err(CommandError::Usage("no command given"));
    }
    Ok(out)
}

/// One line of `.jobs`, built field by field; absent fields are left out.
#[derive(Debug, Default, Clone)]
pub struct Entry(Map<String, Value>);

impl Entry {
    pub fn new(action: &str, status: &str) -> Entry {
        let mut m = Map::new();
        m.insert("Action".into(), json!(action));
        m.insert("StatusCode".into(), json!(status));
        Entry(m)
    }

    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Entry {
        self.0.insert(key.into(), value.into());
        self
    }

    pub fn opt(self, key: &str, value: Option<impl Into<Value>>) -> Entry {
        match value {
            Some(v) => self.set(key, v),
            None => self,
        }
    }
}

/// The JSON Lines text of a `.jobs` snapshot.
pub fn render(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        // A map of JSON values always serialises.
        if let Ok(line) = serde_json::to_vec(&e.0) {
            out.extend_from_slice(&line);
            out.push(b'\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::glacier::Tier;

    #[test]
    fn commands_parse() {
        assert_eq!(
            parse(b"retrieve photos/a b.jpg bulk\n").unwrap(),
            vec![Command::Retrieve {
                path: "photos/a b.jpg".into(),
                tier: Some(Tier::Bulk.into())
            }]
        );
        let tiers = parse_tiers("expedited,standard").unwrap();
        assert_eq!(
            parse(b"retrieve photos/a b.jpg expedited,standard\n").unwrap(),
            vec![Command::Retrieve {
                path: "photos/a b.jpg".into(),
                tier: Some(tiers)
            }]
        );
        assert_eq!(tiers.fallback(), Some(Tier::Standard));
        // Not a tier list (a fallback faster than its tier): part of the path.
        assert_eq!(
            parse(b"retrieve docs/report standard,expedited").unwrap(),
            vec![Command::Retrieve {
                path: "docs/report standard,expedited".into(),
                tier: None
            }]
        );
        assert_eq!(
            parse(b"retrieve docs/report standard-ish").unwrap(),
            vec![Command::Retrieve {
                path: "docs/report standard-ish".into(),
                tier: None
            }]
        );
        assert_eq!(parse(b"inventory\n\ncancel JOB1").unwrap().len(), 2);
        assert!(matches!(
            parse(b"delete everything"),
            Err(CommandError::Unknown(_))
        ));
        assert!(parse(b"").is_err());
        assert!(parse(b"retrieve").is_err());
        assert!(parse(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn entries_render_as_json_lines() {
        let text = render(&[
            Entry::new("Upload", "Queued")
                .set("Path", "a/b")
                .opt("BytesDone", Some(5)),
            Entry::new("Delete", "Queued").opt("StatusMessage", None::<String>),
        ]);
        let lines: Vec<serde_json::Value> = String::from_utf8(text)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["Path"], "a/b");
        assert_eq!(lines[0]["BytesDone"], 5);
        assert!(lines[1].get("StatusMessage").is_none());
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(input in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = parse(&input);
        }
    }
}
