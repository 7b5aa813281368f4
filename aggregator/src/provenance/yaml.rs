//! YAML text of a JSON value, for `?format=yaml-diff`: block style, keys
//! sorted (so two versions line up), strings quoted only where YAML would misread them;
//! and the unified diff of two such texts.

use serde_json::Value;

pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(m) if !m.is_empty() => write_map(m, 0, &mut out),
        Value::Array(a) if !a.is_empty() => write_list(a, 0, &mut out),
        scalar => {
            out.push_str(&scalar_yaml(scalar));
            out.push('\n');
        }
    }
    out
}

fn write_map(m: &serde_json::Map<String, Value>, indent: usize, out: &mut String) {
    for (k, v) in m {
        out.push_str(&" ".repeat(indent));
        out.push_str(&key_yaml(k));
        out.push(':');
        write_value(v, indent, out);
    }
}

fn write_list(a: &[Value], indent: usize, out: &mut String) {
    for v in a {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        match v {
            Value::Object(m) if !m.is_empty() => {
                // The first key goes on the dash's line.
                let mut inner = String::new();
                write_map(m, indent + 2, &mut inner);
                out.push(' ');
                out.push_str(inner.trim_start());
            }
            _ => write_value(v, indent, out),
        }
    }
}

fn write_value(v: &Value, indent: usize, out: &mut String) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            write_map(m, indent + 2, out);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            write_list(a, indent + 2, out);
        }
        scalar => {
            out.push(' ');
            out.push_str(&scalar_yaml(scalar));
            out.push('\n');
        }
    }
}

fn key_yaml(k: &str) -> String {
    if plain_ok(k) {
        k.to_string()
    } else {
        Value::String(k.to_string()).to_string()
    }
}

fn scalar_yaml(v: &Value) -> String {
    match v {
        Value::String(s) if plain_ok(s) => s.clone(),
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
        other => other.to_string(),
    }
}

/// Whether a string reads back as the same string unquoted.
fn plain_ok(s: &str) -> bool {
    const WORDS: [&str; 11] = [
        "true", "false", "null", "yes", "no", "on", "off", "~", "y", "n", "",
    ];
    !WORDS.contains(&s.to_ascii_lowercase().as_str())
        && s.parse::<f64>().is_err()
        && !s.starts_with(|c: char| " -?:,[]{}#&*!|>'\"%@`".contains(c))
        && !s.ends_with(' ')
        && !s.contains(": ")
        && !s.contains(" #")
        && !s.contains('\n')
}

/// A unified diff of two texts, labelled `a` and `b`.
pub fn unified_diff(a: &str, b: &str, label_a: &str, label_b: &str) -> String {
    similar::TextDiff::from_lines(a, b)
        .unified_diff()
        .context_radius(3)
        .header(label_a, label_b)
        .to_string()
}

/// How a row of a side-by-side diff differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Same,
    Changed,
    Removed,
    Added,
}

/// A line of one side: its number (from 1) and text, without the newline.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Line {
    pub number: usize,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Row {
    pub change: Change,
    pub left: Option<Line>,
    pub right: Option<Line>,
}

/// Two texts aligned line by line, as a side-by-side view shows them: a
/// replaced block pairs its old lines with its new ones.
pub fn side_by_side(a: &str, b: &str) -> Vec<Row> {
    let old: Vec<&str> = a.lines().collect();
    let new: Vec<&str> = b.lines().collect();
    let line = |lines: &[&str], i: usize| Line {
        number: i + 1,
        text: lines[i].to_string(),
    };
    let mut rows = Vec::new();
    for op in similar::capture_diff_slices(similar::Algorithm::Myers, &old, &new) {
        let (tag, left, right) = op.as_tag_tuple();
        let change = match tag {
            similar::DiffTag::Equal => Change::Same,
            similar::DiffTag::Delete => Change::Removed,
            similar::DiffTag::Insert => Change::Added,
            similar::DiffTag::Replace => Change::Changed,
        };
        for k in 0..left.len().max(right.len()) {
            rows.push(Row {
                change,
                left: (k < left.len()).then(|| line(&old, left.start + k)),
                right: (k < right.len()).then(|| line(&new, right.start + k)),
            });
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn block_yaml_quotes_only_what_needs_it() {
        let v = json!({"spec": {"replicas": 3, "paused": false, "version": "1.10", "flag": "true",
            "containers": [{"name": "web", "image": "nginx:1.27", "args": ["-v", "plain"]}], "empty": {}}});
        assert_eq!(
            to_yaml(&v),
            "spec:\n  containers:\n    - args:\n        - \"-v\"\n        - plain\n      image: nginx:1.27\n      name: web\n  empty: {}\n  flag: \"true\"\n  paused: false\n  replicas: 3\n  version: \"1.10\"\n"
        );
    }

    #[test]
    fn a_unified_diff_shows_the_changed_line() {
        let d = unified_diff(
            &to_yaml(&json!({"replicas": 1})),
            &to_yaml(&json!({"replicas": 2})),
            "version 1",
            "version 2",
        );
        assert!(d.contains("--- version 1\n+++ version 2\n"), "{d}");
        assert!(d.contains("-replicas: 1\n+replicas: 2\n"), "{d}");
    }

    #[test]
    fn side_by_side_pairs_a_replaced_line_and_keeps_the_rest_aligned() {
        let rows = side_by_side("a: 1\nb: 2\nc: 3\n", "a: 1\nb: 5\nc: 3\nd: 4\n");
        let kinds: Vec<Change> = rows.iter().map(|r| r.change).collect();
        assert_eq!(
            kinds,
            [Change::Same, Change::Changed, Change::Same, Change::Added]
        );
        assert_eq!(rows[1].left.as_ref().unwrap().text, "b: 2");
        assert_eq!(rows[1].right.as_ref().unwrap().text, "b: 5");
        assert_eq!(rows[3].left, None);
        assert_eq!(rows[3].right.as_ref().unwrap().number, 4);
        let removed = side_by_side("x: 1\ny: 2\n", "x: 1\n");
        assert_eq!(removed[1].change, Change::Removed);
        assert_eq!(removed[1].right, None);
    }
}
