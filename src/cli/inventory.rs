//! `glacierfs inventory export`: the catalog's view of one vault, written as JSON, as CSV, or
//! as the name-override CSV of AWS's "Data Transfer from Glacier Vaults to S3" solution
//! (`dtgv`), so a vault moved to S3 by that pipeline keeps the names the mount shows.
//!
//! It opens the catalog read-only and takes no cache lock, so it runs beside a mount of the
//! same cache directory as well as without one. Paths are the names the catalog stores, which
//! are the mount's names (decoded descriptions, collision suffixes, renames). A file is a row
//! only when an archive holds its current content; the others are counted on stderr.
//!
//! The dtgv format, as that solution reads it (its Glue job's "Naming Overrides" CSV source
//! and the left join on `GlacierArchiveID` that picks `FileName` over the name it would derive
//! from the description): a `GlacierArchiveID,FileName` header, comma-separated, `"`-quoted
//! with no escape character (so a quote inside a quoted field is doubled), UTF-8 without a
//! byte-order mark, one record per line (fields cannot span lines), and exactly one row per
//! archive: a second row for the same id would duplicate that archive in the join, which the
//! job's own row-count check rejects. The object key it writes is `<run>/<FileName>`, the
//! name taken as it is.

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::catalog::manifest::{self, ManifestFile, Rows, Summary, Unlisted};
use crate::catalog::{Catalog, CatalogError};
use crate::codec::timefmt;
use crate::config::{InventoryExportArgs, InventoryFormat, OptionError};

/// Why an export failed; each message is one line that says what to do where it can.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error(transparent)]
    Option(#[from] OptionError),
    #[error(
        "{}: no glacierfs catalog here; mount your vaults or run `glacierfs inventory import` \
         with this --cache-dir first", .0.display()
    )]
    NoCatalog(PathBuf),
    #[error(
        "the catalog in {} has no vault {vault:?}: list the mount's root (`ls MOUNTPOINT`) so \
         the mount learns its vaults, or load its inventory with `glacierfs inventory import \
         {vault} FILE`", dir.display()
    )]
    UnknownVault { vault: String, dir: PathBuf },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("{}: {source}", path.display())]
    Output { path: PathBuf, source: io::Error },
    #[error("{}: is a directory, not a file to write", .0.display())]
    OutputIsDir(PathBuf),
    #[error("standard output: {0}")]
    Stdout(io::Error),
    #[error("{0:?}: a name with a line break cannot go in a dtgv file (one record per line)")]
    LineBreak(String),
}

