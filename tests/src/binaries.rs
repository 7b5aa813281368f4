use anyhow::{Context, bail};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The path of one of the workspace's binaries, built (once per test binary)
/// into the same target directory as the tests themselves.
pub fn workspace_binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT
        .get_or_init(|| build_all().map_err(|e| format!("{e:#}")))
        .as_ref()
        .unwrap_or_else(|e| panic!("building the workspace binaries: {e}"));
    dir.join(name)
}

fn build_all() -> anyhow::Result<PathBuf> {
    // target/<profile>/deps/<test binary> -> target/<profile>
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("the test binary is not inside a cargo target directory")?
        .to_path_buf();
    let target_dir = profile_dir.parent().context("no target directory")?;
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "--bins", "--workspace"])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(crate::repo_root());
    if profile_dir.file_name().is_some_and(|p| p == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --bins --workspace failed");
    }
    Ok(profile_dir)
}
