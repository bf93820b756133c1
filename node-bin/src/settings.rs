//! `hypha start`'s settings: flags over `HYPHA_*` environment variables over
//! `<rootdir>/config.toml` over defaults.
//!
//! Every flag has an environment variable (`--hot-docs` is `HYPHA_HOT_DOCS`) and a config-file
//! key of the same name (`hot-docs = 16`); clap applies flags over the environment, and
//! [`Settings::resolve`] fills what both left unset from the file. The on/off switches
//! (`--no-p2p`, `--relay`, …) only turn their behaviour on or off from its default: a switch set
//! in any of the three places is set. An unknown key in the file, or a value that does not
//! parse, is an error naming it — a typo never silently falls back to a default.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hypha_crdt::Author;
use hypha_protocols::swarm::HyphaConfig;
use hypha_protocols::{node, replicator};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use serde::Deserialize;

/// Where the API listens unless told otherwise (the seed's and DefraDB's port).
pub(crate) const DEFAULT_URL: &str = "127.0.0.1:9181";
/// Where the node listens for peers unless told otherwise (TCP, and QUIC on the same port).
pub(crate) const DEFAULT_P2P_ADDR: &str = "/ip4/0.0.0.0/tcp/9171";
/// The network namespace unless told otherwise: nodes of different networks never talk.
pub(crate) const DEFAULT_NETWORK: &str = "hypha";
/// Hot documents followed unless told otherwise (DESIGN §4).
pub(crate) const DEFAULT_HOT_DOCS: usize = 64;
/// The log filter unless told otherwise: Hypha at info, libp2p's chatter at warn (a lone node's
/// "no known peers" for Kademlia is not worth a line), and gossipsub off: it logs what peers do
/// wrong at WARN and ERROR, a line for each refused subscription request or bad signature, so a
/// peer could fill the disk with them. Hypha logs (and counts) the violations that matter
/// itself, and a ban bounds those.
pub(crate) const DEFAULT_LOG: &str = "info,libp2p_swarm=warn,libp2p_kad=error,libp2p_gossipsub=off";
/// The most bytes an API request body may have.
pub(crate) const DEFAULT_MAX_BODY_BYTES: usize = 64 << 20;

