//! `vgw doctor`: preflight checks of the gateway host and, with `--connection`, a walk through one
//! tunnel, each finding saying what is wrong and what to do next.
//!
//! The host checks read the machine the command runs on (run it on the gateway host, inside the
//! gateway's network namespace if it has one): the TUN device, IP forwarding, who holds UDP 500/4500,
//! the tunnel MTU against the uplink's, the clock, and the state directory's permissions. The
//! connection walk reads the daemon's `diagnostics` view of one connection: is the peer routable, did
//! any IKE packet arrive, how did the last exchange end (with the proposal diff), traffic-selector
//! drops, the routes into the tunnel, BGP. The exit status is 1 when any finding is a failure.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;
use clap::Args;
use serde::Serialize;
use serde_json::{Value, json};

use super::seg;
use crate::Ctx;

/// `vgw doctor` flags.
#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Walk through this connection's tunnel as well.
    #[arg(long, short = 'c')]
    pub connection: Option<String>,
    /// The daemon's state directory (its permissions are checked).
    #[arg(long, default_value = "/var/lib/vgw")]
    pub state_dir: PathBuf,
    /// The data plane's TUN device.
    #[arg(long, default_value = "vgw0")]
    pub tun_name: String,
    /// The TCP MSS clamp the daemon applies (`vgw serve --tcp-mss-clamp`).
    #[arg(long, default_value_t = 1350)]
    pub tcp_mss_clamp: u16,
    /// Skip the host checks (only the connection walk).
    #[arg(long)]
    pub skip_host: bool,
}

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Level {
    Ok,
    Info,
    Warn,
    Fail,
}

