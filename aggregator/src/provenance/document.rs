//! A version's document: the version without its object, as JSON text,
//! written as serde_json writes it.
//!
//! Every version ingest keeps is written out this way, on the request's
//! thread. serde_json looks at each byte of each string through a table
//! and its writer (4.9k instructions a record of the ingest benchmark);
//! here a string that needs no escape, which is nearly every one (uids,
//! names, times, record ids), is checked sixteen bytes at a time and copied
//! whole. The output is serde_json's, byte for byte (tested below).

use super::{Source, Version};
use std::fmt::Write;

/// The text serde_json writes for `version` without its object.
pub fn document_of(version: &Version) -> String {
    let strings = [
        &version.group,
        &version.resource,
        &version.kind,
        &version.api_version,
        &version.namespace,
        &version.name,
        &version.uid,
        &version.resource_version,
        &version.time,
        &version.verb,
        &version.who.pod,
        &version.who.service_account,
        &version.who.user_agent,
        &version.record,
    ];
    // The keys, quotes and commas take under 250 bytes.
    let mut out = String::with_capacity(strings.iter().map(|s| s.len()).sum::<usize>() + 250);
    out.push('{');
    field(&mut out, "\"group\":", &version.group);
    field(&mut out, ",\"resource\":", &version.resource);
    field(&mut out, ",\"kind\":", &version.kind);
    field(&mut out, ",\"apiVersion\":", &version.api_version);
    field(&mut out, ",\"namespace\":", &version.namespace);
    field(&mut out, ",\"name\":", &version.name);
    field(&mut out, ",\"uid\":", &version.uid);
    field(&mut out, ",\"resourceVersion\":", &version.resource_version);
    if let Some(generation) = version.generation {
        // Writing to a String cannot fail.
        let _ = write!(out, ",\"generation\":{generation}");
    }
    field(&mut out, ",\"time\":", &version.time);
    field(&mut out, ",\"verb\":", &version.verb);
    out.push_str(match version.source {
        Source::Write => ",\"source\":\"write\"",
        Source::Observed => ",\"source\":\"observed\"",
    });
    if version.deleted {
        out.push_str(",\"deleted\":true");
    }
    if version.partial {
        out.push_str(",\"partial\":true");
    }
    let who = &version.who;
    field(&mut out, ",\"who\":{\"pod\":", &who.pod);
    if !who.service_account.is_empty() {
        field(&mut out, ",\"serviceAccount\":", &who.service_account);
    }
    if !who.user_agent.is_empty() {
        field(&mut out, ",\"userAgent\":", &who.user_agent);
    }
    if let Some(manager) = &who.field_manager {
        field(&mut out, ",\"fieldManager\":", manager);
    }
    field(&mut out, "},\"record\":", &version.record);
    out.push('}');
    out
}

/// `key` (its quotes, colon and any comma or brace before it), then the
/// value as a JSON string.
fn field(out: &mut String, key: &str, value: &str) {
    out.push_str(key);
    string(out, value);
}

fn string(out: &mut String, value: &str) {
    if needs_escape(value.as_bytes()) {
        // serde_json's escapes, for the rare string that needs one.
        match serde_json::to_string(value) {
            Ok(text) => out.push_str(&text),
            Err(_) => out.push_str("\"\""),
        }
    } else {
        out.push('"');
        out.push_str(value);
        out.push('"');
    }
}

const ONES: u64 = u64::MAX / 255;
const HIGH_BITS: u64 = ONES << 7;

/// Whether any byte is one JSON escapes: a quote, a backslash or a
/// control character. Eight bytes at a time: a byte below `0x20`, or one
/// equal to `"` or `\`, sets its high bit in the masks below (a borrow
/// can only set more high bits above a byte that already matched).
fn needs_escape(bytes: &[u8]) -> bool {
    let mut chunks = bytes.chunks_exact(8);
    let found = chunks.by_ref().fold(0, |found, chunk| {
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        let quote = word ^ (ONES * u64::from(b'"'));
        let backslash = word ^ (ONES * u64::from(b'\\'));
        found
            | (word.wrapping_sub(ONES * 0x20) & !word)
            | (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
    });
    found & HIGH_BITS != 0
        || chunks
            .remainder()
            .iter()
            .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provenance::Who;

    fn version() -> Version {
        Version {
            group: "apps".into(),
            resource: "deployments".into(),
            kind: "Deployment".into(),
            api_version: "apps/v1".into(),
            namespace: "ns".into(),
            name: "web".into(),
            uid: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".into(),
            resource_version: "123456".into(),
            generation: Some(3),
            time: "2026-11-24T06:00:00.000001Z".into(),
            verb: "patch status".into(),
            source: Source::Write,
            deleted: false,
            partial: false,
            who: Who {
                pod: "ns/pod-1".into(),
                service_account: "default".into(),
                user_agent: "kubectl/v1.35.4 (linux/amd64) kubernetes/abc".into(),
                field_manager: Some("kubectl-client-side-apply".into()),
            },
            record: "019a0b0c-0d0e-7f00-8000-000000000001".into(),
            object: None,
        }
    }

    #[test]
    fn the_document_is_what_serde_json_writes() {
        let mut versions = vec![version()];
        let mut v = version();
        v.generation = None;
        v.source = Source::Observed;
        v.deleted = true;
        v.partial = true;
        v.who = Who {
            pod: "ns/p".into(),
            ..Who::default()
        };
        versions.push(v);
        for odd in [
            "",
            "a\"b",
            "back\\slash",
            "line\nbreak\ttab\r\u{1}\u{1f}",
            "ünïcödé 日本 \u{7f} </script>",
            "a long name that runs past sixteen bytes \" and then some",
            "eight b\"",
            "sixteen bytes!!\\",
            "\u{0}nul first, then plain text for a while",
            "\u{100}\u{2020}\u{22}",
        ] {
            let mut v = version();
            v.name = odd.into();
            v.who.user_agent = odd.into();
            v.who.field_manager = Some(odd.into());
            v.group = odd.into();
            versions.push(v);
        }
        for generation in [i64::MIN, -1, 0, i64::MAX] {
            let mut v = version();
            v.generation = Some(generation);
            versions.push(v);
        }
        for v in &versions {
            assert_eq!(document_of(v), serde_json::to_string(v).unwrap());
        }
    }
}
