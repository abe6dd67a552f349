//! The audio the gateway sends an agent's browser, seen from the browser: a simulated one (a
//! str0m peer with ICE, DTLS and SRTP) whose path can be made to lose packets. Opus carries
//! in-band FEC exactly while the browser's receiver reports say packets are lost, and the
//! answer asks the browser for narrowband Opus, all the 8 kHz calls can use.

mod common;

use std::time::{Duration, Instant};

use common::browser::Browser;
use common::caller::{answer_incoming, Caller};
use common::*;
use serde_json::json;

/// Share (0-1) of the Opus packets of the last second that carry FEC, and how many there were.
fn fec_share(browser: &Browser) -> (f64, usize) {
    let now = Instant::now();
    let packets = browser.payloads_between(now - Duration::from_secs(1), now);
    let with = packets.iter().filter(|p| opus_has_fec(p)).count();
    (with as f64 / packets.len().max(1) as f64, packets.len())
}

/// Wait (up to `within`) until the FEC share of a second of packets satisfies `want`.
/// The agent's socket is kept answering meanwhile (a silent one is cut off after 15 s).
fn fec_becomes(
    agent: &mut AgentSocket,
    browser: &Browser,
    within: Duration,
    what: &str,
    want: impl Fn(f64) -> bool,
) {
    let deadline = Instant::now() + within;
    let started = Instant::now();
    loop {
        let (share, packets) = fec_share(browser);
        if want(share) && packets >= 40 {
            println!(
                "{what}: after {:.1} s, {:.0} % of {packets} packets carry FEC",
                started.elapsed().as_secs_f64(),
                share * 100.0
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still {:.0} % of {packets} packets with FEC after {within:?}",
            share * 100.0
        );
        let pong = request(agent, json!({"type": "ping"}));
        assert_eq!(pong["type"], "pong", "{pong}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A caller (SIP port `port`) rings the demo agent, who answers; the caller plays voice.
fn answered_call(gw: &Gateway, agent: &mut AgentSocket, port: u16) -> (Caller, String) {
    let mut caller = Caller::dial(gw, "+15551230001", port);
    let id = answer_incoming(agent, &mut caller);
    caller.play_voice();
    (caller, id)
}

#[test]
fn opus_toward_the_browser_carries_fec_while_the_browser_reports_loss() {
    let ports = Ports::block(33);
    let gw = Gateway::start(
        "agent_media_fec",
        ports,
        &(default_trunk(29190) + DEMO_AGENT),
    );
    let mut agent = connect_agent(&gw, "?token=demo-token");
    next_of(&mut agent, "calls.snapshot");
    let browser = Browser::connect(&mut agent, 1000.0);
    let opus_fmtp = browser
        .answer
        .lines()
        .find(|l| l.starts_with("a=fmtp:") && l.contains("useinbandfec=1"))
        .unwrap_or_else(|| panic!("no Opus fmtp in the answer:\n{}", browser.answer));
    assert!(
        opus_fmtp.contains("maxplaybackrate=8000")
            && opus_fmtp.contains("sprop-maxcapturerate=8000"),
        "the answer asks for narrowband Opus: {opus_fmtp}"
    );

    let (caller, id) = answered_call(&gw, &mut agent, 29100);

    // A clean path: no FEC, whose bits and encoding time would buy nothing.
    std::thread::sleep(Duration::from_secs(4));
    let (share, packets) = fec_share(&browser);
    assert!(
        packets >= 40,
        "the browser hears the call: {packets} packets in 1 s"
    );
    assert_eq!(
        share,
        0.0,
        "no loss reported, yet {:.0} % carry FEC",
        share * 100.0
    );

    // One packet in ten lost: once a receiver report says so (audio reports come every 5 s),
    // each packet carries the frame before it again.
    browser.lose_every(10);
    fec_becomes(
        &mut agent,
        &browser,
        Duration::from_secs(20),
        "10 % loss",
        |s| s >= 0.6,
    );

    // The path heals: the next reports say so and FEC stops.
    browser.lose_every(0);
    fec_becomes(
        &mut agent,
        &browser,
        Duration::from_secs(20),
        "loss over",
        |s| s == 0.0,
    );

    let hung = request(&mut agent, json!({"type": "call.hangup", "call_id": id}));
    assert_eq!(hung["type"], "ok", "{hung}");
    assert!(caller.expect_bye(Duration::from_secs(5)), "caller got BYE");
    let received = browser.stop();
    assert!(
        received > 500,
        "the browser heard the call: {received} frames"
    );
}

/// The codec of most of the frames that arrived in the last second.
fn recent_codec(browser: &Browser) -> Option<callgate::sdp::Codec> {
    let now = Instant::now();
    let frames = browser.frames_between(now - Duration::from_secs(1), now);
    let pcmu = frames
        .iter()
        .filter(|f| f.codec == Some(callgate::sdp::Codec::Pcmu))
        .count();
    let opus = frames
        .iter()
        .filter(|f| f.codec == Some(callgate::sdp::Codec::Opus))
        .count();
    match (pcmu, opus) {
        (p, o) if p + o < 40 => None,
        (p, o) if p > o * 9 => Some(callgate::sdp::Codec::Pcmu),
        (p, o) if o > p * 9 => Some(callgate::sdp::Codec::Opus),
        _ => None,
    }
}

/// Wait (up to 20 s) until the last second's frames are in `codec`, answering pings.
fn downlink_becomes(agent: &mut AgentSocket, browser: &Browser, codec: callgate::sdp::Codec) {
    let started = Instant::now();
    while recent_codec(browser) != Some(codec) {
        if started.elapsed() >= Duration::from_secs(20) {
            let now = Instant::now();
            let last: Vec<_> = browser
                .frames_between(now - Duration::from_secs(3), now)
                .iter()
                .map(|f| (f.codec, f.sequence, now.duration_since(f.at).as_millis()))
                .collect();
            panic!("still no {codec:?} after 20 s; the last 3 s: {last:?}");
        }
        let pong = request(agent, json!({"type": "ping"}));
        assert_eq!(pong["type"], "pong", "{pong}");
        std::thread::sleep(Duration::from_millis(250));
    }
    println!("{codec:?} after {:.1} s", started.elapsed().as_secs_f64());
}

/// A browser that offers Opus and PCMU (as Chrome does) hears the trunk's PCMU as it came on
/// a clean path, Opus once its reports show loss, and PCMU again after a clean stretch: one
/// stream throughout, its sequence numbers without a hole the path did not make, its
/// timestamps 20 ms apart per frame across every switch, and no packet late by more than
/// the jitter buffer's depth.
#[test]
fn the_adaptive_downlink_switches_codec_on_one_continuous_stream() {
    use callgate::sdp::Codec;
    let ports = Ports::block(24);
    let gw = Gateway::start_with_webrtc(
        "agent_media_downlink",
        ports,
        &(default_trunk(27240) + DEMO_AGENT),
        "downlink_recover_seconds = 3",
    );
    let mut agent = connect_agent(&gw, "?token=demo-token");
    next_of(&mut agent, "calls.snapshot");
    let browser = Browser::connect_offering(&mut agent, 1000.0, true);
    let (caller, id) = answered_call(&gw, &mut agent, 27230);
    let started = Instant::now();

    downlink_becomes(&mut agent, &browser, Codec::Pcmu);
    browser.lose_every(10);
    downlink_becomes(&mut agent, &browser, Codec::Opus);
    browser.lose_every(0);
    downlink_becomes(&mut agent, &browser, Codec::Pcmu);
    std::thread::sleep(Duration::from_secs(1));

    // In sending order: the browser's depacketiser holds frames of one payload type while it
    // waits for a lost packet, so frames of two codecs may come out of it interleaved.
    let mut frames = browser.frames_between(started - Duration::from_secs(5), Instant::now());
    frames.sort_by_key(|f| f.sequence);
    let mut runs: Vec<(Option<Codec>, u64, usize)> = Vec::new();
    for f in &frames {
        match runs.last_mut() {
            Some((c, _, n)) if *c == f.codec => *n += 1,
            _ => runs.push((f.codec, f.sequence, 1)),
        }
    }
    println!("runs (codec, first sequence, frames): {runs:?}");
    let codecs: Vec<Option<Codec>> = runs.iter().map(|r| r.0).collect();
    assert_eq!(
        codecs,
        [Some(Codec::Pcmu), Some(Codec::Opus), Some(Codec::Pcmu)]
    );
    // Sequence numbers: increasing, and every one missing is one the path dropped.
    assert!(
        frames.windows(2).all(|w| w[1].sequence > w[0].sequence),
        "a sequence number came twice"
    );
    let span = frames.last().expect("frames").sequence - frames[0].sequence + 1;
    let lost = browser.lost() as u64;
    assert_eq!(
        span,
        frames.len() as u64 + lost,
        "{} frames and {lost} lost, over {span} sequence numbers",
        frames.len()
    );
    // Timestamps go on from the last one, counting each frame in its own codec's clock:
    // 160 for 20 ms of PCMU, 960 for 20 ms of Opus; never a jump. A frame lost right at a
    // switch may have been in either codec, so a gap across one allows any split.
    let per_frame = |codec: Option<Codec>| match codec {
        Some(Codec::Pcmu) => 160i64,
        _ => 960,
    };
    let mut worst_step = 0i64;
    let mut worst_late = Duration::ZERO;
    for w in frames.windows(2) {
        let packets = w[1].sequence - w[0].sequence;
        let step = i64::from((w[1].time.numer() as u32).wrapping_sub(w[0].time.numer() as u32));
        let (before, after) = (per_frame(w[0].codec), per_frame(w[1].codec));
        let off = (0..packets as i64)
            .map(|lost_before| step - lost_before * before - (packets as i64 - lost_before) * after)
            .min_by_key(|off| off.abs())
            .unwrap_or(0);
        if off.abs() > worst_step.abs() {
            worst_step = off;
        }
        let arrival = w[1].arrived.saturating_duration_since(w[0].arrived);
        let due = Duration::from_millis(20 * packets);
        worst_late = worst_late.max(arrival.saturating_sub(due));
    }
    println!(
        "{} frames, {lost} lost, timestamps off by at most {worst_step} ticks, a packet late by at most {worst_late:?}",
        frames.len()
    );
    assert_eq!(worst_step, 0, "a timestamp jumps");
    assert!(
        worst_late <= Duration::from_millis(80),
        "a packet came {worst_late:?} late"
    );

    let hung = request(&mut agent, json!({"type": "call.hangup", "call_id": id}));
    assert_eq!(hung["type"], "ok", "{hung}");
    assert!(caller.expect_bye(Duration::from_secs(5)), "caller got BYE");
    browser.stop();
}

/// A second offer without audio the gateway can use is refused, and the call the first peer
/// connection carries goes on: the browser keeps hearing it.
#[test]
fn a_renegotiation_without_usable_audio_leaves_the_call_audible() {
    let ports = Ports::block(26);
    let gw = Gateway::start(
        "agent_media_bad_reoffer",
        ports,
        &(default_trunk(27250) + DEMO_AGENT),
    );
    let mut agent = connect_agent(&gw, "?token=demo-token");
    next_of(&mut agent, "calls.snapshot");
    let browser = Browser::connect_offering(&mut agent, 1000.0, true);
    let (caller, id) = answered_call(&gw, &mut agent, 27260);
    std::thread::sleep(Duration::from_secs(2));
    let heard = |browser: &Browser| {
        let now = Instant::now();
        browser
            .payloads_between(now - Duration::from_secs(1), now)
            .len()
    };
    assert!(heard(&browser) >= 40, "the browser hears the call");

    // The gateway's own answer turned into an offer of G.722 only.
    let mut offer = String::new();
    for line in browser.answer.lines() {
        if line.starts_with("m=audio") {
            let mut fields: Vec<&str> = line.split(' ').take(3).collect();
            fields.push("9");
            offer.push_str(&fields.join(" "));
        } else if ["a=rtpmap", "a=fmtp", "a=rtcp-fb", "a=ice-lite"]
            .iter()
            .any(|p| line.starts_with(p))
        {
            continue;
        } else if line.starts_with("a=setup:") {
            offer.push_str("a=setup:actpass");
        } else {
            offer.push_str(line);
        }
        offer.push_str("\r\n");
        if line.starts_with("a=mid:") {
            offer.push_str("a=rtpmap:9 G722/8000\r\n");
        }
    }
    let refused = request(&mut agent, json!({"type": "webrtc.offer", "sdp": offer}));
    assert_eq!(refused["type"], "error", "{refused}");
    std::thread::sleep(Duration::from_secs(2));
    let after = heard(&browser);
    assert!(
        after >= 40,
        "the browser hears {after} frames a second after the refused offer"
    );

    let hung = request(&mut agent, json!({"type": "call.hangup", "call_id": id}));
    assert_eq!(hung["type"], "ok", "{hung}");
    assert!(caller.expect_bye(Duration::from_secs(5)), "caller got BYE");
    browser.stop();
}