/// One finding: what was checked, what was found, and the next step.
#[derive(Debug, Serialize)]
struct Finding {
    check: &'static str,
    level: Level,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

#[derive(Default)]
struct Report(Vec<Finding>);

impl Report {
    fn add(&mut self, check: &'static str, level: Level, detail: String, next: Option<String>) {
        self.0.push(Finding {
            check,
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
    if !args.skip_host {
        host_checks(&mut report, &args, daemon.is_ok());
    }
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
            "verdict": verdict,
            "findings": serde_json::to_value(&report.0)?,
        }))?;
    } else {
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

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn host_checks(report: &mut Report, args: &DoctorArgs, daemon_up: bool) {
    // TUN.
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
    {
        Ok(_) => report.ok("tun", "/dev/net/tun opens read-write"),
        Err(e) => report.fail(
            "tun",
            format!("cannot open /dev/net/tun: {e}"),
            "load the tun module (modprobe tun), give the container /dev/net/tun, and run vgw serve as root",
        ),
    }
    // Forwarding.
    match read_trimmed("/proc/sys/net/ipv4/ip_forward").as_deref() {
        Some("1") => report.ok("ip-forwarding", "net.ipv4.ip_forward = 1"),
        Some(v) => report.fail(
            "ip-forwarding",
            format!(
                "net.ipv4.ip_forward = {v}: packets from the tunnels are not routed to the LAN"
            ),
            "sysctl -w net.ipv4.ip_forward=1 (and persist it in /etc/sysctl.d/)",
        ),
        None => report.warn(
            "ip-forwarding",
            "cannot read /proc/sys/net/ipv4/ip_forward",
            "check that /proc is mounted",
        ),
    }
    // UDP ports.
    for port in [500u16, 4500] {
        match udp_owner(port) {
            None if daemon_up => report.warn(
                "udp-ports",
                format!("nothing listens on UDP {port} although the daemon runs"),
                "the daemon probably runs with --dataplane off; restart it with --dataplane on",
            ),
            None => report.ok("udp-ports", format!("UDP {port} is free for vgw")),
            Some(owner) if owner.starts_with("vgw") => {
                report.ok("udp-ports", format!("UDP {port} is held by {owner}"))
            }
            Some(owner) => report.fail(
                "udp-ports",
                format!("UDP {port} is held by {owner}, not by vgw"),
                "stop the other IKE daemon (strongSwan, libreswan) on this host or namespace",
            ),
        }
    }
    // MTU and MSS.
    let tun_mtu = read_trimmed(&format!("/sys/class/net/{}/mtu", args.tun_name))
        .and_then(|m| m.parse::<u32>().ok());
    match tun_mtu {
        None if daemon_up => report.warn(
            "mtu",
            format!("no TUN device {} here", args.tun_name),
            "pass --tun-name as given to vgw serve, or run doctor in the gateway's namespace",
        ),
        None => report.info(
            "mtu",
            format!(
                "no TUN device {} yet (the daemon creates it)",
                args.tun_name
            ),
        ),
        Some(mtu) => {
            // ESP-in-UDP worst case: IPv4 20 + UDP 8 + ESP 8 + IV 16 + padding 17 + ICV 16.
            const OVERHEAD: u32 = 85;
            let uplink = uplink_mtu();
            match uplink {
                Some((name, up)) if mtu + OVERHEAD > up => report.warn(
                    "mtu",
                    format!("TUN MTU {mtu} + ESP-in-UDP overhead {OVERHEAD} = {} exceeds {name}'s MTU {up}: outer packets fragment", mtu + OVERHEAD),
                    format!("raise {name}'s MTU or lower the tunnel MTU to {}", up - OVERHEAD),
                ),
                Some((name, up)) => report.ok("mtu", format!("TUN MTU {mtu} fits {name}'s MTU {up} after ESP-in-UDP overhead")),
                None => report.info("mtu", format!("TUN MTU {mtu}; no uplink interface found to compare")),
            }
            let mss_max = mtu.saturating_sub(40);
            if u32::from(args.tcp_mss_clamp) > mss_max {
                report.warn(
                    "mss",
                    format!(
                        "TCP MSS clamp {} exceeds what the TUN MTU {mtu} carries ({mss_max})",
                        args.tcp_mss_clamp
                    ),
                    format!("vgw serve --tcp-mss-clamp {mss_max}"),
                );
            } else {
                report.ok(
                    "mss",
                    format!("TCP MSS clamped to {} (fits MTU {mtu})", args.tcp_mss_clamp),
                );
            }
        }
    }
    // Clock.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    const JAN_2025: u64 = 1_735_689_600;
    let db_mtime = std::fs::metadata(args.state_dir.join("state.db"))
        .ok()
        .map(|m| m.mtime().max(0) as u64);
    if now < JAN_2025 {
        report.fail(
            "clock",
            "the system clock is before 2025: certificates and logs will be wrong",
            "set the time (NTP: chrony or systemd-timesyncd)",
        );
    } else if db_mtime.is_some_and(|m| m > now + 60) {
        report.warn(
            "clock",
            "the state database was written in the future: the clock went backwards",
            "check NTP; timestamps in logs may be out of order",
        );
    } else {
        report.ok("clock", "the system clock is plausible");
    }
    // State directory.
    state_dir_check(report, &args.state_dir);
}

fn state_dir_check(report: &mut Report, dir: &Path) {
    let Ok(meta) = std::fs::metadata(dir) else {
        report.info(
            "state-dir",
            format!(
                "{} does not exist (the daemon never ran with it here)",
                dir.display()
            ),
        );
        return;
    };
    let mut problems = Vec::new();
    if meta.permissions().mode() & 0o077 != 0 {
        problems.push(format!(
            "{} is mode {:o}",
            dir.display(),
            meta.permissions().mode() & 0o777
        ));
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != euid {
        problems.push(format!(
            "{} belongs to uid {}, not to uid {euid}",
            dir.display(),
            meta.uid()
        ));
    }
    for name in ["state.db", "state.db-wal", "state.db-shm"] {
        if let Ok(m) = std::fs::metadata(dir.join(name))
            && m.permissions().mode() & 0o077 != 0
        {
            problems.push(format!(
                "{name} is mode {:o}",
                m.permissions().mode() & 0o777
            ));
        }
    }
    if problems.is_empty() {
        report.ok(
            "state-dir",
            format!("{} is private (0700, files 0600)", dir.display()),
        );
    } else {
        report.fail(
            "state-dir",
            format!(
                "the state directory holds secrets but is not private: {}",
                problems.join("; ")
            ),
            format!("chmod 700 {0} && chmod 600 {0}/state.db*", dir.display()),
        );
    }
}

/// The process holding UDP `port` (from /proc/net/udp{,6} and the sockets in /proc/*/fd), as
/// "name (pid N)"; "unknown process" when the socket's owner is not visible.
fn udp_owner(port: u16) -> Option<String> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(inode)) = (cols.get(1), cols.get(9)) else {
                continue;
            };
            let Some(hex_port) = local.rsplit(':').next() else {
                continue;
            };
            if u16::from_str_radix(hex_port, 16).ok() == Some(port) {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let procs = std::fs::read_dir("/proc").ok()?;
    for entry in procs.flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path())
                && inodes.iter().any(|i| target.as_os_str() == i.as_str())
            {
                let comm = read_trimmed(&format!("/proc/{pid}/comm")).unwrap_or_default();
                return Some(format!("{comm} (pid {pid})"));
            }
        }
    }
    Some("an unknown process".to_string())
}

/// The largest MTU among the non-loopback, non-TUN interfaces that are up.
fn uplink_mtu() -> Option<(String, u32)> {
    let mut best: Option<(String, u32)> = None;
    for entry in std::fs::read_dir("/sys/class/net").ok()?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let kind = read_trimmed(&path.join("type").to_string_lossy()).unwrap_or_default();
        let up = read_trimmed(&path.join("operstate").to_string_lossy()).unwrap_or_default();
        // type 1 is Ethernet (veth included); loopback is 772, TUN 65534.
        if kind != "1" || up == "down" {
            continue;
        }
        if let Some(mtu) =
            read_trimmed(&path.join("mtu").to_string_lossy()).and_then(|m| m.parse().ok())
            && best.as_ref().is_none_or(|(_, b)| mtu > *b)
        {
            best = Some((name, mtu));
        }
    }
    best
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
