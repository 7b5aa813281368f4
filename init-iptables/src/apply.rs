//! Running iptables: picking the backend the pod's kernel rules live in,
//! reading a nat table, and loading rules atomically with iptables-restore.

use crate::rules::{self, Family, RedirectPlan, TableState};
use std::io::Write;
use std::process::{Command, Stdio};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// The backend that already holds rules; nft where neither does.
    Auto,
    Nft,
    Legacy,
}

/// A family's pair of commands of one backend, such as
/// `iptables-nft-save` and `iptables-nft-restore`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub name: &'static str,
    pub save: String,
    pub restore: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{0} is not installed: the image needs the iptables package")]
    MissingTool(String),
    #[error(
        "{command} was refused: {stderr}\nthe container needs the NET_ADMIN and NET_RAW capabilities"
    )]
    PermissionDenied { command: String, stderr: String },
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("running {command}: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
}

fn prefix(family: Family) -> &'static str {
    match family {
        Family::V4 => "iptables",
        Family::V6 => "ip6tables",
    }
}

impl Backend {
    fn of(family: Family, name: &'static str) -> Backend {
        let p = prefix(family);
        let infix = if name == "default" {
            String::new()
        } else {
            format!("-{name}")
        };
        Backend {
            name,
            save: format!("{p}{infix}-save"),
            restore: format!("{p}{infix}-restore"),
        }
    }

    /// The backend to use for `family`. Rules must go where the kernel
    /// already evaluates the pod's other rules, so `auto` follows whichever
    /// backend has rules, as kube-proxy and Istio do.
    pub fn detect(family: Family, choice: BackendChoice) -> Result<Backend, ApplyError> {
        let nft = Backend::of(family, "nft");
        let legacy = Backend::of(family, "legacy");
        match choice {
            BackendChoice::Nft => return nft.ensure_installed(),
            BackendChoice::Legacy => return legacy.ensure_installed(),
            BackendChoice::Auto => {}
        }
        let installed: Vec<Backend> = [nft, legacy]
            .into_iter()
            .filter(|b| which(&b.restore) && which(&b.save))
            .collect();
        if installed.is_empty() {
            // An image with only the plain names (whichever backend they are).
            return Backend::of(family, "default").ensure_installed();
        }
        for backend in &installed {
            if let Ok(saved) = run(&backend.save, &[], None)
                && saved.lines().any(|l| l.starts_with("-A "))
            {
                return Ok(backend.clone());
            }
        }
        Ok(installed[0].clone())
    }

    fn ensure_installed(self) -> Result<Backend, ApplyError> {
        for tool in [&self.save, &self.restore] {
            if !which(tool) {
                return Err(ApplyError::MissingTool(tool.clone()));
            }
        }
        Ok(self)
    }

    pub fn save_nat(&self) -> Result<String, ApplyError> {
        run(&self.save, &["-t", "nat"], None)
    }

    pub fn state(&self) -> Result<TableState, ApplyError> {
        Ok(rules::inspect(&self.save_nat()?))
    }

    /// Loads `input` in one transaction, leaving every other rule alone.
    pub fn restore(&self, input: &str) -> Result<(), ApplyError> {
        run(&self.restore, &["--noflush", "--wait"], Some(input)).map(|_| ())
    }

    pub fn apply(&self, plan: &RedirectPlan, family: Family) -> Result<(), ApplyError> {
        let state = self.state()?;
        self.restore(&plan.render(family, state))
    }

    /// Removes the hook and the chain; true if there was anything to remove.
    pub fn cleanup(&self) -> Result<bool, ApplyError> {
        match rules::render_cleanup(self.state()?) {
            Some(input) => self.restore(&input).map(|()| true),
            None => Ok(false),
        }
    }
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false)
}

fn run(tool: &str, args: &[&str], input: Option<&str>) -> Result<String, ApplyError> {
    let command = format!("{tool} {}", args.join(" ")).trim().to_string();
    let mut child = Command::new(tool)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ApplyError::MissingTool(tool.to_string())
            } else {
                ApplyError::Spawn {
                    command: command.clone(),
                    source,
                }
            }
        })?;
    if let Some(input) = input {
        // A write error shows up as the tool's own failure below.
        let _ = child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(input.as_bytes());
    }
    let output = child
        .wait_with_output()
        .map_err(|source| ApplyError::Spawn {
            command: command.clone(),
            source,
        })?;
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    if is_permission_error(&stderr) {
        return Err(ApplyError::PermissionDenied { command, stderr });
    }
    Err(ApplyError::Failed {
        command,
        status: output.status.to_string(),
        stderr,
    })
}

fn is_permission_error(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    s.contains("permission denied") || s.contains("operation not permitted")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_commands_are_named_per_family() {
        let b = Backend::of(Family::V6, "legacy");
        assert_eq!(b.save, "ip6tables-legacy-save");
        assert_eq!(b.restore, "ip6tables-legacy-restore");
        assert_eq!(
            Backend::of(Family::V4, "default").restore,
            "iptables-restore"
        );
    }

    #[test]
    fn a_missing_tool_is_named() {
        let err = run("apiwitness-no-such-tool", &[], None).unwrap_err();
        assert!(matches!(err, ApplyError::MissingTool(ref t) if t == "apiwitness-no-such-tool"));
    }

    #[test]
    fn permission_errors_are_recognised() {
        assert!(is_permission_error(
            "iptables-restore v1.8.11 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)"
        ));
        assert!(!is_permission_error("line 3 failed"));
    }
}
