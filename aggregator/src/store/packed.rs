//! The raw lines of an ingested batch, kept together in one compressed
//! blob. A line stored as a row of its own cost SQLite about 15 µs at 2 KB
//! and 3.5 µs at 600 bytes, so each record now gets a small row (its id,
//! time and pod namespace, for idempotence, retention and access checks)
//! and points to its line in the batch's blob. Records of one batch repeat the same
//! keys, names and shapes, so zstd's fastest levels shrink a batch many
//! times over at around a gigabyte a second.

use super::{IngestItem, StoreError};

/// zstd's level 1: within a few percent of level 3's ratio on record
/// batches, and faster.
const LEVEL: i32 = 1;

/// How a record's line is found in a packed blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lines {
    /// The items' lines alone, in order ([`pack`]): a record's line is at
    /// its place among the items.
    Items,
    /// The batch as its sender compressed it, every line of it: a record's
    /// line is at its line number. An interceptor's zstd body is kept so,
    /// instead of being decompressed only to be compressed again, which
    /// was a tenth of what storing a record cost.
    Received,
}

impl Lines {
    /// Where `item`, at `position` among its batch's items, is in the blob.
    pub(crate) fn index_of(self, position: usize, item: &IngestItem) -> i64 {
        match self {
            Lines::Items => position as i64,
            Lines::Received => item.line_number as i64 - 1,
        }
    }
}

/// The batch's lines, in order, newline-separated and compressed. A record's
/// line is found again by its index in `items` ([`Lines::Items`]).
pub fn pack(items: &[IngestItem]) -> Result<Vec<u8>, StoreError> {
    let mut text = String::with_capacity(items.iter().map(|i| i.line.len() + 1).sum());
    for item in items {
        // A line never holds a raw newline: NDJSON escapes it.
        text.push_str(&item.line);
        text.push('\n');
    }
    zstd::bulk::compress(text.as_bytes(), LEVEL)
        .map_err(|e| StoreError::Invalid(format!("compressing a batch's lines: {e}")))
}

/// Record `id`'s line, at `index` in its packed batch.
pub(crate) fn line(packed: &[u8], index: i64, id: &str) -> Result<String, StoreError> {
    usize::try_from(index)
        .ok()
        .map(|i| unpack(packed, i))
        .transpose()?
        .flatten()
        .ok_or_else(|| StoreError::Invalid(format!("record {id}'s line is missing from its batch")))
}

/// Line `index` of a packed batch.
fn unpack(packed: &[u8], index: usize) -> Result<Option<String>, StoreError> {
    let text = match crate::ingest::unzstd_sized(packed) {
        Some(text) => text,
        None => zstd::stream::decode_all(packed)
            .map_err(|e| StoreError::Invalid(format!("a stored batch does not decompress: {e}")))?,
    };
    let text = String::from_utf8(text)
        .map_err(|e| StoreError::Invalid(format!("a stored batch is not UTF-8: {e}")))?;
    // Lines cut as ingest cut them when it numbered them.
    Ok(crate::ingest::lines_of(&text)
        .nth(index)
        .map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(line: &str) -> IngestItem {
        IngestItem {
            line: line.into(),
            ..crate::store::test_item("r", "/t", 200)
        }
    }

    #[test]
    fn every_line_comes_back_from_the_packed_batch() {
        let lines = [r#"{"id":"a","x":"\n"}"#, r#"{"id":"b","ü":1}"#, "{}"];
        let items: Vec<IngestItem> = lines.iter().map(|l| item(l)).collect();
        let packed = pack(&items).unwrap();
        for (i, line) in lines.iter().enumerate() {
            assert_eq!(unpack(&packed, i).unwrap().as_deref(), Some(*line));
        }
        assert!(unpack(b"not zstd", 0).is_err());
        // A batch as received: its lines counted as ingest numbers them,
        // blank ones, a last one without a line break and CRLF included.
        let received = zstd::bulk::compress(b"{\"id\":\"a\"}\r\n\n  \n{\"id\":\"b\"}", 1).unwrap();
        assert_eq!(
            unpack(&received, 0).unwrap().as_deref(),
            Some(r#"{"id":"a"}"#)
        );
        assert_eq!(
            unpack(&received, 3).unwrap().as_deref(),
            Some(r#"{"id":"b"}"#)
        );
        assert_eq!(unpack(&received, 4).unwrap(), None);
        assert_eq!(line(&packed, 1, "b").unwrap(), lines[1]);
        for missing in [3, -1] {
            let err = line(&packed, missing, "r9").unwrap_err().to_string();
            assert!(err.contains("record r9's line is missing"), "{err}");
        }
    }
}
