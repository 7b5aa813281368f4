//! Redirects a pod's outbound TCP to the apiserver into the interceptor: the
//! rules ([`rules`]), loading them ([`apply`]), and proving they work
//! ([`verify`]).

pub mod apply;
pub mod caps;
pub mod config;
pub mod rules;
pub mod verify;

use apply::{ApplyError, Backend};
use config::Config;
use rules::{Family, RedirectPlan};

/// How the program ends; each failure has its own exit code, so that a pod's
/// status tells the cause without its log.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("{0}")]
    Config(String),
    #[error(
        "the container lacks the {0} capabilit{1}: give init-iptables NET_ADMIN and NET_RAW, or use the injector's env mode where Pod Security forbids them"
    )]
    Capabilities(String, &'static str),
    #[error("{0}")]
    MissingTool(ApplyError),
    #[error("{0}")]
    Iptables(ApplyError),
    #[error("verification failed: {0}")]
    Verify(#[from] verify::VerifyError),
}

impl Failure {
    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::Config(_) => 2,
            Failure::Capabilities(..) => 3,
            Failure::MissingTool(_) => 4,
            Failure::Iptables(ApplyError::PermissionDenied { .. }) => 3,
            Failure::Iptables(_) => 5,
            Failure::Verify(_) => 6,
        }
    }
}

impl From<ApplyError> for Failure {
    fn from(e: ApplyError) -> Failure {
        match e {
            ApplyError::MissingTool(_) => Failure::MissingTool(e),
            other => Failure::Iptables(other),
        }
    }
}

/// Runs what `config` asks for, and says what it did on standard output.
pub fn run(config: &Config) -> Result<(), Failure> {
    if let (Some(dest), Some(nonce)) = (config.probe_connect, &config.probe_nonce) {
        verify::run_probe(dest, nonce);
        return Ok(());
    }
    if config.cleanup {
        return cleanup(config);
    }
    let plan = RedirectPlan {
        proxy_port: config.proxy_port,
        proxy_uid: config.proxy_uid,
        destinations: config
            .destinations()
            .map_err(Failure::Config)?
            .into_iter()
            .collect(),
    };

    if config.dry_run {
        for family in plan.families() {
            println!("# {} (iptables-restore --noflush)", family.name());
            print!("{}", plan.render(family, rules::TableState::default()));
        }
        return Ok(());
    }

    require_capabilities()?;
    for family in plan.families() {
        let backend = Backend::detect(family, config.backend)?;
        backend.apply(&plan, family)?;
        if config.verify {
            verify::rules_match(&plan, family, &backend.save_nat()?)?;
        }
        println!(
            "{}: redirecting {} to port {} ({} backend), except UID {}",
            family.name(),
            plan.destinations
                .iter()
                .filter(|d| Family::of(&d.ip()) == family)
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            plan.proxy_port,
            backend.name,
            plan.proxy_uid
        );
    }

    if config.verify {
        let exe = std::env::current_exe()
            .map_err(|e| Failure::Config(format!("finding this program for the probe: {e}")))?;
        let verified = verify::probe(&plan, &exe)?;
        println!(
            "verified: {} reach the interceptor with their original destination",
            verified
                .redirected
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        match verified.bypass {
            Ok(_) => println!("verified: UID {} bypasses the redirect", plan.proxy_uid),
            Err(why) => println!(
                "verified: the rule that lets UID {} bypass is in place (not dialled as it: {why})",
                plan.proxy_uid
            ),
        }
    }
    Ok(())
}

fn require_capabilities() -> Result<(), Failure> {
    let missing = caps::missing_in_this_process().map_err(Failure::Config)?;
    if missing.is_empty() {
        return Ok(());
    }
    let plural = if missing.len() == 1 { "y" } else { "ies" };
    Err(Failure::Capabilities(missing.join(" and "), plural))
}

fn cleanup(config: &Config) -> Result<(), Failure> {
    require_capabilities()?;
    for family in [Family::V4, Family::V6] {
        let backend = match Backend::detect(family, config.backend) {
            Ok(b) => b,
            // A pod without ip6tables has no IPv6 rules of ours either.
            Err(ApplyError::MissingTool(_)) if family == Family::V6 => continue,
            Err(e) => return Err(e.into()),
        };
        let removed = backend.cleanup()?;
        println!(
            "{}: {} ({} backend)",
            family.name(),
            if removed {
                "removed the apiwitness chain"
            } else {
                "nothing to remove"
            },
            backend.name
        );
    }
    Ok(())
}
