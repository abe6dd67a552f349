//! baresip (a real softphone) calls the announcement route and records what it hears; the
//! recording must match config/announcement.wav in duration and energy.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn read_wav_mono(path: &std::path::Path) -> (u32, Vec<i16>) {
    let mut reader =
        hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let spec = reader.spec();
    let samples: Vec<i16> = reader
        .samples::<i16>()
        .map(|s| s.expect("sample"))
        .collect();
    let mono = samples
        .chunks(usize::from(spec.channels))
        .map(|c| c[0])
        .collect();
    (spec.sample_rate, mono)
}

/// Active (non-silent) duration: from the first to the last 20 ms frame above `floor` RMS.
fn active_span(samples: &[i16], rate: u32, floor: f64) -> f64 {
    let frame = (rate / 50) as usize;
    let frames: Vec<f64> = samples.chunks(frame).map(rms).collect();
    let first = frames.iter().position(|r| *r > floor);
    let last = frames.iter().rposition(|r| *r > floor);
    match (first, last) {
        (Some(a), Some(b)) => (b - a + 1) as f64 * 0.02,
        _ => 0.0,
    }
}

#[test]
fn baresip_hears_the_announcement() {
    require_tool("baresip");
    require_tool("sox");
    let ports = Ports::block(21);
    let gw = Gateway::start("baresip_announce", ports, &default_trunk(25211));
    let dir = gw.dir.clone();
    let cfg = dir.join("baresip");
    std::fs::create_dir_all(&cfg).expect("cfg dir");
    // baresip sends 20 s of near-silence; the gateway must hang up first, when the file ends.
    let quiet = dir.join("quiet.wav");
    let status = Command::new("sox")
        .args(["-n", "-r", "8000", "-c", "1", "-b", "16"])
        .arg(&quiet)
        .args(["synth", "20", "sine", "300", "vol", "0.001"])
        .status()
        .expect("sox");
    assert!(status.success());
    std::fs::write(
        cfg.join("config"),
        format!(
            "sip_listen 127.0.0.1:29160\naudio_source aufile,{}\naudio_player aufile,{}\nmodule_path /usr/lib/baresip/modules\nmodule stdio.so\nmodule g711.so\nmodule aufile.so\nmodule sndfile.so\nmodule account.so\nmodule menu.so\n",
            quiet.display(),
            dir.join("played.wav").display()
        ),
    )
    .expect("config");
    std::fs::write(cfg.join("accounts"), "<sip:tester@127.0.0.1>;regint=0\n").expect("accounts");
    let child = Command::new("baresip")
        .arg("-4")
        .arg("-f")
        .arg(&cfg)
        .arg("-e")
        .arg(format!("/dial sip:announce@127.0.0.1:{}", ports.sip))
        .args(["-t", "14"])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("baresip starts");
    let out = wait_child(child, Duration::from_secs(40));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        stdout.contains("Call established"),
        "baresip: {stdout}\n{}",
        gw.log_text()
    );
    // "Call with ... terminated (duration: 6 secs)": the gateway hung up when the
    // announcement ended, well before baresip's own 14 s timeout or its 20 s source.
    let duration: u64 = stdout
        .split("terminated (duration: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|secs| secs.parse().ok())
        .unwrap_or_else(|| panic!("call never terminated: {stdout}"));
    assert!(
        (5..=8).contains(&duration),
        "call lasted {duration} s: {stdout}"
    );
    let dump = std::fs::read_dir(&dir)
        .expect("dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("dump-") && n.ends_with("-dec.wav"))
        })
        .unwrap_or_else(|| panic!("baresip wrote no dump: {stdout}"));
    let (rate, heard) = read_wav_mono(&dump);
    let (orig_rate, original) = read_wav_mono(&repo_root().join("config/announcement.wav"));
    let heard_span = active_span(&heard, rate, 300.0);
    let original_span = active_span(&original, orig_rate, 300.0);
    assert!(
        (heard_span - original_span).abs() < 0.5,
        "heard {heard_span:.2} s of audio, the announcement has {original_span:.2} s"
    );
    let (heard_rms, original_rms) = (rms(&heard), rms(&original));
    let ratio = heard_rms / original_rms;
    assert!(
        (0.5..2.0).contains(&ratio),
        "energy heard {heard_rms:.0} vs announcement {original_rms:.0}"
    );
    gw.wait_idle(Duration::from_secs(5));
}
