//! Tells whether bytes are one JSON document as serde_json takes it, in two
//! steps: first the document's structure is found 64 bytes at a time (which
//! bytes lie in strings, where each token starts), then only the tokens are
//! read, against the grammar.
//!
//! The interceptor checks every JSON body it records, so that the body can
//! stand in its record's line as it came. Kubernetes JSON is dense: a list of
//! 50 Pods (208 KB) holds about 49,000 tokens, 15,000 of them strings, most
//! of those short keys. Read a byte or a string at a time
//! ([`crate::json_reader::JsonReader`]), it ran at about 450 MB/s, a fifth
//! of the interceptor's CPU for such a list. Here
//! a block's quotes, backslashes and brackets are found with vector compares,
//! a string's extent with a prefix XOR over its quote bits, and the reading
//! jumps from token to token without looking at what lies between.
//!
//! Accepted is exactly what [`crate::json_reader::JsonReader`] accepts (a
//! test compares the two on many broken documents), less line breaks and
//! other control characters, which a line of NDJSON cannot hold.

use wide::u8x64;

use crate::json_reader::{JsonError, Nesting};

const BLOCK: usize = 64;

/// What a check found besides that the document is JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checked {
    /// Bit i: `words[i]` stands as a whole string, key or value, unescaped.
    pub words_seen: u32,
    /// A `\u` escape of an ASCII letter or digit was read, which could
    /// spell a word.
    pub letter_escape: bool,
}

/// The classes of one block's bytes, a bit each.
#[derive(Clone, Copy)]
struct Classes {
    quote: u64,
    backslash: u64,
    /// Below 0x20, but a tab.
    control: u64,
    tab: u64,
    /// `{`, `}`, `[`, `]`, `:` and `,`.
    operator: u64,
    /// Whitespace, an operator or a quote: what ends a number or a literal.
    delimiter: u64,
}

impl Classes {
    #[inline]
    fn of(block: &[u8; BLOCK]) -> Classes {
        let bytes = u8x64::from(*block);
        let is = |byte: u8| bytes.simd_eq(u8x64::splat(byte));
        // `[` and `]` are `{` and `}` less one bit.
        let folded = bytes | u8x64::splat(0x20);
        let quote = is(b'"');
        let tab = is(b'\t');
        let operator = folded.simd_eq(u8x64::splat(b'{'))
            | folded.simd_eq(u8x64::splat(b'}'))
            | is(b':')
            | is(b',');
        let classes = Classes {
            quote: quote.to_bitmask(),
            backslash: is(b'\\').to_bitmask(),
            control: (bytes.simd_lt(u8x64::splat(0x20)) & !tab).to_bitmask(),
            tab: tab.to_bitmask(),
            operator: operator.to_bitmask(),
            delimiter: (operator | quote | tab | is(b' ')).to_bitmask(),
        };
        // Seen through, the masks were mixed with the scalar masks of the
        // caller as vectors again, a byte at a time: three times slower.
        std::hint::black_box(classes)
    }
}

/// Whether a block holds nothing but what a string may hold as it is: no
/// quote, no backslash, no control character. Out of line: inlined, its
/// compares were made for every block, ahead of the test that guards it.
#[inline(never)]
fn plain_string(block: &[u8; BLOCK]) -> bool {
    crate::json_string::block_is_plain(block)
}

/// Bit i set where an odd number of bits at or below i are: the bits that
/// lie between an opening quote (included) and its closing one.
#[inline]
fn prefix_xor(mut bits: u64) -> u64 {
    for shift in [1, 2, 4, 8, 16, 32] {
        bits ^= bits << shift;
    }
    bits
}

/// The tokens of a text, in order, found a block at a time: each operator
/// outside a string, each string's opening quote, and where each number or
/// literal starts. A string's closing quote is no token: nothing in the
/// grammar needs it.
struct Tokens<'t> {
    text: &'t [u8],
    /// Where the block of `pending` starts.
    base: usize,
    /// The tokens of that block not yet taken, a bit each. Apart from the
    /// blocks, whose address the indexing takes, so that it stays in a
    /// register: kept in memory, each token waited on the last one's store.
    pending: u64,
    blocks: Blocks<'t>,
    /// What was found wrong in a block: the tokens end before it.
    error: Option<JsonError>,
}

