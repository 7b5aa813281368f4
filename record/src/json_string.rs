//! Writing a long text as a JSON string, byte for byte as serde_json writes
//! it, but eight bytes at a time.
//!
//! serde_json looks up every byte of a string in its escape table. A record
//! carries bodies of up to a megabyte as text or base64, and for a 64 KiB
//! body that byte-at-a-time loop took a sixth of the interceptor's time
//! (more than zstd). Here a block of 64 bytes is tested at once for a byte
//! that needs an escape (a quote, a backslash or a control character), in
//! a loop the compiler turns into vector compares; a block that holds one
//! is looked at a word of eight bytes at a time, and the runs without one
//! are copied whole.

use serde::Serializer;
use serde_json::value::RawValue;

const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);

/// Whether any byte of `word` is below 0x20, a `"` or a `\`. Exact: each
/// test sets a byte's high bit only if some byte of the word matches.
fn needs_escape(word: u64) -> bool {
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    let quote = zero_byte(word ^ (ONES * u64::from(b'"')));
    let backslash = zero_byte(word ^ (ONES * u64::from(b'\\')));
    (control | quote | backslash) != 0
}

/// Bytes tested together. On 64 KiB of base64, blocks of 64 ran at twice
/// the rate of a word at a time, and blocks of 32 at 1.4 times. Text with
/// an escape in every block (JSON as text) is about a tenth slower.
const BLOCK: usize = 64;

/// Whether no byte of `block` needs an escape in a JSON string: no quote,
/// backslash or control character. Every byte is tested, with no early
/// exit, so that the loop compiles to vector compares.
pub fn block_is_plain(block: &[u8]) -> bool {
    block.iter().fold(true, |plain, &b| {
        plain & (b >= 0x20) & (b != b'"') & (b != b'\\')
    })
}

/// `text` as a JSON string, quotes included.
pub fn json_string(text: &str) -> String {
    let mut out = Vec::with_capacity(text.len() + 2);
    push_json_string(&mut out, text);
    // Made of `text`, which is UTF-8, cut only before or after ASCII
    // bytes, and of ASCII escapes.
    String::from_utf8(out).unwrap_or_default()
}

/// Appends `text` as a JSON string, quotes included.
pub fn push_json_string(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    // Bytes before `copied` are in `out`; the escapes all fall on ASCII
    // bytes.
    let mut copied = 0;
    let mut at = 0;
    let escape_from = |out: &mut Vec<u8>, from: usize, to: usize, copied: &mut usize| {
        for (i, &b) in bytes[from..to].iter().enumerate() {
            let Some(escaped) = escape(b) else {
                continue;
            };
            out.extend_from_slice(&bytes[*copied..from + i]);
            match escaped {
                Escape::Short(c) => out.extend_from_slice(&[b'\\', c]),
                Escape::Unicode => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    out.extend_from_slice(b"\\u00");
                    out.extend_from_slice(&[HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
                }
            }
            *copied = from + i + 1;
        }
    };
    let escape_words = |out: &mut Vec<u8>, from: usize, to: usize, copied: &mut usize| {
        for at in (from..to).step_by(8) {
            let word = u64::from_ne_bytes(bytes[at..at + 8].try_into().expect("eight bytes"));
            if needs_escape(word) {
                escape_from(out, at, at + 8, copied);
            }
        }
    };
    while at + BLOCK <= bytes.len() {
        if !block_is_plain(&bytes[at..at + BLOCK]) {
            escape_words(out, at, at + BLOCK, &mut copied);
        }
        at += BLOCK;
    }
    let words_end = at + (bytes.len() - at) / 8 * 8;
    escape_words(out, at, words_end, &mut copied);
    at = words_end;
    escape_from(out, at, bytes.len(), &mut copied);
    out.extend_from_slice(&bytes[copied..]);
    out.push(b'"');
}

enum Escape {
    /// `\"`, `\\`, `\n` and the like.
    Short(u8),
    /// `\u00XX`.
    Unicode,
}

/// How serde_json escapes a byte, if it does.
fn escape(b: u8) -> Option<Escape> {
    Some(match b {
        b'"' => Escape::Short(b'"'),
        b'\\' => Escape::Short(b'\\'),
        b'\n' => Escape::Short(b'n'),
        b'\r' => Escape::Short(b'r'),
        b'\t' => Escape::Short(b't'),
        0x08 => Escape::Short(b'b'),
        0x0c => Escape::Short(b'f'),
        0x00..=0x1f => Escape::Unicode,
        _ => return None,
    })
}

/// Serializes a string field through [`json_string`]: written as it is by
/// serde_json, and as the string it stands for by any other serializer.
pub fn serialize<S: Serializer>(text: &str, serializer: S) -> Result<S::Ok, S::Error> {
    let raw = RawValue::from_string(json_string(text)).map_err(serde::ser::Error::custom)?;
    serde::Serialize::serialize(&raw, serializer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same_as_serde_json(text: &str) {
        assert_eq!(
            json_string(text),
            serde_json::to_string(text).unwrap(),
            "{text:?}"
        );
    }

    #[test]
    fn every_ascii_byte_is_written_as_serde_json_writes_it() {
        for b in 0u8..128 {
            let c = b as char;
            // At every offset in a word, and alone.
            for before in 0..9 {
                let text = format!("{}{c}{}", "a".repeat(before), "z".repeat(9 - before));
                same_as_serde_json(&text);
            }
            same_as_serde_json(&c.to_string());
        }
    }

    #[test]
    fn an_escape_at_any_offset_of_a_block_or_its_words_is_written_as_serde_json_writes_it() {
        for escaped in ['"', '\\', '\n', '\u{1}', '\u{1f}'] {
            for at in 0..(2 * BLOCK + 9) {
                for len in [at + 1, 2 * BLOCK + 9, 3 * BLOCK] {
                    if at >= len {
                        continue;
                    }
                    let mut text: String =
                        (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect();
                    text.replace_range(at..at + 1, &escaped.to_string());
                    same_as_serde_json(&text);
                    // With a second escape in the next block.
                    if at + BLOCK < len {
                        text.replace_range(at + BLOCK..at + BLOCK + 1, "\"");
                        same_as_serde_json(&text);
                    }
                }
            }
        }
    }

    #[test]
    fn text_of_every_kind_is_written_as_serde_json_writes_it() {
        for text in [
            "",
            "plain text longer than one word of eight bytes",
            "quotes \"inside\" and a backslash \\ at the end\\",
            "lines\nand\r\ntabs\tand a bell \u{7}",
            "ünïcödé, 日本語 and 🦀 beside \" and \n",
            "\u{7f} is not escaped, \u{1f} is",
            "\"\"\"\"\"\"\"\"\"",
        ] {
            same_as_serde_json(text);
        }
        // Long text with escapes here and there, as a body might be.
        let mut long = String::new();
        for i in 0..5000 {
            long.push_str(&format!("line {i}: k=\"v{i}\"\tü\n"));
        }
        same_as_serde_json(&long);
    }

    #[test]
    fn a_field_written_through_it_reads_back_as_the_same_string() {
        #[derive(serde::Serialize)]
        struct Holder<'a> {
            #[serde(serialize_with = "serialize")]
            text: &'a str,
        }
        let text = "a \"body\"\nwith\u{1} everything";
        let line = serde_json::to_string(&Holder { text }).unwrap();
        let back: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back["text"], text);
        // Into a tree, too, as serde_json's other serializer writes it.
        assert_eq!(serde_json::to_value(Holder { text }).unwrap()["text"], text);
    }
}
