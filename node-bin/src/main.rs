//! `hypha`: a Hypha node — the libp2p peer, the redb store, the HTTP API — and its client.
//!
//! ```text
//! hypha start [--rootdir DIR] [--url 127.0.0.1:9181] [--p2paddr /ip4/0.0.0.0/tcp/9171]...
//! hypha client <command>...
//! ```
//!
//! `hypha start` opens (or creates) the root directory: the peer key (`key`, generated on
//! first start), the store (`store.redb`) and `config.toml`. It then starts the Swarm
//! ([`net`]), the event loop ([`service`]) and the API ([`api`]), and runs until SIGTERM or
//! Ctrl-C. `hypha client` talks to a running node's API ([`client`]).

mod api;
mod car;
mod client;
mod identity;
mod logging;
mod metrics;
mod net;
mod service;
mod settings;

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use hypha_crdt::Author;
use hypha_protocols::connectivity::Reachability;
use hypha_protocols::swarm::Hypha;
use hypha_store::Store;
use libp2p::PeerId;
use tokio::sync::{broadcast, mpsc};

use crate::settings::{ForcedReachability, Settings, StartArgs};

/// The store's file in the root directory.
const STORE_FILE: &str = "store.redb";

/// Hypha: documents replicated peer to peer.
#[derive(Parser, Debug)]
#[command(name = "hypha", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a node.
    Start(Box<StartArgs>),
    /// Talk to a running node's API.
    Client(client::ClientArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Client(args) => client::run(args),
        Command::Start(args) => match start(*args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(target: "hypha.cli", { "Error" = %e }, "Node failed");
                eprintln!("Error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn start(args: StartArgs) -> Result<(), BoxError> {
    let settings = Settings::resolve(args)?;
    logging::init(settings.log_format, &settings.log)?;
    for warning in &settings.warnings {
        tracing::warn!(target: "hypha.cli", "{warning}");
    }
    std::fs::create_dir_all(&settings.rootdir)
        .map_err(|e| format!("root directory {}: {e}", settings.rootdir.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(settings))
}

async fn run(settings: Settings) -> Result<(), BoxError> {
    let (key, generated) = identity::load_or_generate(&settings.rootdir)?;
    let peer_id = key.public().to_peer_id();
    if generated {
        tracing::info!(target: "hypha.cli", { "PeerId" = %peer_id }, "Generated a new peer key");
    }
    let author = if settings.signing {
        Author::signing(hypha_crdt::SigningKey::from_bytes(&identity::secret(&key)))
    } else {
        Author::unsigned(peer_id_seed(&peer_id))
    };
    let store_path = settings.rootdir.join(STORE_FILE);
    let store = Store::open(&store_path, settings.store_config(author))
        .map_err(|e| format!("store {}: {e}", store_path.display()))?;
    let store = Arc::new(store);
    tracing::info!(target: "hypha.cli", { "Path" = %store_path.display() }, "Opened the store");

    let metrics = Arc::new(metrics::Metrics::default());
    let (changes, _) = broadcast::channel(service::CHANGE_FEED);
    let (requests_tx, requests_rx) = mpsc::channel(service::REQUEST_QUEUE);

    let mut service = None;
    if settings.p2p {
        let first = settings
            .p2p_addrs
            .first()
            .map(ToString::to_string)
            .unwrap_or_default();
        tracing::info!(target: "hypha.cli", { "P2P address" = %first }, "Starting P2P node");
        let mut swarm = net::build(
            key.clone(),
            hypha(&settings, Arc::clone(&store), &key)?,
            &net::StackOptions {
                network: settings.network.clone(),
                relay_server: settings.relay,
                autonat: settings.reachability.is_none(),
                mdns: settings.mdns,
            },
        )?;
        for address in &settings.p2p_addrs {
            swarm
                .listen_on(address.clone())
                .map_err(|e| format!("--p2paddr {address}: {e}"))?;
            #[cfg(feature = "quic")]
            if let Some(quic) = quic_twin(address)
                && let Err(e) = swarm.listen_on(quic.clone())
            {
                tracing::warn!(target: "hypha.net", { "Address" = %quic, "Error" = %e }, "No QUIC listener");
            }
        }
        let hypha = &mut swarm.behaviour_mut().hypha;
        if let Some(forced) = settings.reachability {
            let reachability = match forced {
                ForcedReachability::Public => Reachability::Public,
                ForcedReachability::Private => Reachability::Private,
            };
            hypha.handle_connectivity(|c, now| c.handle_reachability(reachability, now));
        }
        for (relay, address) in &settings.relay_addrs {
            let bytes = address.to_vec();
            hypha.handle_connectivity(|c, now| {
                c.add_relay(*relay, vec![bytes], now);
            });
        }
        for (peer, address) in settings.peers.iter().chain(&settings.relay_addrs) {
            swarm.behaviour_mut().kad.add_address(peer, address.clone());
        }
        let addresses: Vec<String> = settings.p2p_addrs.iter().map(ToString::to_string).collect();
        tracing::info!(target: "hypha.node", { "PeerId" = %peer_id, "Address" = ?addresses }, "Created LibP2P host");
        service = Some(service::Service::new(
            swarm,
            requests_rx,
            changes.clone(),
            Arc::clone(&metrics),
            settings.network.clone(),
            settings.relay || settings.reachability == Some(ForcedReachability::Public),
        ));
    } else {
        tracing::info!(target: "hypha.cli", "P2P is disabled (--no-p2p): the API and the store only");
    }

    let state = Arc::new(api::ApiState {
        store: Arc::clone(&store),
        node: service.is_some().then_some(requests_tx),
        changes,
        metrics,
        token: settings.api_token.clone(),
        namespace: settings.network.clone(),
        peer_id: settings.p2p.then_some(peer_id),
        replicators: tokio::sync::Mutex::new(()),
    });
    drop(store);
    let listener = tokio::net::TcpListener::bind(settings.url)
        .await
        .map_err(|e| format!("--url {}: {e}", settings.url))?;
    tracing::info!(target: "hypha.cli", { "Address" = %format!("http://{}/api/v0", listener.local_addr()?) }, "Providing HTTP API");
    let router = api::router(state, settings.max_body_bytes);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut api_stop = stop_rx.clone();
    let api = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = api_stop.wait_for(|stop| *stop).await;
            })
            .await
    });
    let signal = async move {
        shutdown_signal().await;
        tracing::info!(target: "hypha.cli", "Shutting down");
        let _ = stop_tx.send(true);
    };
    match service {
        Some(service) => {
            let mut loop_stop = stop_rx;
            let service = tokio::spawn(service.run(async move {
                let _ = loop_stop.wait_for(|stop| *stop).await;
            }));
            signal.await;
            service.await?;
        }
        None => signal.await,
    }
    api.await??;
    tracing::info!(target: "hypha.cli", "Stopped");
    Ok(())
}