/// `hypha start` flags.
#[derive(clap::Args, Debug, Default, Clone)]
pub(crate) struct StartArgs {
    /// The node's directory: key, store and config.toml [default: ~/.hypha]
    #[arg(long, env = "HYPHA_ROOTDIR", value_name = "DIR")]
    pub(crate) rootdir: Option<PathBuf>,
    /// Where the HTTP API listens [default: 127.0.0.1:9181]
    #[arg(long, env = "HYPHA_URL", value_name = "HOST:PORT")]
    pub(crate) url: Option<String>,
    /// A peer-to-peer listen address; repeat for more (TCP, plus QUIC on the same UDP port)
    /// [default: /ip4/0.0.0.0/tcp/9171]
    #[arg(
        long,
        env = "HYPHA_P2PADDR",
        value_name = "MULTIADDR",
        value_delimiter = ','
    )]
    pub(crate) p2paddr: Vec<String>,
    /// Peers to stay connected to (multiaddrs ending in /p2p/PEER_ID)
    #[arg(
        long,
        env = "HYPHA_PEERS",
        value_name = "MULTIADDR",
        value_delimiter = ','
    )]
    pub(crate) peers: Vec<String>,
    /// Run without the peer-to-peer network (the API and the store only)
    #[arg(long, env = "HYPHA_NO_P2P")]
    pub(crate) no_p2p: bool,
    /// Turn passive replication (pubsub) off
    #[arg(long, env = "HYPHA_NO_PUBSUB")]
    pub(crate) no_pubsub: bool,
    /// Serve as a circuit relay for other peers
    #[arg(long, env = "HYPHA_RELAY")]
    pub(crate) relay: bool,
    /// A relay to reserve a slot on when this node is not reachable directly; repeatable
    #[arg(
        long,
        env = "HYPHA_RELAY_ADDR",
        value_name = "MULTIADDR",
        value_delimiter = ','
    )]
    pub(crate) relay_addr: Vec<String>,
    /// Do not discover peers on the local network with mDNS
    #[arg(long, env = "HYPHA_NO_MDNS")]
    pub(crate) no_mdns: bool,
    /// The network name: topics, DHT and protocol IDs are scoped to it [default: hypha]
    #[arg(long, env = "HYPHA_NETWORK", value_name = "NAME")]
    pub(crate) network: Option<String>,
    /// How many recently used documents to follow over pubsub (0: none) [default: 64]
    #[arg(long, env = "HYPHA_HOT_DOCS", value_name = "N")]
    pub(crate) hot_docs: Option<usize>,
    /// Do not sign the blocks this node writes
    #[arg(long, env = "HYPHA_NO_SIGNING")]
    pub(crate) no_signing: bool,
    /// Accept replicator pushes only from these peers (comma-separated peer IDs)
    #[arg(
        long,
        env = "HYPHA_REPLICATOR_SOURCES",
        value_name = "PEER",
        value_delimiter = ','
    )]
    pub(crate) replicator_sources: Vec<String>,
    /// Seconds between retries of a failed replicator push (comma-separated)
    /// [default: 30,60,120,…,1920]
    #[arg(
        long,
        env = "HYPHA_REPLICATOR_RETRY_INTERVALS",
        value_name = "SECS,..."
    )]
    pub(crate) replicator_retry_intervals: Option<String>,
    /// Seconds between anti-entropy rounds (head exchange with peers on what this node follows,
    /// replicator catch-up) [default: 60]
    #[arg(long, env = "HYPHA_ANTI_ENTROPY_INTERVAL", value_name = "SECS")]
    pub(crate) anti_entropy_interval: Option<u64>,
    /// Require `Authorization: Bearer TOKEN` on every API request
    #[arg(
        long,
        env = "HYPHA_API_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub(crate) api_token: Option<String>,
    /// Skip AutoNAT and take this reachability: `public` or `private` (private keeps relay
    /// reservations on the --relay-addr relays)
    #[arg(long, env = "HYPHA_REACHABILITY", value_name = "public|private")]
    pub(crate) reachability: Option<String>,
    /// Log format: `text` (the seed's shape) or `json`
    #[arg(long, env = "HYPHA_LOG_FORMAT", value_name = "FORMAT")]
    pub(crate) log_format: Option<String>,
    /// Log filter, RUST_LOG syntax (`info`, `hypha.net=debug,info`) [default: info]
    #[arg(long, env = "RUST_LOG", value_name = "FILTER")]
    pub(crate) log: Option<String>,
}

/// `<rootdir>/config.toml`: the flags' names as keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    url: Option<String>,
    p2paddr: Option<Vec<String>>,
    peers: Option<Vec<String>>,
    #[serde(default)]
    no_p2p: bool,
    #[serde(default)]
    no_pubsub: bool,
    #[serde(default)]
    relay: bool,
    relay_addr: Option<Vec<String>>,
    #[serde(default)]
    no_mdns: bool,
    network: Option<String>,
    hot_docs: Option<usize>,
    #[serde(default)]
    no_signing: bool,
    replicator_sources: Option<Vec<String>>,
    replicator_retry_intervals: Option<Vec<u64>>,
    anti_entropy_interval: Option<u64>,
    api_token: Option<String>,
    reachability: Option<String>,
    log_format: Option<String>,
    log: Option<String>,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogFormat {
    /// `timestamp, LEVEL, hypha.module, Message, {"key": value}` (the seed's shape).
    Text,
    /// One JSON object per line.
    Json,
}

/// A reachability the operator forces instead of asking AutoNAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ForcedReachability {
    /// Dialable directly: no relay reservations.
    Public,
    /// Not dialable directly: keep reservations on relays.
    Private,
}