/// The byte of the token past the last one, or past the last one before a
/// block found wrong: no token is a NUL byte. A sentinel rather than an
/// `Option`, so that taking a token costs no more than finding it.
const END: u8 = 0;

impl<'t> Tokens<'t> {
    fn new(text: &'t [u8]) -> Tokens<'t> {
        Tokens {
            text,
            base: 0,
            pending: 0,
            blocks: Blocks {
                text,
                next: 0,
                escaped_carry: 0,
                in_string_carry: 0,
                scalar_carry: 0,
                in_long_string: false,
                letter_escape: false,
            },
            error: None,
        }
    }

    /// The next token: where it is and its byte, [`END`] at the end.
    #[inline]
    fn next(&mut self) -> (usize, u8) {
        while self.pending == 0 {
            if self.blocks.next >= self.text.len() {
                return (self.text.len(), END);
            }
            match self.blocks.index() {
                Ok((base, tokens)) => (self.base, self.pending) = (base, tokens),
                Err(error) => {
                    self.error = Some(error);
                    self.blocks.next = usize::MAX;
                }
            }
        }
        let at = self.base + self.pending.trailing_zeros() as usize;
        self.pending &= self.pending - 1;
        (at, self.text[at])
    }

    /// Why the text is not JSON, where the grammar found `found`: what a
    /// block found wrong if the tokens ended there.
    #[cold]
    fn failure(&mut self, found: JsonError) -> JsonError {
        self.error.take().unwrap_or(found)
    }
}

/// The text, indexed a block at a time.
struct Blocks<'t> {
    text: &'t [u8],
    /// Where the next block starts.
    next: usize,
    /// What one block hands the next: whether its first byte is escaped,
    /// lies in a string, or continues a run of scalar bytes.
    escaped_carry: u64,
    in_string_carry: u64,
    scalar_carry: u64,
    /// The last block lay wholly in a string.
    in_long_string: bool,
    letter_escape: bool,
}

impl Blocks<'_> {
    /// Finds the tokens of the next block: where it starts, and a bit for
    /// each token. Refuses what can be told wrong from the block alone:
    /// control characters, a backslash outside a string, a bad escape.
    #[inline(never)]
    fn index(&mut self) -> Result<(usize, u64), JsonError> {
        let base = self.next;
        let text = self.text;
        let block: [u8; BLOCK] = match text.get(base..base + BLOCK) {
            Some(full) => full.try_into().unwrap_or([b' '; BLOCK]),
            None => {
                // Spaces after the end read as whitespace outside a string.
                let mut padded = [b' '; BLOCK];
                padded[..text.len() - base].copy_from_slice(&text[base..]);
                padded
            }
        };
        // Inside a long string (base64 data, an annotation), a block with no
        // quote, backslash or control character holds no token: one test.
        // Tried only once a whole block lay in the string: in the many short
        // strings of most JSON, the test failed and added a twentieth.
        if self.in_long_string
            && self.escaped_carry == 0
            && base + BLOCK < text.len()
            && plain_string(&block)
        {
            self.scalar_carry = 0;
            self.next = base + BLOCK;
            return Ok((base, 0));
        }
        let classes = Classes::of(&block);
        let error = move |at: u32, what| JsonError {
            at: base + at as usize,
            what,
        };
        if classes.control != 0 {
            let at = classes.control.trailing_zeros();
            return Err(error(at, "control character"));
        }

        // The backslashes that start an escape, and the bytes they escape:
        // a run of backslashes escapes every other one. Rare, so a bit at a
        // time.
        let mut escaped = self.escaped_carry;
        self.escaped_carry = 0;
        let mut escape_starts = 0u64;
        let mut backslashes = classes.backslash & !escaped;
        while backslashes != 0 {
            let at = backslashes.trailing_zeros();
            backslashes &= backslashes - 1;
            escape_starts |= 1 << at;
            match 1u64.checked_shl(at + 1) {
                Some(next) => {
                    escaped |= next;
                    backslashes &= !next;
                }
                None => self.escaped_carry = 1,
            }
        }

        let quotes = classes.quote & !escaped;
        let in_string = prefix_xor(quotes) ^ self.in_string_carry;
        self.in_string_carry = ((in_string as i64) >> 63) as u64;
        self.in_long_string = in_string == u64::MAX;
        if classes.tab & in_string != 0 {
            let at = (classes.tab & in_string).trailing_zeros();
            return Err(error(at, "control character in a string"));
        }
        if classes.backslash & !in_string != 0 {
            let at = (classes.backslash & !in_string).trailing_zeros();
            return Err(error(at, "expected a value"));
        }
        while escape_starts != 0 {
            let at = base + escape_starts.trailing_zeros() as usize;
            escape_starts &= escape_starts - 1;
            self.letter_escape |= check_escape(text, at)?;
        }

        let scalar = !(classes.delimiter | in_string);
        let scalar_starts = scalar & !(scalar << 1 | self.scalar_carry);
        self.scalar_carry = scalar >> 63;
        let opening_quotes = quotes & in_string;
        self.next = base + BLOCK;
        if self.next >= text.len() && self.in_string_carry != 0 {
            return Err(JsonError {
                at: text.len(),
                what: "unterminated string",
            });
        }
        let tokens = (classes.operator & !in_string) | opening_quotes | scalar_starts;
        Ok((base, tokens))
    }
}

