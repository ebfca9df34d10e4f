//! Export lines → records. A record keeps the **exact bytes** of its line (line ending trimmed):
//! nothing is re-serialised, so unknown fields, key order and number formats survive by
//! construction. Parsing only checks that the line is one JSON object and extracts `id`,
//! `moduleId` and `capabilities.iotEdge`.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::io::BufRead;
use std::ops::Range;

use super::{Error, json_line};

/// One export line.
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    pub id: String,
    /// Present on module lines only.
    pub module_id: Option<String>,
    /// A device line with `capabilities.iotEdge: true`.
    pub edge: bool,
    /// The line, verbatim, without its line ending.
    pub line: Vec<u8>,
    /// 1-based line number in the source, for messages.
    pub line_no: u64,
}

impl Record {
    /// Order by `(id, moduleId)` in byte order; a device sorts before its modules.
    pub fn key_cmp(&self, other: &Record) -> Ordering {
        self.id.as_bytes().cmp(other.id.as_bytes()).then_with(|| {
            self.module_id
                .as_deref()
                .map(str::as_bytes)
                .cmp(&other.module_id.as_deref().map(str::as_bytes))
        })
    }

    /// The record of a line the scanner accepted (copied).
    pub fn from_fields(line: &[u8], line_no: u64, fields: json_line::Fields<'_>) -> Record {
        Record {
            edge: fields.edge(),
            id: fields.id.into_owned(),
            module_id: fields.module_id.map(Cow::into_owned),
            line: line.to_vec(),
            line_no,
        }
    }

    /// `id` or `id/moduleId`, as shown to users.
    pub fn key_display(&self) -> String {
        match &self.module_id {
            Some(m) => format!("{}/{m}", self.id),
            None => self.id.clone(),
        }
    }
}

impl std::fmt::Debug for Record {
    // The line holds device keys: show only where it came from.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Record({:?}, line {}, {} bytes)",
            self.key_display(),
            self.line_no,
            self.line.len()
        )
    }
}

/// What a line turned out to be.
#[derive(Debug)]
pub enum Line {
    Record(Record),
    /// Blank, or not a JSON object (the service writes warning lines): skipped and counted.
    Skipped,
}

/// Classify one line (already without its line ending). `file` is for messages.
pub fn classify(line: &[u8], line_no: u64, file: &str) -> Result<Line, Error> {
    Ok(match check(line, line_no, file)? {
        None => Line::Skipped,
        Some(fields) => Line::Record(Record::from_fields(line, line_no, fields)),
    })
}

/// What [`classify`] decides, without copying anything: `None` for a skipped line.
///
/// Azure's exports may carry warning lines that are not JSON, so a line that reads as text —
/// printable, with no `{` and no `"id"` — is skipped (and counted). Anything else that is not a
/// valid record is refused with its file and line: a damaged record (a first byte lost, a NUL or
/// `#` in front) must never vanish as a "warning", or a mirror restore would delete that device.
pub(super) fn check<'a>(
    line: &'a [u8],
    line_no: u64,
    file: &str,
) -> Result<Option<json_line::Fields<'a>>, Error> {
    let Some(first) = line.iter().find(|b| !b.is_ascii_whitespace()) else {
        return Ok(None);
    };
    let malformed = |detail: String| Error::Malformed {
        file: file.to_owned(),
        line: line_no,
        id: recover_id(line),
        detail,
    };
    if *first != b'{' {
        return match not_a_record(line) {
            None => Ok(None),
            Some(why) => Err(malformed(why.to_owned())),
        };
    }
    let fields = json_line::scan(line).map_err(|problem| malformed(problem.to_string()))?;
    if fields.id.is_empty() {
        return Err(malformed("its \"id\" is empty".to_owned()));
    }
    Ok(Some(fields))
}

