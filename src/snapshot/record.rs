//! Export lines → records. A record keeps the **exact bytes** of its line (line ending trimmed):
//! nothing is re-serialised, so unknown fields, key order and number formats survive by
//! construction. Parsing only checks that the line is one JSON object and extracts `id`,
//! `moduleId` and `capabilities.iotEdge`.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::io::BufRead;

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

    /// `id` or `id/moduleId`, as shown to users.
    pub fn key_display(&self) -> String {
        match &self.module_id {
            Some(m) => format!("{}/{m}", self.id),
            None => self.id.clone(),
        }
    }

    /// Rough heap footprint, for the sort's memory budget.
    pub fn footprint(&self) -> usize {
        self.line.capacity()
            + self.id.capacity()
            + self.module_id.as_ref().map_or(0, String::capacity)
            + 112
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
    let Some(first) = line.iter().find(|b| !b.is_ascii_whitespace()) else {
        return Ok(Line::Skipped);
    };
    if *first != b'{' {
        return Ok(Line::Skipped);
    }
    let malformed = |detail: String| Error::Malformed {
        file: file.to_owned(),
        line: line_no,
        id: recover_id(line),
        detail,
    };
    let fields = json_line::scan(line).map_err(|problem| malformed(problem.to_string()))?;
    if fields.id.is_empty() {
        return Err(malformed("its \"id\" is empty".to_owned()));
    }
    let edge = fields.module_id.is_none() && fields.iot_edge.unwrap_or(false);
    Ok(Line::Record(Record {
        id: fields.id.into_owned(),
        module_id: fields.module_id.map(Cow::into_owned),
        edge,
        line: line.to_vec(),
        line_no,
    }))
}

/// Best effort: the `"id":"…"` of a line that did not parse, for the error message.
fn recover_id(line: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(line).ok()?;
    let at = text.find("\"id\"")? + 4;
    let rest = text[at..]
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

    fn next_line(&mut self) -> Result<Option<Line>, Error> {
        self.buf.clear();
        let n = self
            .reader
            .read_until(b'\n', &mut self.buf)
            .map_err(|source| Error::Read {
                file: self.file.clone(),
                source,
            })?;
        if n == 0 {
            return Ok(None);
        }
        self.line_no += 1;
        let mut line = &self.buf[..];
        if self.line_no == 1 {
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        line = line.strip_suffix(b"\n").unwrap_or(line);
        line = line.strip_suffix(b"\r").unwrap_or(line);
        classify(line, self.line_no, &self.file).map(Some)
    }
}

impl<R: BufRead> Iterator for Lines<R> {
    type Item = Result<Record, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.next_line() {
                Ok(None) => return None,
                Ok(Some(Line::Skipped)) => self.skipped += 1,
                Ok(Some(Line::Record(r))) => return Some(Ok(r)),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// The records of an export, parsed on the calling thread or on a thread of its own.
pub enum Records<R> {
    Inline(Lines<R>),
    Threaded(Prefetched),
}

impl<R: BufRead + Send + 'static> Records<R> {
    /// Parse `lines` on a thread of its own when `threaded`. Threaded parsing overlaps the
    /// parse with sealing; but records then live in that thread's malloc arena, where the
    /// memory they free is not reused by the calling thread. So use it for streaming input
    /// (each record is freed right after it is written) and parse inline when records are
    /// buffered for a sort, whose merge then reuses the buffer's memory.
    pub fn new(lines: Lines<R>, threaded: bool) -> std::io::Result<Self> {
        Ok(if threaded {
            Records::Threaded(Prefetched::spawn(lines)?)
        } else {
            Records::Inline(lines)
        })
    }

    /// Lines skipped (blank or not an object). Complete once the iterator has ended.
    pub fn skipped(&mut self) -> u64 {
        match self {
            Records::Inline(l) => l.skipped(),
            Records::Threaded(p) => p.skipped(),
        }
    }
}

impl<R: BufRead> Iterator for Records<R> {
    type Item = Result<Record, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Records::Inline(l) => l.next(),
            Records::Threaded(p) => p.next(),
        }
    }
}

