//! The failover drill (`vgw vnet-gateway failover-drill`): takes one tunnel down as an underlay failure
//! would, measures the traffic lost while the gateway (and the site) move the traffic to the redundant
//! tunnel, restores it, and reports the evidence for a change record.
//!
//! Decisions:
//! - The cut is real and local: an nftables table (`inet vgw_drill`) drops every packet to and from the
//!   connection's remote address, so neither end is told — dead-peer detection, BFD or the BGP hold
//!   timer must notice, exactly as on an ISP failure. The table is removed on every exit path.
//! - The probes are ICMP echo requests from this host, sourced from an address inside the gateway's
//!   address space (so the replies may come back over either tunnel or either instance), to an address
//!   behind the site, every `interval` (default 50 ms, 20/s). A probe counts as lost when no reply
//!   came within [`REPLY_TIMEOUT`]. IPv4 only.
//! - Phases: a 2 s baseline (the drill refuses to start when the probe address does not answer), the
//!   cut for `duration`, then the restore until this instance's tunnel is Connected again plus 3 s, so
//!   traffic moving back is measured too.

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::status::{ConnectionState, StatusSource};

/// A probe without a reply within this time is lost.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(1);
/// Probing before the cut, to prove the path works.
const BASELINE: Duration = Duration::from_secs(2);
/// Probing after the tunnel is back, to measure traffic moving back.
const SETTLE: Duration = Duration::from_secs(3);
/// The longest wait for the tunnel to come back after the restore.
const RESTORE_LIMIT: Duration = Duration::from_secs(60);
/// The nftables table of the cut.
const TABLE: &str = "vgw_drill";

static RUNNING: AtomicBool = AtomicBool::new(false);

/// What the operator asked for.
#[derive(Clone, Debug)]
pub struct DrillRequest {
    /// The connection whose tunnel (on this instance) is cut.
    pub connection: String,
    /// The site device's address: everything to and from it is dropped during the cut.
    pub remote: IpAddr,
    /// How long the tunnel stays cut.
    pub duration: Duration,
    /// The address probed (behind the site).
    pub probe: Ipv4Addr,
    /// The probes' source (inside the gateway's address space).
    pub source: Ipv4Addr,
    /// Time between probes.
    pub interval: Duration,
}

/// Runs one drill; only one at a time per daemon.
pub async fn run(request: DrillRequest, status: Arc<dyn StatusSource>) -> Result<Value, String> {
    if RUNNING.swap(true, Ordering::SeqCst) {
        return Err("a failover drill is already running on this instance".into());
    }
    let result = drill(&request, status).await;
    let _ = nft(&format!("delete table inet {TABLE}\n"));
    RUNNING.store(false, Ordering::SeqCst);
    result
}

/// Removes a cut left behind by a daemon that stopped in the middle of a drill (at start-up), so a
/// crash never leaves a tunnel cut. Silent when there is none or nft is missing.
pub fn clear_leftover_cut() {
    let exists = std::process::Command::new("nft")
        .args(["list", "table", "inet", TABLE])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if exists && nft(&format!("delete table inet {TABLE}\n")).is_ok() {
        tracing::warn!(
            "removed the cut of an interrupted failover drill (nftables table inet {TABLE})"
        );
    }
}

fn tunnel_state(status: &dyn StatusSource, connection: &str) -> ConnectionState {
    status.connection_status(connection).connection_status
}