/// The coordinator inside its libp2p behaviour, configured from the settings.
fn hypha(
    settings: &Settings,
    store: Arc<Store>,
    key: &libp2p::identity::Keypair,
) -> Result<Hypha, BoxError> {
    let seed = u64::from_le_bytes(peer_id_seed(&key.public().to_peer_id())[..8].try_into()?)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
    Ok(Hypha::new(settings.hypha_config(), store, key, seed))
}

/// 32 bytes that name this node as an unsigned author: the peer ID's hash.
fn peer_id_seed(peer: &PeerId) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(peer.to_bytes()).into()
}

/// `/ip4/x/tcp/p` → `/ip4/x/udp/p/quic-v1`: QUIC beside TCP on the same port.
#[cfg(feature = "quic")]
fn quic_twin(address: &libp2p::Multiaddr) -> Option<libp2p::Multiaddr> {
    use libp2p::multiaddr::Protocol;
    let mut out = libp2p::Multiaddr::empty();
    let mut tcp = false;
    for segment in address.iter() {
        match segment {
            Protocol::Tcp(port) => {
                out.push(Protocol::Udp(port));
                out.push(Protocol::QuicV1);
                tcp = true;
            }
            Protocol::P2p(_) => {}
            other if !tcp => out.push(other),
            _ => return None,
        }
    }
    tcp.then_some(out)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("the runtime can watch signals");
        tokio::select! {
            biased;
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
