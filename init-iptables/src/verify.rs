//! Proves from inside the pod that the rules work, the way linkerd's
//! validator does: a listener takes the interceptor's port, a probe dials
//! each apiserver address, and the probe must arrive at the listener with its
//! original destination intact. A probe dialled as the interceptor's UID must
//! not arrive, or the interceptor would loop into itself.

use crate::rules::{Family, RedirectPlan, chain_rules};
use socket2::SockRef;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

const PROBE_PREFIX: &str = "apiwitness-init-iptables-probe ";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const ARRIVAL_WAIT: Duration = Duration::from_secs(2);
const STRAY_WAIT: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("the {family} nat chain holds {found:?}, not the expected {expected:?}")]
    RulesDiffer {
        family: &'static str,
        found: Vec<String>,
        expected: Vec<String>,
    },
    #[error(
        "cannot listen on the interceptor's port {port} to verify: {source} (is the interceptor already running?)"
    )]
    Listen { port: u16, source: std::io::Error },
    #[error("a connection to {0} did not reach the interceptor's port: it is not redirected")]
    NotRedirected(SocketAddr),
    #[error("a connection to {dialled} arrived with original destination {found}")]
    WrongOriginalDestination { dialled: SocketAddr, found: String },
    #[error(
        "a connection to {0} from the interceptor's UID was redirected back to the interceptor: it would loop"
    )]
    ProxyLoops(SocketAddr),
    #[error("verifying: {0}")]
    Io(#[from] std::io::Error),
}

/// What [`verify`] checked.
#[derive(Debug)]
pub struct Verified {
    pub redirected: Vec<SocketAddr>,
    /// The addresses dialled as the interceptor's UID and not redirected, or
    /// why they could not be dialled so (a real init container has no
    /// CAP_SETUID; the rules comparison then stands for this check).
    pub bypass: Result<Vec<SocketAddr>, String>,
}

/// Checks that the chain of each family holds exactly the plan's rules.
pub fn rules_match(
    plan: &RedirectPlan,
    family: Family,
    saved_nat: &str,
) -> Result<(), VerifyError> {
    let found = chain_rules(saved_nat);
    let expected = plan.expected_chain_rules(family);
    if found != expected {
        return Err(VerifyError::RulesDiffer {
            family: family.name(),
            found,
            expected,
        });
    }
    Ok(())
}

/// Dials every destination and checks where each connection lands.
pub fn probe(plan: &RedirectPlan, self_exe: &std::path::Path) -> Result<Verified, VerifyError> {
    let mut listeners = Vec::new();
    for family in plan.families() {
        let addr: SocketAddr = match family {
            Family::V4 => (Ipv4Addr::UNSPECIFIED, plan.proxy_port).into(),
            Family::V6 => (Ipv6Addr::UNSPECIFIED, plan.proxy_port).into(),
        };
        let listener = bind(addr).map_err(|source| VerifyError::Listen {
            port: plan.proxy_port,
            source,
        })?;
        listeners.push((family, listener));
    }
    let listener_for = |dest: &SocketAddr| {
        &listeners
            .iter()
            .find(|(f, _)| *f == Family::of(&dest.ip()))
            .expect("a listener per family")
            .1
    };

    let mut verified = Verified {
        redirected: Vec::new(),
        bypass: Err("not tried".into()),
    };
    for (i, dest) in plan.destinations.iter().enumerate() {
        let nonce = format!("{}-{i}", std::process::id());
        // The kernel completes the handshake into the listener's backlog, so
        // dialling before accepting needs no second thread.
        let mut stream = TcpStream::connect_timeout(dest, CONNECT_TIMEOUT)
            .map_err(|_| VerifyError::NotRedirected(*dest))?;
        stream.write_all(format!("{PROBE_PREFIX}{nonce}\n").as_bytes())?;
        match accept_probe(listener_for(dest), &nonce, ARRIVAL_WAIT)? {
            Some(original) if original == Some(*dest) => verified.redirected.push(*dest),
            Some(original) => {
                return Err(VerifyError::WrongOriginalDestination {
                    dialled: *dest,
                    found: original.map_or("unknown".into(), |a| a.to_string()),
                });
            }
            None => return Err(VerifyError::NotRedirected(*dest)),
        }
    }

    let mut bypassed = Vec::new();
    for (i, dest) in plan.destinations.iter().enumerate() {
        let nonce = format!("{}-uid-{i}", std::process::id());
        let spawned = spawn_probe_as(self_exe, plan.proxy_uid, dest, &nonce);
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                verified.bypass = Err(format!(
                    "running this program as UID {}: {e}",
                    plan.proxy_uid
                ));
                return Ok(verified);
            }
        };
        let _ = child.wait();
        if accept_probe(listener_for(dest), &nonce, STRAY_WAIT)?.is_some() {
            return Err(VerifyError::ProxyLoops(*dest));
        }
        bypassed.push(*dest);
    }
    verified.bypass = Ok(bypassed);
    Ok(verified)
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(16)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

