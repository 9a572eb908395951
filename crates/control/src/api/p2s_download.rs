//! The client profile download: `vpn-client generate` / `show-url` return a time-limited signed URL, and
//! the daemon serves the package there over HTTPS, on the gateway's address, with the gateway's server
//! certificate (where clients reach the gateway anyway).
//!
//! URLs: `https://<public address>:<port>/vpnclient/<serial>/<expiry>/<signature>/<gateway>.zip` for the
//! gateway-wide package (IKEv2 profiles and roots, no WireGuard key at all) and
//! `…/<gateway>/<peer>.zip` for one WireGuard peer's package (its own key only). The serial numbers URLs
//! in issue order, the expiry is Unix seconds (one hour ahead, like Azure's SAS URL) and the signature
//! an HMAC-SHA256 over serial, gateway, peer and expiry with a key the daemon draws at start (so URLs
//! die with the daemon).
//!
//! Revocation (`vpn-client revoke-url`): one URL (its serial is remembered until it would have
//! expired), every URL of one peer, or every URL issued so far (a serial floor). A peer removed from
//! `wireGuardPeers` loses its URLs at once, for good: re-adding the name does not revive them. A
//! revoked URL answers 403.
//!
//! The package is built when it is downloaded, from the live configuration, so profiles always match
//! the gateway's current proposals, routes and roots. Decision: the listener binds the wildcard address
//! on the port (default 8443), because the public address may change with the desired state; the TLS
//! certificate names the public address.
//!
//! The port faces the internet, so every connection is bounded: a cap on connections in all and per
//! source address (beyond it a connection is closed at once), a deadline for the TLS handshake and one
//! for the request headers, one request per connection (no keep-alive), a deadline for the whole
//! connection, small header limits, and no request body is ever read. The TLS configuration is built
//! once and rebuilt only when the certificate or key file changes.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::controller::Controller;

/// How long a URL stays valid.
pub const URL_LIFETIME: Duration = Duration::from_secs(3600);

/// Bounds on the download listener (`vgw serve --p2s-download-*`).
#[derive(Clone, Debug)]
pub struct DownloadLimits {
    /// Deadline for the TLS handshake, and again for the request headers.
    pub handshake_timeout: Duration,
    /// Deadline for a whole connection, handshake to last byte.
    pub connection_timeout: Duration,
    /// Connections open at once; beyond it a new one is closed at once.
    pub max_connections: usize,
    /// Connections open at once from one source address.
    pub max_per_source: usize,
}

impl Default for DownloadLimits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            connection_timeout: Duration::from_secs(60),
            max_connections: 256,
            max_per_source: 16,
        }
    }
}

/// What a download URL names (parsed from its path).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ticket {
    /// Issue order.
    pub serial: u64,
    /// Unix seconds.
    pub expiry: u64,
    /// Hex HMAC.
    pub signature: String,
    /// The gateway.
    pub gateway: String,
    /// The WireGuard peer, for a per-user package.
    pub peer: Option<String>,
}

impl Ticket {
    /// The ticket in a URL or in its path (`…/vpnclient/<serial>/<expiry>/<sig>/<gw>[/<peer>].zip`).
    pub fn parse(url: &str) -> Option<Self> {
        let path = &url[url.find("/vpnclient/")? + "/vpnclient/".len()..];
        let path = path.split(['?', '#']).next()?;
        let parts: Vec<&str> = path.split('/').collect();
        let (serial, expiry, signature) = (parts.first()?, parts.get(1)?, parts.get(2)?);
        let (gateway, peer) = match parts.len() {
            4 => (parts[3].strip_suffix(".zip")?, None),
            5 => (parts[3], Some(parts[4].strip_suffix(".zip")?.to_string())),
            _ => return None,
        };
        if gateway.is_empty() || peer.as_deref() == Some("") {
            return None;
        }
        Some(Self {
            serial: serial.parse().ok()?,
            expiry: expiry.parse().ok()?,
            signature: signature.to_string(),
            gateway: gateway.to_string(),
            peer,
        })
    }
}