/// The resolved settings of `hypha start`.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) rootdir: PathBuf,
    pub(crate) url: SocketAddr,
    pub(crate) p2p_addrs: Vec<Multiaddr>,
    pub(crate) peers: Vec<(PeerId, Multiaddr)>,
    pub(crate) p2p: bool,
    pub(crate) pubsub: bool,
    pub(crate) relay: bool,
    pub(crate) relay_addrs: Vec<(PeerId, Multiaddr)>,
    pub(crate) mdns: bool,
    pub(crate) network: String,
    pub(crate) hot_docs: usize,
    pub(crate) signing: bool,
    pub(crate) replicator_sources: Option<Vec<PeerId>>,
    pub(crate) retry_intervals: Option<Vec<Duration>>,
    pub(crate) anti_entropy: Option<Duration>,
    pub(crate) api_token: Option<String>,
    pub(crate) reachability: Option<ForcedReachability>,
    pub(crate) log_format: LogFormat,
    pub(crate) log: String,
    pub(crate) max_body_bytes: usize,
    /// Warnings to log once logging is up (rewritten addresses and such).
    pub(crate) warnings: Vec<String>,
}

/// A setting that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct SettingsError(String);

fn bad(what: impl Into<String>) -> SettingsError {
    SettingsError(what.into())
}