/// `glacierfs inventory export`.
pub fn export(args: &InventoryExportArgs) -> ExitCode {
    match try_export(args) {
        Ok(summary) => {
            for note in notes(&summary.unlisted) {
                eprintln!("{note}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("glacierfs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn try_export(args: &InventoryExportArgs) -> Result<Summary, InventoryError> {
    let dir = args.cache.resolve()?;
    // The file name the catalog module gives its database (`status` checks the same way):
    // opening read-only must not create an empty catalog where there was none.
    if !dir.join("catalog.db").exists() {
        return Err(InventoryError::NoCatalog(dir));
    }
    // No cache lock and no writer: a running mount keeps both, and WAL lets this read a
    // consistent snapshot beside it.
    let catalog = Catalog::open_read_only(&dir)?;
    let unknown = || InventoryError::UnknownVault {
        vault: args.vault.clone(),
        dir: dir.clone(),
    };
    match &args.file {
        None => {
            let stdout = io::stdout();
            let mut out = Output {
                w: BufWriter::new(stdout.lock()),
                path: None,
            };
            let summary = write_manifest(&catalog, args, &mut out)?.ok_or_else(unknown)?;
            out.w.flush().map_err(|e| out.error(e))?;
            Ok(summary)
        }
        Some(path) => write_atomically(path, |out| {
            write_manifest(&catalog, args, out)?.ok_or_else(unknown)
        }),
    }
}

/// Where the rows go, and the name its errors carry.
struct Output<W: Write> {
    w: W,
    /// None: standard output.
    path: Option<PathBuf>,
}

impl<W: Write> Output<W> {
    fn error(&self, source: io::Error) -> InventoryError {
        match &self.path {
            Some(path) => InventoryError::Output {
                path: path.clone(),
                source,
            },
            None => InventoryError::Stdout(source),
        }
    }
}

/// Streams the manifest of `args.vault` into `out`; None (and nothing written) when the
/// catalog has no such vault.
fn write_manifest<W: Write>(
    catalog: &Catalog,
    args: &InventoryExportArgs,
    out: &mut Output<W>,
) -> Result<Option<Summary>, InventoryError> {
    let format = args.format;
    let vault = args.vault.as_str();
    let rows = match format {
        // One row per archive: of the files sharing one, the first path in byte order names
        // it (the pipeline makes one object per archive, and a second row for an id would be
        // rejected; the other paths are not in the file).
        InventoryFormat::Dtgv => Rows::OnePerArchive,
        InventoryFormat::Json | InventoryFormat::Csv => Rows::EveryFile,
    };
    let mut started = false;
    let summary = catalog.read(|c| {
        Ok(manifest::read_vault(c, vault, rows, |f| {
            if !started {
                header(format, vault, &mut out.w).map_err(|e| out.error(e))?;
            }
            if format == InventoryFormat::Dtgv && f.path.contains(['\r', '\n']) {
                // The catalog's names hold no control characters; this guards the promise
                // that a dtgv file always means what it says.
                return Err(InventoryError::LineBreak(f.path));
            }
            row(format, !started, &f, &mut out.w).map_err(|e| out.error(e))?;
            started = true;
            Ok(())
        }))
    })??;
    if summary.is_some() {
        if !started {
            header(format, vault, &mut out.w).map_err(|e| out.error(e))?;
        }
        footer(format, started, &mut out.w).map_err(|e| out.error(e))?;
    }
    Ok(summary)
}

fn header(format: InventoryFormat, vault: &str, w: &mut impl Write) -> io::Result<()> {
    match format {
        InventoryFormat::Json => {
            w.write_all(b"{\n  \"vault\": ")?;
            json_string(vault, w)?;
            w.write_all(b",\n  \"files\": [")
        }
        // CRLF, as RFC 4180 has it.
        InventoryFormat::Csv => {
            w.write_all(b"Path,ArchiveId,Size,SHA256TreeHash,CreationDate,ArchiveDescription\r\n")
        }
        // LF, as the solution writes its own header-only override file.
        InventoryFormat::Dtgv => w.write_all(b"GlacierArchiveID,FileName\n"),
    }
}

/// One file: a JSON object on a line of its own (readable, and streamed), or a CSV record.
fn row(
    format: InventoryFormat,
    first: bool,
    f: &ManifestFile,
    w: &mut impl Write,
) -> io::Result<()> {
    let date = f.created_s.map(glacier_date);
    match format {
        InventoryFormat::Json => {
            w.write_all(if first { b"\n    " } else { b",\n    " })?;
            w.write_all(b"{\"path\": ")?;
            json_string(&f.path, w)?;
            w.write_all(b", \"archive_id\": ")?;
            json_string(&f.archive_id, w)?;
            write!(w, ", \"size\": {}, \"tree_hash\": ", f.size)?;
            json_opt(f.tree_hash.as_deref(), w)?;
            w.write_all(b", \"creation_date\": ")?;
            json_opt(date.as_deref(), w)?;
            w.write_all(b", \"description\": ")?;
            json_opt(f.description.as_deref(), w)?;
            w.write_all(b"}")
        }
        InventoryFormat::Csv => {
            let size = f.size.to_string();
            let fields = [
                f.path.as_str(),
                f.archive_id.as_str(),
                size.as_str(),
                f.tree_hash.as_deref().unwrap_or_default(),
                date.as_deref().unwrap_or_default(),
                f.description.as_deref().unwrap_or_default(),
            ];
            csv_record(&fields, "\r\n", w)
        }
        InventoryFormat::Dtgv => csv_record(&[&f.archive_id, &f.path], "\n", w),
    }
}

fn footer(format: InventoryFormat, any_rows: bool, w: &mut impl Write) -> io::Result<()> {
    match format {
        InventoryFormat::Json if any_rows => w.write_all(b"\n  ]\n}\n"),
        InventoryFormat::Json => w.write_all(b"]\n}\n"),
        InventoryFormat::Csv | InventoryFormat::Dtgv => Ok(()),
    }
}

fn json_string(s: &str, w: &mut impl Write) -> io::Result<()> {
    serde_json::to_writer(w, s).map_err(io::Error::from)
}

fn json_opt(s: Option<&str>, w: &mut impl Write) -> io::Result<()> {
    match s {
        Some(s) => json_string(s, w),
        None => w.write_all(b"null"),
    }
}

fn csv_record(fields: &[&str], eol: &str, w: &mut impl Write) -> io::Result<()> {
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            w.write_all(b",")?;
        }
        w.write_all(csv_field(field).as_bytes())?;
    }
    w.write_all(eol.as_bytes())
}

/// One CSV field, RFC 4180: quoted when it holds a comma, a double quote, CR or LF, with each
/// double quote doubled. A field that starts or ends with a space or tab is quoted too:
/// quoting is always allowed, and it keeps a reader that trims unquoted fields from changing
/// the name.
pub fn csv_field(s: &str) -> Cow<'_, str> {
    let edge_space = |c: Option<char>| matches!(c, Some(' ' | '\t'));
    if s.contains([',', '"', '\r', '\n'])
        || edge_space(s.chars().next())
        || edge_space(s.chars().last())
    {
        Cow::Owned(format!("\"{}\"", s.replace('"', "\"\"")))
    } else {
        Cow::Borrowed(s)
    }
}

/// A creation date as Glacier's inventories write it: ISO 8601 in UTC, whole seconds
/// (`2012-03-20T17:03:43Z`); the catalog keeps seconds.
fn glacier_date(secs: i64) -> String {
    let with_millis = timefmt::format_iso8601(secs, 0);
    match with_millis.strip_suffix(".000Z") {
        Some(whole) => format!("{whole}Z"),
        None => with_millis,
    }
}

/// What stderr says about files that are not rows.
fn notes(u: &Unlisted) -> Vec<String> {
    let mut out = Vec::new();
    let plural = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    if u.staged > 0 {
        out.push(plural(
            u.staged,
            "staged file has no archive yet and is not listed",
            "staged files have no archive yet and are not listed",
        ));
    }
    if u.changed > 0 {
        out.push(plural(
            u.changed,
            "file has changes not uploaded yet and is not listed (`glacierfs sync --wait` \
             uploads them)",
            "files have changes not uploaded yet and are not listed (`glacierfs sync --wait` \
             uploads them)",
        ));
    }
    if u.empty > 0 {
        out.push(plural(
            u.empty,
            "empty file has no archive and is not listed",
            "empty files have no archive and are not listed",
        ));
    }
    out
}

/// Writes `dest` through a temporary file beside it, renamed over it once complete and
/// synced, so a reader never sees half a manifest and a failure leaves `dest` as it was. A
/// new file is 0600 (a manifest names every file of the vault); one that exists keeps its
/// mode.
fn write_atomically<T>(
    dest: &Path,
    fill: impl FnOnce(&mut Output<BufWriter<File>>) -> Result<T, InventoryError>,
) -> Result<T, InventoryError> {
    let io_error = |source| InventoryError::Output {
        path: dest.to_owned(),
        source,
    };
    let mode = match std::fs::metadata(dest) {
        Ok(m) if m.is_dir() => return Err(InventoryError::OutputIsDir(dest.to_owned())),
        Ok(m) => m.permissions().mode() & 0o7777,
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0o600,
        Err(e) => return Err(io_error(e)),
    };
    let Some(name) = dest.file_name() else {
        return Err(InventoryError::OutputIsDir(dest.to_owned()));
    };
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let (tmp, file) = create_temp(parent, name).map_err(io_error)?;
    let written = (|| {
        // The mode given at creation passes through the umask; set it outright.
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(io_error)?;
        let mut out = Output {
            w: BufWriter::new(file),
            path: Some(dest.to_owned()),
        };
        let value = fill(&mut out)?;
        let file = out.w.into_inner().map_err(|e| io_error(e.into_error()))?;
        file.sync_all().map_err(io_error)?;
        std::fs::rename(&tmp, dest).map_err(io_error)?;
        // The rename is durable once the directory is.
        File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io_error)?;
        Ok(value)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// A new file `.<name>.<pid>[.<n>].tmp` in `dir`, created exclusively and private.
fn create_temp(dir: &Path, name: &std::ffi::OsStr) -> io::Result<(PathBuf, File)> {
    let pid = std::process::id();
    let mut attempt = 0u32;
    loop {
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        match attempt {
            0 => tmp_name.push(format!(".{pid}.tmp")),
            n => tmp_name.push(format!(".{pid}.{n}.tmp")),
        }
        let tmp = dir.join(tmp_name);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            // Left by an earlier run that died with this pid: never write through it.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 100 => attempt += 1,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_they_must_be() {
        assert_eq!(csv_field("plain name.txt"), "plain name.txt");
        assert!(matches!(csv_field("plain"), Cow::Borrowed(_)));
        assert_eq!(csv_field("日本/é.txt"), "日本/é.txt");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("\""), "\"\"\"\"");
        assert_eq!(csv_field("line\nbreak"), "\"line\nbreak\"");
        assert_eq!(csv_field("cr\rhere"), "\"cr\rhere\"");
        assert_eq!(csv_field(" lead"), "\" lead\"");
        assert_eq!(csv_field("trail\t"), "\"trail\t\"");
        assert_eq!(
            csv_field("back\\slash"),
            "back\\slash",
            "no escape character"
        );
        assert_eq!(csv_field(""), "");
    }

    #[test]
    fn records_join_fields_and_end_their_line() {
        let mut out = Vec::new();
        csv_record(&["id-1", "a, \"b\"/c"], "\n", &mut out).unwrap();
        csv_record(&["id-2", "x"], "\r\n", &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "id-1,\"a, \"\"b\"\"/c\"\nid-2,x\r\n"
        );
    }

    #[test]
    fn dates_are_written_as_glacier_inventories_write_them() {
        assert_eq!(glacier_date(0), "1970-01-01T00:00:00Z");
        assert_eq!(glacier_date(1_332_263_023), "2012-03-20T17:03:43Z");
    }

    #[test]
    fn notes_count_what_is_left_out() {
        assert!(notes(&Unlisted::default()).is_empty());
        let n = notes(&Unlisted {
            staged: 3,
            changed: 1,
            empty: 0,
        });
        assert_eq!(
            n[0],
            "3 staged files have no archive yet and are not listed"
        );
        assert!(
            n[1].starts_with("1 file has changes not uploaded yet"),
            "{n:?}"
        );
        assert_eq!(n.len(), 2);
        let one = notes(&Unlisted {
            staged: 1,
            changed: 0,
            empty: 2,
        });
        assert_eq!(
            one,
            [
                "1 staged file has no archive yet and is not listed",
                "2 empty files have no archive and are not listed"
            ]
        );
    }

    #[test]
    fn a_file_is_replaced_whole_and_keeps_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.csv");
        write_atomically(&dest, |out| {
            out.w.write_all(b"one").unwrap();
            Ok(())
        })
        .unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(std::fs::read(&dest).unwrap(), b"one");
        assert_eq!(mode(&dest), 0o600);
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomically(&dest, |out| {
            out.w.write_all(b"two").unwrap();
            Ok(())
        })
        .unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"two");
        assert_eq!(mode(&dest), 0o640);
        // A failure leaves the file as it was, and no temporary file behind.
        let failed = write_atomically(&dest, |out| -> Result<(), InventoryError> {
            out.w.write_all(b"half").unwrap();
            Err(InventoryError::LineBreak("x".into()))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&dest).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["out.csv"]);
        assert!(matches!(
            write_atomically(dir.path(), |_| Ok(())),
            Err(InventoryError::OutputIsDir(_))
        ));
    }
}