/// Why a ticket is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not signed by this daemon (tampered, or from before a restart).
    BadSignature,
    /// Past its expiry.
    Expired,
    /// Revoked by `vpn-client revoke-url` or by removing its peer.
    Revoked,
}

impl Refusal {
    /// What the downloader is told.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::BadSignature | Refusal::Expired => {
                "this link is invalid or has expired; ask for a new one with 'vgw vnet-gateway vpn-client generate'"
            }
            Refusal::Revoked => {
                "this link has been revoked; ask the gateway's operator for a new one"
            }
        }
    }
}

#[derive(Default)]
struct Revocations {
    /// Revoked serials and their expiry (dropped once expired).
    urls: HashMap<u64, u64>,
    /// Per peer: URLs with a lower serial are revoked.
    peer_floor: HashMap<String, u64>,
    /// URLs with a lower serial are revoked.
    floor: u64,
    /// The peers last seen in the configuration (to revoke the URLs of one removed).
    known_peers: BTreeSet<String>,
}

/// TLS configuration cache: the files' (modification time, length) it was built from.
type TlsCache = Option<(Vec<(SystemTime, u64)>, Arc<rustls::ServerConfig>)>;

/// Signs, checks and revokes download URLs; knows where the server credentials are.
pub struct Downloads {
    key: aws_lc_rs::hmac::Key,
    /// The HTTPS port.
    pub port: u16,
    /// The point-to-site credentials directory.
    pub dir: PathBuf,
    /// Listener bounds.
    pub limits: DownloadLimits,
    next_serial: AtomicU64,
    revoked: Mutex<Revocations>,
    tls: Mutex<TlsCache>,
    /// Connections closed at once because a cap was reached.
    pub refused_connections: AtomicU64,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(u64::MAX)
}

impl Downloads {
    /// A signer with a fresh random key and the default limits.
    pub fn new(port: u16, dir: PathBuf) -> Self {
        Self::with_limits(port, dir, DownloadLimits::default())
    }

