//! One pass over JSON text that checks it as serde_json does, says whether
//! serde_json would have written it exactly so, and hands out where the
//! values a reader asks for lie.
//!
//! The aggregator keeps the objects of the bodies it sees as the text they
//! came in. serde_json checked each body while reading a record, then the
//! text was walked again to tell whether it is canonical, and again (a
//! list: twice more) to find an object's kind, metadata and items: three
//! to four passes, most of the cost of ingesting a record. Here one pass
//! does all three.
//!
//! What is taken as JSON is what serde_json takes when it skips a value
//! (RFC 8259: no trailing commas, no comments, any depth, `\u` escapes
//! with four hex digits, surrogates not paired up).

use std::ops::Range;

/// Why text is not JSON, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} at byte {at}")]
pub struct JsonError {
    pub at: usize,
    pub what: &'static str,
}

/// Reads JSON text from its start, value by value.
#[derive(Debug)]
pub struct JsonReader<'a> {
    text: &'a [u8],
    at: usize,
    canonical: bool,
    /// No control character anywhere: a string's end is the next `"` or
    /// `\`, which a vector search finds far faster than a loop that also
    /// looks for control characters. Text written by serde_json or Go is
    /// clean.
    clean: bool,
    string_end: StringEnd,
    /// Strings to note when one stands whole (a key or a value, unescaped).
    words: &'static [&'static [u8]],
    /// Bit i: `words[i]` was read.
    words_seen: u32,
    /// A `\u` escape of an ASCII letter or digit was read, which could
    /// spell a word.
    letter_escape: bool,
}

/// A key of an object as it stands in the text, without its quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key<'a> {
    pub raw: &'a [u8],
    /// Where its opening quote is.
    pub start: usize,
    /// It holds a backslash: `raw` is not the key itself.
    pub escaped: bool,
}

/// The members of one object, read one key at a time: after each key, the
/// caller reads or skips its value.
#[derive(Debug)]
pub struct Members {
    first: bool,
}

/// The elements of one array: after each `true`, the caller reads or
/// skips an element.
#[derive(Debug)]
pub struct Elements {
    first: bool,
}

/// Which containers are open, innermost last: a bit each, `1` for an
/// object. Deep text spills to the heap; most never does.
#[derive(Default)]
pub(crate) struct Nesting {
    bits: u64,
    depth: usize,
    spilled: Vec<u64>,
}

impl Nesting {
    pub(crate) fn push(&mut self, object: bool) {
        if self.depth > 0 && self.depth.is_multiple_of(64) {
            self.spilled.push(self.bits);
            self.bits = 0;
        }
        self.bits |= u64::from(object) << (self.depth % 64);
        self.depth += 1;
    }

    pub(crate) fn pop(&mut self) {
        self.depth -= 1;
        self.bits &= !(1 << (self.depth % 64));
        if self.depth > 0 && self.depth.is_multiple_of(64) {
            self.bits = self.spilled.pop().unwrap_or_default();
        }
    }

    /// `None` at the top, else whether the innermost is an object.
    pub(crate) fn innermost_is_object(&self) -> Option<bool> {
        let depth = self.depth.checked_sub(1)?;
        Some(self.bits >> (depth % 64) & 1 == 1)
    }
}

/// Whether any byte is a control character, which JSON allows only as
/// whitespace between tokens. Without an early exit, so that it runs
/// sixteen bytes at a time.
fn has_control_bytes(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |any, &b| any | u8::from(b < 0x20)) != 0
}

/// Finds the next `"` or `\`: what ends a run of plain string content.
/// Most runs are short (keys, names, the text between two escaped line
/// breaks), so what a search costs to start matters more than its speed
/// on long runs: memchr's `memchr2` picks its routine through a pointer
/// on each call (about 45 instructions before it looks at a byte). SSE2,
/// which every x86-64 processor has, is picked once here and inlined.
#[derive(Debug, Clone, Copy)]
struct StringEnd {
    #[cfg(target_arch = "x86_64")]
    sse2: Option<memchr::arch::x86_64::sse2::memchr::Two>,
}

