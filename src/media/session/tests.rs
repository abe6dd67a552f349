//! The call's media driven by hand, with no socket and no clock: what arrives goes in with
//! its time, and what the session queues to send is read back and decoded.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::*;
use crate::media::rtp::{self, RtpHeader};
use crate::media::srtp::SrtpSession;
use crate::sdes::{MasterKey, SrtpSuite};
use crate::sdp::{Codec, Direction, SrtpKeys};

const PEER: &str = "192.0.2.10:6000";
const PEER_RTCP: &str = "192.0.2.10:6001";

fn peer() -> SocketAddr {
    PEER.parse().unwrap()
}

fn audio(srtp: Option<SrtpKeys>) -> AudioSession {
    AudioSession {
        codec: Codec::Pcmu,
        pt: 0,
        clock_rate: 8000,
        ptime: 20,
        dtmf_pt: Some(101),
        remote: Some(peer()),
        remote_rtcp: Some(PEER_RTCP.parse().unwrap()),
        local_direction: Direction::SendRecv,
        remote_direction: Direction::SendRecv,
        opus_fec: false,
        opus_stereo: false,
        srtp,
    }
}

fn session(
    source: Source,
    srtp: Option<SrtpKeys>,
    now: Instant,
) -> (MediaSession, Arc<MediaCounters>) {
    let counters = Arc::new(MediaCounters::default());
    let session = MediaSession::new(
        "c1".into(),
        audio(srtp),
        source,
        Arc::clone(&counters),
        now,
        SystemTime::now(),
    )
    // As the shell sets it: the trunk's SIP came from the media's host.
    .with_signalling_peer(Some(peer().ip()));
    (session, counters)
}

/// An RTP packet from the peer: PCMU, 20 ms.
fn peer_packet(ssrc: u32, seq: u16, fill: u8) -> Vec<u8> {
    let header = RtpHeader {
        marker: false,
        payload_type: 0,
        sequence: seq,
        timestamp: u32::from(seq) * 160,
        ssrc,
        csrcs: Vec::new(),
    };
    let mut packet = Vec::new();
    rtp::write(&header, &[fill; 160], &mut packet);
    packet
}

fn transmits(session: &mut MediaSession) -> Vec<Transmit> {
    std::iter::from_fn(|| session.poll_transmit()).collect()
}

fn tone() -> Source {
    let samples: Vec<i16> = (0..8000)
        .map(|i| ((i as f64 * 0.3).sin() * 8000.0) as i16)
        .collect();
    Source::Loop(Arc::new(samples))
}

#[test]
fn only_the_peer_is_heard_and_answered() {
    let t0 = Instant::now();
    let (mut s, counters) = session(Source::Echo, None, t0);
    // A stranger's packet is neither echoed nor counted as the peer's.
    let stranger: SocketAddr = "203.0.113.66:4000".parse().unwrap();
    s.handle_rtp(t0, stranger, &mut peer_packet(7, 1, 0x11));
    assert!(transmits(&mut s).is_empty());
    assert_eq!(counters.foreign_packets.load(Relaxed), 1);
    // The peer's is echoed back to it, its payload unchanged.
    s.handle_rtp(t0, peer(), &mut peer_packet(7, 2, 0x22));
    let sent = transmits(&mut s);
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].to, sent[0].rtcp), (peer(), false));
    assert_eq!(
        rtp::parse(&sent[0].bytes).unwrap().payload,
        &[0x22; 160][..]
    );
    assert_eq!(counters.packets_in.load(Relaxed), 1);
}

#[test]
fn our_stream_stays_continuous_across_hold_music_silence_and_echo() {
    let t0 = Instant::now();
    let (mut s, _) = session(tone(), None, t0);
    let mut sent = Vec::new();
    for _ in 0..5 {
        s.handle_frame();
        sent.extend(transmits(&mut s));
    }
    // Silence: no packets, but media time runs on.
    s.handle_command(t0, Some(MediaCommand::Source(Source::Silence)));
    for _ in 0..3 {
        s.handle_frame();
        assert!(transmits(&mut s).is_empty());
    }
    s.handle_command(t0, Some(MediaCommand::Source(tone())));
    for _ in 0..2 {
        s.handle_frame();
        sent.extend(transmits(&mut s));
    }
    // Echo of a new peer SSRC continues from where our stream is.
    s.handle_command(t0, Some(MediaCommand::Source(Source::Echo)));
    s.handle_rtp(t0, peer(), &mut peer_packet(0xabcd, 9000, 0x33));
    sent.extend(transmits(&mut s));
    let headers: Vec<RtpHeader> = sent
        .iter()
        .map(|t| rtp::parse(&t.bytes).unwrap().header)
        .collect();
    assert_eq!(headers.len(), 8);
    assert!(
        headers.iter().all(|h| h.ssrc == headers[0].ssrc),
        "one SSRC"
    );
    for pair in headers.windows(2) {
        assert_eq!(
            pair[1].sequence,
            pair[0].sequence.wrapping_add(1),
            "no gap in sequence"
        );
    }
    let ts: Vec<u32> = headers
        .iter()
        .map(|h| h.timestamp.wrapping_sub(headers[0].timestamp))
        .collect();
    // Five frames, three silent ones skipped in time, two more, then the echo one frame on.
    assert_eq!(ts, [0, 160, 320, 480, 640, 1280, 1440, 1600]);
}