    /// A signer with a fresh random key.
    pub fn with_limits(port: u16, dir: PathBuf, limits: DownloadLimits) -> Self {
        let mut secret = [0u8; 32];
        let _ = aws_lc_rs::rand::fill(&mut secret);
        Self {
            key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret),
            port,
            dir,
            limits,
            next_serial: AtomicU64::new(1),
            revoked: Mutex::new(Revocations::default()),
            tls: Mutex::new(None),
            refused_connections: AtomicU64::new(0),
        }
    }

    fn signature(&self, serial: u64, gateway: &str, peer: Option<&str>, expiry: u64) -> String {
        let msg = format!("{serial}\n{gateway}\n{}\n{expiry}", peer.unwrap_or(""));
        let tag = aws_lc_rs::hmac::sign(&self.key, msg.as_bytes());
        tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A new URL for `gateway` (and `peer`'s own package when given) at `host`, valid for
    /// [`URL_LIFETIME`].
    pub fn url(&self, gateway: &str, peer: Option<&str>, host: &str) -> (String, u64) {
        let expiry = now_secs().saturating_add(URL_LIFETIME.as_secs());
        let serial = self.next_serial.fetch_add(1, Ordering::Relaxed);
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let file = match peer {
            Some(p) => format!("{gateway}/{p}.zip"),
            None => format!("{gateway}.zip"),
        };
        (
            format!(
                "https://{host}:{}/vpnclient/{serial}/{expiry}/{}/{file}",
                self.port,
                self.signature(serial, gateway, peer, expiry)
            ),
            expiry,
        )
    }

    fn signed(&self, t: &Ticket) -> bool {
        let expected = self.signature(t.serial, &t.gateway, t.peer.as_deref(), t.expiry);
        expected.len() == t.signature.len()
            && expected
                .bytes()
                .zip(t.signature.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    /// Whether a presented ticket is valid now (constant-time signature comparison).
    pub fn verify(&self, t: &Ticket) -> Result<(), Refusal> {
        if !self.signed(t) {
            return Err(Refusal::BadSignature);
        }
        if t.expiry < now_secs() {
            return Err(Refusal::Expired);
        }
        let r = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
        let peer_floor = t
            .peer
            .as_ref()
            .and_then(|p| r.peer_floor.get(p))
            .copied()
            .unwrap_or(0);
        if t.serial < r.floor || t.serial < peer_floor || r.urls.contains_key(&t.serial) {
            return Err(Refusal::Revoked);
        }
        Ok(())
    }

    /// Revokes one URL this daemon issued; refuses anything else.
    pub fn revoke_url(&self, url: &str) -> Result<Ticket, String> {
        let t = Ticket::parse(url).ok_or(
            "not a package URL (https://<address>:<port>/vpnclient/<serial>/<expiry>/<signature>/...zip)",
        )?;
        if !self.signed(&t) {
            return Err(
                "this URL was not issued by this daemon (or was issued before it restarted, and is dead already)"
                    .into(),
            );
        }
        let now = now_secs();
        let mut r = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
        r.urls.retain(|_, expiry| *expiry >= now);
        if t.expiry >= now {
            r.urls.insert(t.serial, t.expiry);
        }
        Ok(t)
    }

    /// Revokes every URL of `peer`'s package issued so far.
    pub fn revoke_peer(&self, peer: &str) {
        let floor = self.next_serial.load(Ordering::Relaxed);
        let mut r = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
        r.peer_floor.insert(peer.to_string(), floor);
    }

    /// Revokes every URL issued so far.
    pub fn revoke_all(&self) {
        let floor = self.next_serial.load(Ordering::Relaxed);
        let mut r = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
        r.floor = floor;
        r.urls.clear();
    }

    /// Takes note of the configured WireGuard peers: one that disappeared loses its URLs.
    pub fn observe_peers(&self, peers: &[String]) {
        let now: BTreeSet<String> = peers.iter().cloned().collect();
        let floor = self.next_serial.load(Ordering::Relaxed);
        let mut r = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
        let gone: Vec<String> = r.known_peers.difference(&now).cloned().collect();
        for p in gone {
            r.peer_floor.insert(p, floor);
        }
        r.known_peers = now;
    }

    /// The TLS configuration, rebuilt only when `server.crt.pem` or `server.key.pem` changed.
    fn tls_config(&self) -> Result<Arc<rustls::ServerConfig>, String> {
        let stamp: Vec<(SystemTime, u64)> = ["server.crt.pem", "server.key.pem"]
            .iter()
            .map(|n| {
                std::fs::metadata(self.dir.join(n))
                    .map(|m| (m.modified().unwrap_or(UNIX_EPOCH), m.len()))
                    .map_err(|e| format!("cannot read {}: {e}", self.dir.join(n).display()))
            })
            .collect::<Result<_, _>>()?;
        let mut cache = self.tls.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((s, config)) = cache.as_ref()
            && *s == stamp
        {
            return Ok(config.clone());
        }
        let config = tls_config(&self.dir)?;
        *cache = Some((stamp, config.clone()));
        Ok(config)
    }
}

#[derive(Clone)]
struct DownloadState {
    controller: Arc<Controller>,
    downloads: Arc<Downloads>,
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, message.to_string()).into_response()
}

async fn gateway_package(
    State(st): State<DownloadState>,
    Path((serial, expiry, signature, file)): Path<(String, String, String, String)>,
) -> Response {
    let path = format!("/vpnclient/{serial}/{expiry}/{signature}/{file}");
    package(st, &path).await
}

async fn peer_package(
    State(st): State<DownloadState>,
    Path((serial, expiry, signature, gateway, file)): Path<(
        String,
        String,
        String,
        String,
        String,
    )>,
) -> Response {
    let path = format!("/vpnclient/{serial}/{expiry}/{signature}/{gateway}/{file}");
    package(st, &path).await
}

async fn package(st: DownloadState, path: &str) -> Response {
    let Some(ticket) = Ticket::parse(path) else {
        return refuse(StatusCode::NOT_FOUND, "not found");
    };
    if let Err(why) = st.downloads.verify(&ticket) {
        return refuse(StatusCode::FORBIDDEN, why.message());
    }
    let (state, _) = st.controller.snapshot().await;
    if let Some(peer) = &ticket.peer {
        let listed = state
            .gateway
            .as_ref()
            .and_then(|g| g.vpn_client_configuration.as_ref())
            .is_some_and(|p| p.wire_guard_peers.iter().any(|n| n == peer));
        if !listed {
            // The peer was removed (and perhaps added again later): its URLs are dead for good.
            st.downloads.revoke_peer(peer);
            return refuse(StatusCode::FORBIDDEN, Refusal::Revoked.message());
        }
    }
    let package = crate::plan::p2s::profile_input(
        &state,
        &st.downloads.dir,
        st.controller.instance(),
        ticket.peer.as_deref(),
    )
    .and_then(|input| vgw_pki::profiles::build_profile(&input).map_err(|e| e.to_string()));
    let name = match &ticket.peer {
        Some(p) => format!("{}-{p}.zip", ticket.gateway),
        None => format!("{}.zip", ticket.gateway),
    };
    match package {
        Ok(p) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/zip".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{name}\""),
                ),
            ],
            p.zip,
        )
            .into_response(),
        Err(e) => (StatusCode::CONFLICT, e).into_response(),
    }
}