/// Why a line that does not start with `{` cannot be skipped as a warning, or `None` when it
/// reads as text. Control bytes (NUL, escape, …; tab is text) and invalid UTF-8 are not text; a
/// `{` or an `"id"` anywhere means a record whose start is damaged.
fn not_a_record(line: &[u8]) -> Option<&'static str> {
    let Ok(text) = std::str::from_utf8(line) else {
        return Some("it is neither a record nor a text line (invalid UTF-8)");
    };
    if text.chars().any(|c| c.is_control() && c != '\t') {
        return Some("it is neither a record nor a text line (it holds control bytes such as NUL)");
    }
    if text.contains('{') || text.contains("\"id\"") {
        return Some(
            "it holds a JSON object or an \"id\" but does not start with '{' (a damaged record?)",
        );
    }
    None
}

/// The longest line an export may have. IoT Hub caps a device twin at a few tens of KiB and a
/// configuration's content likewise, so real lines are far shorter; a longer one (a corrupt file,
/// `/dev/zero`) is refused with its line number instead of growing memory without bound.
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// `BufRead::read_until(b'\n')`, with the `memchr` crate's vectorised search (std's is a
/// word-at-a-time loop, a few percent of a backup's CPU time on 1 KB lines), reading at most
/// `limit` bytes: a longer line is an `InvalidData` error whose message is [`TOO_LONG`].
pub fn read_line<R: BufRead>(
    reader: &mut R,
    out: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<usize> {
    let mut read: usize = 0;
    loop {
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let (used, done) = match memchr::memchr(b'\n', available) {
            Some(at) => (at.saturating_add(1), true),
            None => (available.len(), available.is_empty()),
        };
        read = read.saturating_add(used);
        if read > limit {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                TOO_LONG,
            ));
        }
        out.extend_from_slice(&available[..used]);
        reader.consume(used);
        if done {
            return Ok(read);
        }
    }
}

/// The message of [`read_line`]'s error for a line over its limit.
pub const TOO_LONG: &str = "line longer than the limit";

/// Best effort: the `"id":"…"` of a line that did not parse, for the error message.
fn recover_id(line: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(line).ok()?;
    let (_, after) = text.split_once("\"id\"")?;
    let rest = after
        .trim_start()
        .strip_prefix(':')?
        .trim_start()
        .strip_prefix('"')?;
    let end = rest.find('"')?;
    let id = &rest[..end];
    (!id.is_empty() && id.len() <= 128).then(|| id.to_owned())
}

/// Reads an export line by line: strips a UTF-8 BOM, accepts `\n` and `\r\n`, skips and counts
/// blank and non-object lines, yields records.
pub struct Lines<R> {
    reader: R,
    file: String,
    line_no: u64,
    skipped: u64,
    buf: Vec<u8>,
}

impl<R: BufRead> Lines<R> {
    pub fn new(reader: R, file: impl Into<String>) -> Self {
        Lines {
            reader,
            file: file.into(),
            line_no: 0,
            skipped: 0,
            buf: Vec::with_capacity(4096),
        }
    }

