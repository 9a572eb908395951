//! Active-active: two vgw instances (two hosts) serving one vnet-gateway.
//!
//! Each instance runs its own data plane and engines with its own public address
//! (`ipConfigurations[instance]`) and BGP peering address (the instance's entry of
//! `bgpSettings.bgpPeeringAddress`, comma-separated as Azure shows it), so every connection has one
//! tunnel per instance. The instances talk over the *instance interconnect*: each one's TCP API, reached
//! on its LAN address with the shared bearer token. Through it an instance
//!
//! - **replicates the desired state** (`--replicate`): decision: one instance holds the configuration
//!   (the primary, where the operator writes) and the other pulls it — the "one exports, the other
//!   applies" model (the export document of `vgw export`, shared keys included, applied whole as
//!   `vgw apply` would), done continuously (every [`POLL_EVERY`], by digest). It keeps the two instances
//!   independent at run time (a replica keeps its tunnels and last state when the primary is gone; no
//!   quorum, nothing to elect among two), needs no extra engine (etcd needs three members to survive one
//!   loss, which two gateways do not have), and a write can never be half-applied on one side. A
//!   replica refuses writes with a message naming the primary;
//! - **reports its tunnels** to the other (`GET /api/instance`), which merges them into
//!   `tunnelConnectionStatus` (one entry per instance) and forwards `reset --gateway-vip`;
//! - **backs up the other's routes**: every prefix the other instance currently routes into one of
//!   *its own* tunnels is installed here as a kernel route via the other instance's LAN address with a
//!   worse metric ([`BACKUP_METRIC`]) than this instance's own tunnel routes. While this instance's
//!   tunnel for a prefix is up its own route wins; when it goes (dead-peer detection, BFD, BGP, a reset),
//!   the kernel falls back to the other instance at once, without waiting for any poll. Only prefixes
//!   reached through an instance's own tunnels are exported, never the backups, so two instances never
//!   point a prefix at each other for longer than one poll.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::controller::Controller;
use crate::ops::diaglog::{Category, DiagLog};
use crate::plan::Instance;
use crate::state::{DesiredState, StateDocument};
use crate::status::{ConnectionState, ConnectionStatus, StatusSource, TunnelStatus};

/// How often an instance polls the other.
pub const POLL_EVERY: Duration = Duration::from_millis(250);
/// How long the other's routes are kept as backups after it stopped answering.
const PEER_STALE_AFTER: Duration = Duration::from_secs(3);
/// Kernel route metric of the backups (own tunnel routes use the default, 0).
pub const BACKUP_METRIC: u32 = 1000;
/// Time limit of one interconnect request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// How to reach the other instance.
#[derive(Clone, Debug)]
pub struct PeerInstance {
    /// Its TCP API (`--api-listen` there), on the LAN between the instances.
    pub api: SocketAddr,
    /// The bearer token both instances share.
    pub token: String,
    /// Pull the desired state from it (this instance is the replica).
    pub replicate: bool,
}

/// What an instance tells the other: its own tunnels and the prefixes they carry.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceReport {
    /// Its instance index.
    pub instance: usize,
    /// Its public address.
    pub public_ip: Option<String>,
    /// Its tunnel of every connection, by connection name.
    pub tunnels: BTreeMap<String, TunnelStatus>,
    /// Prefixes it routes into its own tunnels now (static prefixes of connected tunnels, BGP routes).
    pub reachable: Vec<IpNet>,
    /// [`state_digest`] of its desired state, so a replica fetches only changes.
    pub state_digest: String,
}

