//! The libp2p stack: transports, the composed behaviour, and how the Swarm is built.
//!
//! | part | what for | configured |
//! |---|---|---|
//! | TCP + Noise + Yamux | connections | `--p2paddr`, TCP_NODELAY |
//! | QUIC (feature `quic`, default) | connections on the same port over UDP | one `/udp/<port>/quic-v1` per TCP listen address |
//! | circuit relay v2 client | reach and be reached through relays | always; reservations on `--relay-addr` relays and relay-capable peers while private |
//! | circuit relay v2 server | relay for others | `--relay` |
//! | DCUtR | upgrade relayed connections by hole punching | always |
//! | AutoNAT (v1) | am I reachable? → reservations | unless `--reachability` forces the answer |
//! | identify | addresses and protocols of peers; peers of another network are dropped | protocol `/hypha/<network>/id/1.0.0` |
//! | Kademlia | providers of followed collections and shards | protocol `/hypha/<network>/kad/1.0.0`, server mode |
//! | mDNS | peers on the same LAN | unless `--no-mdns` |
//! | ping | liveness | libp2p defaults |
//! | connection limits | exhaustion | [`LIMITS`](self#limits) |
//! | memory limits | refuse connections near the memory cap | [`MAX_MEMORY_BYTES`] |
//! | [`Hypha`] | replication: frames, gossipsub, the coordinator | from the settings |
//!
//! # Limits
//!
//! | limit | default |
//! |---|---|
//! | pending incoming connections | [`MAX_PENDING_INCOMING`] |
//! | pending outgoing connections | [`MAX_PENDING_OUTGOING`] |
//! | established incoming connections | [`MAX_ESTABLISHED_INCOMING`] |
//! | established connections in all | [`MAX_ESTABLISHED`] |
//! | established connections per peer | [`MAX_PER_PEER`] |
//! | idle connection kept open | [`IDLE_TIMEOUT`] |
//! | process memory before new connections are refused | [`MAX_MEMORY_BYTES`] |

use std::time::Duration;

use hypha_protocols::swarm::Hypha;
use libp2p::kad::store::MemoryStore;
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    StreamProtocol, Swarm, SwarmBuilder, autonat, connection_limits, dcutr, identify, identity,
    kad, mdns, memory_connection_limits, noise, ping, relay, tcp, yamux,
};

/// Pending incoming connections.
pub(crate) const MAX_PENDING_INCOMING: u32 = 64;
/// Pending outgoing connections.
pub(crate) const MAX_PENDING_OUTGOING: u32 = 64;
/// Established incoming connections.
pub(crate) const MAX_ESTABLISHED_INCOMING: u32 = 256;
/// Established connections, both directions.
pub(crate) const MAX_ESTABLISHED: u32 = 512;
/// Established connections per peer.
pub(crate) const MAX_PER_PEER: u32 = 4;
/// How long a connection with no open stream stays up.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Process memory (bytes) past which new connections are refused.
pub(crate) const MAX_MEMORY_BYTES: usize = 1 << 30;

/// Everything the node runs on libp2p.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) memory: memory_connection_limits::Behaviour,
    pub(crate) hypha: Hypha,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) kad: kad::Behaviour<MemoryStore>,
    pub(crate) relay_client: relay::client::Behaviour,
    pub(crate) relay: Toggle<relay::Behaviour>,
    pub(crate) dcutr: dcutr::Behaviour,
    pub(crate) autonat: Toggle<autonat::Behaviour>,
    pub(crate) mdns: Toggle<mdns::tokio::Behaviour>,
}

/// What the stack is built from.
pub(crate) struct StackOptions {
    pub(crate) network: String,
    pub(crate) relay_server: bool,
    pub(crate) autonat: bool,
    pub(crate) mdns: bool,
}

/// The identify protocol version of `network`: peers that answer another one are dropped.
pub(crate) fn identify_version(network: &str) -> String {
    format!("/hypha/{network}/id/1.0.0")
}