impl StringEnd {
    fn new() -> StringEnd {
        StringEnd {
            #[cfg(target_arch = "x86_64")]
            sse2: memchr::arch::x86_64::sse2::memchr::Two::new(b'"', b'\\'),
        }
    }

    #[inline]
    fn find(&self, bytes: &[u8]) -> Option<usize> {
        #[cfg(target_arch = "x86_64")]
        if let Some(sse2) = &self.sse2 {
            return sse2.find(bytes);
        }
        memchr::memchr2(b'"', b'\\', bytes)
    }
}

impl<'a> JsonReader<'a> {
    pub fn new(text: &'a str) -> JsonReader<'a> {
        JsonReader {
            text: text.as_bytes(),
            at: 0,
            canonical: true,
            clean: !has_control_bytes(text.as_bytes()),
            string_end: StringEnd::new(),
            words: &[],
            words_seen: 0,
            letter_escape: false,
        }
    }

    /// Has the reader note which of `words` (up to 32) stand as a whole
    /// string, key or value, as it reads: [`JsonReader::words_seen`]. A
    /// string that holds an escape is never one of them, and a `\u` escape
    /// could spell any: [`JsonReader::read_letter_escape`].
    ///
    /// The interceptor's check of a body (`json_check.rs`) notes words
    /// itself, and is tested against this; the interceptor reads a JSON
    /// watch event with this, which checks the event and finds its object
    /// in one pass.
    pub fn noting(mut self, words: &'static [&'static [u8]]) -> JsonReader<'a> {
        self.words = &words[..words.len().min(32)];
        self
    }

    /// Bit i is set where `words[i]` of [`JsonReader::noting`] was read.
    pub fn words_seen(&self) -> u32 {
        self.words_seen
    }

    /// Whether a `\u` escape of an ASCII letter or digit was read.
    pub fn read_letter_escape(&self) -> bool {
        self.letter_escape
    }

    /// Whether all that was read so far is written as serde_json writes a
    /// tree: no whitespace between tokens, no escape but `\"`, `\\`, `\n`,
    /// `\r`, `\t`, `\b` and `\f` (Go writes `<` as `\u003c`, which a search
    /// for `<` would miss), and only integers that fit 64 bits, as serde_json
    /// reads them (it writes any other number differently). Keys may come in
    /// any order.
    pub fn canonical(&self) -> bool {
        self.canonical
    }

    /// Where the reader is: past what it has read.
    pub fn position(&self) -> usize {
        self.at
    }

    /// Where the next value starts, past any whitespace.
    pub fn start_of_value(&mut self) -> usize {
        self.skip_whitespace();
        self.at
    }

    /// From here on, [`JsonReader::canonical`] speaks of what is read from
    /// here on only: of one value, read next.
    pub fn restart_canonical(&mut self) {
        self.skip_whitespace();
        self.canonical = true;
    }

    /// The text of a span the reader gave.
    pub fn bytes(&self, span: Range<usize>) -> &'a [u8] {
        &self.text[span]
    }

    fn error<T>(&self, what: &'static str) -> Result<T, JsonError> {
        Err(JsonError { at: self.at, what })
    }

    #[inline]
    fn skip_whitespace(&mut self) {
        // Canonical text has none: one comparison says so.
        if self.text.get(self.at).is_some_and(|&b| b > b' ') {
            return;
        }
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.text.get(self.at) {
            self.at += 1;
            self.canonical = false;
        }
    }

    /// The next byte that is not whitespace, not consumed.
    pub fn peek(&mut self) -> Option<u8> {
        self.skip_whitespace();
        self.text.get(self.at).copied()
    }

    fn expect(&mut self, byte: u8, what: &'static str) -> Result<(), JsonError> {
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            self.error(what)
        }
    }

    /// Only whitespace is left.
    pub fn finish(&mut self) -> Result<(), JsonError> {
        match self.peek() {
            None => Ok(()),
            Some(_) => self.error("trailing characters"),
        }
    }

    /// The rest of a string whose opening quote was read; whether it held
    /// an escape.
    fn string_rest(&mut self) -> Result<bool, JsonError> {
        // A local slice, advanced as the string is read: the reader's own
        // fields, behind `&mut self`, would be loaded and stored at each
        // step (a third of the cost of a short string).
        let start = self.at;
        let mut rest = &self.text[self.at..];
        let mut escaped = false;
        let outcome = loop {
            let stop = if self.clean {
                self.string_end.find(rest)
            } else {
                rest.iter()
                    .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
            };
            let Some(stop) = stop else {
                rest = &rest[rest.len()..];
                break Err("unterminated string");
            };
            rest = &rest[stop..];
            match rest {
                [b'"', after @ ..] => {
                    if !self.words.is_empty() && !escaped {
                        let content = &self.text[start..self.text.len() - rest.len()];
                        for (i, word) in self.words.iter().enumerate() {
                            if content == *word {
                                self.words_seen |= 1 << i;
                            }
                        }
                    }
                    rest = after;
                    break Ok(escaped);
                }
                [
                    b'\\',
                    b'"' | b'\\' | b'n' | b'r' | b't' | b'b' | b'f',
                    after @ ..,
                ] => {
                    escaped = true;
                    rest = after;
                }
                [b'\\', b'/', after @ ..] => {
                    escaped = true;
                    self.canonical = false;
                    rest = after;
                }
                [b'\\', b'u', a, b, c, d, after @ ..]
                    if [a, b, c, d].iter().all(|h| h.is_ascii_hexdigit()) =>
                {
                    escaped = true;
                    self.canonical = false;
                    self.letter_escape |= escapes_letter(&[*a, *b, *c, *d]);
                    rest = after;
                }
                [b'\\', b'u', after @ ..] => {
                    rest = after;
                    break Err("invalid \\u escape");
                }
                [b'\\', ..] => {
                    rest = &rest[1..];
                    break Err("invalid escape");
                }
                _ => break Err("control character in a string"),
            }
        };
        self.at = self.text.len() - rest.len();
        outcome.or_else(|what| self.error(what))
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<(), JsonError> {
        if self.text[self.at..].starts_with(word) {
            self.at += word.len();
            Ok(())
        } else {
            self.error("expected a value")
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while self.text.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        self.at - start
    }

    fn number(&mut self) -> Result<(), JsonError> {
        let negative = self.text[self.at] == b'-';
        if negative {
            self.at += 1;
        }
        let start = self.at;
        match self.text.get(self.at) {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return self.error("invalid number"),
        }
        let integer = &self.text[start..self.at];
        let mut whole = true;
        if self.text.get(self.at) == Some(&b'.') {
            self.at += 1;
            if self.digits() == 0 {
                return self.error("invalid number");
            }
            whole = false;
        }
        if let Some(b'e' | b'E') = self.text.get(self.at) {
            self.at += 1;
            if let Some(b'+' | b'-') = self.text.get(self.at) {
                self.at += 1;
            }
            if self.digits() == 0 {
                return self.error("invalid number");
            }
            whole = false;
        }
        if !whole || !written_as_is(integer, negative) {
            self.canonical = false;
        }
        Ok(())
    }

    /// Reads one value, checking all of it, and says where it lies.
    pub fn skip_value(&mut self) -> Result<Range<usize>, JsonError> {
        self.skip_whitespace();
        let start = self.at;
        // Most values asked for are strings: no containers to keep.
        if self.text.get(self.at) == Some(&b'"') {
            self.at += 1;
            self.string_rest()?;
            return Ok(start..self.at);
        }
        let mut nesting = Nesting::default();
        'value: loop {
            self.skip_whitespace();
            let Some(&byte) = self.text.get(self.at) else {
                return self.error("expected a value");
            };
            match byte {
                b'"' => {
                    self.at += 1;
                    self.string_rest()?;
                }
                b'{' => {
                    self.at += 1;
                    if self.peek() == Some(b'}') {
                        self.at += 1;
                    } else {
                        nesting.push(true);
                        self.key_and_colon()?;
                        continue 'value;
                    }
                }
                b'[' => {
                    self.at += 1;
                    if self.peek() == Some(b']') {
                        self.at += 1;
                    } else {
                        nesting.push(false);
                        continue 'value;
                    }
                }
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                b'-' | b'0'..=b'9' => self.number()?,
                _ => return self.error("expected a value"),
            }
            // After a value: the next one in its container, or the ends of
            // containers.
            while let Some(object) = nesting.innermost_is_object() {
                match self.peek() {
                    Some(b',') => {
                        self.at += 1;
                        if object {
                            self.key_and_colon()?;
                        }
                        continue 'value;
                    }
                    Some(b'}') if object => {
                        self.at += 1;
                        nesting.pop();
                    }
                    Some(b']') if !object => {
                        self.at += 1;
                        nesting.pop();
                    }
                    _ if object => return self.error("expected `,` or `}`"),
                    _ => return self.error("expected `,` or `]`"),
                }
            }
            return Ok(start..self.at);
        }
    }

    fn key_and_colon(&mut self) -> Result<Key<'a>, JsonError> {
        if self.peek() != Some(b'"') {
            return self.error("expected a key");
        }
        let start = self.at;
        self.at += 1;
        let escaped = self.string_rest()?;
        let raw = &self.text[start + 1..self.at - 1];
        // Canonical text has the colon right after the key.
        if self.text.get(self.at) == Some(&b':') {
            self.at += 1;
        } else {
            self.expect(b':', "expected `:`")?;
        }
        Ok(Key {
            raw,
            start,
            escaped,
        })
    }

    /// Starts reading an object. `None` (nothing consumed) where the next
    /// value is not one.
    pub fn object(&mut self) -> Option<Members> {
        if self.peek() != Some(b'{') {
            return None;
        }
        self.at += 1;
        Some(Members { first: true })
    }

    /// The next key of `members`, with its colon read, or `None` past the
    /// object's end.
    pub fn next_key(&mut self, members: &mut Members) -> Result<Option<Key<'a>>, JsonError> {
        if !self.next_in(&mut members.first, b'}', "expected `,` or `}`")? {
            return Ok(None);
        }
        self.key_and_colon().map(Some)
    }

    /// Past the comma before a container's next member or element
    /// (`true`), or past its `close` (`false`).
    fn next_in(
        &mut self,
        first: &mut bool,
        close: u8,
        what: &'static str,
    ) -> Result<bool, JsonError> {
        match self.peek() {
            Some(b) if b == close => {
                self.at += 1;
                return Ok(false);
            }
            Some(b',') if !*first => self.at += 1,
            _ if *first => {}
            _ => return self.error(what),
        }
        *first = false;
        Ok(true)
    }

    /// Starts reading an array. `None` (nothing consumed) where the next
    /// value is not one.
    pub fn array(&mut self) -> Option<Elements> {
        if self.peek() != Some(b'[') {
            return None;
        }
        self.at += 1;
        Some(Elements { first: true })
    }

    /// Whether another element follows (and is next to read).
    pub fn next_element(&mut self, elements: &mut Elements) -> Result<bool, JsonError> {
        self.next_in(&mut elements.first, b']', "expected `,` or `]`")
    }
}

