//! One export line proven a JSON object (RFC 8259) in a single pass, with its top-level `id`,
//! `moduleId` and `capabilities.iotEdge` picked out on the way.
//!
//! Why hand-written: every line of every backup, restore and `verify --read-data` goes through
//! this check, and doing it with `serde_json` (a struct with three fields, the rest skipped) took
//! about 40 % of a backup's CPU time — as much as the baseline's whole `zstd | age` budget
//! allowed for it. This scanner does the same work at several times the speed: one UTF-8 check
//! of the whole line (`simdutf8`), then one pass over the bytes with strings skipped eight bytes
//! at a time.
//!
//! What it accepts is what `serde_json` accepts when it reads the line into that struct, with
//! one deliberate difference: bytes that are not UTF-8 are rejected anywhere in the line (JSON
//! text is UTF-8; `serde_json` only checks the strings it keeps). The tests hold it to that
//! against `serde_json` itself, over the fixtures and tens of thousands of mutated lines.
//!
//! Where its time goes: per token, not per byte. The small steps (`peek`, `ws`, `string`,
//! `number`, …) are `#[inline(always)]`, which took it from 1.10 to 1.35 GB/s on synthetic
//! twins; finding string ends with 64-byte SIMD masks instead of eight bytes at a time gained
//! nothing measurable, and a full structural-index design (stage 1 alone, with a trivial step per
//! token) ran at only 2.5 GB/s before any grammar check.
//!
//! Must not: allocate for an ordinary line (a string with escapes, and nesting deeper than 64,
//! are the exceptions), or put any part of a value into an error — values hold device keys.

use std::borrow::Cow;

/// What the line says about itself.
#[derive(Debug, PartialEq, Eq)]
pub struct Fields<'a> {
    pub id: Cow<'a, str>,
    pub module_id: Option<Cow<'a, str>>,
    /// `capabilities.iotEdge`, when present and not null.
    pub iot_edge: Option<bool>,
}

impl Fields<'_> {
    /// An edge device: a device line (not a module) with `capabilities.iotEdge: true`.
    pub fn edge(&self) -> bool {
        self.module_id.is_none() && self.iot_edge.unwrap_or(false)
    }
}

/// Why a line is not an acceptable record. Columns are 1-based byte positions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    Syntax {
        column: usize,
    },
    NotUtf8 {
        column: usize,
    },
    NoId,
    /// `id`, `moduleId`, `capabilities` or `capabilities.iotEdge` has the wrong type.
    WrongType {
        column: usize,
    },
    /// One of those fields appears twice.
    Twice {
        field: &'static str,
        column: usize,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Syntax { column } => write!(f, "JSON syntax error at column {column}"),
            Problem::NotUtf8 { column } => write!(f, "bytes that are not UTF-8 at column {column}"),
            Problem::NoId => f.write_str("it has no \"id\""),
            Problem::WrongType { column } => write!(
                f,
                "\"id\", \"moduleId\" or \"capabilities\" has the wrong type (column {column})"
            ),
            Problem::Twice { field, column } => {
                write!(f, "it has \"{field}\" twice (column {column})")
            }
        }
    }
}

/// Check `line` (without its line ending) and pick out its fields.
pub fn scan(line: &[u8]) -> Result<Fields<'_>, Problem> {
    // simdutf8: std's check was 2 % of a backup's CPU time; this one is about twice as fast.
    let text = simdutf8::compat::from_utf8(line).map_err(|e| Problem::NotUtf8 {
        column: e.valid_up_to().saturating_add(1),
    })?;
    let mut s = Scanner {
        b: line,
        text,
        i: 0,
    };
    s.ws();
    let fields = s.top_object()?;
    s.ws();
    if s.i != line.len() {
        return Err(s.syntax());
    }
    Ok(fields)
}

/// A string token: the bytes between its quotes, and whether they hold an escape.
#[derive(Clone, Copy)]
struct Token {
    start: usize,
    end: usize,
    escaped: bool,
}

struct Scanner<'a> {
    b: &'a [u8],
    /// `b`, checked as UTF-8.
    text: &'a str,
    i: usize,
}

