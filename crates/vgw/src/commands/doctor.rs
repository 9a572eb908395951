//! `vgw doctor`: preflight checks of the gateway host and, with `--connection`, a walk through one
//! tunnel, each finding saying what is wrong and what to do next.
//!
//! The host checks (the TUN device, IP forwarding, who holds UDP 500/4500, the tunnel MTU against the
//! uplink's, the clock, and the state directory's permissions) are run by the daemon on the gateway
//! host, in its network namespace (`GET /api/diagnostics/host`), so they describe the gateway wherever
//! the CLI runs; the output names the host checked. Only when the daemon does not answer does the CLI
//! check its own machine (a preflight before `vgw serve`), with `--state-dir`, `--tun-name` and
//! `--tcp-mss-clamp`. The
//! connection walk reads the daemon's `diagnostics` view of one connection: is the peer routable, did
//! any IKE packet arrive, how did the last exchange end (with the proposal diff), traffic-selector
//! drops, the routes into the tunnel, BGP. The exit status is 1 when any finding is a failure.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde::Serialize;
use serde_json::{Value, json};
use vgw_control::host_diag::{HostConfig, HostReport, Level};

use super::seg;
use crate::Ctx;

/// `vgw doctor` flags.
#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Walk through this connection's tunnel as well.
    #[arg(long, short = 'c')]
    pub connection: Option<String>,
    /// The state directory to check when the daemon does not answer (the daemon checks its own).
    #[arg(long, default_value = "/var/lib/vgw")]
    pub state_dir: PathBuf,
    /// The TUN device to check when the daemon does not answer (the daemon checks its own).
    #[arg(long, default_value = "vgw0")]
    pub tun_name: String,
    /// The TCP MSS clamp to check when the daemon does not answer (the daemon checks its own).
    #[arg(long, default_value_t = 1350)]
    pub tcp_mss_clamp: u16,
    /// Skip the host checks (only the connection walk).
    #[arg(long)]
    pub skip_host: bool,
}

