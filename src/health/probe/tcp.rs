//! `type = "tcp"`: a TCP connect.

use std::net::SocketAddr;

use tokio::net::TcpStream;

use super::{Failure, Step};

/// Connects, in two steps so that an error creating the socket is known
/// to be this host's.
pub(super) async fn tcp(target: SocketAddr) -> Result<(), Failure> {
    connect(target).await.map(drop)
}

/// The connection a tcp probe makes, for probes that go on to speak over
/// it (grpc).
pub(super) async fn connect(target: SocketAddr) -> Result<TcpStream, Failure> {
    let socket = if target.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(|e| Failure::io("socket", Step::Setup, &e, target))?;
    socket
        .connect(target)
        .await
        .map_err(|e| Failure::io("connect", Step::Exchange, &e, target))
}
