//! Runs vgw's BFD service with sessions from the command line, for interop tests:
//!
//!   bfd_peer --local A --peer B [--peer C ...] [--multihop] [--interval-ms 300] [--multiplier 3]
//!
//! Prints one JSON line per event (`{"event":"up"|"down","peer":..,"diagnostic":..,"unixMs":..}`) and
//! one per second of status (`{"status":[...],"dropped":N,"unixMs":..}`). Lines on stdin: `remove`
//! drops every session (the peers hear AdminDown), `add` restores them, `interval MS` changes both
//! intervals (a Poll sequence).

use std::io::{BufRead, Write};
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use vgw_control::drivers::bfd::{BfdEvent, BfdService, BfdSpec};

fn usage() -> ! {
    eprintln!(
        "usage: bfd_peer --local ADDR --peer ADDR [--peer ADDR ...] [--multihop] [--interval-ms MS] [--multiplier N]"
    );
    std::process::exit(2)
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

fn emit(v: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut local: Option<IpAddr> = None;
    let mut peers: Vec<IpAddr> = Vec::new();
    let mut multihop = false;
    let mut interval = Duration::from_millis(300);
    let mut multiplier = 3u8;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--local" => local = Some(value().parse().unwrap_or_else(|_| usage())),
            "--peer" => peers.push(value().parse().unwrap_or_else(|_| usage())),
            "--multihop" => multihop = true,
            "--interval-ms" => {
                interval = Duration::from_millis(value().parse().unwrap_or_else(|_| usage()))
            }
            "--multiplier" => multiplier = value().parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    let (Some(local), false) = (local, peers.is_empty()) else {
        usage()
    };
    let mut specs: Vec<BfdSpec> = peers
        .iter()
        .map(|&peer| BfdSpec {
            local,
            peer,
            min_tx: interval,
            min_rx: interval,
            multiplier,
            multihop,
        })
        .collect();
    let (service, mut events) = BfdService::spawn();
    service.set_sessions(specs.clone());
    // Commands on stdin, read on a thread of their own.
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { return };
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            Some(event) = events.recv() => emit(match event {
                BfdEvent::Up { peer } => json!({"event": "up", "peer": peer, "unixMs": unix_ms()}),
                BfdEvent::Down { peer, diagnostic } => {
                    json!({"event": "down", "peer": peer, "diagnostic": diagnostic, "unixMs": unix_ms()})
                }
            }),
            Some(line) = lines.recv() => {
                let words: Vec<&str> = line.split_whitespace().collect();
                match words.as_slice() {
                    ["remove"] => service.set_sessions(Vec::new()),
                    ["add"] => service.set_sessions(specs.clone()),
                    ["interval", ms] => {
                        if let Ok(ms) = ms.parse::<u64>() {
                            for s in specs.iter_mut() {
                                s.min_tx = Duration::from_millis(ms);
                                s.min_rx = Duration::from_millis(ms);
                            }
                            service.set_sessions(specs.clone());
                        }
                    }
                    _ => eprintln!("unknown command: {line}"),
                }
            }
            _ = tick.tick() => emit(json!({
                "status": service.status(),
                "dropped": service.dropped(),
                "unixMs": unix_ms(),
            })),
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    // Dropping the last handle sends AdminDown to every peer; give it a moment to leave.
    drop(service);
    tokio::time::sleep(Duration::from_millis(100)).await;
}