fn tls_config(dir: &std::path::Path) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .map_err(|e| format!("cannot read {}: {e}", dir.join(name).display()))
    };
    let chain: Vec<CertificateDer<'static>> =
        crate::plan::p2s::pem_blocks(&read("server.crt.pem")?, "CERTIFICATE")
            .into_iter()
            .map(CertificateDer::from)
            .collect();
    let key = crate::plan::p2s::pem_blocks(&read("server.key.pem")?, "PRIVATE KEY")
        .pop()
        .ok_or("server.key.pem holds no PKCS#8 key")?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(chain, PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)))
    .map_err(|e| e.to_string())?;
    Ok(Arc::new(config))
}

/// Counts open connections, in all and per source; a slot is given back when dropped.
struct Slots {
    total: AtomicUsize,
    per_source: Mutex<HashMap<IpAddr, usize>>,
}

struct Slot {
    slots: Arc<Slots>,
    source: IpAddr,
}

impl Slots {
    fn take(self: &Arc<Self>, source: IpAddr, limits: &DownloadLimits) -> Option<Slot> {
        let mut map = self.per_source.lock().unwrap_or_else(|p| p.into_inner());
        if self.total.load(Ordering::Relaxed) >= limits.max_connections {
            return None;
        }
        let n = map.entry(source).or_insert(0);
        if *n >= limits.max_per_source {
            return None;
        }
        *n += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Some(Slot {
            slots: self.clone(),
            source,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self
            .slots
            .per_source
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.source);
            }
        }
        self.slots.total.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Keeps the per-peer revocations in step with the configuration (a removed peer's URLs die).
async fn watch_peers(controller: Arc<Controller>, downloads: Arc<Downloads>) {
    let mut generation = controller.subscribe();
    loop {
        let (state, _) = controller.snapshot().await;
        let peers = state
            .gateway
            .as_ref()
            .and_then(|g| g.vpn_client_configuration.as_ref())
            .map(|p| p.wire_guard_peers.clone())
            .unwrap_or_default();
        downloads.observe_peers(&peers);
        if generation.changed().await.is_err() {
            return;
        }
    }
}

/// Serves the packages on `0.0.0.0:<port>` over TLS until the task is dropped.
pub async fn serve(controller: Arc<Controller>, downloads: Arc<Downloads>) -> Result<(), String> {
    let addr = SocketAddr::from(([0, 0, 0, 0], downloads.port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen for profile downloads on {addr}: {e}"))?;
    tokio::spawn(watch_peers(controller.clone(), downloads.clone()));
    let app = Router::new()
        .route(
            "/vpnclient/{serial}/{expiry}/{signature}/{file}",
            get(gateway_package),
        )
        .route(
            "/vpnclient/{serial}/{expiry}/{signature}/{gateway}/{file}",
            get(peer_package),
        )
        .with_state(DownloadState {
            controller,
            downloads: downloads.clone(),
        });
    let slots = Arc::new(Slots {
        total: AtomicUsize::new(0),
        per_source: Mutex::new(HashMap::new()),
    });
    let limits = downloads.limits.clone();
    let mut last_warning: Option<Instant> = None;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors or the like: back off instead of spinning.
                tracing::warn!(error = %e, "profile download: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(slot) = slots.take(peer.ip(), &limits) else {
            drop(stream);
            let n = downloads
                .refused_connections
                .fetch_add(1, Ordering::Relaxed)
                + 1;
            if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                last_warning = Some(Instant::now());
                tracing::warn!(
                    refused_total = n,
                    max_connections = limits.max_connections,
                    max_per_source = limits.max_per_source,
                    "profile download: connection cap reached; new connections are closed"
                );
            }
            continue;
        };
        let config = match downloads.tls_config() {
            Ok(c) => c,
            // The credentials appear when point-to-site is configured.
            Err(_) => continue,
        };
        let app = app.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _ = tokio::time::timeout(limits.connection_timeout, async {
                let acceptor = tokio_rustls::TlsAcceptor::from(config);
                let Ok(Ok(tls)) =
                    tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream)).await
                else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(limits.handshake_timeout)
                    .keep_alive(false)
                    .max_buf_size(16 * 1024)
                    .max_headers(32)
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            })
            .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(url: &str) -> Ticket {
        Ticket::parse(url).unwrap()
    }

    #[test]
    fn signed_urls_verify_and_tampering_fails() {
        let d = Downloads::new(8443, PathBuf::from("/nonexistent"));
        let (url, expiry) = d.url("hub-gw", None, "198.18.0.2");
        assert!(url.starts_with("https://198.18.0.2:8443/vpnclient/1/"));
        let t = ticket(&url);
        assert_eq!(t.expiry, expiry);
        assert_eq!(t.peer, None);
        assert_eq!(d.verify(&t), Ok(()));
        let other = Ticket {
            gateway: "other-gw".into(),
            ..t.clone()
        };
        assert_eq!(d.verify(&other), Err(Refusal::BadSignature));
        let later = Ticket {
            expiry: expiry + 1,
            ..t.clone()
        };
        assert_eq!(d.verify(&later), Err(Refusal::BadSignature));
        // A gateway URL is not a peer's, nor the other way round.
        let as_peer = Ticket {
            peer: Some("alice".into()),
            ..t.clone()
        };
        assert_eq!(d.verify(&as_peer), Err(Refusal::BadSignature));
        let expired = Ticket {
            expiry: 1,
            signature: d.signature(t.serial, "hub-gw", None, 1),
            ..t
        };
        assert_eq!(d.verify(&expired), Err(Refusal::Expired));
    }

    #[test]
    fn peer_urls_name_the_peer_and_are_bound_to_it() {
        let d = Downloads::new(8443, PathBuf::from("/nonexistent"));
        let (url, _) = d.url("hub-gw", Some("alice"), "2001:db8::1");
        assert!(url.starts_with("https://[2001:db8::1]:8443/vpnclient/"));
        assert!(url.ends_with("/hub-gw/alice.zip"), "{url}");
        let t = ticket(&url);
        assert_eq!(t.peer.as_deref(), Some("alice"));
        assert_eq!(d.verify(&t), Ok(()));
        let bob = Ticket {
            peer: Some("bob".into()),
            ..t
        };
        assert_eq!(d.verify(&bob), Err(Refusal::BadSignature));
    }

    #[test]
    fn urls_are_revoked_one_by_peer_or_all() {
        let d = Downloads::new(8443, PathBuf::from("/nonexistent"));
        let (a1, _) = d.url("gw", Some("alice"), "198.18.0.2");
        let (a2, _) = d.url("gw", Some("alice"), "198.18.0.2");
        let (b1, _) = d.url("gw", Some("bob"), "198.18.0.2");
        let (g1, _) = d.url("gw", None, "198.18.0.2");
        d.revoke_url(&a1).unwrap();
        assert_eq!(d.verify(&ticket(&a1)), Err(Refusal::Revoked));
        assert_eq!(d.verify(&ticket(&a2)), Ok(()));
        d.revoke_peer("alice");
        assert_eq!(d.verify(&ticket(&a2)), Err(Refusal::Revoked));
        assert_eq!(d.verify(&ticket(&b1)), Ok(()));
        // A URL issued after the revocation works.
        let (a3, _) = d.url("gw", Some("alice"), "198.18.0.2");
        assert_eq!(d.verify(&ticket(&a3)), Ok(()));
        d.revoke_all();
        for u in [&a3, &b1, &g1] {
            assert_eq!(d.verify(&ticket(u)), Err(Refusal::Revoked), "{u}");
        }
        let (g2, _) = d.url("gw", None, "198.18.0.2");
        assert_eq!(d.verify(&ticket(&g2)), Ok(()));
        // Only URLs this daemon signed can be revoked.
        assert!(
            d.revoke_url("https://x:8443/vpnclient/1/2/abcd/gw.zip")
                .is_err()
        );
        assert!(d.revoke_url("https://example.com/").is_err());
    }

    #[test]
    fn a_removed_peer_loses_its_urls_for_good() {
        let d = Downloads::new(8443, PathBuf::from("/nonexistent"));
        d.observe_peers(&["alice".into(), "bob".into()]);
        let (a, _) = d.url("gw", Some("alice"), "198.18.0.2");
        let (b, _) = d.url("gw", Some("bob"), "198.18.0.2");
        d.observe_peers(&["bob".into()]);
        d.observe_peers(&["alice".into(), "bob".into()]);
        assert_eq!(d.verify(&ticket(&a)), Err(Refusal::Revoked));
        assert_eq!(d.verify(&ticket(&b)), Ok(()));
    }

    #[test]
    fn malformed_paths_are_not_tickets() {
        for p in [
            "/vpnclient/",
            "/vpnclient/1/2/sig",
            "/vpnclient/x/2/sig/gw.zip",
            "/vpnclient/1/2/sig/gw",
            "/vpnclient/1/2/sig/gw/.zip",
            "/vpnclient/1/2/sig/a/b/c.zip",
            "/other/1/2/sig/gw.zip",
        ] {
            assert_eq!(Ticket::parse(p), None, "{p}");
        }
    }

    #[test]
    fn the_connection_caps_hold_in_all_and_per_source() {
        let limits = DownloadLimits {
            max_connections: 3,
            max_per_source: 2,
            ..DownloadLimits::default()
        };
        let slots = Arc::new(Slots {
            total: AtomicUsize::new(0),
            per_source: Mutex::new(HashMap::new()),
        });
        let a: IpAddr = "198.18.0.10".parse().unwrap();
        let b: IpAddr = "198.18.0.11".parse().unwrap();
        let a1 = slots.take(a, &limits).unwrap();
        let _a2 = slots.take(a, &limits).unwrap();
        assert!(slots.take(a, &limits).is_none(), "per source");
        let b1 = slots.take(b, &limits).unwrap();
        assert!(slots.take(b, &limits).is_none(), "in all");
        drop(b1);
        drop(a1);
        assert!(slots.take(a, &limits).is_some());
        assert_eq!(slots.per_source.lock().unwrap().len(), 1);
    }
}
