//! `vgw demo`: two sites, each with a LAN and a vgw gateway, in throwaway network namespaces; the
//! tunnel comes up, the connection list and a ping across are shown, and everything is removed
//! (`--keep` leaves it running and says how to reach it).
//!
//! ```text
//!  sitelan 10.1.0.10 ── site (vgw, 198.18.0.1) ══ internet 198.18.0.0/24 ══ hub (vgw, 198.18.0.2) ── hublan 10.2.0.10
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::Value;

use crate::netns::{Topology, run};

/// `demo` flags.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Leave the namespaces and daemons running and print how to use them.
    #[arg(long)]
    pub keep: bool,
    /// Seconds to wait for the tunnel.
    #[arg(long, default_value_t = 15)]
    pub timeout: u64,
}

struct Site<'a> {
    short: &'a str,
    lan: &'a str,
    public: &'a str,
}

fn cli(socket: &Path, args: &[&str]) -> Result<Value> {
    let exe = std::env::current_exe()?;
    let out = std::process::Command::new(exe)
        .args(args)
        .env("VGW_API_SOCKET", socket)
        .output()?;
    if !out.status.success() {
        bail!(
            "vgw {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
}

fn show(socket: &Path, title: &str, args: &[&str]) -> Result<()> {
    let exe = std::env::current_exe()?;
    println!("\n[{title}] $ vgw {}", args.join(" "));
    let out = std::process::Command::new(exe)
        .args(args)
        .env("VGW_API_SOCKET", socket)
        .output()?;
    print!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn wait_for_socket(path: &Path, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("the daemon did not open {} in time", path.display())
}

/// Runs the demo.
pub async fn run_demo(args: DemoArgs) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("vgw demo creates network namespaces and must run as root");
    }
    run("ip", &["-V"]).context("vgw demo needs iproute2 ('ip')")?;
    let exe = std::env::current_exe()?;
    let exe = exe
        .to_str()
        .context("binary path is not UTF-8")?
        .to_string();
    let mut topo = Topology::new("vgwdemo");
    let work = std::env::temp_dir().join(format!("vgw-demo-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;

    println!(
        "Building the topology: sitelan - site(vgw) - internet 198.18.0.0/24 - hub(vgw) - hublan"
    );
    for (ns, router) in [
        ("sitelan", false),
        ("site", true),
        ("hub", true),
        ("hublan", false),
    ] {
        topo.add_namespace(ns, router)?;
    }
    topo.link("sitelan", "10.1.0.10/24", "site", "10.1.0.1/24")?;
    topo.link("site", "198.18.0.1/24", "hub", "198.18.0.2/24")?;
    topo.link("hub", "10.2.0.1/24", "hublan", "10.2.0.10/24")?;
    topo.route("sitelan", "default", "10.1.0.1")?;
    topo.route("hublan", "default", "10.2.0.1")?;

    let sites = [
        Site {
            short: "site",
            lan: "10.1.0.0/16",
            public: "198.18.0.1",
        },
        Site {
            short: "hub",
            lan: "10.2.0.0/16",
            public: "198.18.0.2",
        },
    ];
    let psk = {
        let mut bytes = [0u8; 18];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))?;
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let mut sockets = Vec::new();
    for (i, s) in sites.iter().enumerate() {
        let other = &sites[1 - i];
        let socket = work.join(format!("{}.sock", s.short));
        let state = work.join(format!("{}-state", s.short));
        let log = std::fs::File::create(work.join(format!("{}.log", s.short)))?;
        topo.spawn(
            s.short,
            &[
                &exe,
                "serve",
                "--state-dir",
                state.to_str().unwrap_or_default(),
                "--api-socket",
                socket.to_str().unwrap_or_default(),
            ],
            log,
        )?;
        wait_for_socket(&socket, Duration::from_secs(10))?;
        let gw = format!("{}-gw", s.short);
        cli(
            &socket,
            &[
                "vnet-gateway",
                "create",
                "-n",
                &gw,
                "--public-ip-addresses",
                s.public,
                "--vnet-address-space",
                s.lan,
            ],
        )?;
        cli(
            &socket,
            &[
                "local-gateway",
                "create",
                "-n",
                other.short,
                "--gateway-ip-address",
                other.public,
                "--local-address-prefixes",
                other.lan,
            ],
        )?;
        // Both ends initiate (Azure's Default mode); the engines settle on one IKE SA between them.
        let mode = "Default";
        cli(
            &socket,
            &[
                "vpn-connection",
                "create",
                "-n",
                &format!("to-{}", other.short),
                "--local-gateway2",
                other.short,
                "--shared-key",
                &psk,
                "--connection-mode",
                mode,
            ],
        )?;
        sockets.push(socket);
    }

    println!("Waiting up to {} s for the tunnel ...", args.timeout);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout);
    let mut connected = false;
    while Instant::now() < deadline {
        let status = cli(
            &sockets[0],
            &[
                "vpn-connection",
                "show",
                "-n",
                "to-hub",
                "--query",
                "connectionStatus",
            ],
        )?;
        if status == "Connected" {
            connected = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if connected {
        println!(
            "Tunnel Connected after {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    show(
        &sockets[0],
        "site",
        &["vpn-connection", "list", "-o", "table"],
    )?;
    show(
        &sockets[1],
        "hub",
        &["vpn-connection", "list", "-o", "table"],
    )?;
    // The responder of an exchange installs its Child SA before the initiator has the keys; give the
    // first packets a moment so the demo shows the steady state.
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!("\n[sitelan] $ ping -c 3 10.2.0.10");
    let ping = topo.exec("sitelan", &["ping", "-c", "3", "-W", "1", "10.2.0.10"]);
    match &ping {
        Ok(out) => print!("{}", String::from_utf8_lossy(&out.stdout)),
        Err(e) => println!("{e}"),
    }
    show(
        &sockets[1],
        "hub",
        &[
            "vpn-connection",
            "show",
            "-n",
            "to-site",
            "--query",
            "{status:connectionStatus, reason:connectionStatusReason, ingressBytes:ingressBytesTransferred, egressBytes:egressBytesTransferred}",
            "-o",
            "table",
        ],
    )?;

    if args.keep {
        let names = topo.keep();
        println!("\nLeft running. Namespaces: {}", names.join(" "));
        println!(
            "  VGW_API_SOCKET={} vgw vpn-connection list -o table",
            sockets[1].display()
        );
        println!("  ip netns exec {} ping 10.2.0.10", names[0]);
        println!(
            "Clean up: for ns in {}; do ip netns pids $ns | xargs -r kill; ip netns del $ns; done; rm -rf {}",
            names.join(" "),
            work.display()
        );
        return Ok(());
    }
    drop(topo);
    let _ = std::fs::remove_dir_all(&work);
    if !connected || ping.is_err() {
        bail!("the demo tunnel did not pass traffic (status and ping above)");
    }
    println!("\nDemo complete; namespaces and daemons removed.");
    Ok(())
}
