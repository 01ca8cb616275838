//! `serve_with` answers a scrape over HTTP with this process's metrics and
//! the extra text (another process's), and still answers without it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

fn scrape(addr: std::net::SocketAddr) -> String {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    conn.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn a_scrape_has_our_metrics_and_the_extra_text() {
    static DAEMON_UP: AtomicBool = AtomicBool::new(true);
    let extra: weir_metrics::Extra = Arc::new(|| {
        DAEMON_UP
            .load(Ordering::Relaxed)
            .then(|| "weir_cache_hits_total 7\n".to_string())
    });
    let addr = weir_metrics::serve_with("127.0.0.1:0".parse().unwrap(), extra).unwrap();
    weir_metrics::counter!(weir_metrics::names::RECOVERIES, "layer" => "takeover", "outcome" => "ok")
        .increment(2);
    let text = scrape(addr);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains("weir_recoveries_total{layer=\"takeover\",outcome=\"ok\"} 2"),
        "{text}"
    );
    assert!(text.contains("weir_cache_hits_total 7"), "{text}");
    DAEMON_UP.store(false, Ordering::Relaxed);
    let text = scrape(addr);
    assert!(text.contains("weir_recoveries_total"), "{text}");
    assert!(!text.contains("weir_cache_hits_total"), "{text}");
    assert!(
        weir_metrics::serve_with(addr, Arc::new(|| None)).is_err(),
        "a taken port is an error"
    );
}
