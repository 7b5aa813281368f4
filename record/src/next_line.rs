//! JSON bodies that travel unchecked, each on the line after its record's.
//!
//! A JSON body stands in its record's line as its own text, so the sidecar
//! checked every such body as one JSON document before it wrote it there:
//! one broken body would have broken the line, and with it the record. On
//! a list of 50 Pods (208 KB, about 49,000 tokens) that check was the
//! largest single part of the sidecar's CPU, in every pod, while the
//! aggregator reads every body it stores again anyway.
//!
//! A large JSON body in which nothing can need redacting now goes on a
//! line of its own, right after its record's line, which says how many
//! bytes that line holds (`{"next_line": 208123, ...}`). The aggregator
//! checks it there and stores the record as the sidecar would have written
//! it (JSON text, or text where it is not JSON). The sidecar makes sure
//! only of what keeps the batch whole: the text is UTF-8, since a batch is
//! read as text, and holds no line break, which would end its line early.
//! A request's body line comes before its response's.

use crate::{Body, BodyContent, Exchange};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A body's text that travels on its own line, or, as a reader first reads
/// its record, the length of the line still to come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextLine {
    len: u64,
    /// `None` until a reader has taken the line.
    text: Option<Bytes>,
}

impl NextLine {
    /// `text`, to travel on a line of its own; `None` where it cannot: it
    /// holds a line break (`\n`, or `\r`, which a reader may cut off the end
    /// of a line), or is not UTF-8.
    pub fn of(text: impl Into<Bytes>) -> Option<NextLine> {
        let text = text.into();
        if memchr::memchr2(b'\n', b'\r', &text).is_some() || std::str::from_utf8(&text).is_err() {
            return None;
        }
        Some(NextLine {
            len: text.len() as u64,
            text: Some(text),
        })
    }

    /// As a record's line says it: `len` bytes, on a line still to come.
    pub fn awaited(len: u64) -> NextLine {
        NextLine { len, text: None }
    }

    /// The bytes its line holds.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The line's text, once it is there: UTF-8 without a line break.
    pub fn text(&self) -> Option<&Bytes> {
        self.text.as_ref()
    }

    /// Takes `line` as this body's text, if it is as long as the record
    /// says.
    fn receive(&mut self, line: &str) -> bool {
        if self.text.is_some() || line.len() as u64 != self.len {
            return false;
        }
        self.text = Some(Bytes::copy_from_slice(line.as_bytes()));
        true
    }
}

/// In the record's line, the length of the line that follows.
impl Serialize for NextLine {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.len)
    }
}

impl<'de> Deserialize<'de> for NextLine {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<NextLine, D::Error> {
        Ok(NextLine::awaited(u64::deserialize(d)?))
    }
}

/// Why a record's body lines were not there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NextLineError {
    #[error("the record's {which} body travels on the next line, but the batch ends")]
    Missing { which: &'static str },
    #[error(
        "the record's {which} body travels on the next line, of {expected} bytes, but that line holds {found}"
    )]
    WrongLength {
        which: &'static str,
        expected: u64,
        found: usize,
    },
}

impl Exchange {
    /// Takes the lines of the bodies that travel apart, the request's then
    /// the response's. `next_line_of(len)` takes the line after the last
    /// one taken if it holds `len` bytes; else it leaves that line where it
    /// is (it may be the next record) and gives its length, or `None` at
    /// the batch's end, and the record is refused.
    pub fn take_next_lines<'a>(
        &mut self,
        mut next_line_of: impl FnMut(u64) -> Result<&'a str, Option<usize>>,
    ) -> Result<(), NextLineError> {
        for (which, body) in [
            ("request", &mut self.request_body),
            ("response", &mut self.response_body),
        ] {
            let Some(Body {
                content: BodyContent::NextLine(next),
                ..
            }) = body
            else {
                continue;
            };
            if next.text.is_some() {
                continue;
            }
            let found = match next_line_of(next.len) {
                Ok(line) if next.receive(line) => continue,
                Ok(line) => line.len(),
                Err(Some(found)) => found,
                Err(None) => return Err(NextLineError::Missing { which }),
            };
            return Err(NextLineError::WrongLength {
                which,
                expected: next.len,
                found,
            });
        }
        Ok(())
    }
}

impl crate::Line {
    /// Every line of a batch, each record with the lines its bodies
    /// travel on taken into it, blank lines left out; a line that is no
    /// record, or a record whose body lines are not there, is an error.
    pub fn parse_batch(batch: &str) -> Vec<Result<crate::Line, String>> {
        let mut lines = batch.lines().filter(|l| !l.trim().is_empty()).peekable();
        let mut read = Vec::new();
        while let Some(line) = lines.next() {
            let parsed = crate::Line::parse(line).map_err(|e| e.to_string());
            read.push(match parsed {
                Ok(crate::Line::Exchange(mut exchange)) => exchange
                    .take_next_lines(|len| {
                        lines
                            .next_if(|line| line.len() as u64 == len)
                            .ok_or_else(|| lines.peek().map(|line| line.len()))
                    })
                    .map(|()| crate::Line::Exchange(exchange))
                    .map_err(|e| e.to_string()),
                other => other,
            });
        }
        read
    }
}