async fn drill(request: &DrillRequest, status: Arc<dyn StatusSource>) -> Result<Value, String> {
    if tunnel_state(status.as_ref(), &request.connection) != ConnectionState::Connected {
        return Err(format!(
            "vpn-connection {}: its tunnel on this instance is not Connected; a drill takes down a healthy tunnel (check `vpn-connection show`)",
            request.connection
        ));
    }
    let prober = Prober::start(request.source, request.probe, request.interval)?;
    let started = Instant::now();
    tokio::time::sleep(BASELINE).await;
    if prober.answered() == 0 {
        let _ = prober.stop();
        return Err(format!(
            "{} does not answer pings from {} before the drill; probe an address behind the site that answers ICMP",
            request.probe, request.source
        ));
    }
    let remote = request.remote;
    let family = if remote.is_ipv4() { "ip" } else { "ip6" };
    nft(&format!(
        "table inet {TABLE} {{\n chain input {{ type filter hook input priority -300; {family} saddr {remote} drop; }}\n chain output {{ type filter hook output priority -300; {family} daddr {remote} drop; }}\n}}\n"
    ))?;
    let cut = Instant::now();
    let mut down_at = None;
    while cut.elapsed() < request.duration {
        if down_at.is_none()
            && tunnel_state(status.as_ref(), &request.connection) != ConnectionState::Connected
        {
            down_at = Some(cut.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    nft(&format!("delete table inet {TABLE}\n"))?;
    let restored = Instant::now();
    let mut up_at = None;
    while restored.elapsed() < RESTORE_LIMIT {
        if tunnel_state(status.as_ref(), &request.connection) == ConnectionState::Connected {
            up_at = Some(restored.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(SETTLE).await;
    let (probes, stopped) = prober.stop();
    // Probes still within their reply time when probing stopped are neither answered nor lost.
    let probes: Vec<Probe> = probes
        .into_iter()
        .filter(|p| p.answered.is_some() || p.sent + REPLY_TIMEOUT <= stopped)
        .collect();
    Ok(report(
        request, &probes, started, cut, restored, down_at, up_at,
    ))
}

/// An IPv4 address of this host inside one of `prefixes` (the gateway's address space): the default
/// source of the probes.
pub fn local_address_in(prefixes: &[ipnet::IpNet]) -> Option<Ipv4Addr> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list`, freed below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return None;
    }
    let mut found = None;
    let mut cursor = list;
    while !cursor.is_null() {
        // SAFETY: cursor walks the list getifaddrs returned.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        if entry.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr is non-null and its family says which sockaddr it is.
        if i32::from(unsafe { (*entry.ifa_addr).sa_family }) != libc::AF_INET {
            continue;
        }
        // SAFETY: an AF_INET address is a sockaddr_in.
        let sin = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in) };
        let addr = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
        if prefixes.iter().any(|p| p.contains(&IpAddr::V4(addr))) {
            found = Some(addr);
            break;
        }
    }
    // SAFETY: list came from getifaddrs.
    unsafe { libc::freeifaddrs(list) };
    found
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// Turns the probe record into the drill's evidence.
fn report(
    request: &DrillRequest,
    probes: &[Probe],
    started: Instant,
    cut: Instant,
    restored: Instant,
    down_at: Option<Duration>,
    up_at: Option<Duration>,
) -> Value {
    let lost = |p: &Probe| {
        p.answered
            .is_none_or(|a| a.saturating_duration_since(p.sent) > REPLY_TIMEOUT)
    };
    let interval = ms(request.interval);
    let mut windows = Vec::new();
    let mut run: Option<(Instant, u64)> = None;
    for p in probes {
        match (lost(p), run.as_mut()) {
            (true, Some((_, n))) => *n += 1,
            (true, None) => run = Some((p.sent, 1)),
            (false, _) => {
                if let Some((start, n)) = run.take() {
                    windows.push((start, n));
                }
            }
        }
    }
    if let Some(w) = run {
        windows.push(w);
    }
    let lost_between = |from: Instant, to: Option<Instant>| {
        probes
            .iter()
            .filter(|p| p.sent >= from && to.is_none_or(|t| p.sent < t) && lost(p))
            .count() as u64
    };
    let baseline_lost = lost_between(started, Some(cut));
    let failover_lost = lost_between(cut, Some(restored));
    let restore_lost = lost_between(restored, None);
    let longest = windows.iter().map(|w| w.1).max().unwrap_or(0) * interval;
    let answered = probes.iter().filter(|p| !lost(p)).count();
    let failover_ms = failover_lost * interval;
    let restore_ms = restore_lost * interval;
    let verdict = if up_at.is_none() {
        format!(
            "the tunnel did not come back within {} s after the restore; traffic lost: {failover_ms} ms during the cut, {restore_ms} ms after",
            RESTORE_LIMIT.as_secs()
        )
    } else if failover_ms == 0 && restore_ms == 0 {
        "no probe lost: traffic moved to the redundant path and back without loss".to_string()
    } else {
        format!(
            "traffic failed over with {failover_ms} ms of probes lost when the tunnel went down and {restore_ms} ms when it came back"
        )
    };
    json!({
        "connection": request.connection,
        "cutRemoteAddress": request.remote.to_string(),
        "probeAddress": request.probe.to_string(),
        "sourceAddress": request.source.to_string(),
        "probeIntervalMilliseconds": interval,
        "cutDurationMilliseconds": ms(request.duration),
        "tunnelDownDetectedAfterMilliseconds": down_at.map(ms),
        "tunnelUpAfterRestoreMilliseconds": up_at.map(ms),
        "probesSent": probes.len(),
        "probesAnswered": answered,
        "probesLost": probes.len() - answered,
        "baselineLossMilliseconds": baseline_lost * interval,
        "failoverLossMilliseconds": failover_ms,
        "restoreLossMilliseconds": restore_ms,
        "longestLossWindowMilliseconds": longest,
        "lossWindows": windows.iter().map(|(start, n)| json!({
            "startMillisecondsFromCut": start.saturating_duration_since(cut).as_millis() as i64
                - cut.saturating_duration_since(*start).as_millis() as i64,
            "durationMilliseconds": n * interval,
            "probesLost": n,
        })).collect::<Vec<_>>(),
        "verdict": verdict,
    })
}

/// Applies an nftables script.
fn nft(script: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = std::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft (the drill cuts the tunnel with nftables; install the nftables package): {e}"))?;
    if let Some(stdin) = child.stdin.as_mut() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// One probe: when it left and when its reply came.
#[derive(Clone, Copy, Debug)]
struct Probe {
    sent: Instant,
    answered: Option<Instant>,
}

/// An ICMP echo prober on its own thread (a raw socket; the daemon runs as root).
struct Prober {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Probe>>,
    answered: Arc<std::sync::atomic::AtomicUsize>,
}

impl Prober {
    fn start(source: Ipv4Addr, target: Ipv4Addr, interval: Duration) -> Result<Self, String> {
        // SAFETY: plain socket(2); the result is checked and owned below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
        if fd < 0 {
            return Err(format!(
                "cannot open a raw ICMP socket for the probes: {}",
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: fd is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let bind = sockaddr(SocketAddrV4::new(source, 0));
        // SAFETY: bind with a valid sockaddr_in of the right length.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&bind as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(format!(
                "cannot send probes from {source}: {} (give a --source-address of this host inside the gateway's address space)",
                std::io::Error::last_os_error()
            ));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (stop2, answered2) = (stop.clone(), answered.clone());
        let thread = std::thread::Builder::new()
            .name("vgw-drill-probe".into())
            .spawn(move || probe_loop(fd, target, interval, &stop2, &answered2))
            .map_err(|e| e.to_string())?;
        Ok(Self {
            stop,
            thread,
            answered,
        })
    }

    fn answered(&self) -> usize {
        self.answered.load(Ordering::Relaxed)
    }

    fn stop(self) -> (Vec<Probe>, Instant) {
        self.stop.store(true, Ordering::Relaxed);
        let stopped = Instant::now();
        (self.thread.join().unwrap_or_default(), stopped)
    }
}

fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Builds an ICMP echo request (RFC 792) with identifier `id` and sequence `seq`.
fn echo_request(id: u16, seq: u16) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0] = 8;
    b[4..6].copy_from_slice(&id.to_be_bytes());
    b[6..8].copy_from_slice(&seq.to_be_bytes());
    b[8..16].copy_from_slice(b"vgwdrill");
    let sum = checksum(&b);
    b[2..4].copy_from_slice(&sum.to_be_bytes());
    b
}

/// Parses an echo reply (with its IPv4 header, as a raw socket delivers it): `(id, seq)`.
fn parse_echo_reply(packet: &[u8]) -> Option<(u16, u16)> {
    let header_len = usize::from(packet.first()? & 0x0f) * 4;
    let icmp = packet.get(header_len..header_len + 8)?;
    (icmp[0] == 0).then(|| {
        (
            u16::from_be_bytes([icmp[4], icmp[5]]),
            u16::from_be_bytes([icmp[6], icmp[7]]),
        )
    })
}

fn probe_loop(
    fd: OwnedFd,
    target: Ipv4Addr,
    interval: Duration,
    stop: &AtomicBool,
    answered: &std::sync::atomic::AtomicUsize,
) -> Vec<Probe> {
    let id = (std::process::id() as u16) ^ 0x5a5a;
    let to = sockaddr(SocketAddrV4::new(target, 0));
    let mut probes: Vec<Probe> = Vec::with_capacity(4096);
    let mut next = Instant::now();
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= next {
            let packet = echo_request(id, probes.len() as u16);
            // SAFETY: sendto with a valid buffer and sockaddr_in.
            unsafe {
                libc::sendto(
                    fd.as_raw_fd(),
                    packet.as_ptr().cast(),
                    packet.len(),
                    0,
                    (&to as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                );
            }
            probes.push(Probe {
                sent: now,
                answered: None,
            });
            next += interval;
            continue;
        }
        let wait = next.saturating_duration_since(now).as_millis().max(1) as i32;
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, wait) } <= 0 {
            continue;
        }
        loop {
            // SAFETY: recv into a buffer we own, non-blocking.
            let n = unsafe {
                libc::recv(
                    fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n <= 0 {
                break;
            }
            let Some((reply_id, seq)) = parse_echo_reply(&buf[..n as usize]) else {
                continue;
            };
            if reply_id != id {
                continue;
            }
            // Sequence numbers wrap at 65536 probes (an hour at 20/s); match the latest one.
            let index = (0..probes.len())
                .rev()
                .find(|i| *i as u16 == seq && probes[*i].answered.is_none());
            if let Some(i) = index {
                probes[i].answered = Some(Instant::now());
                answered.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    probes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_request_checksums_to_zero_and_replies_parse() {
        let req = echo_request(0x1234, 7);
        assert_eq!(checksum(&req), 0);
        let mut reply = vec![0x45u8; 20];
        let mut icmp = req.to_vec();
        icmp[0] = 0;
        reply.extend_from_slice(&icmp);
        assert_eq!(parse_echo_reply(&reply), Some((0x1234, 7)));
        assert_eq!(parse_echo_reply(&reply[..22]), None);
        assert_eq!(parse_echo_reply(&[]), None);
    }

    #[test]
    fn report_counts_loss_windows_per_phase() {
        let t0 = Instant::now();
        let interval = Duration::from_millis(50);
        let at = |i: u32| t0 + interval * i;
        // 40 probes before the cut, 20 lost after it, 40 answered, then 2 lost after the restore.
        let mut probes = Vec::new();
        for i in 0..102 {
            let lost = (40..60).contains(&i) || (90..92).contains(&i);
            probes.push(Probe {
                sent: at(i),
                answered: (!lost).then(|| at(i) + Duration::from_millis(2)),
            });
        }
        let request = DrillRequest {
            connection: "c1".into(),
            remote: "198.18.1.1".parse().unwrap(),
            duration: Duration::from_secs(2),
            probe: Ipv4Addr::new(10, 2, 0, 10),
            source: Ipv4Addr::new(10, 1, 0, 2),
            interval,
        };
        let r = report(
            &request,
            &probes,
            t0,
            at(40),
            at(80),
            Some(Duration::from_millis(900)),
            Some(Duration::from_secs(1)),
        );
        assert_eq!(r["failoverLossMilliseconds"], 1000);
        assert_eq!(r["restoreLossMilliseconds"], 100);
        assert_eq!(r["longestLossWindowMilliseconds"], 1000);
        assert_eq!(r["lossWindows"].as_array().unwrap().len(), 2);
        assert_eq!(r["lossWindows"][0]["startMillisecondsFromCut"], 0);
        assert_eq!(r["probesLost"], 22);
    }
}
