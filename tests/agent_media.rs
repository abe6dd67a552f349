//! The audio the gateway sends an agent's browser, seen from the browser: a simulated one (a
//! str0m peer with ICE, DTLS and SRTP) whose path can be made to lose packets. Opus carries
//! in-band FEC exactly while the browser's receiver reports say packets are lost, and the
//! answer asks the browser for narrowband Opus, all the 8 kHz calls can use.

mod common;

use std::time::{Duration, Instant};

use common::browser::Browser;
use common::caller::Caller;
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

    let mut caller = Caller::dial(&gw, "+15551230001", 29100);
    let incoming = next_of(&mut agent, "call.incoming");
    let id = incoming["call"]["call_id"]
        .as_str()
        .expect("call id")
        .to_string();
    let ok = request(&mut agent, json!({"type": "call.answer", "call_id": id}));
    assert_eq!(ok["type"], "ok", "{ok}");
    assert_eq!(caller.final_response(Duration::from_secs(5)), 200);
    caller.play_voice();

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
