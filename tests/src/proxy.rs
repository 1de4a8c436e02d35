//! A partitionable network for in-process nodes: each node advertises the address of a proxy that stands
//! in front of its real mesh address and forwards UDP datagrams (membership) and TCP connections (mesh
//! data) to it, unless the test has cut the pair of nodes involved. The nodes run their real code paths;
//! only the loopback between them is made to fail.
//!
//! A UDP datagram's sender is known by its source port (each node sends from its real mesh port); a TCP
//! connection's sender by the hello it opens with (the mesh handshake names the sender's address).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// Which node pairs cannot reach each other; shared by every proxy of a test.
#[derive(Default)]
pub struct Cuts {
    pairs: Mutex<BTreeSet<(usize, usize)>>,
    /// Per node: (advertised proxy address, real mesh address), filled as nodes start.
    nodes: Mutex<Vec<(SocketAddr, SocketAddr)>>,
}

impl Cuts {
    /// Cuts the link between nodes `a` and `b`, both ways.
    pub fn cut(&self, a: usize, b: usize) {
        self.lock_pairs().insert((a.min(b), a.max(b)));
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.lock_pairs().clear();
    }

    fn lock_pairs(&self) -> std::sync::MutexGuard<'_, BTreeSet<(usize, usize)>> {
        self.pairs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_cut(&self, a: usize, b: usize) -> bool {
        self.lock_pairs().contains(&(a.min(b), a.max(b)))
    }

    fn node_by(&self, matches: impl Fn(&(SocketAddr, SocketAddr)) -> bool) -> Option<usize> {
        let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        nodes.iter().position(matches)
    }
}

/// The proxy in front of one node: bind it first (its address is the node's `mesh.advertise`), then
/// start the node, then [`Proxy::run`] with the node's real address.
pub struct Proxy {
    udp: UdpSocket,
    tcp: TcpListener,
    /// The address the node advertises.
    pub addr: SocketAddr,
}

impl Proxy {
    /// Binds the proxy's TCP and UDP sockets on one loopback port.
    pub async fn bind() -> Proxy {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let udp = UdpSocket::bind(addr).await.unwrap();
        Proxy { udp, tcp, addr }
    }

    /// Forwards to `real` (the node's listen address) as node number `index`, until the runtime ends.
    pub fn run(self, cuts: Arc<Cuts>, index: usize, real: SocketAddr) {
        {
            let mut nodes = cuts.nodes.lock().unwrap_or_else(|e| e.into_inner());
            if nodes.len() <= index {
                nodes.resize(index + 1, (self.addr, real));
            }
            nodes[index] = (self.addr, real);
        }
        let udp_cuts = cuts.clone();
        tokio::spawn(async move {
            let out = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let mut buf = vec![0u8; 65536];
            while let Ok((len, from)) = self.udp.recv_from(&mut buf).await {
                let sender = udp_cuts.node_by(|(_, real)| *real == from);
                if sender.is_some_and(|s| udp_cuts.is_cut(s, index)) {
                    continue;
                }
                let _ = out.send_to(&buf[..len], real).await;
            }
        });
        tokio::spawn(async move {
            while let Ok((stream, _)) = self.tcp.accept().await {
                tokio::spawn(forward(stream, cuts.clone(), index, real));
            }
        });
    }
}

/// Forwards one mesh connection after reading its hello, and drops it as soon as the pair is cut.
async fn forward(mut inbound: TcpStream, cuts: Arc<Cuts>, index: usize, real: SocketAddr) {
    let mut hello = [0u8; 11];
    if inbound.read_exact(&mut hello).await.is_err() {
        return;
    }
    let ip = std::net::Ipv4Addr::new(hello[5], hello[6], hello[7], hello[8]);
    let advertised = SocketAddr::from((ip, u16::from_be_bytes([hello[9], hello[10]])));
    let Some(sender) = cuts.node_by(|(proxy, _)| *proxy == advertised) else {
        return;
    };
    if cuts.is_cut(sender, index) {
        return;
    }
    let Ok(mut outbound) = TcpStream::connect(real).await else {
        return;
    };
    if outbound.write_all(&hello).await.is_err() {
        return;
    }
    let (mut in_read, mut in_write) = inbound.into_split();
    let (mut out_read, mut out_write) = outbound.into_split();
    let watch = async {
        while !cuts.is_cut(sender, index) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        _ = tokio::io::copy(&mut in_read, &mut out_write) => {}
        _ = tokio::io::copy(&mut out_read, &mut in_write) => {}
        () = watch => {}
    }
}