/// One finding: what was checked, what was found, and the next step.
#[derive(Debug, Serialize)]
struct Finding {
    check: String,
    level: Level,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

#[derive(Default)]
struct Report(Vec<Finding>);

impl Report {
    fn add(
        &mut self,
        check: impl Into<String>,
        level: Level,
        detail: String,
        next: Option<String>,
    ) {
        self.0.push(Finding {
            check: check.into(),
            level,
            detail,
            next,
        });
    }
    fn ok(&mut self, check: &'static str, detail: impl Into<String>) {
        self.add(check, Level::Ok, detail.into(), None);
    }
    fn info(&mut self, check: &'static str, detail: impl Into<String>) {
        self.add(check, Level::Info, detail.into(), None);
    }
    fn warn(&mut self, check: &'static str, detail: impl Into<String>, next: impl Into<String>) {
        self.add(check, Level::Warn, detail.into(), Some(next.into()));
    }
    fn fail(&mut self, check: &'static str, detail: impl Into<String>, next: impl Into<String>) {
        self.add(check, Level::Fail, detail.into(), Some(next.into()));
    }
    fn worst(&self) -> Level {
        self.0
            .iter()
            .map(|f| f.level)
            .max_by_key(|l| *l as u8)
            .unwrap_or(Level::Ok)
    }
}

/// Runs the checks, prints the findings and returns an error (exit 1) when one failed.
pub async fn run(ctx: &Ctx, args: DoctorArgs) -> Result<()> {
    let mut report = Report::default();
    let daemon = ctx.client.get("/api/virtualNetworkGateways").await;
    let checked = if args.skip_host {
        None
    } else {
        Some(host_checks(ctx, &mut report, &args, daemon.is_ok()).await)
    };
    match (&daemon, &args.connection) {
        (Err(e), _) => report.fail(
            "daemon",
            format!("the vgw daemon does not answer: {e:#}"),
            "start it with 'vgw serve' (as root for the data plane), or point --api-socket at it",
        ),
        (Ok(_), None) => report.ok("daemon", "the vgw daemon answers"),
        (Ok(_), Some(name)) => {
            let diag = ctx
                .client
                .get(&format!("/api/connections/{}/diagnostics", seg(name)))
                .await?;
            connection_checks(&mut report, name, &diag);
        }
    }
    let worst = report.worst();
    let healthy = worst != Level::Fail && worst != Level::Warn;
    let subject = args
        .connection
        .as_deref()
        .map(|n| format!("vpn-connection {n}"))
        .unwrap_or_else(|| "host".to_string());
    let verdict = match worst {
        Level::Fail => format!("{subject}: NOT healthy — see the failures above"),
        Level::Warn => format!("{subject}: works, with warnings"),
        _ => format!("{subject}: healthy"),
    };
    if ctx.output.is_some() {
        ctx.print(&json!({
            "healthy": healthy,
            "hostChecked": checked,
            "verdict": verdict,
            "findings": serde_json::to_value(&report.0)?,
        }))?;
    } else {
        if let Some(checked) = &checked {
            println!("host checked: {checked}");
        }
        for f in &report.0 {
            let tag = match f.level {
                Level::Ok => "  ok  ",
                Level::Info => " info ",
                Level::Warn => " WARN ",
                Level::Fail => " FAIL ",
            };
            println!("[{tag}] {:<13} {}", f.check, f.detail);
            if let Some(next) = &f.next {
                println!("{:>23} next: {next}", "");
            }
        }
        println!("{verdict}");
    }
    if worst == Level::Fail {
        anyhow::bail!(
            "doctor found {} failure(s)",
            report.0.iter().filter(|f| f.level == Level::Fail).count()
        );
    }
    Ok(())
}

// ---- host ------------------------------------------------------------------------------------------

/// The host checks: the daemon's (`GET /api/diagnostics/host`), run on the gateway; when the daemon does
/// not answer, this machine's, with the flags given, labelled as such.
async fn host_checks(ctx: &Ctx, report: &mut Report, args: &DoctorArgs, daemon_up: bool) -> String {
    let host = if daemon_up {
        match ctx.client.get("/api/diagnostics/host").await {
            Ok(v) => serde_json::from_value::<HostReport>(v).map_err(anyhow::Error::from),
            Err(e) => Err(e),
        }
    } else {
        Err(anyhow::anyhow!("the daemon does not answer"))
    };
    let host = match host {
        Ok(h) => h,
        Err(e) => {
            if daemon_up {
                report.warn(
                    "host",
                    format!("the daemon did not run its host checks ({e:#}); checking this machine instead"),
                    "upgrade the daemon to this vgw version",
                );
            }
            vgw_control::host_diag::run_checks(
                &HostConfig {
                    state_dir: args.state_dir.clone(),
                    tun_name: Some(args.tun_name.clone()),
                    mss_clamp: args.tcp_mss_clamp,
                },
                false,
                "cli",
            )
        }
    };
    for f in host.findings {
        report.add(f.check, f.level, f.detail, f.next);
    }
    let id = &host.host;
    let ns = id.netns.as_deref().map_or_else(
        || format!("netns {}", id.netns_id),
        |n| format!("netns {n} ({})", id.netns_id),
    );
    match id.checked_by.as_str() {
        "daemon" => format!(
            "gateway host {}, {ns}, checked by the daemon (pid {})",
            id.hostname, id.pid
        ),
        _ => format!(
            "this machine {}, {ns} (the daemon does not answer; run doctor on the gateway host)",
            id.hostname
        ),
    }
}

// ---- one connection --------------------------------------------------------------------------------

fn connection_checks(report: &mut Report, name: &str, d: &Value) {
    let status = d["connectionStatus"].as_str().unwrap_or("Unknown");
    let reason = d["connectionStatusReason"].as_str();
    let message = d["lastError"]["message"].as_str().unwrap_or("");
    if d["dataplaneRunning"] != json!(true) {
        report.fail(
            "dataplane",
            "the daemon runs with --dataplane off: no tunnel can come up",
            "restart the daemon as root with --dataplane on",
        );
        return;
    }
    // Reachability of the peer (a routing lookup; connect() on UDP sends nothing).
    let peer: Option<IpAddr> = d["peerAddress"].as_str().and_then(|p| p.parse().ok());
    match peer {
        None => report.fail(
            "peer-address",
            format!(
                "the local gateway {} has no usable gatewayIpAddress",
                d["localGateway"]
            ),
            "set it with 'vgw local-gateway update --gateway-ip-address IP'",
        ),
        Some(ip) => {
            let bind: SocketAddr = match ip {
                IpAddr::V4(_) => "0.0.0.0:0".parse().expect("literal"),
                IpAddr::V6(_) => "[::]:0".parse().expect("literal"),
            };
            match UdpSocket::bind(bind).and_then(|s| {
                s.connect(SocketAddr::new(ip, 500))?;
                s.local_addr()
            }) {
                Ok(local) => report.ok(
                    "peer-route",
                    format!("{ip} is routable from here (source {})", local.ip()),
                ),
                Err(e) => report.fail(
                    "peer-route",
                    format!("no route to the peer {ip}: {e} — peer unreachable"),
                    "add a route (or a default gateway) towards the peer's public address",
                ),
            }
        }
    }
    // IKE traffic.
    let ike = &d["ike"];
    let received = ike["packetsReceived"].as_u64().unwrap_or(0);
    let sent = ike["packetsSent"].as_u64().unwrap_or(0);
    let responder_only = d["connectionMode"] == json!("ResponderOnly");
    if received == 0 && sent > 0 {
        report.fail(
            "ike-traffic",
            format!(
                "peer unreachable: no IKE packet has arrived from {} (we sent {sent}, the last at {})",
                ike["peer"].as_str().unwrap_or("the peer"),
                ike["lastSentUtc"].as_str().unwrap_or("?")
            ),
            "check that the peer is up, that it is configured with this gateway's address, and that UDP 500 and 4500 pass every firewall and NAT between",
        );
    } else if received == 0 && responder_only {
        report.warn(
            "ike-traffic",
            "no IKE packet has arrived yet; this connection is ResponderOnly and waits for the peer",
            "start the tunnel from the peer, or set --connection-mode Default",
        );
    } else if received == 0 {
        report.warn(
            "ike-traffic",
            "no IKE packet exchanged yet",
            "wait a few seconds and run doctor again",
        );
    } else {
        report.ok(
            "ike-traffic",
            format!(
                "{received} IKE packets received, {sent} sent; last received {}",
                ike["lastReceivedUtc"].as_str().unwrap_or("?")
            ),
        );
    }
    // The last exchange and its result.
    match (status, reason) {
        ("Connected", _) => report.ok(
            "ike-sa",
            format!("Connected with {} Child SA(s)", d["childSas"].as_u64().unwrap_or(0)),
        ),
        (_, Some("AUTHORIZATION_ERROR")) => report.fail(
            "ike-sa",
            format!("wrong PSK: authentication failed — {message}"),
            "set the same pre-shared key on both sides: 'vgw vpn-connection shared-key update --connection-name NAME --value KEY'",
        ),
        (_, Some("NEGOTIATION_FAILURE")) => report.fail(
            "ike-sa",
            format!("proposal mismatch: {message}"),
            "make the ipsecPolicies of this connection and the peer's proposals share one suite ('vgw vpn-connection ipsec-policy add ...')",
        ),
        (_, Some("TS_UNACCEPTABLE")) => report.fail(
            "ike-sa",
            format!(
                "TS mismatch: the traffic selectors were refused — {message}; ours are {} <-> {}",
                list(&d["localAddressSpace"]),
                list(&d["remoteAddressSpace"])
            ),
            "make the peer's local/remote subnets mirror this gateway's address space and the local gateway's prefixes (or set usePolicyBasedTrafficSelectors to match a policy-based peer)",
        ),
        (_, Some("PEER_IDENTITY_MISMATCH")) => report.fail(
            "ike-sa",
            format!("the peer presented another identity: {message}"),
            "make the peer use its public address as its IKE identity, or align the configured identity",
        ),
        (_, Some(r @ ("PEER_DEAD" | "NO_RESPONSE"))) => report.fail(
            "ike-sa",
            format!("peer unreachable ({r}): {message}"),
            "check the peer and the path (UDP 500/4500) between the sites",
        ),
        (_, Some("CONFIGURATION_ERROR")) => report.fail(
            "ike-sa",
            format!("the connection's configuration cannot be used: {message}"),
            "fix it with 'vgw vpn-connection update' (see the message)",
        ),
        (_, Some(r)) => report.fail(
            "ike-sa",
            format!("{status} ({r}): {message}"),
            "see 'vgw logs --category IKEDiagnosticLog --connection NAME' for the exchange",
        ),
        (s, None) => report.warn(
            "ike-sa",
            format!("{s}: negotiation has not finished"),
            "wait a few seconds and run doctor again; 'vgw logs --follow --connection NAME' shows progress",
        ),
    }
    let last = &d["lastError"];
    if !last.is_null() && status != "Connected" {
        report.info(
            "last-exchange",
            format!(
                "{} {} {}",
                last["exchange"].as_str().unwrap_or("?"),
                last["direction"].as_str().unwrap_or(""),
                last["notify"].as_str().unwrap_or("")
            ),
        );
        if reason == Some("NEGOTIATION_FAILURE") {
            report.info(
                "proposals",
                format!(
                    "peer offered {}; we accept {}",
                    proposals(&last["peerProposals"]),
                    proposals(&last["ourProposals"])
                ),
            );
        }
    }
    // Data plane counters.
    let dp = &d["dataplane"];
    let ts_in = dp["ingressPacketDropTSMismatch"].as_u64().unwrap_or(0);
    let ts_out = dp["egressPacketDropTSMismatch"].as_u64().unwrap_or(0);
    if ts_in + ts_out > 0 {
        report.warn(
            "ts-mismatch",
            format!("TS mismatch: {ts_in} inbound and {ts_out} outbound packets fell outside the negotiated traffic selectors"),
            "a host uses an address outside the configured prefixes: add its subnet to both sides' address spaces",
        );
    } else {
        report.ok(
            "ts-mismatch",
            "no packet dropped for falling outside the traffic selectors",
        );
    }
    if status == "Connected" {
        let (rx, tx) = (
            dp["ingressPackets"].as_u64().unwrap_or(0),
            dp["egressPackets"].as_u64().unwrap_or(0),
        );
        if tx > 20 && rx == 0 {
            report.warn(
                "traffic",
                format!("{tx} packets went into the tunnel and none came back"),
                "check the peer's routes back to this gateway's address space and its firewall",
            );
        } else {
            report.ok(
                "traffic",
                format!(
                    "{rx} packets ({} bytes) in, {tx} packets ({} bytes) out",
                    dp["ingressBytes"], dp["egressBytes"]
                ),
            );
        }
    }
    // Routes.
    let routes = list(&d["routes"]);
    if routes.is_empty() {
        report.fail(
            "routes",
            "no prefix routes into this tunnel",
            "add the site's prefixes to its local gateway ('--local-address-prefixes') or enable BGP",
        );
    } else {
        report.ok("routes", format!("routed into the tunnel: {routes}"));
    }
    // BGP.
    if d["enableBgp"] == json!(true) {
        let bgp = &d["bgp"];
        let neighbor = bgp["neighbor"].as_str().unwrap_or("the peer");
        match bgp["state"].as_str() {
            Some("Connected") => report.ok(
                "bgp",
                format!(
                    "BGP with {neighbor} is Connected: {} prefixes received, {} advertised",
                    bgp["routesReceived"], bgp["routesAdvertised"]
                ),
            ),
            Some("NotConfigured") => report.fail(
                "bgp",
                "enableBgp is set but no BGP session exists: the gateway or the local gateway lacks bgpSettings",
                "set --asn and --bgp-peering-address on both the vnet-gateway and the local gateway",
            ),
            Some(state) => report.fail(
                "bgp",
                format!(
                    "BGP with {neighbor} is {state}: {}",
                    bgp["lastError"].as_str().unwrap_or("no reason recorded yet")
                ),
                "check the peer's ASN and peering address, and that its BGP speaker runs; 'vgw logs --category RouteDiagnosticLog' has the session history",
            ),
            None => report.info("bgp", "BGP state unknown"),
        }
    } else {
        report.ok(
            "bgp",
            format!("BGP is off for {name}: static prefixes only"),
        );
    }
}

fn list(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

fn proposals(v: &Value) -> String {
    match v {
        Value::Array(a) if !a.is_empty() => a
            .iter()
            .map(|p| {
                p.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| p.to_string())
            })
            .collect::<Vec<_>>()
            .join(" | "),
        Value::String(s) => s.clone(),
        _ => "nothing".to_string(),
    }
}
