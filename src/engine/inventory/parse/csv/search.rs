//! Reading one CSV record: the grammar as a walk over the record's bytes, and the search over
//! the readings of its ambiguous `\"` spots for the one that makes a whole record (see the
//! note of the parent module for the rules).

use std::collections::HashSet;

use super::{FIELD_COUNT, SIZE_FIELD};

/// Where a field's bytes are, during a walk over a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Mode {
    FieldStart,
    Unquoted,
    Quoted,
    /// Just past a closing quote, which is always followed by a field end.
    AfterQuote,
}

/// The whole state of a walk: what lies ahead depends on nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Cursor {
    pos: usize,
    /// Index of the field being read.
    field: usize,
    mode: Mode,
    /// Whether the Size column has had a digit yet.
    size_digits: bool,
}

impl Cursor {
    const START: Cursor = Cursor {
        pos: 0,
        field: 0,
        mode: Mode::FieldStart,
        size_digits: false,
    };

    /// Whether a record ending here is whole: every column there, and
    /// a Size with digits (its other bytes are checked as they come).
    fn is_complete(&self) -> bool {
        self.field + 1 == FIELD_COUNT && self.size_digits
    }
}

/// The two readings of an ambiguous `\"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// An escaped inner quote.
    Escape,
    /// A literal backslash; the quote is then read on its own.
    Literal,
}

impl Reading {
    /// Where the walk goes on from the choice point at `at`.
    fn resume(self, at: Cursor) -> Cursor {
        let skip = match self {
            Reading::Escape => 2,
            Reading::Literal => 1,
        };
        Cursor {
            pos: at.pos + skip,
            ..at
        }
    }
}

