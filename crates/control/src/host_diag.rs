//! Host checks of the gateway (`GET /api/diagnostics/host`): run by the daemon, so `vgw doctor` from
//! an operator's laptop (`--api-url`) or from another network namespace (`--api-socket`) reports the
//! machine and namespace that carries the tunnels, not its own.
//!
//! The checks: the TUN device, IP forwarding, who holds UDP 500/4500, the tunnel MTU against the
//! uplink's, the TCP MSS clamp, the clock, and the state directory's permissions. Each finding says
//! what was found and what to do next. The answer names the host checked (hostname, network
//! namespace, pid).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// What the daemon was started with that the checks compare against.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// The state directory (`vgw serve --state-dir`).
    pub state_dir: PathBuf,
    /// The data plane's TUN device, None when the daemon runs with `--dataplane off`.
    pub tun_name: Option<String>,
    /// The TCP MSS clamp (`vgw serve --tcp-mss-clamp`).
    pub mss_clamp: u16,
}

static STARTED: OnceLock<SystemTime> = OnceLock::new();

/// The state directory the daemon was started with.
pub fn state_dir() -> Option<PathBuf> {
    CONFIG.get().map(|c| c.state_dir.clone())
}

/// When the daemon started (when [`configure`] was called).
pub fn started() -> SystemTime {
    *STARTED.get_or_init(SystemTime::now)
}

static CONFIG: OnceLock<HostConfig> = OnceLock::new();

/// Records the daemon's configuration for [`daemon_report`] (called once by `vgw serve`).
pub fn configure(config: HostConfig) {
    let _ = CONFIG.set(config);
    started();
}

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// As it should be.
    Ok,
    /// Worth knowing, nothing to do.
    Info,
    /// Works, but should be fixed.
    Warn,
    /// Broken: tunnels cannot work.
    Fail,
}

/// One finding: what was checked, what was found, and the next step.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Finding {
    /// The check's short name (`ip-forwarding`, `udp-ports`, ...).
    pub check: String,
    /// How bad it is.
    pub level: Level,
    /// What was found.
    pub detail: String,
    /// What to do next, for warnings and failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// The host checked: enough to tell a gateway from the caller's machine.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostIdentity {
    /// `uname -n` of the checked host.
    pub hostname: String,
    /// The network namespace's name under /run/netns, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// The network namespace's inode (`net:[N]`), unique while it exists.
    pub netns_id: String,
    /// The checking process's pid.
    pub pid: u32,
    /// Who ran the checks: `daemon` or `cli` (the CLI's fallback when the daemon does not answer).
    pub checked_by: String,
}

/// The answer of `GET /api/diagnostics/host`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostReport {
    /// The host checked.
    pub host: HostIdentity,
    /// The findings, in check order.
    pub findings: Vec<Finding>,
}

#[derive(Default)]
struct Report(Vec<Finding>);

impl Report {
    fn add(&mut self, check: &str, level: Level, detail: String, next: Option<String>) {
        self.0.push(Finding {
            check: check.to_string(),
            level,
            detail,
            next,
        });
    }
    fn ok(&mut self, check: &str, detail: impl Into<String>) {
        self.add(check, Level::Ok, detail.into(), None);
    }
    fn info(&mut self, check: &str, detail: impl Into<String>) {
        self.add(check, Level::Info, detail.into(), None);
    }
    fn warn(&mut self, check: &str, detail: impl Into<String>, next: impl Into<String>) {
        self.add(check, Level::Warn, detail.into(), Some(next.into()));
    }
    fn fail(&mut self, check: &str, detail: impl Into<String>, next: impl Into<String>) {
        self.add(check, Level::Fail, detail.into(), Some(next.into()));
    }
}

/// The checks as the daemon runs them, against its own configuration.
pub fn daemon_report() -> HostReport {
    let config = CONFIG.get().cloned().unwrap_or(HostConfig {
        state_dir: PathBuf::from("/var/lib/vgw"),
        tun_name: None,
        mss_clamp: 1350,
    });
    run_checks(&config, true, "daemon")
}

/// The JSON of [`daemon_report`].
pub fn daemon_report_json() -> Value {
    serde_json::to_value(daemon_report()).unwrap_or_else(|e| json!({ "error": e.to_string() }))
}

/// Runs the host checks in this process. `daemon_side` is true in the daemon itself (UDP 500/4500
/// must then be held by it when the data plane runs); the CLI's fallback passes false.
pub fn run_checks(config: &HostConfig, daemon_side: bool, checked_by: &str) -> HostReport {
    let mut report = Report::default();
    host_checks(&mut report, config, daemon_side);
    HostReport {
        host: identity(checked_by),
        findings: report.0,
    }
}