/// Checks the escape whose backslash is at `at`; whether it is a `\u`
/// escape of a letter or digit.
fn check_escape(text: &[u8], at: usize) -> Result<bool, JsonError> {
    match text.get(at + 1) {
        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(false),
        Some(b'u') => crate::json_reader::letter_escape_at(text, at).ok_or(JsonError {
            at: at + 2,
            what: "invalid \\u escape",
        }),
        _ => Err(JsonError {
            at: at + 1,
            what: "invalid escape",
        }),
    }
}

/// Words to look for, and a filter on their first bytes.
struct Words<'w> {
    words: &'w [&'w [u8]],
    first_bytes: [u64; 4],
}

impl<'w> Words<'w> {
    fn new(words: &'w [&'w [u8]]) -> Words<'w> {
        let words = &words[..words.len().min(32)];
        let mut first_bytes = [0u64; 4];
        for word in words {
            debug_assert!(!word.contains(&b'"') && !word.contains(&b'\\'));
            if let Some(&first) = word.first() {
                first_bytes[usize::from(first >> 6)] |= 1 << (first & 63);
            }
        }
        Words { words, first_bytes }
    }

    /// Which words the string whose opening quote is at `at` is. A word
    /// holds no quote and no backslash, so the string is one if the word
    /// and then a quote follow its opening quote.
    #[inline]
    fn note(&self, text: &[u8], at: usize) -> u32 {
        let content = &text[at + 1..];
        let Some(&first) = content.first() else {
            return 0;
        };
        if self.first_bytes[usize::from(first >> 6)] >> (first & 63) & 1 == 0 {
            return 0;
        }
        self.note_slow(content)
    }

    #[inline(never)]
    fn note_slow(&self, content: &[u8]) -> u32 {
        let mut seen = 0;
        for (i, word) in self.words.iter().enumerate() {
            if content.starts_with(word) && content.get(word.len()) == Some(&b'"') {
                seen |= 1 << i;
            }
        }
        seen
    }
}

