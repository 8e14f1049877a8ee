//! A flood of connections that never complete a handshake, running while
//! good devices connect, against a real server on 127.0.0.1.

mod common;

use std::time::{Duration, Instant};

use common::start_server_with;
use secured::testkit::{flood, handshake_with_pause, pki};

/// For 10 s, one address opens connections as fast as it can, half of them
/// silent (held open), half sending garbage; meanwhile devices from the
/// same address connect every half second and pause a whole second between
/// the server's HELO and their PREM. Devices that are making progress must
/// not be evicted by the flood: at least 95 % complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_does_not_lock_out_devices_that_make_progress() {
    let _ = rlimit::increase_nofile_limit(4096);
    let server = start_server_with(pki().server_config(), |_| {}).await;
    let addr = server.addr;
    let until = Instant::now() + Duration::from_secs(10);
    let flooder = tokio::spawn(flood(addr, [127, 0, 0, 1].into(), until, 512));

    let mut devices = Vec::new();
    let mut next = Instant::now() + Duration::from_millis(200);
    while next + Duration::from_secs(1) < until {
        tokio::time::sleep_until(next.into()).await;
        devices.push(tokio::spawn(handshake_with_pause(
            addr,
            pki().device_config(),
            Duration::from_secs(1),
            Duration::from_secs(15),
        )));
        next += Duration::from_millis(500);
    }
    let mut failures = Vec::new();
    for d in devices.iter_mut() {
        if let Err(e) = d.await.unwrap() {
            failures.push(e);
        }
    }
    let stats = flooder.await.unwrap();
    let total = devices.len();
    let completed = total - failures.len();
    eprintln!(
        "flood: {} connections ({} garbage); devices: {completed} of {total} completed",
        stats.connections, stats.garbage
    );
    assert!(stats.connections > 1000, "the flood was real: {stats:?}");
    assert!(
        completed * 100 >= total * 95,
        "only {completed} of {total} devices completed: {failures:?}"
    );
    server.stop().await;
}
