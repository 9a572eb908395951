//! Durability: a burst of creates, SIGKILL in the middle; every acknowledged create survives and the
//! database passes `PRAGMA integrity_check`.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Daemon, http_unix};

#[test]
fn acknowledged_creates_survive_sigkill() {
    let (_tmp, mut d) = Daemon::start();
    let socket = d.socket.clone();
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let started = Arc::new(AtomicUsize::new(0));
    const TOTAL: usize = 200;
    const WORKERS: usize = 4;

    // Four clients issue 200 creates as fast as the daemon takes them.
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (socket, acked, started) = (socket.clone(), acked.clone(), started.clone());
            std::thread::spawn(move || {
                for i in (w..TOTAL).step_by(WORKERS) {
                    let name = format!("site{i:03}");
                    let third = i % 250;
                    let body = format!(
                        r#"{{"gatewayIpAddress":"198.18.{}.{}","localNetworkAddressSpace":{{"addressPrefixes":["10.{}.{}.0/24"]}}}}"#,
                        i / 250, third + 1, 100 + i / 250, third
                    );
                    started.fetch_add(1, Ordering::SeqCst);
                    let result = std::panic::catch_unwind(|| {
                        http_unix(&socket, "PUT", &format!("/api/localNetworkGateways/{name}"), body.as_bytes(), &[])
                    });
                    match result {
                        Ok((201, _)) => acked.lock().unwrap().push(name),
                        _ => return, // the daemon is gone
                    }
                }
            })
        })
        .collect();

    // Kill it somewhere in the middle of the burst.
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < TOTAL / 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    d.kill();
    for w in workers {
        let _ = w.join();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= TOTAL / 3,
        "too few acknowledgements before the kill: {}",
        acked.len()
    );
    assert!(
        acked.len() < TOTAL,
        "the kill came after the burst; the test proves nothing"
    );

    // The database is intact (checked before the daemon reopens it).
    let store =
        vgw_control::store::SqliteStore::open(&d.state_dir).expect("open store after crash");
    assert_eq!(store.integrity_check().unwrap(), "ok");
    drop(store);

    d.restart();
    let list = d.json(&["local-gateway", "list", "--query", "[].name"]);
    let names: Vec<String> = serde_json::from_value(list).unwrap();
    for name in &acked {
        assert!(
            names.contains(name),
            "acknowledged create {name} was lost ({} acked, {} present)",
            acked.len(),
            names.len()
        );
    }
    eprintln!(
        "{} acknowledged before SIGKILL, {} present after restart, {} started",
        acked.len(),
        names.len(),
        started.load(Ordering::SeqCst)
    );
}