/// Reads a body that travelled on its own line into what the sidecar
/// records for its text: JSON text, or text where it is not JSON. Returns
/// whether it did (not for a body whose line was never taken).
pub fn read_shipped(body: &mut Body, content_type: Option<&str>) -> bool {
    let BodyContent::NextLine(NextLine {
        text: Some(text), ..
    }) = &body.content
    else {
        return false;
    };
    body.content = crate::gzip::content_of_shipped(text.clone(), content_type);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Line, RawJson};

    fn exchange_with(request: Option<&str>, response: Option<&str>) -> Exchange {
        let body = |text: &str| Body {
            content: BodyContent::NextLine(NextLine::of(Bytes::from(text.to_string())).unwrap()),
            size: text.len() as u64,
            truncated: false,
            content_encoding: None,
        };
        Exchange {
            id: "r1".into(),
            method: "POST".into(),
            path: "/api/v1/namespaces/ns/configmaps".into(),
            status: 201,
            request_content_type: Some("application/json".into()),
            response_content_type: Some("application/json".into()),
            request_body: request.map(body),
            response_body: response.map(body),
            ..Exchange::default()
        }
    }

    /// A batch's records, as a reader reads them.
    fn read(batch: &str) -> Vec<Result<Exchange, String>> {
        Line::parse_batch(batch)
            .into_iter()
            .map(|line| match line? {
                Line::Exchange(exchange) => Ok(*exchange),
                other => Err(format!("not an exchange: {other:?}")),
            })
            .collect()
    }

    #[test]
    fn only_utf8_text_without_a_line_break_travels_on_a_line() {
        assert!(NextLine::of(Bytes::from_static(b"{\"a\":\"\xc3\xa9\"}")).is_some());
        assert!(NextLine::of(Bytes::from_static(b"{\"a\":\n1}")).is_none());
        assert!(NextLine::of(Bytes::from_static(b"{\"a\":1}\r")).is_none());
        assert!(NextLine::of(Bytes::from_static(b"{\"a\":\"\xff\"}")).is_none());
    }

    #[test]
    fn bodies_follow_their_record_request_first_and_are_read_back() {
        let record = exchange_with(
            Some(r#"{"kind":"ConfigMap"}"#),
            Some(r#"{"kind":"Status"}"#),
        );
        let mut batch = Vec::new();
        record.write_line(&mut batch);
        batch.push(b'\n');
        exchange_with(None, Some("[1,2]")).write_line(&mut batch);
        let batch = String::from_utf8(batch).unwrap();
        let lines: Vec<&str> = batch.lines().collect();
        assert_eq!(lines.len(), 5, "{batch}");
        assert!(lines[0].contains(r#""request_body":{"next_line":20,"size":20}"#));
        assert_eq!(lines[1], r#"{"kind":"ConfigMap"}"#);
        assert_eq!(lines[2], r#"{"kind":"Status"}"#);
        assert_eq!(lines[4], "[1,2]");

        let read = read(&batch);
        assert_eq!(read.len(), 2);
        let first = read[0].as_ref().unwrap();
        assert_eq!(first, &record);
        let mut first = first.clone();
        assert!(first.decode_shipped(&mut 0));
        assert_eq!(
            first.request_body.unwrap().content,
            BodyContent::RawJson(RawJson::parse(br#"{"kind":"ConfigMap"}"#).unwrap())
        );
        assert!(read[1].is_ok());
    }

    #[test]
    fn a_missing_or_wrong_body_line_refuses_its_record_and_spares_the_next() {
        let mut line = Vec::new();
        exchange_with(None, Some(r#"{"kind":"Status"}"#)).write_line(&mut line);
        let record = String::from_utf8(line).unwrap();
        let (record_line, body_line) = record.split_once('\n').unwrap();

        let alone = read(record_line);
        assert_eq!(
            alone[0].as_ref().unwrap_err(),
            "the record's response body travels on the next line, but the batch ends"
        );

        // The body line lost: the next record is still read as one.
        let batch = format!("{record_line}\n{record}");
        let lost = read(&batch);
        assert_eq!(lost.len(), 2, "{lost:?}");
        assert!(
            lost[0]
                .as_ref()
                .unwrap_err()
                .contains("of 17 bytes, but that line holds"),
            "{lost:?}"
        );
        assert!(lost[1].is_ok(), "{lost:?}");

        let shorter = format!("{record_line}\n{}", &body_line[1..]);
        assert!(read(&shorter)[0].is_err());
    }

    #[test]
    fn a_body_line_that_is_not_json_is_kept_as_text() {
        for (text, content) in [
            (
                r#"{"a":1} {"b":2}"#,
                BodyContent::Text(r#"{"a":1} {"b":2}"#.into()),
            ),
            (r#"{"a":"#, BodyContent::Text(r#"{"a":"#.into())),
            (
                r#" {"a": [1, 2]} "#,
                BodyContent::RawJson(RawJson::parse(br#"{"a": [1, 2]}"#).unwrap()),
            ),
        ] {
            let mut exchange = exchange_with(None, Some(text));
            assert!(exchange.decode_shipped(&mut 0));
            assert_eq!(exchange.response_body.unwrap().content, content, "{text}");
        }
    }
}
