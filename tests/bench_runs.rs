//! `callgate bench` keeps working: a tiny run connects its peers and moves audio both ways.
//! Its figures are for people reading them, so nothing here asserts on speed.

use std::process::Command;

#[test]
fn bench_connects_every_peer_and_moves_audio() {
    for extra in [&[][..], &["--passthrough"][..]] {
        let out = Command::new(env!("CARGO_BIN_EXE_callgate"))
            .args(["bench", "--calls", "3", "--seconds", "1"])
            .args(extra)
            .output()
            .expect("callgate bench runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("connected peers          3/3"), "{text}");
        let per_call = text
            .lines()
            .find(|l| l.contains("audio frames"))
            .and_then(|l| l.split('(').nth(1))
            .and_then(|l| l.split('/').next())
            .and_then(|n| n.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        assert!(per_call > 10.0, "audio frames per call each way: {text}");
        let to_trunks = text
            .lines()
            .find(|l| l.contains("audio frames"))
            .and_then(|l| l.split(", ").nth(1))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        assert!(to_trunks > 30, "browser audio reached the trunks: {text}");
    }
}

#[test]
fn bench_store_writes_and_queries() {
    let dir = std::env::temp_dir().join(format!("callgate-bench-store-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(["bench-store", "--rows", "300", "--database"])
        .arg(dir.join("bench.db"))
        .output()
        .expect("callgate bench-store runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("300 calls with segments and logs written"),
        "{text}"
    );
    assert_eq!(text.matches("calls page,").count(), 4, "{text}");
    let _ = std::fs::remove_dir_all(dir);
}
