//! The nat rules that send a pod's apiserver traffic to the interceptor, as
//! iptables-restore input. Rendering is pure, so the exact rules are pinned by
//! golden files; reading what a table already holds is pure too.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

/// The chain that holds every rule apiwitness adds, hooked from OUTPUT.
pub const CHAIN: &str = "APIWITNESS_OUTPUT";

/// The rule in OUTPUT that jumps to [`CHAIN`], as iptables-save prints it.
pub const HOOK: &str = "-p tcp -j APIWITNESS_OUTPUT";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    fn host_prefix(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

/// What to redirect, and where to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectPlan {
    /// The interceptor's listening port.
    pub proxy_port: u16,
    /// The interceptor's UID: its own connections to the apiserver must pass.
    pub proxy_uid: u32,
    /// The apiserver's Service address and its endpoint addresses.
    pub destinations: BTreeSet<SocketAddr>,
}

/// What a nat table holds of ours, read from iptables-save.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableState {
    pub chain_present: bool,
    /// How many times OUTPUT jumps to the chain (more than one only if
    /// something other than this program added a hook).
    pub hooks: usize,
}

impl RedirectPlan {
    /// The families that have something to redirect.
    pub fn families(&self) -> BTreeSet<Family> {
        self.destinations
            .iter()
            .map(|d| Family::of(&d.ip()))
            .collect()
    }

    /// The iptables-restore input (for `--noflush`) that makes the chain
    /// exactly this plan's rules for `family`. Declaring the chain empties it
    /// if it exists, so a rerun replaces the rules; the hook is added only
    /// where the table does not have it yet.
    pub fn render(&self, family: Family, state: TableState) -> String {
        let mut out = String::from("*nat\n");
        out.push_str(&format!(":{CHAIN} - [0:0]\n"));
        if state.hooks == 0 {
            // First in OUTPUT, so that apiserver traffic reaches the
            // interceptor even where another sidecar redirects all TCP.
            out.push_str(&format!("-I OUTPUT 1 {HOOK}\n"));
        }
        out.push_str(&format!(
            "-A {CHAIN} -m owner --uid-owner {} -j RETURN\n",
            self.proxy_uid
        ));
        out.push_str(&format!("-A {CHAIN} -o lo -j RETURN\n"));
        for dest in self
            .destinations
            .iter()
            .filter(|d| Family::of(&d.ip()) == family)
        {
            out.push_str(&format!(
                "-A {CHAIN} -d {}/{} -p tcp -m tcp --dport {} -j REDIRECT --to-ports {}\n",
                dest.ip(),
                family.host_prefix(),
                dest.port(),
                self.proxy_port
            ));
        }
        out.push_str("COMMIT\n");
        out
    }

    /// The rules of our chain as iptables-save prints them back, to compare
    /// with what a table holds.
    pub fn expected_chain_rules(&self, family: Family) -> Vec<String> {
        self.render(family, TableState::default())
            .lines()
            .filter(|l| l.starts_with(&format!("-A {CHAIN} ")))
            .map(str::to_string)
            .collect()
    }
}

/// The iptables-restore input (for `--noflush`) that removes the hook and
/// the chain, or `None` where there is nothing to remove.
pub fn render_cleanup(state: TableState) -> Option<String> {
    if !state.chain_present && state.hooks == 0 {
        return None;
    }
    let mut out = String::from("*nat\n");
    for _ in 0..state.hooks {
        out.push_str(&format!("-D OUTPUT {HOOK}\n"));
    }
    if state.chain_present {
        out.push_str(&format!("-F {CHAIN}\n-X {CHAIN}\n"));
    }
    out.push_str("COMMIT\n");
    Some(out)
}

/// Reads our chain and hook out of `iptables-save -t nat` output.
pub fn inspect(save_output: &str) -> TableState {
    let mut state = TableState::default();
    for line in nat_section(save_output) {
        if line.starts_with(&format!(":{CHAIN} ")) {
            state.chain_present = true;
        } else if line == format!("-A OUTPUT {HOOK}") {
            state.hooks += 1;
        }
    }
    state
}

/// The rules of our chain in `iptables-save -t nat` output.
pub fn chain_rules(save_output: &str) -> Vec<String> {
    nat_section(save_output)
        .filter(|l| l.starts_with(&format!("-A {CHAIN} ")))
        .map(str::to_string)
        .collect()
}

fn nat_section(save_output: &str) -> impl Iterator<Item = &str> {
    save_output
        .lines()
        .map(str::trim)
        .skip_while(|l| *l != "*nat")
        .take_while(|l| *l != "COMMIT")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(destinations: &[&str]) -> RedirectPlan {
        RedirectPlan {
            proxy_port: 15443,
            proxy_uid: 2102,
            destinations: destinations.iter().map(|d| d.parse().unwrap()).collect(),
        }
    }

    fn golden(name: &str) -> String {
        let path = format!(
            "{}/tests/golden/{name}",
            apiwitness_runtime::manifest_dir!()
        );
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn first_apply_hooks_the_chain_and_redirects_service_and_endpoints() {
        let p = plan(&["10.96.0.1:443", "172.18.0.2:6443"]);
        assert_eq!(
            p.render(Family::V4, TableState::default()),
            golden("ipv4-first.rules")
        );
    }

    #[test]
    fn a_rerun_replaces_the_chain_without_a_second_hook() {
        let p = plan(&["10.96.0.1:443"]);
        let state = TableState {
            chain_present: true,
            hooks: 1,
        };
        assert_eq!(p.render(Family::V4, state), golden("ipv4-rerun.rules"));
    }

    #[test]
    fn ipv6_destinations_render_for_ip6tables_only() {
        let p = plan(&["10.96.0.1:443", "[fd00:10:96::1]:443"]);
        assert_eq!(p.families(), BTreeSet::from([Family::V4, Family::V6]));
        let v6 = p.render(Family::V6, TableState::default());
        assert_eq!(v6, golden("ipv6-first.rules"));
        assert!(!v6.contains("10.96.0.1"));
    }

    #[test]
    fn cleanup_removes_every_hook_and_the_chain() {
        let state = TableState {
            chain_present: true,
            hooks: 2,
        };
        assert_eq!(render_cleanup(state).unwrap(), golden("cleanup.rules"));
        assert_eq!(render_cleanup(TableState::default()), None);
    }

    #[test]
    fn inspect_reads_our_chain_from_iptables_save() {
        let save = golden("saved-nat.txt");
        assert_eq!(
            inspect(&save),
            TableState {
                chain_present: true,
                hooks: 1
            }
        );
        assert_eq!(
            chain_rules(&save),
            plan(&["10.96.0.1:443"]).expected_chain_rules(Family::V4)
        );
        // The filter table's lines are not the nat table's.
        assert_eq!(
            inspect("*filter\n:APIWITNESS_OUTPUT - [0:0]\nCOMMIT\n"),
            TableState::default()
        );
    }
}
