//! The capabilities iptables needs, checked up front so that a pod whose
//! securityContext lacks them fails with a message that says so, rather than
//! with an iptables error about "generation ids".

const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;

/// The names of the needed capabilities that the effective set lacks, from
/// the `CapEff:` line of /proc/self/status.
pub fn missing(proc_status: &str) -> Result<Vec<&'static str>, String> {
    let hex = proc_status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(str::trim)
        .ok_or("no CapEff line in /proc/self/status")?;
    let effective =
        u64::from_str_radix(hex, 16).map_err(|e| format!("CapEff {hex:?} is not hex: {e}"))?;
    Ok([(CAP_NET_ADMIN, "NET_ADMIN"), (CAP_NET_RAW, "NET_RAW")]
        .into_iter()
        .filter(|(bit, _)| effective & (1 << bit) == 0)
        .map(|(_, name)| name)
        .collect())
}

pub fn missing_in_this_process() -> Result<Vec<&'static str>, String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("reading /proc/self/status: {e}"))?;
    missing(&status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_root_has_both() {
        assert_eq!(
            missing("Name:\tx\nCapEff:\t000001ffffffffff\n").unwrap(),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn only_net_admin_lacks_net_raw() {
        assert_eq!(
            missing("CapEff:\t0000000000001000\n").unwrap(),
            vec!["NET_RAW"]
        );
    }

    #[test]
    fn none_lacks_both() {
        assert_eq!(
            missing("CapEff:\t0000000000000000\n").unwrap(),
            vec!["NET_ADMIN", "NET_RAW"]
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(missing("CapEff:\tzz\n").is_err());
        assert!(missing("Name:\tx\n").is_err());
    }
}