/// Records per batch handed from the parsing thread to the consumer.
const PARSED_BATCH: usize = 128;
/// Batches in flight between them.
const PARSED_DEPTH: usize = 2;

/// [`Lines`] on a thread of its own: the lines of the next batch are read and proven JSON
/// objects while the consumer sorts, checks and seals the previous one. Yields exactly what
/// the inner [`Lines`] yields, in order, and stops after the first error.
pub struct Prefetched {
    rx: Option<std::sync::mpsc::Receiver<Vec<Result<Record, Error>>>>,
    current: std::vec::IntoIter<Result<Record, Error>>,
    thread: Option<std::thread::JoinHandle<u64>>,
    skipped: u64,
}

impl Prefetched {
    /// Start parsing `lines` on a new thread.
    pub fn spawn<R: BufRead + Send + 'static>(mut lines: Lines<R>) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel(PARSED_DEPTH);
        let thread = std::thread::Builder::new()
            .name("hubvault-parse".into())
            .spawn(move || {
                loop {
                    let mut batch = Vec::with_capacity(PARSED_BATCH);
                    let mut last = true;
                    for item in lines.by_ref() {
                        let failed = item.is_err();
                        batch.push(item);
                        if failed {
                            break;
                        }
                        if batch.len() == PARSED_BATCH {
                            last = false;
                            break;
                        }
                    }
                    // A closed channel: the consumer stopped early (restart or error).
                    if (!batch.is_empty() && tx.send(batch).is_err()) || last {
                        break;
                    }
                }
                lines.skipped()
            })?;
        Ok(Prefetched {
            rx: Some(rx),
            current: Vec::new().into_iter(),
            thread: Some(thread),
            skipped: 0,
        })
    }

    /// Lines skipped (blank or not an object). Complete once the iterator has ended.
    pub fn skipped(&mut self) -> u64 {
        self.stop();
        self.skipped
    }

    /// Stop the thread (if still running) and collect its count.
    fn stop(&mut self) {
        self.rx.take();
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(skipped) => self.skipped = skipped,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    }
}

impl Iterator for Prefetched {
    type Item = Result<Record, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.current.next() {
                return Some(item);
            }
            let batch = self.rx.as_ref()?.recv().ok()?;
            self.current = batch.into_iter();
        }
    }
}

impl Drop for Prefetched {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.stop();
        }
    }
}

#[cfg(test)]
mod tests {
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
    fn prefetched_yields_the_same_records_errors_and_skips() {
        let mut text = b"Warning: keys\n".to_vec();
        for i in 0..1000 {
            text.extend_from_slice(format!("{{\"id\":\"d{i:04}\"}}\n\n").as_bytes());
        }
        text.extend_from_slice(b"{\"id\":\"bad\"\n{\"id\":\"after\"}\n");
        let (direct, direct_skipped) = read(&text);
        let mut pre =
            Prefetched::spawn(Lines::new(std::io::Cursor::new(text), "devices.txt")).unwrap();
        let got: Vec<_> = pre.by_ref().collect();
        assert_eq!(pre.skipped(), 1001);
        // Lines itself goes on after an error; the prefetcher stops at the first one.
        let direct: Vec<_> = direct.into_iter().take(1001).collect();
        assert_eq!(direct_skipped, 1001);
        assert_eq!(got.len(), 1001);
        for (a, b) in got.iter().zip(&direct) {
            match (a, b) {
                (Ok(a), Ok(b)) => assert_eq!(a, b),
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
                _ => panic!("different results"),
            }
        }
        assert!(got[1000].is_err());
    }

    #[test]
    fn dropping_prefetched_early_stops_its_thread() {
        let text: Vec<u8> = (0..50_000)
            .flat_map(|i| format!("{{\"id\":\"d{i:06}\"}}\n").into_bytes())
            .collect();
        let mut pre = Prefetched::spawn(Lines::new(std::io::Cursor::new(text), "f")).unwrap();
        assert!(pre.next().unwrap().is_ok());
        drop(pre); // must return (join) rather than hang
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