/// Whether serde_json writes an integer, read from `digits` (its digits,
/// its sign apart), back the same: it must fit `u64`, or `i64` where it is
/// negative (serde_json reads any other as a float). `-0` reads as 0.
fn written_as_is(digits: &[u8], negative: bool) -> bool {
    const U64_MAX: &[u8] = b"18446744073709551615";
    const I64_MIN: &[u8] = b"9223372036854775808";
    let within = |limit: &[u8]| {
        digits.len() < limit.len() || (digits.len() == limit.len() && digits <= limit)
    };
    if negative {
        digits != b"0" && within(I64_MIN)
    } else {
        within(U64_MAX)
    }
}

/// `text` without the whitespace JSON allows around a document (space,
/// tab, line feed, carriage return), and nothing else.
pub fn trim_whitespace(text: &[u8]) -> &[u8] {
    let is_space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let start = text.iter().position(|b| !is_space(b)).unwrap_or(text.len());
    let end = text
        .iter()
        .rposition(|b| !is_space(b))
        .map_or(start, |last| last + 1);
    &text[start..end]
}

/// The string a value holds, given the value's text as a reader found it
/// (a span it gave); `None` for any other value. A string without an
/// escape is its text less the quotes; serde_json decodes the others.
/// Whether the `\u` escape whose backslash is at `backslash` stands for an
/// ASCII letter or digit ([`escapes_letter`]); `None` where four hex digits
/// do not follow the `\u`.
pub fn letter_escape_at(text: &[u8], backslash: usize) -> Option<bool> {
    text.get(backslash + 2..backslash + 6)
        .and_then(|hex| <&[u8; 4]>::try_from(hex).ok())
        .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))
        .map(escapes_letter)
}