/// Why a walk stopped.
#[derive(Debug)]
enum Stop {
    /// The record ended; the cursor is on its last field.
    Ended(Cursor),
    /// The buffer ended inside a quoted field; the cursor is at its end.
    NeedMore(Cursor),
    /// An ambiguous `\"` at the cursor that the visitor left undecided.
    Choice(Cursor),
    Invalid(&'static str),
}

/// What a walk over a record does with choice points and field bytes.
trait WalkVisitor {
    /// Decides the ambiguous `\"` at `pos`, or `None` to stop there.
    fn decide(&mut self, pos: usize) -> Option<Reading>;
    /// Receives the next bytes of field `field`; false if they cannot be
    /// in that field, which ends the walk.
    fn push(&mut self, field: usize, bytes: &[u8]) -> bool;
}

/// Walks `buf` from `cur` until the record ends, the buffer runs out, or a
/// choice point the visitor leaves open. This is the whole CSV grammar;
/// the search for a reading and the field extraction both run it.
fn walk(buf: &[u8], at_eof: bool, mut cur: Cursor, v: &mut impl WalkVisitor) -> Stop {
    loop {
        match cur.mode {
            Mode::FieldStart => {
                if buf.get(cur.pos) == Some(&b'"') {
                    cur.pos += 1;
                    cur.mode = Mode::Quoted;
                } else {
                    cur.mode = Mode::Unquoted;
                }
            }
            Mode::Unquoted => {
                let rest = &buf[cur.pos..];
                let end = rest
                    .iter()
                    .position(|&b| b == b',' || b == b'\n')
                    .unwrap_or(rest.len());
                let content = &rest[..end];
                if rest.get(end) == Some(&b',') {
                    if !emit(v, &mut cur, content) {
                        return Stop::Invalid(BAD_SIZE);
                    }
                    cur.pos += end + 1;
                    cur.field += 1;
                    cur.mode = Mode::FieldStart;
                } else {
                    if !emit(v, &mut cur, content.strip_suffix(b"\r").unwrap_or(content)) {
                        return Stop::Invalid(BAD_SIZE);
                    }
                    return Stop::Ended(cur);
                }
            }
            Mode::Quoted => {
                let rest = &buf[cur.pos..];
                let Some(i) = rest.iter().position(|&b| b == b'"' || b == b'\\') else {
                    if !emit(v, &mut cur, rest) {
                        return Stop::Invalid(BAD_SIZE);
                    }
                    cur.pos = buf.len();
                    return if at_eof {
                        Stop::Invalid("quoted field is never closed")
                    } else {
                        Stop::NeedMore(cur)
                    };
                };
                if !emit(v, &mut cur, &rest[..i]) {
                    return Stop::Invalid(BAD_SIZE);
                }
                cur.pos += i;
                let stop = if rest[i] == b'\\' {
                    quoted_backslash(buf, &mut cur, v)
                } else {
                    quoted_quote(buf, &mut cur, v)
                };
                if let Some(stop) = stop {
                    return stop;
                }
            }
            Mode::AfterQuote => {
                if buf.get(cur.pos) == Some(&b',') {
                    cur.pos += 1;
                    cur.field += 1;
                    cur.mode = Mode::FieldStart;
                } else {
                    // Only a line end or the end of input can be here.
                    return Stop::Ended(cur);
                }
            }
        }
    }
}

/// Handles the backslash at `cur` inside a quoted field.
fn quoted_backslash(buf: &[u8], cur: &mut Cursor, v: &mut impl WalkVisitor) -> Option<Stop> {
    if buf.get(cur.pos + 1) != Some(&b'"') {
        // Backslashes are not escaped, so one before anything else is itself.
        cur.pos += 1;
        return push_or_stop(v, cur, b"\\");
    }
    // Reading `\` as literal leaves `"` to close the field or start `""`;
    // followed by anything else it could only be an escaped quote.
    let after = cur.pos + 2;
    let reading = if ends_field(buf, after) || buf.get(after) == Some(&b'"') {
        match v.decide(cur.pos) {
            Some(reading) => reading,
            None => return Some(Stop::Choice(*cur)),
        }
    } else {
        Reading::Escape
    };
    let pushed: &[u8] = match reading {
        Reading::Escape => b"\"",
        Reading::Literal => b"\\",
    };
    *cur = reading.resume(*cur);
    push_or_stop(v, cur, pushed)
}

/// Handles the quote at `cur` inside a quoted field.
fn quoted_quote(buf: &[u8], cur: &mut Cursor, v: &mut impl WalkVisitor) -> Option<Stop> {
    if buf.get(cur.pos + 1) == Some(&b'"') {
        cur.pos += 2;
        return push_or_stop(v, cur, b"\"");
    } else if ends_field(buf, cur.pos + 1) {
        cur.pos += 1;
        cur.mode = Mode::AfterQuote;
    } else {
        return Some(Stop::Invalid("text after a closing quote"));
    }
    None
}

/// Hands field bytes to the visitor, noting a digit in Size.
fn emit(v: &mut impl WalkVisitor, cur: &mut Cursor, bytes: &[u8]) -> bool {
    if cur.field == SIZE_FIELD && bytes.iter().any(u8::is_ascii_digit) {
        cur.size_digits = true;
    }
    v.push(cur.field, bytes)
}

fn push_or_stop(v: &mut impl WalkVisitor, cur: &mut Cursor, bytes: &[u8]) -> Option<Stop> {
    (!emit(v, cur, bytes)).then_some(Stop::Invalid(BAD_SIZE))
}

const BAD_SIZE: &str = "Size is not a byte count";

/// Whether `bytes` may be part of field `field`. Only Size is checked:
/// digits (and blanks) there rule out most false readings of a `\"`
/// choice point in a description that spans lines. Checking byte by byte,
/// with the digit seen tracked in the [`Cursor`], keeps the rule a matter
/// of the walk's state alone, which the search's memo relies on.
fn fits(field: usize, bytes: &[u8]) -> bool {
    field != SIZE_FIELD
        || bytes
            .iter()
            .all(|b| b.is_ascii_digit() || b.is_ascii_whitespace())
}

/// Whether a field may end at `pos`: a comma, a line end, or the buffer's
/// end (which, since lines are read whole, is the end of input).
fn ends_field(buf: &[u8], pos: usize) -> bool {
    match buf.get(pos) {
        None | Some(b',' | b'\n') => true,
        Some(b'\r') => matches!(buf.get(pos + 1), None | Some(b'\n')),
        Some(_) => false,
    }
}

/// The outcome of looking for a reading of the record in the buffer.
#[derive(Debug)]
pub(super) enum Located {
    /// A reading with the right field count: the positions of the choice
    /// points read as a literal backslash, in order.
    Record(Vec<usize>),
    /// No reading yet, but these may become one with more lines.
    NeedMore(Vec<Partial>),
    Invalid(String),
}

/// A reading that reached the end of the buffer inside a quoted field.
///
/// Every other unfinished reading has failed for good (a record end or a
/// bad quote lies behind it), so these are all that more input can
/// extend. There are at most [`FIELD_COUNT`]: readings that reach the
/// buffer end in the same field behave alike from there on, and only the
/// preferred one is kept.
#[derive(Debug, Clone, Copy)]
pub(super) struct Partial {
    at: Cursor,
    /// The head of its list in [`LiteralLists`].
    literals: Option<usize>,
}

impl Partial {
    pub(super) const START: Partial = Partial {
        at: Cursor::START,
        literals: None,
    };
}

/// The choice points each reading took as literal, as linked lists in
/// one arena, so that a reading continued on the next line shares its
/// list instead of copying it.
#[derive(Debug, Default)]
pub(super) struct LiteralLists {
    /// (position, index of the previous node).
    nodes: Vec<(usize, Option<usize>)>,
}

impl LiteralLists {
    /// Extends the list at `head` with the literal readings on `path`.
    fn extend(&mut self, mut head: Option<usize>, path: &[(Cursor, Reading)]) -> Option<usize> {
        for (at, reading) in path {
            if *reading == Reading::Literal {
                self.nodes.push((at.pos, head));
                head = Some(self.nodes.len() - 1);
            }
        }
        head
    }