/// Builds the Swarm around `hypha`.
pub(crate) fn build(
    key: identity::Keypair,
    hypha: Hypha,
    options: &StackOptions,
) -> Result<Swarm<Behaviour>, Box<dyn std::error::Error + Send + Sync>> {
    let make = move |key: &identity::Keypair, relay_client: relay::client::Behaviour| {
        behaviour(key, hypha, relay_client, options)
    };
    let builder = SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )?;
    #[cfg(feature = "quic")]
    let builder = builder.with_quic();
    let swarm = builder
        .with_relay_client(noise::Config::new, yamux::Config::default)?
        .with_behaviour(make)?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_TIMEOUT))
        .build();
    Ok(swarm)
}

/// The connection limits of [`LIMITS`](self#limits).
fn connection_limits() -> connection_limits::ConnectionLimits {
    connection_limits::ConnectionLimits::default()
        .with_max_pending_incoming(Some(MAX_PENDING_INCOMING))
        .with_max_pending_outgoing(Some(MAX_PENDING_OUTGOING))
        .with_max_established_incoming(Some(MAX_ESTABLISHED_INCOMING))
        .with_max_established(Some(MAX_ESTABLISHED))
        .with_max_established_per_peer(Some(MAX_PER_PEER))
}

fn behaviour(
    key: &identity::Keypair,
    hypha: Hypha,
    relay_client: relay::client::Behaviour,
    options: &StackOptions,
) -> Result<Behaviour, Box<dyn std::error::Error + Send + Sync>> {
    let peer_id = key.public().to_peer_id();
    let kad_protocol =
        StreamProtocol::try_from_owned(format!("/hypha/{}/kad/1.0.0", options.network))?;
    let mut kad = kad::Behaviour::with_config(
        peer_id,
        MemoryStore::new(peer_id),
        kad::Config::new(kad_protocol),
    );
    // Hypha's networks are application networks of cooperating nodes: every node serves the
    // DHT, so provider records land even among nodes no AutoNAT has confirmed (on a LAN, say).
    kad.set_mode(Some(kad::Mode::Server));
    let identify = identify::Behaviour::new(
        identify::Config::new(identify_version(&options.network), key.public())
            .with_agent_version(format!("hypha/{}", env!("CARGO_PKG_VERSION"))),
    );
    let mdns = if options.mdns {
        Some(mdns::tokio::Behaviour::new(
            mdns::Config::default(),
            peer_id,
        )?)
    } else {
        None
    };
    Ok(Behaviour {
        limits: connection_limits::Behaviour::new(connection_limits()),
        memory: memory_connection_limits::Behaviour::with_max_bytes(MAX_MEMORY_BYTES),
        hypha,
        identify,
        ping: ping::Behaviour::default(),
        kad,
        relay_client,
        relay: options
            .relay_server
            .then(|| relay::Behaviour::new(peer_id, relay::Config::default()))
            .into(),
        dcutr: dcutr::Behaviour::new(peer_id),
        autonat: options
            .autonat
            .then(|| autonat::Behaviour::new(peer_id, autonat::Config::default()))
            .into(),
        mdns: mdns.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hardened connection and memory limits (issue 7). `ConnectionLimits` shows its values
    /// only through Debug.
    #[test]
    fn connection_and_memory_limits() {
        let limits = format!("{:?}", connection_limits());
        for expected in [
            "max_pending_incoming: Some(64)",
            "max_pending_outgoing: Some(64)",
            "max_established_incoming: Some(256)",
            "max_established_outgoing: None",
            "max_established_per_peer: Some(4)",
            "max_established_total: Some(512)",
        ] {
            assert!(limits.contains(expected), "{expected} in {limits}");
        }
        assert_eq!(MAX_MEMORY_BYTES, 1 << 30);
        assert_eq!(IDLE_TIMEOUT, Duration::from_secs(120));
    }
}