    /// Lines skipped so far.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    pub fn file(&self) -> &str {
        &self.file
    }

    /// Read the next line onto the end of `buf`: where it is in `buf` (without its line
    /// ending, and the first without a BOM), and its number; `None` at the end.
    fn append_raw(&mut self, buf: &mut Vec<u8>) -> Result<Option<(Range<usize>, u64)>, Error> {
        let start = buf.len();
        let n = match read_line(&mut self.reader, buf, MAX_LINE_BYTES) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData && e.to_string() == TOO_LONG => {
                buf.truncate(start);
                return Err(Error::LineTooLong {
                    file: self.file.clone(),
                    line: self.line_no.saturating_add(1),
                    max: MAX_LINE_BYTES,
                });
            }
            Err(source) => {
                return Err(Error::Read {
                    file: self.file.clone(),
                    source,
                });
            }
        };
        if n == 0 {
            return Ok(None);
        }
        self.line_no = self.line_no.saturating_add(1);
        let mut line = &buf[start..];
        if self.line_no == 1 {
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        line = line.strip_suffix(b"\n").unwrap_or(line);
        line = line.strip_suffix(b"\r").unwrap_or(line);
        #[allow(
            clippy::arithmetic_side_effects,
            reason = "line is a subslice of buf: it starts at or after buf and ends within it"
        )]
        let range = {
            let at = line.as_ptr().addr() - buf.as_ptr().addr();
            at..at + line.len()
        };
        Ok(Some((range, self.line_no)))
    }

    /// Read lines until the next record onto the end of `buf` (no copy from a line buffer),
    /// counting skipped lines, and hand it to `take` unmade, with all of `buf` and where the
    /// line is in it: `Ok(false)` at the end. Lines that are skipped or refused leave `buf` as
    /// it was.
    pub(super) fn next_into(
        &mut self,
        buf: &mut Vec<u8>,
        take: impl FnOnce(&[u8], Range<usize>, u64, json_line::Fields<'_>),
    ) -> Result<bool, Error> {
        loop {
            let start = buf.len();
            let Some((range, line_no)) = self.append_raw(buf)? else {
                return Ok(false);
            };
            match check(&buf[range.clone()], line_no, &self.file) {
                Ok(Some(fields)) => {
                    take(buf, range, line_no, fields);
                    return Ok(true);
                }
                Ok(None) => {
                    buf.truncate(start);
                    self.skipped = self.skipped.saturating_add(1);
                }
                Err(e) => {
                    buf.truncate(start);
                    return Err(e);
                }
            }
        }
    }

    /// [`Lines::next_into`] through this reader's own line buffer: `take` gets the line alone.
    pub(super) fn next_with(
        &mut self,
        take: impl FnOnce(&[u8], u64, json_line::Fields<'_>),
    ) -> Result<bool, Error> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let more = self.next_into(&mut buf, |all, line, line_no, fields| {
            take(&all[line], line_no, fields);
        });
        self.buf = buf;
        more
    }
}

impl<R: BufRead> Iterator for Lines<R> {
    type Item = Result<Record, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut record = None;
        let more = self.next_with(|line, line_no, fields| {
            record = Some(Record::from_fields(line, line_no, fields));
        });
        match more {
            Ok(true) => record.map(Ok),
            Ok(false) => None,
            Err(e) => Some(Err(e)),
        }
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects,
    reason = "tests"
)]
mod tests {
    use std::io::Read as _;

    use crate::diagnostic::Diagnostic as _;

    #[test]
    fn debug_never_shows_the_line() {
        let line = br#"{"id":"d1","authentication":{"symmetricKey":{"primaryKey":"SECRETKEY"}}}"#;
        let super::Line::Record(r) = super::classify(line, 1, "devices.txt").unwrap() else {
            panic!()
        };
        let shown = format!("{r:?}");
        assert!(
            !shown.contains("SECRETKEY") && shown.contains("d1"),
            "{shown}"
        );
    }

    use super::*;

    fn read(text: &[u8]) -> (Vec<Result<Record, Error>>, u64) {
        let mut lines = Lines::new(text, "devices.txt");
        let out: Vec<_> = lines.by_ref().collect();
        (out, lines.skipped())
    }