impl Settings {
    /// Resolves `args` (flags over environment) over `<rootdir>/config.toml` over defaults.
    pub(crate) fn resolve(args: StartArgs) -> Result<Settings, SettingsError> {
        let rootdir = match args.rootdir {
            Some(dir) => dir,
            None => default_rootdir()?,
        };
        let file = read_file_config(&rootdir)?;
        let mut warnings = Vec::new();

        let url = args.url.or(file.url).unwrap_or_else(|| DEFAULT_URL.into());
        let url = parse_url(&url)?;
        let p2paddr = non_empty(args.p2paddr)
            .or(file.p2paddr)
            .unwrap_or_else(|| vec![DEFAULT_P2P_ADDR.into()]);
        let p2p_addrs = p2paddr
            .iter()
            .map(|a| parse_multiaddr("--p2paddr", a))
            .collect::<Result<Vec<_>, _>>()?;
        let peers = non_empty(args.peers).or(file.peers).unwrap_or_default();
        let peers = peers
            .iter()
            .map(|a| peer_address("--peers", a, &mut warnings))
            .collect::<Result<Vec<_>, _>>()?;
        let relay_addrs = non_empty(args.relay_addr)
            .or(file.relay_addr)
            .unwrap_or_default()
            .iter()
            .map(|a| peer_address("--relay-addr", a, &mut warnings))
            .collect::<Result<Vec<_>, _>>()?;
        let network = args
            .network
            .or(file.network)
            .unwrap_or_else(|| DEFAULT_NETWORK.into());
        if network.is_empty()
            || !network
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err(bad(format!(
                "--network {network:?}: use letters, digits, '-', '_' or '.'"
            )));
        }
        let sources = non_empty(args.replicator_sources).or(file.replicator_sources);
        let replicator_sources = sources
            .map(|list| {
                list.iter()
                    .map(|s| {
                        s.trim().parse::<PeerId>().map_err(|e| {
                            bad(format!("--replicator-sources: {s:?} is not a peer ID: {e}"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let retry = match args.replicator_retry_intervals {
            Some(s) => Some(parse_intervals(&s)?),
            None => file
                .replicator_retry_intervals
                .map(|v| intervals(v.into_iter()))
                .transpose()?,
        };
        let reachability = match args.reachability.or(file.reachability).as_deref() {
            None | Some("auto") => None,
            Some("public") => Some(ForcedReachability::Public),
            Some("private") => Some(ForcedReachability::Private),
            Some(other) => {
                return Err(bad(format!(
                    "--reachability {other:?}: expected public, private or auto"
                )));
            }
        };
        let log_format = match args.log_format.or(file.log_format).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(bad(format!(
                    "--log-format {other:?}: expected text or json"
                )));
            }
        };
        let anti_entropy = match args.anti_entropy_interval.or(file.anti_entropy_interval) {
            Some(0) => return Err(bad("--anti-entropy-interval: at least 1 second")),
            other => other.map(Duration::from_secs),
        };
        Ok(Settings {
            anti_entropy,
            rootdir,
            url,
            p2p_addrs,
            peers,
            p2p: !(args.no_p2p || file.no_p2p),
            pubsub: !(args.no_pubsub || file.no_pubsub),
            relay: args.relay || file.relay,
            relay_addrs,
            mdns: !(args.no_mdns || file.no_mdns),
            network,
            hot_docs: args.hot_docs.or(file.hot_docs).unwrap_or(DEFAULT_HOT_DOCS),
            signing: !(args.no_signing || file.no_signing),
            replicator_sources,
            retry_intervals: retry,
            api_token: args.api_token.or(file.api_token).filter(|t| !t.is_empty()),
            reachability,
            log_format,
            log: args.log.or(file.log).unwrap_or_else(|| DEFAULT_LOG.into()),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            warnings,
        })
    }
}

impl Settings {
    /// The coordinator and its libp2p wrapper as the node runs them: the hardened defaults,
    /// which the tests assert, with what the settings change.
    pub(crate) fn hypha_config(&self) -> HyphaConfig {
        let mut replicator = replicator::Config::default();
        if let Some(intervals) = &self.retry_intervals {
            replicator = replicator.with_retry_intervals(intervals.clone());
        }
        if let Some(sources) = &self.replicator_sources {
            replicator = replicator.with_allowed_sources(Some(sources.iter().copied().collect()));
        }
        let peers = self
            .peers
            .iter()
            .map(|(peer, address)| (*peer, vec![address.to_vec()]))
            .collect();
        let config = node::Config::new(self.network.clone())
            .with_passive(self.pubsub)
            .with_hot_docs(self.hot_docs)
            .with_peers(peers)
            .with_replicator(replicator);
        let config = match self.anti_entropy {
            Some(interval) => config.with_anti_entropy(interval),
            None => config,
        };
        HyphaConfig::new(config)
    }

    /// The store's configuration, its local blocks made by `author`.
    pub(crate) fn store_config(&self, author: Author) -> hypha_store::Config {
        hypha_store::Config::new(author).with_namespace(self.network.clone())
    }
}

fn non_empty(v: Vec<String>) -> Option<Vec<String>> {
    (!v.is_empty()).then_some(v)
}

fn default_rootdir() -> Result<PathBuf, SettingsError> {
    match std::env::var_os("HOME") {
        Some(home) if !home.is_empty() => Ok(PathBuf::from(home).join(".hypha")),
        _ => Err(bad("HOME is not set: pass --rootdir")),
    }
}

fn read_file_config(rootdir: &Path) -> Result<FileConfig, SettingsError> {
    let path = rootdir.join("config.toml");
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).map_err(|e| bad(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileConfig::default()),
        Err(e) => Err(bad(format!("{}: {e}", path.display()))),
    }
}

/// `host:port` or `http://host:port`.
pub(crate) fn parse_url(s: &str) -> Result<SocketAddr, SettingsError> {
    let trimmed = s.trim_start_matches("http://").trim_end_matches('/');
    let trimmed = trimmed
        .strip_prefix("localhost:")
        .map_or_else(|| trimmed.to_string(), |port| format!("127.0.0.1:{port}"));
    trimmed.parse().map_err(|_| {
        bad(format!(
            "--url {s:?}: expected HOST:PORT, e.g. {DEFAULT_URL}"
        ))
    })
}

fn parse_multiaddr(flag: &str, s: &str) -> Result<Multiaddr, SettingsError> {
    s.trim()
        .parse()
        .map_err(|e| bad(format!("{flag} {s:?} is not a multiaddr: {e}")))
}

/// A peer's address ending in `/p2p/<peer ID>`, split into the ID and the dialable part.
/// An unspecified IP (`/ip4/0.0.0.0`, `/ip6/::`), as in the seed's examples, is dialed on
/// loopback, with a warning.
pub(crate) fn peer_address(
    flag: &str,
    s: &str,
    warnings: &mut Vec<String>,
) -> Result<(PeerId, Multiaddr), SettingsError> {
    let addr = parse_multiaddr(flag, s)?;
    split_peer_address(&addr, warnings).ok_or_else(|| {
        bad(format!(
            "{flag} {s:?} does not end in /p2p/<peer ID>: the node must know whom it dials"
        ))
    })
}

/// `addr` without its trailing `/p2p/<ID>` and the ID; `None` if it has none. Unspecified IPs
/// become loopback (with a warning pushed).
pub(crate) fn split_peer_address(
    addr: &Multiaddr,
    warnings: &mut Vec<String>,
) -> Option<(PeerId, Multiaddr)> {
    let mut addr = addr.clone();
    let Some(Protocol::P2p(peer)) = addr.pop() else {
        return None;
    };
    Some((peer, dialable(addr, warnings)))
}

/// `addr` with an unspecified IP replaced by loopback (libp2p-tcp refuses to dial 0.0.0.0).
pub(crate) fn dialable(addr: Multiaddr, warnings: &mut Vec<String>) -> Multiaddr {
    let mut changed = false;
    let out = addr
        .iter()
        .map(|p| match p {
            Protocol::Ip4(ip) if ip.is_unspecified() => {
                changed = true;
                Protocol::Ip4(Ipv4Addr::LOCALHOST)
            }
            Protocol::Ip6(ip) if ip.is_unspecified() => {
                changed = true;
                Protocol::Ip6(std::net::Ipv6Addr::LOCALHOST)
            }
            other => other,
        })
        .collect();
    if changed {
        warnings.push(format!(
            "{addr} names no host (unspecified IP); dialing it on loopback as {out}"
        ));
    }
    out
}

fn parse_intervals(s: &str) -> Result<Vec<Duration>, SettingsError> {
    let secs = s
        .split(',')
        .map(|p| {
            p.trim().parse::<u64>().map_err(|_| {
                bad(format!(
                    "--replicator-retry-intervals {s:?}: expected seconds separated by commas"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    intervals(secs.into_iter())
}

fn intervals(secs: impl Iterator<Item = u64>) -> Result<Vec<Duration>, SettingsError> {
    let v: Vec<Duration> = secs.map(Duration::from_secs).collect();
    if v.is_empty() || v.iter().any(Duration::is_zero) {
        return Err(bad(
            "--replicator-retry-intervals: give at least one interval, each at least 1 s",
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> StartArgs {
        StartArgs {
            rootdir: Some(tempfile::tempdir().unwrap().keep()),
            ..StartArgs::default()
        }
    }

    #[test]
    fn defaults() {
        let s = Settings::resolve(args()).unwrap();
        assert_eq!(s.url, DEFAULT_URL.parse().unwrap());
        assert_eq!(
            s.p2p_addrs,
            vec![DEFAULT_P2P_ADDR.parse::<Multiaddr>().unwrap()]
        );
        assert!(s.p2p && s.pubsub && s.mdns && s.signing && !s.relay);
        assert_eq!(s.hot_docs, DEFAULT_HOT_DOCS);
        assert_eq!(s.network, "hypha");
        assert_eq!(s.log_format, LogFormat::Text);
    }

    /// The hardened defaults (issue 7): what a node started with no flags runs with, read from
    /// the configurations `hypha start` builds.
    #[test]
    fn hardened_defaults() {
        use std::time::Duration;

        use hypha_crdt::block::{MAX_BLOCK_BYTES, MAX_LINKS};
        use hypha_protocols::swarm::DEFAULT_MAX_TOPICS_PER_PEER;
        use hypha_protocols::wire::DEFAULT_MAX_FRAME_BYTES;
        use libp2p::gossipsub::ValidationMode;

        let s = Settings::resolve(args()).unwrap();
        // The API: bound to loopback, bodies capped at 64 MiB.
        assert!(s.url.ip().is_loopback(), "{}", s.url);
        assert_eq!(s.max_body_bytes, 64 << 20);
        assert!(s.signing, "blocks are signed");
        // A peer can make the node log nothing per message of gossipsub's.
        assert!(s.log.contains("libp2p_gossipsub=off"), "{}", s.log);

        let h = s.hypha_config();
        // Message validation on: strict, signed, each message validated before it is forwarded.
        let g = h.gossipsub();
        assert!(g.validate_messages());
        assert!(matches!(g.validation_mode(), ValidationMode::Strict));
        assert_eq!(g.max_transmit_size(), 128 << 10);
        // Subscription caps: at most 10,000 topics per peer (only this network's are kept).
        assert_eq!(h.max_topics_per_peer(), DEFAULT_MAX_TOPICS_PER_PEER);
        assert_eq!(DEFAULT_MAX_TOPICS_PER_PEER, 10_000);
        // Frame and block caps; streams and send queues per connection and protocol.
        assert_eq!(MAX_BLOCK_BYTES, 1 << 20);
        assert_eq!(DEFAULT_MAX_FRAME_BYTES, MAX_BLOCK_BYTES + (64 << 10));
        let f = h.frames();
        assert_eq!(f.protocols().len(), 3);
        assert_eq!(f.max_frame_bytes(), DEFAULT_MAX_FRAME_BYTES);
        assert_eq!(f.max_queued_frames(), 1024);
        assert_eq!(f.max_queued_bytes(), 16 << 20);
        assert_eq!(f.max_inbound_streams(), 8);
        assert_eq!(f.idle_timeout(), Duration::from_secs(30));
        assert_eq!(h.max_queued_persists(), 1024);
        // Peer standing: 5 points (one per violation, halving every 10 minutes) ban for 15.
        let st = h.standing();
        assert_eq!(st.ban_at(), 5.0);
        assert_eq!(st.ban_for(), Duration::from_secs(900));
        assert_eq!(st.half_life(), Duration::from_secs(600));
        assert_eq!(st.max_peers(), 10_000);

        let n = h.node();
        assert!(n.passive());
        assert_eq!(n.hot_docs(), DEFAULT_HOT_DOCS);
        assert_eq!(n.max_inline_bytes(), 32 << 10);
        assert_eq!(n.max_persists(), 65_536);
        // DAG depth and links caps.
        assert_eq!(n.max_fetch_depth(), 100_000);
        assert_eq!(MAX_LINKS, 1024);
        // Pending caps: blocks waiting for unknown parents, per peer and in all, and for how
        // long; fetches of their parents per sender.
        assert_eq!(n.orphans(), (64, 1024, Duration::from_secs(600)));
        assert_eq!(n.max_orphan_fetches_per_peer(), 16);
        assert_eq!(n.fetch_queue(), (16, 1024, 16_384));
        let b = n.backfill();
        assert_eq!(b.max_blocks(), 100_000);
        assert_eq!(b.max_bytes(), 8 << 20);
        assert!(b.max_bytes() as usize <= f.max_queued_bytes());
        assert_eq!(b.max_walk(), 200_000);
        assert_eq!(b.max_in_flight(), 64);
        assert_eq!(b.max_frame_bytes(), DEFAULT_MAX_FRAME_BYTES);
        let hs = n.head_sync();
        assert_eq!(hs.max_sessions(), 64);
        assert_eq!(hs.max_collections(), 256);
        assert_eq!(hs.max_wanted(), 100_000);
        assert_eq!(hs.max_frame_bytes(), DEFAULT_MAX_FRAME_BYTES);
        // Per-source push quotas: anyone may push, within 64 MiB a minute and 16 unanswered.
        let r = n.replicator();
        assert!(r.allowed_sources().is_none());
        assert_eq!(r.quota(), (64 << 20, Duration::from_secs(60)));
        assert_eq!(r.max_inbound_per_source(), 16);
        assert_eq!(r.max_sources(), 4096);
        assert_eq!(r.max_frame_bytes(), DEFAULT_MAX_FRAME_BYTES);

        // The outbox cap, the merge's pending cap, and the store's write queue.
        let store = s.store_config(Author::unsigned([0; 32]));
        assert_eq!(store.max_outbox_per_peer(), 10_000);
        assert_eq!(store.limits().max_pending, 100_000);
        assert_eq!(store.limits().max_walk, 10_000);
        assert_eq!(store.max_batch(), 1024);
        assert_eq!(store.queue_capacity(), 4096);
    }

    #[test]
    fn file_under_flags() {
        let a = args();
        let dir = a.rootdir.clone().unwrap();
        std::fs::write(
            dir.join("config.toml"),
            "url = \"127.0.0.1:9999\"\nhot-docs = 3\nno-mdns = true\nreplicator-retry-intervals = [5, 10]\n",
        )
        .unwrap();
        let s = Settings::resolve(StartArgs {
            hot_docs: Some(7),
            ..a.clone()
        })
        .unwrap();
        assert_eq!(s.url.port(), 9999, "the file fills what flags leave unset");
        assert_eq!(s.hot_docs, 7, "a flag beats the file");
        assert!(!s.mdns);
        assert_eq!(
            s.retry_intervals,
            Some(vec![Duration::from_secs(5), Duration::from_secs(10)])
        );
    }

    #[test]
    fn unknown_key_in_file_is_an_error() {
        let a = args();
        let dir = a.rootdir.clone().unwrap();
        std::fs::write(dir.join("config.toml"), "hot_docs = 3\n").unwrap();
        let err = Settings::resolve(a).unwrap_err().to_string();
        assert!(
            err.contains("config.toml") && err.contains("hot_docs"),
            "{err}"
        );
    }

    #[test]
    fn seed_addresses_dial_loopback_with_a_warning() {
        let id = PeerId::random();
        let mut warnings = Vec::new();
        let (peer, addr) = peer_address(
            "--peers",
            &format!("/ip4/0.0.0.0/tcp/9171/p2p/{id}"),
            &mut warnings,
        )
        .unwrap();
        assert_eq!(peer, id);
        assert_eq!(
            addr,
            "/ip4/127.0.0.1/tcp/9171".parse::<Multiaddr>().unwrap()
        );
        assert_eq!(warnings.len(), 1);
        let err = peer_address("--peers", "/ip4/0.0.0.0/tcp/9171", &mut warnings).unwrap_err();
        assert!(err.to_string().contains("/p2p/"), "{err}");
    }

    #[test]
    fn bad_values_name_the_flag() {
        for (a, flag) in [
            (
                StartArgs {
                    url: Some("nope".into()),
                    ..args()
                },
                "--url",
            ),
            (
                StartArgs {
                    p2paddr: vec!["tcp".into()],
                    ..args()
                },
                "--p2paddr",
            ),
            (
                StartArgs {
                    replicator_retry_intervals: Some("1,x".into()),
                    ..args()
                },
                "--replicator-retry-intervals",
            ),
            (
                StartArgs {
                    replicator_sources: vec!["bob".into()],
                    ..args()
                },
                "--replicator-sources",
            ),
            (
                StartArgs {
                    network: Some("a b".into()),
                    ..args()
                },
                "--network",
            ),
            (
                StartArgs {
                    log_format: Some("xml".into()),
                    ..args()
                },
                "--log-format",
            ),
        ] {
            let err = Settings::resolve(a).unwrap_err().to_string();
            assert!(err.contains(flag), "{err}");
        }
    }
}