/// The digest of a desired state as the replica sees it: SHA-256 of its export document with the
/// shared keys (`GET /api/desiredState?includeSecrets=true`), so a key change replicates too.
pub fn state_digest(state: &DesiredState) -> String {
    let text = state.to_document(true).to_string();
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The interconnect as the API sees it.
pub struct Ha {
    /// How to reach the other instance.
    pub peer: PeerInstance,
    /// This process's instance index.
    pub instance: Instance,
    /// Its last report and when it came.
    report: RwLock<Option<(Instant, InstanceReport)>>,
    /// Why the last poll failed, if it did.
    last_error: RwLock<Option<String>>,
}

impl Ha {
    /// The other instance's last report, if fresh.
    pub fn peer_report(&self) -> Option<InstanceReport> {
        let guard = self.report.read().unwrap_or_else(|p| p.into_inner());
        guard
            .as_ref()
            .filter(|(at, _)| at.elapsed() < PEER_STALE_AFTER)
            .map(|(_, r)| r.clone())
    }

    /// Why the other instance is not answering, if it is not.
    pub fn peer_error(&self) -> Option<String> {
        self.last_error
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Sends a POST to the other instance's API (used to forward `reset --gateway-vip`).
    pub async fn forward_post(&self, path: &str) -> Result<serde_json::Value, String> {
        request(&self.peer, "POST", path).await
    }
}

/// The status the API shows: this instance's tunnel plus the other's, one entry each.
pub struct MergedStatus {
    /// This instance's engines.
    pub local: Arc<dyn StatusSource>,
    /// The interconnect.
    pub ha: Arc<Ha>,
}

impl StatusSource for MergedStatus {
    fn connection_status(&self, name: &str) -> ConnectionStatus {
        let mut status = self.local.connection_status(name);
        let other = match self.ha.peer_report() {
            Some(report) => report
                .tunnels
                .get(name)
                .cloned()
                .map(|t| (report.instance, t)),
            None => Some((
                self.ha.instance.other().index(),
                TunnelStatus {
                    tunnel: format!(
                        "instance {} (not answering: {})",
                        self.ha.instance.other().index(),
                        self.ha
                            .peer_error()
                            .unwrap_or_else(|| "no report yet".into())
                    ),
                    connection_status: ConnectionState::Unknown,
                    ..Default::default()
                },
            )),
        };
        if let Some((index, tunnel)) = other {
            status.ingress_bytes_transferred += tunnel.ingress_bytes_transferred;
            status.egress_bytes_transferred += tunnel.egress_bytes_transferred;
            if tunnel.connection_status == ConnectionState::Connected {
                status.connection_status = ConnectionState::Connected;
                status.connection_status_reason = None;
            }
            if index < self.ha.instance.index() {
                status.tunnel_connection_status.insert(0, tunnel);
            } else {
                status.tunnel_connection_status.push(tunnel);
            }
        }
        status
    }
}

/// Builds this instance's report from its own (unmerged) status.
pub fn local_report(
    state: &DesiredState,
    local: &dyn StatusSource,
    reachable: Vec<IpNet>,
    instance: Instance,
) -> InstanceReport {
    InstanceReport {
        instance: instance.index(),
        public_ip: state
            .gateway
            .as_ref()
            .and_then(|gw| instance.public_ip(gw))
            .map(|a| a.to_string()),
        tunnels: state
            .connections
            .keys()
            .filter_map(|name| {
                let s = local.connection_status(name);
                s.tunnel_connection_status
                    .into_iter()
                    .next()
                    .map(|t| (name.clone(), t))
            })
            .collect(),
        reachable,
        state_digest: state_digest(state),
    }
}

/// Starts the interconnect task: polls the other instance, keeps the backup routes in step with what
/// it reaches, and (replica) applies its desired state.
pub fn spawn(peer: PeerInstance, controller: Arc<Controller>, log: Arc<DiagLog>) -> Arc<Ha> {
    if peer.replicate {
        controller.set_replica_of(peer.api.to_string());
    }
    let ha = Arc::new(Ha {
        peer,
        instance: controller.instance(),
        report: RwLock::new(None),
        last_error: RwLock::new(None),
    });
    let task = ha.clone();
    tokio::spawn(async move { run(task, controller, log).await });
    ha
}

async fn run(ha: Arc<Ha>, controller: Arc<Controller>, log: Arc<DiagLog>) {
    let routes = match vgw_dataplane::routes::KernelRoutes::new(0) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(error = %e, "no netlink: the other instance's routes are not backed up here");
            None
        }
    };
    let via = ha.peer.api.ip();
    let mut installed: BTreeSet<IpNet> = BTreeSet::new();
    let mut applied_digest = String::new();
    let mut last_ok = Instant::now();
    let mut was_answering = true;
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let wanted: BTreeSet<IpNet> = match request(&ha.peer, "GET", "/api/instance").await {
            Ok(value) => match serde_json::from_value::<InstanceReport>(value) {
                Ok(report) => {
                    last_ok = Instant::now();
                    if !was_answering {
                        was_answering = true;
                        log.log(
                            Category::GatewayDiagnosticLog,
                            "info",
                            "/vgw",
                            &format!("instance {} at {via} answers again", report.instance),
                            serde_json::Value::Null,
                        );
                    }
                    *ha.last_error.write().unwrap_or_else(|p| p.into_inner()) = None;
                    if ha.peer.replicate && report.state_digest != applied_digest {
                        match replicate(&ha.peer, &controller).await {
                            // The primary's digest, so an unchanged primary is not fetched again.
                            Ok(()) => applied_digest = report.state_digest.clone(),
                            Err(e) => {
                                tracing::warn!(error = %e, "replicating the desired state failed")
                            }
                        }
                    }
                    let wanted = report.reachable.iter().copied().collect();
                    *ha.report.write().unwrap_or_else(|p| p.into_inner()) =
                        Some((Instant::now(), report));
                    wanted
                }
                Err(e) => {
                    *ha.last_error.write().unwrap_or_else(|p| p.into_inner()) =
                        Some(format!("unreadable report from {via}: {e}"));
                    installed.clone()
                }
            },
            Err(e) => {
                if was_answering && last_ok.elapsed() >= PEER_STALE_AFTER {
                    was_answering = false;
                    log.log(
                        Category::GatewayDiagnosticLog,
                        "warning",
                        "/vgw",
                        &format!("the other instance at {via} does not answer: {e}; its routes are no longer backed up here"),
                        serde_json::Value::Null,
                    );
                }
                *ha.last_error.write().unwrap_or_else(|p| p.into_inner()) = Some(e);
                if last_ok.elapsed() < PEER_STALE_AFTER {
                    installed.clone()
                } else {
                    BTreeSet::new()
                }
            }
        };
        let Some(routes) = &routes else { continue };
        for prefix in wanted.difference(&installed) {
            if let Err(e) = routes.add_via(*prefix, via, BACKUP_METRIC).await {
                tracing::warn!(%prefix, error = %e, "cannot add the backup route via the other instance");
            }
        }
        for prefix in installed.difference(&wanted) {
            let _ = routes.remove_via(*prefix, via, BACKUP_METRIC).await;
        }
        installed = wanted;
    }
}