    #[test]
    fn lines_longer_than_the_read_buffer_come_out_whole() {
        let text = b"{\"id\":\"first-device\"}\n\n{\"id\":\"second\",\"tags\":{\"a\":1}}\r\n{\"id\":\"last\"}";
        let reader = std::io::BufReader::with_capacity(7, &text[..]);
        let mut lines = Lines::new(reader, "devices.txt");
        let got: Vec<Record> = lines.by_ref().map(Result::unwrap).collect();
        let ids: Vec<&str> = got.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["first-device", "second", "last"]);
        assert_eq!(got[1].line, b"{\"id\":\"second\",\"tags\":{\"a\":1}}");
        assert_eq!((got[2].line_no, lines.skipped()), (4, 1));
    }

    #[test]
    fn keeps_exact_bytes_and_skips_noise() {
        let text = b"\xEF\xBB\xBF{\"id\":\"a\", \"n\":1.50}\r\n\r\nWarning: keys were exported\n  \n{\"id\":\"a\",\"moduleId\":\"m\"}\n{\"capabilities\":{\"iotEdge\":true},\"id\":\"gw\"}";
        let (records, skipped) = read(text);
        let records: Vec<Record> = records.into_iter().map(Result::unwrap).collect();
        assert_eq!(skipped, 3);
        assert_eq!(records[0].line, b"{\"id\":\"a\", \"n\":1.50}");
        assert_eq!(
            (records[0].line_no, records[1].line_no, records[2].line_no),
            (1, 5, 6)
        );
        assert_eq!(records[1].module_id.as_deref(), Some("m"));
        assert!(!records[0].edge && records[2].edge);
    }

    #[test]
    fn malformed_object_names_file_line_and_id_but_not_contents() {
        let text = b"{\"id\":\"ok\"}\n{\"id\":\"pump-7\",\"authentication\":{\"primaryKey\":\"SECRETKEY\"\n";
        let (records, _) = read(text);
        let err = records
            .into_iter()
            .find_map(Result::err)
            .unwrap()
            .to_string();
        assert!(err.contains("devices.txt line 2"), "{err}");
        assert!(err.contains("pump-7"), "{err}");
        assert!(!err.contains("SECRETKEY"), "{err}");
    }

    #[test]
    fn wrong_types_do_not_echo_values() {
        let err = classify(b"{\"id\":\"x\",\"capabilities\":\"SECRETVALUE\"}", 3, "f")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 3") && !err.contains("SECRETVALUE"),
            "{err}"
        );
        assert!(
            classify(b"{\"deviceId\":\"x\"}", 1, "f")
                .unwrap_err()
                .to_string()
                .contains("no \"id\"")
        );
        assert!(classify(b"{\"id\":\"x\"} trailing", 1, "f").is_err());
    }

    #[test]
    fn a_damaged_record_is_never_skipped_as_a_warning() {
        let good = br#"{"id":"d1","authentication":{"symmetricKey":{"primaryKey":"SECRETKEY"}}}"#;
        let damaged: Vec<Vec<u8>> = vec![
            good[1..].to_vec(),                     // first byte lost
            [b"\0".as_slice(), good].concat(),      // NUL in front
            [b"#".as_slice(), good].concat(),       // a comment marker in front
            [b"\x1b[0m".as_slice(), good].concat(), // an escape sequence in front
            b"\"id\": \"d1\"".to_vec(),             // an id without its object
            b"\xff\xfe warning".to_vec(),           // not UTF-8
        ];
        for line in damaged {
            let err = classify(&line, 7, "devices.txt").unwrap_err();
            let shown = err.to_string();
            assert_eq!(err.code(), "export_malformed_line", "{shown}");
            assert!(shown.contains("devices.txt line 7"), "{shown}");
            assert!(!shown.contains("SECRETKEY"), "{shown}");
        }
        for text in [
            b"Warning: keys were exported".as_slice(),
            b"\tExport finished: 3 devices (see https://aka.ms/iothub)",
            b"   ",
        ] {
            assert!(matches!(classify(text, 1, "f"), Ok(Line::Skipped)));
        }
    }

    #[test]
    fn an_endless_line_is_refused_in_bounded_memory() {
        // /dev/zero in miniature: a reader that never ends a line. It must stop at the limit.
        let zeros = std::io::repeat(0).take(u64::try_from(MAX_LINE_BYTES).unwrap() * 4);
        let mut lines = Lines::new(std::io::BufReader::new(zeros), "devices.txt");
        let err = lines.next().unwrap().unwrap_err();
        assert_eq!(err.code(), "export_line_too_long");
        assert!(err.to_string().contains("devices.txt line 1"), "{err}");
        assert!(lines.buf.capacity() <= MAX_LINE_BYTES + (1 << 20));
    }

    #[test]
    fn order_is_bytewise_with_devices_before_modules() {
        let rec = |id: &str, m: Option<&str>| Record {
            id: id.into(),
            module_id: m.map(Into::into),
            edge: false,
            line: vec![],
            line_no: 0,
        };
        let mut v = [
            rec("b", None),
            rec("a", Some("z")),
            rec("a", None),
            rec("B", None),
            rec("a", Some("$edgeAgent")),
        ];
        v.sort_by(Record::key_cmp);
        let keys: Vec<String> = v.iter().map(Record::key_display).collect();
        assert_eq!(keys, ["B", "a", "a/$edgeAgent", "a/z", "b"]);
    }
}
