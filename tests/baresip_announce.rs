//! baresip (a real softphone) calls the announcement route and records what it hears; the
//! recording must match config/announcement.wav in duration and energy.

mod common;

use std::time::Duration;

use common::*;

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
    // baresip sends 20 s of near-silence; the gateway must hang up first, when the file ends.
    let quiet = dir.join("quiet.wav");
    baresip::sox_tone(&quiet, 20, 300, 0.001);
    let cfg = baresip::configure(&dir, 29160, "", &quiet, "<sip:tester@127.0.0.1>;regint=0");
    let child = baresip::start(
        &cfg,
        &dir,
        Some(&format!("/dial sip:announce@127.0.0.1:{}", ports.sip)),
        14,
    );
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
    let (rate, heard) = baresip::heard(&dir, &stdout);
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