/// Fetches the primary's desired state (its export document, shared keys included: `vgw export`
/// then `vgw apply`, done continuously) and applies it whole.
async fn replicate(peer: &PeerInstance, controller: &Controller) -> Result<(), String> {
    let value = request(peer, "GET", "/api/desiredState?includeSecrets=true").await?;
    let document: StateDocument =
        serde_json::from_value(value).map_err(|e| format!("unreadable desired state: {e}"))?;
    let state = DesiredState::from_document(document)?;
    controller
        .replace(state)
        .await
        .map_err(|e| format!("the primary's desired state was refused here: {e}"))?;
    Ok(())
}

/// One HTTP/1.1 request to the other instance's API (hyper's client); returns the JSON body of a
/// 2xx answer.
async fn request(
    peer: &PeerInstance,
    method: &str,
    path: &str,
) -> Result<serde_json::Value, String> {
    use http_body_util::{BodyExt, Empty};
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(peer.api)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", peer.api))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, peer.api.to_string())
            .header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", peer.token),
            )
            .header(hyper::header::CONTENT_LENGTH, "0")
            .body(Empty::<axum::body::Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok::<_, String>((status, body))
    };
    let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("{} did not answer within {REQUEST_TIMEOUT:?}", peer.api))??;
    parse_response(status, &body)
}

/// The JSON of a response body; an error naming the status unless it is 2xx.
fn parse_response(status: u16, body: &[u8]) -> Result<serde_json::Value, String> {
    let value: serde_json::Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?
    };
    if !(200..300).contains(&status) {
        return Err(format!("HTTP {status}: {value}"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_parse_as_json_and_errors_name_the_status() {
        assert_eq!(parse_response(200, b"{\"a\":1}").unwrap(), json!({"a": 1}));
        assert_eq!(parse_response(204, b"").unwrap(), json!({}));
        assert!(parse_response(409, b"{}").unwrap_err().contains("409"));
        assert!(parse_response(200, b"{").is_err());
    }

    #[test]
    fn digest_follows_shared_keys_and_survives_the_export_round_trip() {
        let mut state = DesiredState::default();
        let c: crate::model::ConnectionSpec = serde_json::from_value(json!({
            "name": "c1", "localNetworkGateway2": "site", "sharedKey": "s3cret"
        }))
        .unwrap();
        state.connections.insert("c1".into(), c);
        state.normalise();
        let document: StateDocument = serde_json::from_value(state.to_document(true)).unwrap();
        let back = DesiredState::from_document(document).unwrap();
        assert_eq!(back.connections["c1"].shared_key.as_deref(), Some("s3cret"));
        assert_eq!(state_digest(&back), state_digest(&state));
        let mut rekeyed = state.clone();
        rekeyed.connections.get_mut("c1").unwrap().shared_key = Some("other".into());
        assert_ne!(state_digest(&rekeyed), state_digest(&state));
    }
}