/// The identity of the host and namespace this process runs in.
pub fn identity(checked_by: &str) -> HostIdentity {
    let hostname = read_trimmed("/proc/sys/kernel/hostname").unwrap_or_else(|| "?".into());
    let netns_id = std::fs::read_link("/proc/self/ns/net")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "?".into());
    HostIdentity {
        hostname,
        netns: netns_name(),
        netns_id,
        pid: std::process::id(),
        checked_by: checked_by.to_string(),
    }
}

/// The name under /run/netns of this process's network namespace (`ip netns` names), if any.
fn netns_name() -> Option<String> {
    let own = std::fs::metadata("/proc/self/ns/net").ok()?;
    for entry in std::fs::read_dir("/run/netns").ok()?.flatten() {
        if let Ok(m) = std::fs::metadata(entry.path())
            && m.ino() == own.ino()
            && m.dev() == own.dev()
        {
            return Some(entry.file_name().to_string_lossy().into_owned());
        }
    }
    None
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn host_checks(report: &mut Report, config: &HostConfig, daemon_side: bool) {
    let dataplane = daemon_side && config.tun_name.is_some();
    if daemon_side && config.tun_name.is_none() {
        report.warn(
            "dataplane",
            "the daemon runs with --dataplane off: no tunnel, TUN or UDP socket on this host",
            "restart the daemon as root with --dataplane on",
        );
    }
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
            None if dataplane => report.fail(
                "udp-ports",
                format!("nothing listens on UDP {port} although the daemon's data plane runs"),
                "see the daemon's log for the bind error and restart it",
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
    let tun_name = config.tun_name.as_deref().unwrap_or("vgw0");
    let tun_mtu =
        read_trimmed(&format!("/sys/class/net/{tun_name}/mtu")).and_then(|m| m.parse::<u32>().ok());
    match tun_mtu {
        None if dataplane => report.fail(
            "mtu",
            format!("no TUN device {tun_name} although the daemon's data plane runs"),
            "see the daemon's log; another process may have taken the name",
        ),
        None => report.info(
            "mtu",
            format!("no TUN device {tun_name} yet (the daemon creates it)"),
        ),
        Some(mtu) => {
            // ESP-in-UDP worst case: IPv4 20 + UDP 8 + ESP 8 + IV 16 + padding 17 + ICV 16.
            const OVERHEAD: u32 = 85;
            match uplink_mtu() {
                Some((name, up)) if mtu + OVERHEAD > up => report.warn(
                    "mtu",
                    format!("TUN MTU {mtu} + ESP-in-UDP overhead {OVERHEAD} = {} exceeds {name}'s MTU {up}: outer packets fragment", mtu + OVERHEAD),
                    format!("raise {name}'s MTU or lower the tunnel MTU to {}", up.saturating_sub(OVERHEAD)),
                ),
                Some((name, up)) => report.ok("mtu", format!("TUN MTU {mtu} fits {name}'s MTU {up} after ESP-in-UDP overhead")),
                None => report.info("mtu", format!("TUN MTU {mtu}; no uplink interface found to compare")),
            }
            let mss_max = mtu.saturating_sub(40);
            if u32::from(config.mss_clamp) > mss_max {
                report.warn(
                    "mss",
                    format!(
                        "TCP MSS clamp {} exceeds what the TUN MTU {mtu} carries ({mss_max})",
                        config.mss_clamp
                    ),
                    format!("vgw serve --tcp-mss-clamp {mss_max}"),
                );
            } else {
                report.ok(
                    "mss",
                    format!("TCP MSS clamped to {} (fits MTU {mtu})", config.mss_clamp),
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
    let db_mtime = std::fs::metadata(config.state_dir.join("state.db"))
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
    state_dir_check(report, &config.state_dir);
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

/// The process holding UDP `port` in this network namespace (from /proc/net/udp{,6} and the sockets
/// in /proc/*/fd), as "name (pid N)"; "an unknown process" when the socket's owner is not visible.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_names_this_process() {
        let id = identity("daemon");
        assert_eq!(id.pid, std::process::id());
        assert!(id.netns_id.starts_with("net:["), "{}", id.netns_id);
    }

    #[test]
    fn report_round_trips_as_json() {
        let report = run_checks(
            &HostConfig {
                state_dir: PathBuf::from("/nonexistent/vgw"),
                tun_name: None,
                mss_clamp: 1350,
            },
            false,
            "cli",
        );
        let text = serde_json::to_string(&report).unwrap();
        let back: HostReport = serde_json::from_str(&text).unwrap();
        assert!(back.findings.iter().any(|f| f.check == "ip-forwarding"));
        assert!(back.findings.iter().any(|f| f.check == "state-dir"));
    }
}