/// Containers open while skipping a value, innermost last: `true` for an object.
struct Nesting {
    inline: [bool; 64],
    len: usize,
    deeper: Vec<bool>,
}

#[allow(
    clippy::arithmetic_side_effects,
    reason = "len counts containers opened on bytes of one line, so it stays below usize::MAX; pop and the n - 1 in top only run when len >= 1"
)]
impl Nesting {
    fn new() -> Self {
        Nesting {
            inline: [false; 64],
            len: 0,
            deeper: Vec::new(),
        }
    }
    fn push(&mut self, object: bool) {
        if self.len < self.inline.len() {
            self.inline[self.len] = object;
        } else {
            self.deeper.push(object);
        }
        self.len += 1;
    }
    fn pop(&mut self) {
        self.len -= 1;
        if self.len >= self.inline.len() {
            self.deeper.pop();
        }
    }
    /// The innermost container: `Some(true)` an object, `Some(false)` an array.
    fn top(&self) -> Option<bool> {
        match self.len {
            0 => None,
            n if n <= self.inline.len() => Some(self.inline[n - 1]),
            _ => self.deeper.last().copied(),
        }
    }
}

// Measured, not guessed: see "Where its time goes" above.
#[allow(clippy::inline_always)]
#[allow(
    clippy::arithmetic_side_effects,
    reason = "i only steps over bytes of b just seen (or a word just matched), so i <= b.len() <= isize::MAX and every i + k (k <= 8) fits; a token's start follows its opening quote, so start >= 1"
)]
impl<'a> Scanner<'a> {
    fn syntax(&self) -> Problem {
        Problem::Syntax { column: self.i + 1 }
    }

    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline(always)]
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.i += 1;
        }
    }

    /// Skip whitespace and expect `byte`.
    #[inline(always)]
    fn expect(&mut self, byte: u8) -> Result<(), Problem> {
        self.ws();
        if self.peek() == Some(byte) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.syntax())
        }
    }

    /// The top-level object, with the fields we want picked out.
    fn top_object(&mut self) -> Result<Fields<'a>, Problem> {
        self.expect(b'{')?;
        let mut id: Option<Cow<'a, str>> = None;
        let mut module_id: Option<Option<Cow<'a, str>>> = None;
        let mut iot_edge: Option<Option<bool>> = None;
        self.members(|s, key, column| {
            let twice = |field| Problem::Twice { field, column };
            match key {
                Some("id") if id.is_some() => return Err(twice("id")),
                Some("id") => {
                    id = Some(s.string_value()?.ok_or(Problem::WrongType { column })?);
                }
                Some("moduleId") if module_id.is_some() => return Err(twice("moduleId")),
                Some("moduleId") => module_id = Some(s.string_value()?),
                Some("capabilities") if iot_edge.is_some() => return Err(twice("capabilities")),
                Some("capabilities") => iot_edge = Some(s.capabilities()?),
                _ => s.skip_value()?,
            }
            Ok(())
        })?;
        Ok(Fields {
            id: id.ok_or(Problem::NoId)?,
            module_id: module_id.flatten(),
            iot_edge: iot_edge.flatten(),
        })
    }

    /// `capabilities`: null, or an object whose `iotEdge` is a bool or null.
    fn capabilities(&mut self) -> Result<Option<bool>, Problem> {
        let column = self.i + 1;
        if self.literal_null()? {
            return Ok(None);
        }
        if self.peek() != Some(b'{') {
            // serde_json reads the value before it reports the type: a malformed value is
            // a syntax error first.
            self.skip_value()?;
            return Err(Problem::WrongType { column });
        }
        self.i += 1;
        let mut edge: Option<Option<bool>> = None;
        self.members(|s, key, column| {
            match key {
                Some("iotEdge") if edge.is_some() => {
                    return Err(Problem::Twice {
                        field: "iotEdge",
                        column,
                    });
                }
                Some("iotEdge") => edge = Some(s.bool_value()?),
                _ => s.skip_value()?,
            }
            Ok(())
        })?;
        Ok(edge.flatten())
    }

    /// The members of an object whose `{` was just read, through its `}`. `member` gets the
    /// key (when it is one we care about) and the value's column, and must consume the value.
    fn members(
        &mut self,
        mut member: impl FnMut(&mut Self, Option<&'static str>, usize) -> Result<(), Problem>,
    ) -> Result<(), Problem> {
        let mut first = true;
        loop {
            self.ws();
            match self.peek() {
                Some(b'}') if first => {
                    self.i += 1;
                    return Ok(());
                }
                Some(b'"') => {}
                _ => return Err(self.syntax()),
            }
            let key = self.string()?;
            self.expect(b':')?;
            self.ws();
            let column = self.i + 1;
            let name = self.key_name(key)?;
            member(self, name, column)?;
            first = false;
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(self.syntax()),
            }
        }
    }

    /// A key we may care about, unescaped; `None` for any other key. A key whose escapes do
    /// not decode (a lone surrogate) is a syntax error, as it is to `serde_json`.
    fn key_name(&self, key: Token) -> Result<Option<&'static str>, Problem> {
        const WANTED: [&str; 4] = ["id", "moduleId", "capabilities", "iotEdge"];
        if key.escaped {
            let text = self
                .unescape(key)
                .map_err(|()| Problem::Syntax { column: key.start })?;
            return Ok(WANTED.into_iter().find(|w| *w == text));
        }
        let raw = &self.b[key.start..key.end];
        Ok(WANTED.into_iter().find(|w| w.as_bytes() == raw))
    }

    /// A string value (`Some`) or null (`None`); anything else is the wrong type.
    fn string_value(&mut self) -> Result<Option<Cow<'a, str>>, Problem> {
        let column = self.i + 1;
        if self.literal_null()? {
            return Ok(None);
        }
        if self.peek() != Some(b'"') {
            self.skip_value()?;
            return Err(Problem::WrongType { column });
        }
        let token = self.string()?;
        if token.escaped {
            return self
                .unescape(token)
                .map(|s| Some(Cow::Owned(s)))
                .map_err(|()| Problem::Syntax { column });
        }
        // Between two quotes: on character boundaries.
        Ok(Some(Cow::Borrowed(&self.text[token.start..token.end])))
    }

    /// `true`, `false` or null (`None`); anything else is the wrong type.
    fn bool_value(&mut self) -> Result<Option<bool>, Problem> {
        let column = self.i + 1;
        for (word, value) in [(&b"true"[..], Some(true)), (b"false", Some(false))] {
            if self.b[self.i..].starts_with(word) {
                self.i += word.len();
                return Ok(value);
            }
        }
        if self.literal_null()? {
            return Ok(None);
        }
        self.skip_value()?;
        Err(Problem::WrongType { column })
    }

    /// Consume `null` if it is next; a truncated or misspelt literal is a syntax error.
    fn literal_null(&mut self) -> Result<bool, Problem> {
        if self.peek() != Some(b'n') {
            return Ok(false);
        }
        self.literal(b"null")?;
        Ok(true)
    }

    #[inline(always)]
    fn literal(&mut self, word: &[u8]) -> Result<(), Problem> {
        for &expected in word {
            if self.peek() != Some(expected) {
                return Err(self.syntax());
            }
            self.i += 1;
        }
        Ok(())
    }

    /// Unescape a string token with `serde_json` (rare: ids and keys almost never hold escapes).
    fn unescape(&self, token: Token) -> Result<String, ()> {
        serde_json::from_slice::<String>(&self.b[token.start - 1..=token.end]).map_err(|_| ())
    }

    /// A string: the opening quote is next. Checks escapes and control characters.
    #[inline(always)]
    fn string(&mut self) -> Result<Token, Problem> {
        self.i += 1;
        let start = self.i;
        let mut escaped = false;
        loop {
            self.skip_plain();
            match self.peek() {
                Some(b'"') => {
                    let end = self.i;
                    self.i += 1;
                    return Ok(Token {
                        start,
                        end,
                        escaped,
                    });
                }
                Some(b'\\') => {
                    escaped = true;
                    self.i += 1;
                    self.escape()?;
                }
                // A control character, or the line ended inside the string.
                _ => return Err(self.syntax()),
            }
        }
    }

    /// After a backslash: one of `"\/bfnrt`, or `u` and four hex digits.
    fn escape(&mut self) -> Result<(), Problem> {
        match self.peek() {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.i += 1;
                Ok(())
            }
            Some(b'u') => {
                self.i += 1;
                for _ in 0..4 {
                    match self.peek() {
                        Some(c) if c.is_ascii_hexdigit() => self.i += 1,
                        _ => return Err(self.syntax()),
                    }
                }
                Ok(())
            }
            _ => Err(self.syntax()),
        }
    }

    /// Advance over string bytes that need no attention: everything but `"`, `\` and control
    /// characters. Eight bytes at a time while none of them is one of those.
    #[inline(always)]
    fn skip_plain(&mut self) {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGHS: u64 = 0x8080_8080_8080_8080;
        // (`first_chunk` instead of the `try_from` measured some 5 % slower.)
        while let Some(Ok(chunk)) = self.b.get(self.i..self.i + 8).map(<&[u8; 8]>::try_from) {
            let w = u64::from_le_bytes(*chunk);
            // A high bit marks each byte below 0x20, equal to '"' or equal to '\\' (and
            // possibly bytes above the first such one, which do not matter).
            let control = w.wrapping_sub(ONES * 0x20);
            let quote = (w ^ (ONES * u64::from(b'"'))).wrapping_sub(ONES);
            let backslash = (w ^ (ONES * u64::from(b'\\'))).wrapping_sub(ONES);
            let hits = (control | quote | backslash) & !w & HIGHS;
            if hits != 0 {
                self.i += (hits.trailing_zeros() / 8) as usize;
                return;
            }
            self.i += 8;
        }
        while let Some(&c) = self.b.get(self.i) {
            if c < 0x20 || c == b'"' || c == b'\\' {
                return;
            }
            self.i += 1;
        }
    }

    /// A number: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    #[inline(always)]
    fn number(&mut self) -> Result<(), Problem> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.i += 1;
                if self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    return Err(self.syntax());
                }
            }
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.syntax()),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            self.some_digits()?;
        }
        Ok(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
    }

    fn some_digits(&mut self) -> Result<(), Problem> {
        if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
            return Err(self.syntax());
        }
        self.digits();
        Ok(())
    }

    /// Skip one value of any kind and depth (iteratively, so depth costs no stack).
    fn skip_value(&mut self) -> Result<(), Problem> {
        let mut open = Nesting::new();
        loop {
            // A value is next.
            self.ws();
            match self.peek() {
                Some(b'"') => {
                    self.string()?;
                }
                Some(b'-' | b'0'..=b'9') => self.number()?,
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                Some(open_byte @ (b'{' | b'[')) => {
                    self.i += 1;
                    self.ws();
                    let object = open_byte == b'{';
                    let close = if object { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.i += 1;
                    } else {
                        open.push(object);
                        if object {
                            self.member_key()?;
                        }
                        continue;
                    }
                }
                _ => return Err(self.syntax()),
            }
            // A value ended: a comma (and the next member), or close containers.
            loop {
                let Some(object) = open.top() else {
                    return Ok(());
                };
                self.ws();
                match self.peek() {
                    Some(b',') => {
                        self.i += 1;
                        if object {
                            self.member_key()?;
                        }
                        break;
                    }
                    Some(b'}') if object => {
                        self.i += 1;
                        open.pop();
                    }
                    Some(b']') if !object => {
                        self.i += 1;
                        open.pop();
                    }
                    _ => return Err(self.syntax()),
                }
            }
        }
    }

    /// Inside an object, where a member starts: `"key" :`.
    #[inline(always)]
    fn member_key(&mut self) -> Result<(), Problem> {
        self.ws();
        if self.peek() != Some(b'"') {
            return Err(self.syntax());
        }
        self.string()?;
        self.expect(b':')
    }
}

#[cfg(test)]
mod tests;