/// Checks `text`, which must be UTF-8 without whitespace around it (the
/// caller's `from_utf8` and trimming). `words`: up to 32 strings to note,
/// none holding a quote or a backslash.
pub(crate) fn check(text: &[u8], words: &[&[u8]]) -> Result<Checked, JsonError> {
    let words = Words::new(words);
    let mut tokens = Tokens::new(text);
    let mut nesting = Nesting::default();
    let mut words_seen = 0;
    let fail = |tokens: &mut Tokens, at, what| Err(tokens.failure(JsonError { at, what }));
    let (mut at, mut byte) = tokens.next();
    'value: loop {
        match byte {
            b'"' => words_seen |= words.note(text, at),
            b'{' => {
                (at, byte) = tokens.next();
                if byte != b'}' {
                    nesting.push(true);
                    words_seen |= key_and_colon(&mut tokens, &words, at, byte)?;
                    (at, byte) = tokens.next();
                    continue 'value;
                }
            }
            b'[' => {
                (at, byte) = tokens.next();
                if byte != b']' {
                    nesting.push(false);
                    continue 'value;
                }
            }
            _ => match scalar_end(text, at) {
                None => return fail(&mut tokens, at, "expected a value"),
                Some(end) if text.get(end).is_some_and(|&b| is_scalar_byte(b)) => {
                    return fail(&mut tokens, end, "invalid value");
                }
                Some(_) => {}
            },
        }
        // After a value: the next one in its container, or the ends of
        // containers.
        while let Some(object) = nesting.innermost_is_object() {
            (at, byte) = tokens.next();
            match (object, byte) {
                (true, b',') => {
                    let (key_at, key_byte) = tokens.next();
                    words_seen |= key_and_colon(&mut tokens, &words, key_at, key_byte)?;
                    (at, byte) = tokens.next();
                    continue 'value;
                }
                (false, b',') => {
                    (at, byte) = tokens.next();
                    continue 'value;
                }
                (true, b'}') | (false, b']') => nesting.pop(),
                (true, _) => return fail(&mut tokens, at, "expected `,` or `}`"),
                (false, _) => return fail(&mut tokens, at, "expected `,` or `]`"),
            }
        }
        return match tokens.next() {
            (_, END) => match tokens.error.take() {
                Some(error) => Err(error),
                None => Ok(Checked {
                    words_seen,
                    letter_escape: tokens.blocks.letter_escape,
                }),
            },
            (at, _) => fail(&mut tokens, at, "trailing characters"),
        };
    }
}

/// A key, whose first token is `byte` at `at`, and the colon after it; the
/// words it is.
#[inline(always)]
fn key_and_colon(
    tokens: &mut Tokens,
    words: &Words,
    at: usize,
    byte: u8,
) -> Result<u32, JsonError> {
    if byte != b'"' {
        return Err(tokens.failure(JsonError {
            at,
            what: "expected a key",
        }));
    }
    let seen = words.note(tokens.text, at);
    match tokens.next() {
        (_, b':') => Ok(seen),
        (at, _) => Err(tokens.failure(JsonError {
            at,
            what: "expected `:`",
        })),
    }
}

/// A byte that continues a number or a literal: any but whitespace, the
/// operators and a quote (control bytes and a backslash outside a string
/// were refused before).
fn is_scalar_byte(byte: u8) -> bool {
    !matches!(
        byte,
        b' ' | b'\t' | b'"' | b',' | b':' | b'[' | b']' | b'{' | b'}'
    )
}

/// Where the number or literal at `at` ends, if one starts there.
#[inline]
fn scalar_end(text: &[u8], at: usize) -> Option<usize> {
    let rest = &text[at..];
    match rest.first()? {
        b't' => rest.starts_with(b"true").then_some(at + 4),
        b'f' => rest.starts_with(b"false").then_some(at + 5),
        b'n' => rest.starts_with(b"null").then_some(at + 4),
        b'-' | b'0'..=b'9' => number_end(text, at),
        _ => None,
    }
}