    fn positions(&self, mut head: Option<usize>) -> Vec<usize> {
        let mut out = Vec::new();
        while let Some((pos, prev)) = head.and_then(|i| self.nodes.get(i)) {
            out.push(*pos);
            head = *prev;
        }
        out.reverse();
        out
    }
}

/// Leaves every choice point open and keeps nothing: for the search.
struct Probe;

impl WalkVisitor for Probe {
    fn decide(&mut self, _: usize) -> Option<Reading> {
        None
    }
    fn push(&mut self, field: usize, bytes: &[u8]) -> bool {
        fits(field, bytes)
    }
}

/// Finds the preferred reading of the record in `buf`, going on from the
/// readings left unfinished by the previous, shorter buffer (in order of
/// preference), so that each line of a record is searched only once.
pub(super) fn locate(
    buf: &[u8],
    at_eof: bool,
    starts: &[Partial],
    lists: &mut LiteralLists,
) -> Located {
    let mut search = Search {
        buf,
        at_eof,
        lists,
        dead: HashSet::new(),
        frontier: Vec::new(),
    };
    for start in starts {
        if let Some(head) = search.explore(*start) {
            return Located::Record(search.lists.positions(head));
        }
    }
    if search.frontier.is_empty() {
        Located::Invalid(describe_failure(buf, at_eof))
    } else {
        Located::NeedMore(search.frontier)
    }
}

struct Search<'a> {
    buf: &'a [u8],
    at_eof: bool,
    lists: &'a mut LiteralLists,
    /// Choice points from which no reading works. A cursor is the whole
    /// state of a walk, so each is explored only once.
    dead: HashSet<Cursor>,
    frontier: Vec<Partial>,
}