#[test]
fn srtp_protects_what_goes_out_and_refuses_what_does_not_authenticate() {
    let t0 = Instant::now();
    let (ours, theirs) = (MasterKey::random(), MasterKey::random());
    let suite = SrtpSuite::AesCm128HmacSha1_80;
    let keys = SrtpKeys {
        suite,
        ours,
        theirs,
    };
    let (mut s, counters) = session(Source::Echo, Some(keys), t0);
    let mut trunk = SrtpSession::new(suite, &theirs, &ours).unwrap();
    // A forged packet (plain RTP from the peer's own address) is dropped before anything.
    s.handle_rtp(t0, peer(), &mut peer_packet(5, 1, 0x44));
    assert!(transmits(&mut s).is_empty());
    assert_eq!(counters.srtp_rejected.load(Relaxed), 1);
    assert_eq!(counters.packets_in.load(Relaxed), 0);
    // The trunk's real packet is opened, echoed, and protected again on the way back.
    let mut packet = peer_packet(5, 2, 0x55);
    trunk.protect_rtp(&mut packet).unwrap();
    s.handle_rtp(t0, peer(), &mut packet);
    let mut sent = transmits(&mut s);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].bytes.len(), 12 + 160 + 10, "with its tag");
    let len = trunk.unprotect_rtp(&mut sent[0].bytes).unwrap();
    assert_eq!(
        rtp::parse(&sent[0].bytes[..len]).unwrap().payload,
        &[0x55; 160][..]
    );
    // Its RTCP goes out protected too (SRTCP index and tag after the report).
    s.handle_rtcp_tick(t0 + Duration::from_secs(5));
    let mut rtcp = transmits(&mut s);
    assert_eq!(rtcp.len(), 1);
    assert!(rtcp[0].rtcp);
    assert!(trunk.unprotect_rtcp(&mut rtcp[0].bytes).is_ok());
}

#[test]
fn a_silent_peer_times_out_except_in_early_media() {
    let t0 = Instant::now();
    let (mut s, _) = session(Source::Silence, None, t0);
    s.handle_rtcp_tick(t0 + Duration::from_secs(30));
    assert_eq!(s.poll_event(), None);
    s.handle_rtcp_tick(t0 + Duration::from_secs(61));
    assert_eq!(
        s.poll_event(),
        Some(MediaEvent::RtpTimeout { call: "c1".into() })
    );
    let (early, _) = session(Source::Silence, None, t0);
    let mut early = early.in_early_media();
    early.handle_rtcp_tick(t0 + Duration::from_secs(61));
    assert_eq!(early.poll_event(), None, "a waiting caller sends nothing");
    // Answered: from then on, its silence counts.
    early.handle_command(t0 + Duration::from_secs(70), Some(MediaCommand::Answered));
    early.handle_rtcp_tick(t0 + Duration::from_secs(131));
    assert!(matches!(
        early.poll_event(),
        Some(MediaEvent::RtpTimeout { .. })
    ));
}

#[test]
fn digits_replace_audio_and_stop_ends_with_an_rtcp_goodbye() {
    let t0 = Instant::now();
    let (mut s, _) = session(tone(), None, t0);
    s.handle_command(t0, Some(MediaCommand::SendDtmf("5".into())));
    s.handle_frame();
    let first = transmits(&mut s);
    let header = rtp::parse(&first[0].bytes).unwrap().header;
    assert_eq!(header.payload_type, 101, "telephone-event");
    assert!(header.marker, "an event's first packet is marked");
    assert!(!s.handle_command(t0, Some(MediaCommand::Stop)));
    let last = transmits(&mut s);
    assert_eq!(last.len(), 1);
    assert!(last[0].rtcp);
    // A BYE (packet type 203) closes the compound packet.
    assert!(last[0]
        .bytes
        .windows(2)
        .any(|w| w[0] & 0xc0 == 0x80 && w[1] == 203));
}
