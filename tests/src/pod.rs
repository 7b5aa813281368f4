use crate::{Cluster, CommandOutput};

/// A pod as iptables and in-cluster clients see one (`hack/pod`): a network
/// namespace with a ServiceAccount token mounted where clients look for it.
/// Deleted when dropped.
pub struct NetnsPod {
    pub name: String,
    cluster: &'static Cluster,
}

impl NetnsPod {
    /// `extra` goes to `hack/pod add` as it is (`--bind-pod`, `--audience`, `--ca`).
    pub fn add(
        cluster: &'static Cluster,
        name: &str,
        namespace: &str,
        serviceaccount: &str,
        extra: &[&str],
    ) -> anyhow::Result<NetnsPod> {
        CommandOutput::run(
            cluster
                .hack("pod")
                .args(["add", name, "-n", namespace, "-s", serviceaccount])
                .args(extra),
        )?
        .ok("hack/pod add")?;
        Ok(NetnsPod {
            name: name.to_string(),
            cluster,
        })
    }

    /// Runs `command` inside the pod with the given extra environment.
    pub fn exec(&self, env: &[(&str, &str)], command: &[&str]) -> anyhow::Result<CommandOutput> {
        CommandOutput::run(&mut self.exec_command(env, command))
    }

    /// The command that runs `command` inside the pod, to spawn as one likes.
    pub fn exec_command(&self, env: &[(&str, &str)], command: &[&str]) -> std::process::Command {
        let mut cmd = self.cluster.hack("pod");
        cmd.args(["exec", &self.name]);
        for (k, v) in env {
            cmd.arg("-e").arg(format!("{k}={v}"));
        }
        cmd.arg("--").args(command);
        cmd
    }

    /// Starts `command` in the pod as `uid` (a container's runAsUser), in the
    /// background, its output going to a log file named after `log_name`.
    pub fn spawn(
        &self,
        env: &[(String, String)],
        uid: Option<u64>,
        command: &[&str],
        log_name: &str,
    ) -> anyhow::Result<(std::process::Child, std::path::PathBuf)> {
        let log_path = std::env::temp_dir().join(format!("apiwitness-{log_name}.log"));
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = self.cluster.hack("pod");
        cmd.args(["exec", &self.name]);
        for (k, v) in env {
            cmd.arg("-e").arg(format!("{k}={v}"));
        }
        if let Some(uid) = uid {
            cmd.args(["-u", &uid.to_string()]);
        }
        cmd.arg("--")
            .args(command)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        Ok((cmd.spawn()?, log_path))
    }

    pub fn cluster(&self) -> &'static Cluster {
        self.cluster
    }

    /// The name of the pod's network namespace.
    pub fn netns(&self) -> anyhow::Result<String> {
        Ok(
            CommandOutput::run(self.cluster.hack("pod").args(["netns", &self.name]))?
                .ok("hack/pod netns")?
                .stdout
                .trim()
                .to_string(),
        )
    }

    pub fn ip(&self) -> anyhow::Result<String> {
        Ok(
            CommandOutput::run(self.cluster.hack("pod").args(["ip", &self.name]))?
                .ok("hack/pod ip")?
                .stdout
                .trim()
                .to_string(),
        )
    }
}

impl Drop for NetnsPod {
    fn drop(&mut self) {
        let _ = CommandOutput::run(self.cluster.hack("pod").args(["del", &self.name]));
    }
}