/// RFC 8259's number: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
fn number_end(text: &[u8], mut at: usize) -> Option<usize> {
    let digits = |at: usize| {
        text.get(at..).map_or(0, |rest| {
            rest.iter().take_while(|b| b.is_ascii_digit()).count()
        })
    };
    if text.get(at) == Some(&b'-') {
        at += 1;
    }
    match text.get(at)? {
        b'0' => at += 1,
        b'1'..=b'9' => at += digits(at),
        _ => return None,
    }
    if text.get(at) == Some(&b'.') {
        let fraction = digits(at + 1);
        if fraction == 0 {
            return None;
        }
        at += 1 + fraction;
    }
    if let Some(b'e' | b'E') = text.get(at) {
        at += 1;
        if let Some(b'+' | b'-') = text.get(at) {
            at += 1;
        }
        let exponent = digits(at);
        if exponent == 0 {
            return None;
        }
        at += exponent;
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json_reader::JsonReader;

    const WORDS: &[&[u8]] = &[b"Secret", b"data", b"token"];

    /// What the byte-at-a-time reader says of `text`, as a check would.
    fn by_reader(text: &str) -> Option<(u32, bool)> {
        if text.contains(|c: char| c < ' ' && c != '\t') {
            return None;
        }
        let mut reader = JsonReader::new(text).noting(WORDS);
        reader.skip_value().ok()?;
        reader.finish().ok()?;
        Some((reader.words_seen(), reader.read_letter_escape()))
    }

    fn by_check(text: &str) -> Option<(u32, bool)> {
        check(text.as_bytes(), WORDS)
            .ok()
            .map(|found| (found.words_seen, found.letter_escape))
    }

    fn assert_agrees(text: &str) {
        assert_eq!(by_check(text), by_reader(text), "on {text:?}");
    }

    #[test]
    fn takes_what_serde_json_takes() {
        for text in [
            r#"{"kind":"Secret","data":{"token":"c2VjcmV0"}}"#,
            r#"[1,-0,0.5,1e9,-1.25E-3,2e+2,true,false,null,"",{},[]]"#,
            r#" { "a" : [ 1 , 2 ] ,	"b" : { } } "#,
            r#""\"\\\/\b\f\n\r\t\u00e9\uD800""#,
            r#"{"k\u0065y":"Secret"}"#,
            r#"{"\"Secret":"Secret\"","data\\":1}"#,
            "0",
            "-12.5e10",
            "\"\u{e9}\u{1f600}\"",
            &format!("{}{}", "[".repeat(300), "]".repeat(300)),
            &format!("{}1{}", "{\"a\":[".repeat(100), "]}".repeat(100)),
        ] {
            assert!(by_check(text).is_some(), "refused {text:?}");
            assert_agrees(text);
        }
    }

    #[test]
    fn refuses_what_serde_json_refuses() {
        for text in [
            "",
            "{",
            "}",
            "[1,]",
            "[,1]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{1:2}",
            "{\"a\":1 \"b\":2}",
            "[1 2]",
            "[\"a\"\"b\"]",
            "1 2",
            "[]]",
            "[}",
            "{]",
            "01",
            "-",
            "1.",
            ".5",
            "1e",
            "1e+",
            "+1",
            "tru",
            "truex",
            "nul",
            "[true1]",
            "1x",
            "\"abc",
            "\"a\\x\"",
            "\"a\\u12\"",
            "\"a\\u12G4\"",
            "\"a\tb\"",
            "\"a\nb\"",
            "[1]\n",
            "\\",
            "[\\]",
            "{\"a\":\"b\"]",
            "'a'",
            "NaN",
            "[1,2",
            "{\"a\":{}",
        ] {
            assert_eq!(by_check(text), None, "took {text:?}");
            assert_agrees(text);
        }
    }

    /// Every token and escape falls at every offset of the 64-byte blocks,
    /// and across their edges.
    #[test]
    fn agrees_with_the_reader_at_every_offset() {
        let bodies = [
            r#"{"kind":"Secret","data":{"token":"x"}}"#,
            r#"["a\\","b\"Secret",12.5e-3,true,null,{"data":[]}]"#,
            r#"{"a":"\\\\\"","b":"\u0053ecret"}"#,
            r#"{"a":"\\\\\"" "b":1}"#,
            r#"{"a":"x\\\"}"#,
            r#"[1,2,3.,4]"#,
            r#"[12,  "token"	,false]"#,
        ];
        for body in bodies {
            for pad in 0..(2 * BLOCK) {
                let padded = format!("[{}{body}]", " ".repeat(pad));
                assert_agrees(&padded);
                let in_string = format!("[\"{}\",{body}]", "s".repeat(pad));
                assert_agrees(&in_string);
                let backslashes = format!("[\"{}\",{body}]", "\\\\".repeat(pad / 2));
                assert_agrees(&backslashes);
            }
        }
    }

    /// A long string, the blocks wholly inside it passed over by one test,
    /// with what that test looks for at every offset.
    #[test]
    fn agrees_with_the_reader_inside_long_strings() {
        for at in 0..(4 * BLOCK) {
            for special in ["\t", "\"", "\\n", "\\u0041", "\\", "\u{e9}", "\u{1}"] {
                let mut content = "a".repeat(4 * BLOCK);
                content.replace_range(at..at + 1, special);
                assert_agrees(&format!(r#"{{"v":"{content}","k":1}}"#));
                assert_agrees(&format!(r#"["{content}"]"#));
                assert_agrees(&format!(r#""{content}"#));
            }
        }
    }

    /// Broken at every byte: each document cut short, and each byte in turn
    /// replaced by each byte that matters to the grammar.
    #[test]
    fn agrees_with_the_reader_on_every_small_change() {
        let body = r#"{"kind":"Secret","data":{"token":"a\"b","n":[-1.5e3,0,true,false,null]},"x\\":"\u00e9"}"#;
        for end in 0..body.len() {
            assert_agrees(&body[..end]);
        }
        let swaps = b"{}[]:,\"\\ \t0-.eE+tfnux";
        let bytes = body.as_bytes();
        for at in 0..bytes.len() {
            for &swap in swaps {
                let mut changed = bytes.to_vec();
                changed[at] = swap;
                if let Ok(text) = std::str::from_utf8(&changed) {
                    assert_agrees(text);
                }
                let mut inserted = bytes.to_vec();
                inserted.insert(at, swap);
                if let Ok(text) = std::str::from_utf8(&inserted) {
                    assert_agrees(text);
                }
            }
        }
    }

    #[test]
    fn notes_words_only_where_they_stand_whole() {
        let seen = |text: &str| by_check(text).map(|(words, _)| words);
        assert_eq!(seen(r#"{"kind":"Secret"}"#), Some(0b001));
        assert_eq!(seen(r#"{"data":{"token":1}}"#), Some(0b110));
        assert_eq!(seen(r#"{"kind":"Secrets","x":"a Secret"}"#), Some(0));
        assert_eq!(seen(r#"{"kind":"Secr\u0065t"}"#), Some(0));
        assert_eq!(by_check(r#"{"kind":"Secr\u0065t"}"#), Some((0, true)));
        // Only an escape of a letter or digit could spell a word; Go writes
        // `<`, `>` and `&` so, and a Table of Pods holds many.
        for (text, spells) in [
            (
                r#"{"a":"\u003cnone\u003e \u0026 \u2028 \u00e9 \u0000"}"#,
                false,
            ),
            (r#"{"a":"\u0030"}"#, true),
            (r#"{"a":"\u005A"}"#, true),
            (r#"{"a":"\u005b \u0060 \u007b"}"#, false),
        ] {
            assert_eq!(by_check(text), Some((0, spells)), "{text}");
            assert_agrees(text);
        }
    }

    #[test]
    fn names_where_the_text_goes_wrong() {
        let error = check(br#"{"a":[1,2}"#, &[]).unwrap_err();
        assert_eq!((error.at, error.what), (9, "expected `,` or `]`"));
        let error = check(br#"{"a":"b\q"}"#, &[]).unwrap_err();
        assert_eq!((error.at, error.what), (8, "invalid escape"));
    }
}
