//! The control plane's audit log, read from where it ended when a test
//! began: over a test run it grows to hundreds of megabytes, and a test
//! reads only its own part.

use crate::Cluster;
use serde_json::Value;
use std::io::{BufRead, Seek};

pub struct AuditTail {
    path: String,
    from: u64,
}

impl AuditTail {
    pub fn start(cluster: &Cluster) -> AuditTail {
        let path = cluster.var("APIWITNESS_AUDIT_LOG").to_string();
        let from = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        AuditTail { path, from }
    }

    /// The lines written since the start.
    pub fn lines(&self) -> Vec<String> {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        if file.seek(std::io::SeekFrom::Start(self.from)).is_err() {
            return Vec::new();
        }
        std::io::BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .collect()
    }

    /// The ResponseComplete events of `username` written since the start.
    pub fn events(&self, username: &str) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|l| l.contains(username))
            .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
            .filter(|e| e["user"]["username"] == username && e["stage"] == "ResponseComplete")
            .collect()
    }
}