impl Search<'_> {
    /// A depth-first search from `start` over choice points, escaped-quote
    /// reading first. Returns the literal list of the first reading that
    /// makes a record; unfinished readings are added to the frontier.
    fn explore(&mut self, start: Partial) -> Option<Option<usize>> {
        let mut path: Vec<(Cursor, Reading)> = Vec::new();
        let mut stop = self.walk(start.at);
        loop {
            match stop {
                // Past the last field no reading can end with the right count.
                Stop::Choice(at) if at.field < FIELD_COUNT && !self.dead.contains(&at) => {
                    path.push((at, Reading::Escape));
                    stop = self.walk(Reading::Escape.resume(at));
                    continue;
                }
                Stop::Ended(end) if end.is_complete() => {
                    return Some(self.lists.extend(start.literals, &path))
                }
                Stop::NeedMore(at) => self.keep_unfinished(at, start.literals, &path),
                Stop::Choice(_) | Stop::Ended(_) | Stop::Invalid(_) => {}
            }
            // Backtrack to the deepest choice point not yet read as literal.
            loop {
                match path.pop() {
                    Some((at, Reading::Escape)) => {
                        path.push((at, Reading::Literal));
                        stop = self.walk(Reading::Literal.resume(at));
                        break;
                    }
                    Some((at, Reading::Literal)) => {
                        self.dead.insert(at);
                    }
                    None => return None,
                }
            }
        }
    }

    fn walk(&self, from: Cursor) -> Stop {
        walk(self.buf, self.at_eof, from, &mut Probe)
    }

    fn keep_unfinished(&mut self, at: Cursor, head: Option<usize>, path: &[(Cursor, Reading)]) {
        // Readings are met in order of preference, so the first one kept wins.
        if self.frontier.iter().all(|p| p.at != at) {
            let literals = self.lists.extend(head, path);
            self.frontier.push(Partial { at, literals });
        }
    }
}

/// Reads every choice point as an escaped quote, the preferred reading,
/// whose failure is the one worth reporting. It keeps the Size column
/// and lets anything into it, so as to count the fields regardless.
#[derive(Default)]
struct Greedy {
    size: Vec<u8>,
}

impl WalkVisitor for Greedy {
    fn decide(&mut self, _: usize) -> Option<Reading> {
        Some(Reading::Escape)
    }
    fn push(&mut self, field: usize, bytes: &[u8]) -> bool {
        if field == SIZE_FIELD {
            self.size.extend_from_slice(bytes);
        }
        true
    }
}

fn describe_failure(buf: &[u8], at_eof: bool) -> String {
    let mut greedy = Greedy::default();
    match walk(buf, at_eof, Cursor::START, &mut greedy) {
        // The right count: only the Size rules can have failed the search.
        Stop::Ended(end) if end.field + 1 == FIELD_COUNT => format!(
            "Size {:?} is not a byte count",
            String::from_utf8_lossy(&greedy.size)
        ),
        Stop::Ended(end) => format!("expected {FIELD_COUNT} fields, found {}", end.field + 1),
        Stop::Invalid(msg) => msg.to_string(),
        Stop::NeedMore(_) | Stop::Choice(_) => "quoted field is never closed".to_string(),
    }
}

/// Collects field bytes, reading choice points as `locate` decided.
struct Collect<'a> {
    literals: &'a [usize],
    fields: [Vec<u8>; FIELD_COUNT],
}

impl WalkVisitor for Collect<'_> {
    fn decide(&mut self, pos: usize) -> Option<Reading> {
        // Choice points come in order, so the next literal is the only candidate.
        match self.literals.split_first() {
            Some((&next, rest)) if next == pos => {
                self.literals = rest;
                Some(Reading::Literal)
            }
            _ => Some(Reading::Escape),
        }
    }

    fn push(&mut self, field: usize, bytes: &[u8]) -> bool {
        if let Some(f) = self.fields.get_mut(field) {
            f.extend_from_slice(bytes);
        }
        fits(field, bytes)
    }
}

pub(super) fn extract(buf: &[u8], at_eof: bool, literals: &[usize]) -> [Vec<u8>; FIELD_COUNT] {
    let mut collect = Collect {
        literals,
        fields: Default::default(),
    };
    // `locate` already walked this reading to a whole record.
    walk(buf, at_eof, Cursor::START, &mut collect);
    collect.fields
}