fn spawn_probe_as(
    self_exe: &std::path::Path,
    uid: u32,
    dest: &SocketAddr,
    nonce: &str,
) -> std::io::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    Command::new(self_exe)
        .args(["--probe-connect", &dest.to_string(), "--probe-nonce", nonce])
        .uid(uid)
        .gid(uid)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
}

/// Waits for a probe carrying `nonce`; its original destination, if it came.
/// Other connections (an earlier probe's) are read and dropped.
fn accept_probe(
    listener: &TcpListener,
    nonce: &str,
    wait: Duration,
) -> std::io::Result<Option<Option<SocketAddr>>> {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        match listener.accept() {
            Ok((mut stream, _)) => {
                stream.set_nonblocking(false)?;
                stream.set_read_timeout(Some(Duration::from_secs(1)))?;
                let mut buf = [0u8; 128];
                let n = stream.read(&mut buf).unwrap_or(0);
                let line = String::from_utf8_lossy(&buf[..n]);
                if line.trim_end() == format!("{PROBE_PREFIX}{nonce}") {
                    return Ok(Some(original_destination(&stream)));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

fn original_destination(stream: &TcpStream) -> Option<SocketAddr> {
    let sock = SockRef::from(stream);
    let addr = if stream.local_addr().ok()?.is_ipv6() {
        sock.original_dst_v6()
    } else {
        sock.original_dst_v4()
    };
    addr.ok()?.as_socket()
}

/// The probe's side, run as the interceptor's UID: dial and say the nonce.
pub fn run_probe(dest: SocketAddr, nonce: &str) {
    if let Ok(mut stream) = TcpStream::connect_timeout(&dest, CONNECT_TIMEOUT) {
        let _ = stream.write_all(format!("{PROBE_PREFIX}{nonce}\n").as_bytes());
        let _ = stream.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_that_differ_are_shown() {
        let plan = RedirectPlan {
            proxy_port: 15443,
            proxy_uid: 2102,
            destinations: ["10.96.0.1:443".parse().unwrap()].into(),
        };
        let saved =
            "*nat\n:APIWITNESS_OUTPUT - [0:0]\n-A APIWITNESS_OUTPUT -o lo -j RETURN\nCOMMIT\n";
        let err = rules_match(&plan, Family::V4, saved).unwrap_err();
        assert!(err.to_string().contains("uid-owner 2102"), "{err}");
    }

    #[test]
    fn a_probe_on_loopback_arrives_with_its_nonce() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        run_probe(addr, "n1");
        // Unredirected, there is no original destination to read back, but the
        // nonce is recognised.
        assert!(
            accept_probe(&listener, "n1", ARRIVAL_WAIT)
                .unwrap()
                .is_some()
        );
        run_probe(addr, "other");
        assert!(accept_probe(&listener, "n2", STRAY_WAIT).unwrap().is_none());
    }
}
