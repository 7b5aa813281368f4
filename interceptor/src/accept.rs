//! Listeners, and where an accepted connection was really going.
//!
//! In transparent mode, iptables REDIRECTs the pod's connections to the
//! apiserver into our port; the destination the client dialled is recovered
//! from conntrack with `SO_ORIGINAL_DST` (IPv4) or `IP6T_SO_ORIGINAL_DST`
//! (IPv6), read through socket2.

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("cannot read the original destination: {0}")]
    OriginalDst(std::io::Error),
    #[error(
        "the connection was made to the interceptor's own port ({0}), not redirected to it: \
         there is no original destination to forward to"
    )]
    NotRedirected(SocketAddr),
}

/// Binds a listener. An IPv6 address listens for IPv6 only, so that an IPv4
/// and an IPv6 listener on the same port can sit side by side, each reading
/// the original destination of its own family.
pub fn bind(addr: SocketAddr) -> Result<TcpListener, AcceptError> {
    let fail = |error| AcceptError::Bind { addr, error };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(fail)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(fail)?;
    }
    socket.set_reuse_address(true).map_err(fail)?;
    socket.set_nonblocking(true).map_err(fail)?;
    socket.bind(&addr.into()).map_err(fail)?;
    socket.listen(1024).map_err(fail)?;
    TcpListener::from_std(socket.into()).map_err(fail)
}

/// The destination the client dialled before iptables redirected it here.
pub fn original_destination(stream: &TcpStream) -> Result<SocketAddr, AcceptError> {
    let local = stream.local_addr().map_err(AcceptError::OriginalDst)?;
    let sock = SockRef::from(stream);
    let original = if local.is_ipv4() {
        sock.original_dst_v4()
    } else {
        sock.original_dst_v6()
    }
    .map_err(AcceptError::OriginalDst)?;
    let original = original
        .as_socket()
        .ok_or_else(|| AcceptError::OriginalDst(std::io::Error::other("not an IP address")))?;
    // Without a redirect, conntrack reports the address we accepted on.
    if original == local {
        return Err(AcceptError::NotRedirected(local));
    }
    Ok(original)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_direct_connection_is_not_mistaken_for_a_redirected_one() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        match original_destination(&accepted) {
            // No conntrack entry (nf_conntrack not loaded) is an error too.
            Err(AcceptError::NotRedirected(a)) => assert_eq!(a, addr),
            Err(AcceptError::OriginalDst(_)) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn binding_a_taken_port_names_it() {
        let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = first.local_addr().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = rt.block_on(async { bind(addr) }).unwrap_err().to_string();
        assert!(err.contains(&addr.to_string()), "{err}");
    }
}
