//! `callgate bench` keeps working: a tiny run connects its peers and moves audio both ways.
//! Its figures are for people reading them, so nothing here asserts on speed.

use std::process::Command;

/// With `--record`, every call's WAV is written while the bench runs: one file per call,
/// valid, and as long as the call was bridged (3 s of warm-up plus the 2 s measured).
#[test]
fn bench_with_recording_writes_every_calls_file() {
    let dir = std::env::temp_dir().join(format!("callgate-bench-rec-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(["bench", "--calls", "4", "--seconds", "2", "--record"])
        .arg(&dir)
        .output()
        .expect("callgate bench runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("recording                every call"),
        "{text}"
    );
    let mut files = Vec::new();
    let mut dirs = vec![dir.clone()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).expect("recordings dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    assert_eq!(files.len(), 4, "{files:?}");
    for file in &files {
        let reader = hound::WavReader::open(file).expect("a valid WAV");
        let seconds = f64::from(reader.duration()) / 8000.0;
        assert_eq!(reader.spec().channels, 2);
        assert!(seconds > 4.5, "{}: {seconds} s", file.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_connects_every_peer_and_moves_audio() {
    for extra in [&[][..], &["--passthrough"][..], &["--separate-load"][..]] {
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
        // The delay through the gateway is timed both ways on pulses of tone.
        for way in ["delay to browsers", "delay to trunks"] {
            let pulses = text
                .lines()
                .find(|l| l.contains(way))
                .and_then(|l| l.split('(').nth(1))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
            assert!(pulses >= 5, "{way}: {text}");
        }
    }
}

/// With loss on the browsers' side, their receiver reports turn the adaptive downlink to Opus
/// (with in-band FEC) before measuring starts; without, they hear the trunk's PCMU.
#[test]
fn bench_with_loss_measures_the_opus_downlink() {
    for (extra, opus) in [(&["--loss", "5"][..], true), (&[][..], false)] {
        let out = Command::new(env!("CARGO_BIN_EXE_callgate"))
            .args(["bench", "--calls", "2", "--seconds", "2", "--separate-load"])
            .args(extra)
            .output()
            .expect("callgate bench runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        let share = text
            .lines()
            .find(|l| l.contains("heard by the browsers"))
            .and_then(|l| l.split_whitespace().nth(4))
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or(-1.0);
        if opus {
            assert!(share > 90.0, "Opus share {share}: {text}");
        } else {
            assert_eq!(share, 0.0, "{text}");
        }
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

#[test]
fn bench_mixer_prints_its_cost() {
    let out = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(["bench-mixer", "--frames", "2000"])
        .output()
        .expect("callgate bench-mixer runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("2000 three-party mixes"), "{text}");
    assert!(text.contains("per monitored call"), "{text}");
}
