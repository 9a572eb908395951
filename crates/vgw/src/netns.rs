//! Throwaway network-namespace topologies for `vgw demo` (and the interop tests' Rust side).
//!
//! Everything is made with `ip` from iproute2, named with a per-run prefix, and removed on drop, so a
//! failed or interrupted run leaves nothing behind. Only 198.18.0.0/15 (the benchmarking range, for the
//! "internet") and 10.x inside the namespaces are used.

use std::process::{Command, Output};

use anyhow::{Context, Result, bail};

/// A set of namespaces and the processes started in them; all removed on drop.
pub struct Topology {
    prefix: String,
    namespaces: Vec<String>,
    children: Vec<std::process::Child>,
}

/// Runs a command, failing with its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<Output> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

impl Topology {
    /// A new, empty topology whose names start with `prefix` and this process's id.
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: format!("{prefix}{}", std::process::id()),
            namespaces: Vec::new(),
            children: Vec::new(),
        }
    }

    /// The full name of namespace `short`.
    pub fn ns(&self, short: &str) -> String {
        format!("{}-{short}", self.prefix)
    }

    /// Creates namespace `short` with loopback up and, if `router`, IP forwarding on.
    pub fn add_namespace(&mut self, short: &str, router: bool) -> Result<String> {
        let name = self.ns(short);
        run("ip", &["netns", "add", &name])?;
        self.namespaces.push(name.clone());
        self.exec(short, &["ip", "link", "set", "lo", "up"])?;
        if router {
            self.exec(short, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
            self.exec(short, &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])?;
        }
        Ok(name)
    }

    /// Runs a command inside namespace `short`.
    pub fn exec(&self, short: &str, cmd: &[&str]) -> Result<Output> {
        let ns = self.ns(short);
        let mut args = vec!["netns", "exec", ns.as_str()];
        args.extend_from_slice(cmd);
        run("ip", &args)
    }

    /// Connects `a` and `b` with a veth pair, addresses in CIDR form (`10.1.0.1/24`).
    pub fn link(&self, a: &str, a_addr: &str, b: &str, b_addr: &str) -> Result<()> {
        let (ia, ib) = (
            format!("v{}-{b}", short_id(a)),
            format!("v{}-{a}", short_id(b)),
        );
        let (ia, ib) = (truncate_ifname(&ia), truncate_ifname(&ib));
        run(
            "ip",
            &[
                "link",
                "add",
                &ia,
                "netns",
                &self.ns(a),
                "type",
                "veth",
                "peer",
                "name",
                &ib,
                "netns",
                &self.ns(b),
            ],
        )?;
        self.exec(a, &["ip", "addr", "add", a_addr, "dev", &ia])?;
        self.exec(b, &["ip", "addr", "add", b_addr, "dev", &ib])?;
        self.exec(a, &["ip", "link", "set", &ia, "up"])?;
        self.exec(b, &["ip", "link", "set", &ib, "up"])?;
        Ok(())
    }

    /// Adds a route in namespace `short`.
    pub fn route(&self, short: &str, prefix: &str, via: &str) -> Result<()> {
        self.exec(short, &["ip", "route", "add", prefix, "via", via])
            .map(|_| ())
    }

    /// Starts a long-running process in namespace `short`; it is killed when the topology drops.
    pub fn spawn(&mut self, short: &str, cmd: &[&str], log: std::fs::File) -> Result<u32> {
        let ns = self.ns(short);
        let child = Command::new("ip")
            .args(["netns", "exec", ns.as_str()])
            .args(cmd)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {} in {ns}", cmd.join(" ")))?;
        let pid = child.id();
        self.children.push(child);
        Ok(pid)
    }

    /// Leaves everything running (for `--keep`); the caller prints how to clean up.
    pub fn keep(mut self) -> Vec<String> {
        self.children.clear();
        std::mem::take(&mut self.namespaces)
    }
}

fn short_id(name: &str) -> String {
    name.chars().take(4).collect()
}

/// Interface names are at most 15 bytes.
fn truncate_ifname(name: &str) -> String {
    name.chars().take(15).collect()
}

impl Drop for Topology {
    fn drop(&mut self) {
        for child in &mut self.children {
            // SIGTERM first so daemons remove their sockets and send IKE DELETE.
            // SAFETY: kill(2) on a pid we spawned.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        for child in &mut self.children {
            while std::time::Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in self.namespaces.drain(..).rev() {
            let _ = Command::new("ip")
                .args(["netns", "pids", &ns])
                .output()
                .map(|o| {
                    for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                        let _ = Command::new("kill").args(["-9", pid]).status();
                    }
                });
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
    }
}