/// Whether the four hex digits of a `\u` escape stand for an ASCII letter
/// or digit: what the words looked for are made of. An escape of anything
/// else (Go writes `<`, `>` and `&` as `\u003c`, `\u003e` and `\u0026`)
/// cannot spell one.
pub fn escapes_letter(hex: &[u8; 4]) -> bool {
    std::str::from_utf8(hex)
        .ok()
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
        .and_then(char::from_u32)
        .is_some_and(|c| c.is_ascii_alphanumeric())
}

pub fn string_value(text: &str) -> Option<String> {
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if memchr::memchr(b'\\', inner.as_bytes()).is_none() {
        return Some(inner.to_string());
    }
    serde_json::from_str(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// A string's end and its escapes are found wherever they fall in the
    /// vector search's blocks.
    #[test]
    fn only_json_whitespace_is_trimmed() {
        assert_eq!(trim_whitespace(b" \t\r\n{}\r\n"), b"{}");
        assert_eq!(trim_whitespace(b"\x0c{}\x0c"), b"\x0c{}\x0c");
        assert_eq!(trim_whitespace(b" \n "), b"");
        assert_eq!(trim_whitespace(b""), b"");
    }

    #[test]
    fn string_ends_and_escapes_at_every_offset() {
        for before in 0..40 {
            for after in 0..20 {
                let plain = "a".repeat(before);
                let text = format!(r#"["{plain}","x"]"#);
                assert_eq!(check(&text), Ok(true), "{text}");
                let escaped = format!(r#"["{plain}\"{}","x"]"#, "é".repeat(after));
                let mut reader = JsonReader::new(&escaped);
                assert_eq!(reader.skip_value(), Ok(0..escaped.len()), "{escaped}");
                let value: Value = serde_json::from_str(&escaped).unwrap();
                assert_eq!(value[0].as_str().unwrap().len(), before + 1 + 2 * after);
                let open = format!(r#"["{plain}{}"#, "é".repeat(after));
                assert!(check(&open).is_err(), "{open}");
            }
        }
    }

    /// Whether `text` is exactly one JSON value (whitespace around it
    /// aside), and whether serde_json would write it so.
    fn check(text: &str) -> Result<bool, JsonError> {
        let mut reader = JsonReader::new(text);
        reader.skip_value()?;
        reader.finish()?;
        Ok(reader.canonical())
    }

    fn serde_takes(text: &str) -> bool {
        serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
    }

    /// serde_json writes the tree of `text` back as `text`.
    fn serde_writes_it_back(text: &str) -> bool {
        serde_json::from_str::<Value>(text)
            .is_ok_and(|v| serde_json::to_string(&v).unwrap() == text)
    }

    #[test]
    fn what_serde_json_takes_is_taken_and_nothing_else() {
        let texts = [
            "",
            " ",
            "{",
            "}",
            "[",
            "]",
            "[]",
            "{}",
            " [ ] ",
            "[1,]",
            "[,1]",
            "[1 2]",
            "{\"a\":1,}",
            "{,\"a\":1}",
            "{\"a\" 1}",
            "{\"a\":}",
            "{1:2}",
            "{\"a\":1 \"b\":2}",
            "{\"a\":[1,{\"b\":[]}],\"c\":{}}",
            "[[[[[]]]]]",
            "[[[[[]]]]",
            "[{]}",
            "[}",
            "\"\"",
            "\"a",
            "\"\\\"",
            "\"\\u12\"",
            "\"\\u12g4\"",
            "\"\\u12a4\"",
            "\"\\ud800\"",
            "\"\\x\"",
            "\"\\/\"",
            "\"a\tb\"",
            "\"a\u{1}\"",
            "\"a\u{7f}\"",
            "\"ü日本\"",
            "0",
            "-0",
            "01",
            "-",
            "-a",
            "1.",
            "1.5",
            ".5",
            "1e",
            "1e+",
            "1e5",
            "1E-5",
            "1.5e3",
            "2.",
            "--1",
            "+1",
            "1x",
            "tru",
            "true",
            "truex",
            "false",
            "null",
            "nul",
            "nulll",
            "[true,false,null]",
            "[true false]",
            "{\"a\":\"b\"}x",
            "1 2",
            "\"a\"\"b\"",
            "{\"a\":1}\n",
            "\t{\"a\" : [ 1 , 2 ] }\r\n",
        ];
        for text in texts {
            assert_eq!(check(text).is_ok(), serde_takes(text), "{text:?}");
        }
        // Far deeper than serde_json lets a tree go: skipping has no limit.
        let deep = format!("{}1{}", "[{\"a\":".repeat(5000), "}]".repeat(5000));
        assert_eq!(check(&deep), Ok(true));
        let broken = format!("{}{}", "[".repeat(300), "]".repeat(299));
        assert!(check(&broken).is_err());
    }

    /// Every text one edit away from real ones: a byte replaced, added or
    /// taken away, with the bytes JSON's grammar turns on.
    #[test]
    fn text_one_edit_from_json_is_judged_as_serde_json_judges_it() {
        let seeds = [
            r#"{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"c","uid":"0f-1","resourceVersion":"7","generation":-12,"labels":{"a/b":"x\ny"}},"data":{"k":"v \"q\" \u00e9 \/"},"n":[1.5e-3,0,true,false,null,[],{}]}"#,
            "[ {\"a\" : [ 1 , 2.0 ] } , \"\\\\\" ]",
        ];
        let alphabet = b"{}[]:,\" \\/-+.0159eEutfnlrasx\t\n\x01";
        let mut checked = 0;
        for seed in seeds {
            let bytes = seed.as_bytes();
            for at in 0..=bytes.len() {
                let mut edits: Vec<Vec<u8>> = Vec::new();
                if at < bytes.len() {
                    edits.push([&bytes[..at], &bytes[at + 1..]].concat());
                }
                for &b in alphabet {
                    edits.push([&bytes[..at], &[b], &bytes[at..]].concat());
                    if at < bytes.len() {
                        edits.push([&bytes[..at], &[b], &bytes[at + 1..]].concat());
                    }
                }
                for edit in edits {
                    let Ok(text) = String::from_utf8(edit) else {
                        continue;
                    };
                    assert_eq!(check(&text).is_ok(), serde_takes(&text), "{text:?}");
                    checked += 1;
                }
            }
        }
        assert!(checked > 10_000, "{checked}");
    }

    #[test]
    fn canonical_is_what_serde_json_writes_back() {
        // Text serde_json writes back as it is, or not; a float is never
        // taken as canonical, even where it would be written back the same.
        let texts = [
            "{\"a\":[1,-2,true,false,null],\"b\":\"x y\\n\\t\\\"\\\\\",\"c\":{},\"é\":\"ü\"}",
            "{\"a\": 1}",
            "[1,\n2]",
            " 1",
            "\"\\/\"",
            "\"\\u003c\"",
            "\"\\b\\f\\r\"",
            "1.5",
            "1e3",
            "-1.0",
            "0",
            "-0",
            "-1",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999",
            "-9223372036854775808",
            "-9223372036854775809",
            "-9300000000000000000",
            "9223372036854775808",
            "1234567890123456789",
            "12345678901234567890",
            "123456789012345678901",
        ];
        for text in texts {
            let canonical = check(text).unwrap();
            let is_float = text.contains(['.', 'e']) && !text.contains('"');
            assert_eq!(
                canonical,
                serde_writes_it_back(text) && !is_float,
                "{text:?}"
            );
        }
    }

    /// Documents serde_json writes, from generated trees: each is read as
    /// JSON, and as canonical exactly where it holds no float and no string
    /// that serde_json writes with a `\u` escape (control characters other
    /// than the five with short escapes); pretty-printed, never canonical.
    #[test]
    fn what_serde_json_writes_is_canonical_unless_it_holds_a_float_or_a_u_escape() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |below: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % below
        };
        let pieces = [
            "a", "é", "日本", "\"", "\\", "\n", "\t", "\r", "\u{8}", "\u{c}", "\u{1}", "\u{1f}",
            "/", "<", "\u{7f}", " ", "0", "e", ".",
        ];
        fn tree(next: &mut dyn FnMut(u64) -> u64, pieces: &[&str], depth: u32) -> Value {
            let string = |next: &mut dyn FnMut(u64) -> u64| -> String {
                (0..next(6))
                    .map(|_| pieces[next(pieces.len() as u64) as usize])
                    .collect()
            };
            match next(if depth > 3 { 6 } else { 8 }) {
                0 => Value::Null,
                1 => Value::Bool(next(2) == 0),
                2 => serde_json::json!(next(u64::MAX) as i64),
                3 => serde_json::json!(next(u64::MAX)),
                4 => serde_json::json!((next(1000) as f64) / 8.0),
                5 => Value::String(string(next)),
                6 => Value::Array(
                    (0..next(4))
                        .map(|_| tree(next, pieces, depth + 1))
                        .collect(),
                ),
                _ => Value::Object(
                    (0..next(4))
                        .map(|_| (string(next), tree(next, pieces, depth + 1)))
                        .collect(),
                ),
            }
        }
        fn written_plainly(v: &Value) -> bool {
            let plain = |s: &str| {
                !s.chars()
                    .any(|c| c < ' ' && !"\n\r\t\u{8}\u{c}".contains(c))
            };
            match v {
                Value::Number(n) => !n.is_f64(),
                Value::String(s) => plain(s),
                Value::Array(items) => items.iter().all(written_plainly),
                Value::Object(members) => {
                    members.iter().all(|(k, v)| plain(k) && written_plainly(v))
                }
                _ => true,
            }
        }
        let (mut canonical, mut not) = (0, 0);
        for _ in 0..3000 {
            let value = tree(&mut next, &pieces, 0);
            let compact = serde_json::to_string(&value).unwrap();
            let expected = written_plainly(&value);
            assert_eq!(check(&compact), Ok(expected), "{compact}");
            if expected {
                canonical += 1;
            } else {
                not += 1;
            }
            let pretty = serde_json::to_string_pretty(&value).unwrap();
            if pretty != compact {
                assert_eq!(check(&pretty), Ok(false), "{pretty}");
            }
        }
        assert!(canonical > 500 && not > 500, "{canonical} {not}");
    }

    #[test]
    fn an_object_is_read_member_by_member_and_each_value_found() {
        let text = r#"{"kind":"ConfigMap","a\"b":[1,{"x":2}],"metadata":{"uid":"u"},"n":null}"#;
        let mut reader = JsonReader::new(text);
        let mut members = reader.object().unwrap();
        let mut seen = Vec::new();
        while let Some(key) = reader.next_key(&mut members).unwrap() {
            let span = reader.skip_value().unwrap();
            seen.push((
                String::from_utf8(key.raw.to_vec()).unwrap(),
                key.escaped,
                &text[key.start..key.start + 1],
                &text[span],
            ));
        }
        reader.finish().unwrap();
        assert!(reader.canonical());
        assert_eq!(
            seen,
            [
                ("kind".to_string(), false, "\"", "\"ConfigMap\""),
                ("a\\\"b".to_string(), true, "\"", "[1,{\"x\":2}]"),
                ("metadata".to_string(), false, "\"", "{\"uid\":\"u\"}"),
                ("n".to_string(), false, "\"", "null"),
            ]
        );
        let mut reader = JsonReader::new("[1, \"a\" ,{}]");
        let mut elements = reader.array().unwrap();
        let mut items = Vec::new();
        while reader.next_element(&mut elements).unwrap() {
            items.push(reader.skip_value().unwrap());
        }
        assert_eq!(items, [1..2, 4..7, 9..11]);
        assert!(!reader.canonical());
        for bad in ["{\"a\":1,}", "{\"a\":1 \"b\":2}", "{,\"a\":1}"] {
            let mut reader = JsonReader::new(bad);
            let mut members = reader.object().unwrap();
            let read = (|| {
                while reader.next_key(&mut members)?.is_some() {
                    reader.skip_value()?;
                }
                reader.finish()
            })();
            assert!(read.is_err(), "{bad}");
        }
        assert!(JsonReader::new("[1]").object().is_none());
    }

    #[test]
    fn a_string_value_is_its_text_less_the_quotes_or_serde_json_decodes_it() {
        for (text, expected) in [
            (r#""plain""#, Some("plain")),
            (r#""""#, Some("")),
            (r#""a\"b\\c\n""#, Some("a\"b\\c\n")),
            (r#""\u00e9\ud83d\ude00""#, Some("é😀")),
            (r#""\ud800""#, None),
            ("7", None),
            ("null", None),
            (r#"{"a":"b"}"#, None),
        ] {
            assert_eq!(string_value(text).as_deref(), expected, "{text}");
        }
    }

    #[test]
    fn words_are_noted_where_they_stand_whole() {
        const WORDS: &[&[u8]] = &[b"Secret", b"Table", b"protobuf"];
        let seen = |text: &str| {
            let mut reader = JsonReader::new(text).noting(WORDS);
            reader.skip_value().unwrap();
            (reader.words_seen(), reader.read_letter_escape())
        };
        assert_eq!(
            seen(r#"{"kind":"ConfigMap","data":{"a":"Secrets"}}"#),
            (0, false)
        );
        assert_eq!(seen(r#"{"items":[{"kind":"Secret"}]}"#), (0b001, false));
        assert_eq!(seen(r#"{"protobuf":{"kind":"Table"}}"#), (0b110, false));
        assert_eq!(seen(r#""Secret""#), (0b001, false));
        // Escaped, it is not the word; spelled with `\u`, it might be.
        assert_eq!(seen(r#"["a\"Secret"]"#), (0, false));
        assert_eq!(seen(r#"["Secr\u0065t"]"#), (0, true));
        // Not asked: nothing noted.
        let mut plain = JsonReader::new(r#"["Secret"]"#);
        plain.skip_value().unwrap();
        assert_eq!(plain.words_seen(), 0);
    }

    #[test]
    fn errors_say_what_and_where() {
        assert_eq!(
            check("{\"a\":tru}"),
            Err(JsonError {
                at: 5,
                what: "expected a value"
            })
        );
        assert_eq!(
            check("[1 2]").unwrap_err().to_string(),
            "expected `,` or `]` at byte 3"
        );
    }
}
