//! The call's media driven by hand, with no socket and no clock: what arrives goes in with
//! its time, and what the session queues to send is read back and decoded.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::*;
use crate::media::call_recording::{RecordingState, RecordingUpdate};
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
        s.handle_frame(t0);
        sent.extend(transmits(&mut s));
    }
    // Silence: no packets, but media time runs on.
    s.handle_command(t0, Some(MediaCommand::Source(Source::Silence)));
    for _ in 0..3 {
        s.handle_frame(t0);
        assert!(transmits(&mut s).is_empty());
    }
    s.handle_command(t0, Some(MediaCommand::Source(tone())));
    for _ in 0..2 {
        s.handle_frame(t0);
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
    s.handle_frame(t0);
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

/// A browser's peer connection that negotiated `codec`.
fn browser(peer: u64, codec: Codec) -> AgentLink {
    AgentLink {
        peer,
        codec: Arc::new(crate::media::agent::PeerCodec::of(codec)),
        joined: None,
    }
}

/// A packet of a browser's microphone: PCMU, 20 ms of `fill`.
fn mic(seq: u16, fill: u8) -> AgentPacket {
    AgentPacket {
        sequence: seq,
        timestamp: u32::from(seq) * 160,
        codec: Codec::Pcmu,
        payload: vec![fill; 160],
    }
}

fn agent_audio(session: &mut MediaSession) -> Vec<AgentAudio> {
    std::iter::from_fn(|| session.poll_agent_audio()).collect()
}

/// An RTP packet the session sent the trunk, read back.
struct Sent {
    header: RtpHeader,
    payload: Vec<u8>,
}

fn rtp_out(session: &mut MediaSession) -> Vec<Sent> {
    transmits(session)
        .into_iter()
        .filter(|t| !t.rtcp)
        .map(|t| {
            let packet = rtp::parse(&t.bytes).unwrap();
            Sent {
                header: packet.header.clone(),
                payload: packet.payload.to_vec(),
            }
        })
        .collect()
}

/// Mean absolute amplitude of PCMU audio.
fn loudness(payload: &[u8]) -> f64 {
    payload
        .iter()
        .map(|b| f64::from(crate::media::g711::ulaw_decode(*b)).abs())
        .sum::<f64>()
        / payload.len().max(1) as f64
}

const FRAME_TIME: Duration = Duration::from_millis(20);

#[test]
fn a_bridge_passes_audio_both_ways_and_our_stream_runs_on_through_hold_and_resume() {
    let t0 = Instant::now();
    let (mut s, _) = session(tone(), None, t0);
    for i in 0..3 {
        s.handle_frame(t0 + FRAME_TIME * i);
    }
    let music = rtp_out(&mut s);
    assert_eq!(music.len(), 3);
    s.handle_command(t0, Some(MediaCommand::Bridge(browser(7, Codec::Pcmu))));
    // The trunk's packet reaches the agent untouched (same codec both ways).
    s.handle_rtp(t0, peer(), &mut peer_packet(9, 1, 0x33));
    let heard = agent_audio(&mut s);
    assert_eq!(heard.len(), 1);
    assert_eq!(heard[0].to, Party::Agent);
    assert_eq!(heard[0].packet.payload, vec![0x33; 160]);
    // The agent's packet reaches the trunk on our stream: same SSRC, the next sequence.
    s.handle_agent_packet(t0, mic(500, 0x44));
    let spoken = rtp_out(&mut s);
    assert_eq!(spoken.len(), 1);
    assert_eq!(spoken[0].payload, vec![0x44; 160]);
    assert_eq!(spoken[0].header.ssrc, music[0].header.ssrc);
    assert_eq!(
        spoken[0].header.sequence,
        music[2].header.sequence.wrapping_add(1)
    );
    // Hold: the agent hears nothing of the trunk, the trunk hears the music, on the stream.
    s.handle_command(t0, Some(MediaCommand::Unbridge));
    s.handle_command(t0, Some(MediaCommand::Source(tone())));
    s.handle_rtp(t0, peer(), &mut peer_packet(9, 2, 0x33));
    assert!(agent_audio(&mut s).is_empty());
    s.handle_frame(t0 + FRAME_TIME * 4);
    let held = rtp_out(&mut s);
    assert_eq!(held.len(), 1);
    assert_eq!(
        held[0].header.sequence,
        spoken[0].header.sequence.wrapping_add(1)
    );
    // Resume: the agent's packets go on where the stream is, timestamps moving forward
    // although the browser's own clock is elsewhere.
    s.handle_command(t0, Some(MediaCommand::Bridge(browser(7, Codec::Pcmu))));
    s.handle_agent_packet(t0 + FRAME_TIME * 5, mic(9_000, 0x55));
    let resumed = rtp_out(&mut s);
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0].header.ssrc, music[0].header.ssrc);
    assert_eq!(
        resumed[0].header.sequence,
        held[0].header.sequence.wrapping_add(1)
    );
    let step = resumed[0]
        .header
        .timestamp
        .wrapping_sub(held[0].header.timestamp);
    assert!((1..=8_000).contains(&step), "timestamp moved by {step}");
}

#[test]
fn a_whispering_supervisor_is_heard_by_the_agent_and_never_by_the_prospect() {
    let t0 = Instant::now();
    let (mut s, _) = session(Source::Silence, None, t0);
    s.handle_command(t0, Some(MediaCommand::Bridge(browser(7, Codec::Pcmu))));
    s.handle_command(
        t0,
        Some(MediaCommand::Monitor(MonitorChange::Start(
            browser(8, Codec::Pcmu),
            MonitorMode::Whisper,
        ))),
    );
    let (mut to_agent, mut to_supervisor, mut to_trunk) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..40u16 {
        let now = t0 + FRAME_TIME * u32::from(i);
        // The prospect and the agent are silent; the supervisor speaks.
        s.handle_rtp(now, peer(), &mut peer_packet(9, i, 0xFF));
        s.handle_agent_packet(now, mic(i, 0xFF));
        s.handle_supervisor_packet(now, mic(i, 0x20));
        s.handle_frame(now);
        for audio in agent_audio(&mut s) {
            match audio.to {
                Party::Agent => to_agent.push(audio.packet),
                Party::Supervisor => to_supervisor.push(audio.packet),
            }
        }
        to_trunk.extend(rtp_out(&mut s).into_iter().map(|p| p.payload));
    }
    let agent_hears = to_agent
        .iter()
        .map(|p| loudness(&p.payload))
        .fold(0.0, f64::max);
    let prospect_hears = to_trunk.iter().map(|p| loudness(p)).fold(0.0, f64::max);
    assert!(
        agent_hears > 1000.0,
        "the agent hears the whisper ({agent_hears})"
    );
    assert!(
        prospect_hears < 50.0,
        "the prospect never does ({prospect_hears})"
    );
    assert!(!to_supervisor.is_empty(), "the supervisor hears the call");
    assert!(
        to_trunk.len() >= 30,
        "the prospect hears the agent's frames"
    );
}

#[test]
fn the_recording_follows_the_bridge_in_segments_and_hands_the_writer_each_step() {
    let t0 = Instant::now();
    let (mut s, _) = session(Source::Silence, None, t0);
    s.set_recording(RecordingSink::new(std::path::PathBuf::from("/rec")));
    let ops =
        |s: &mut MediaSession| std::iter::from_fn(|| s.poll_recording_op()).collect::<Vec<_>>();
    let updates = |s: &mut MediaSession| {
        std::iter::from_fn(|| s.poll_event())
            .filter_map(|e| match e {
                MediaEvent::Recording { update, .. } => Some(update),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    s.handle_command(t0, Some(MediaCommand::Record(RecordWant::On)));
    assert!(
        ops(&mut s).is_empty(),
        "nothing is written before the bridge"
    );
    s.handle_command(t0, Some(MediaCommand::Bridge(browser(7, Codec::Pcmu))));
    let opened = ops(&mut s);
    let Some(WriterOp::Open { path, .. }) = opened.first() else {
        panic!("the file opens first: {opened:?}");
    };
    assert!(
        path.starts_with("/rec") && path.ends_with("c1.wav"),
        "{path:?}"
    );
    let first = updates(&mut s);
    assert_eq!(
        first.last().map(|u| u.state),
        Some(RecordingState::Recording)
    );
    assert_eq!(
        first
            .last()
            .and_then(|u| u.segment.as_ref())
            .map(|g| (g.index, g.offset_ms)),
        Some((0, 0))
    );
    let mut now = t0;
    let frame = |s: &mut MediaSession, now: &mut Instant, n: u16| {
        for i in 0..n {
            *now += FRAME_TIME;
            s.handle_rtp(*now, peer(), &mut peer_packet(9, i, 0x33));
            s.handle_agent_packet(*now, mic(i, 0x44));
            s.handle_frame(*now);
        }
    };
    // 200 ms: one batch of both sides, 10 frames each.
    frame(&mut s, &mut now, 10);
    let batch = ops(&mut s);
    assert!(
        matches!(&batch[..], [WriterOp::Audio { prospect, agent, .. }]
            if prospect.len() == 1600 && agent.len() == 1600),
        "{batch:?}"
    );
    // Hold: the segment closes at 200 ms and the header is brought up to date.
    s.handle_command(now, Some(MediaCommand::Unbridge));
    assert!(matches!(&ops(&mut s)[..], [WriterOp::Pause { .. }]));
    let closed = updates(&mut s);
    assert_eq!(closed.last().map(|u| u.state), Some(RecordingState::Paused));
    assert_eq!(
        closed
            .last()
            .and_then(|u| u.segment.as_ref())
            .map(|g| (g.index, g.duration_ms)),
        Some((0, Some(200)))
    );
    frame(&mut s, &mut now, 5);
    assert!(ops(&mut s).is_empty(), "nothing is written on hold");
    // Resume: a second segment where the first ended in the file.
    s.handle_command(now, Some(MediaCommand::Bridge(browser(7, Codec::Pcmu))));
    let reopened = updates(&mut s);
    assert_eq!(
        reopened
            .last()
            .and_then(|u| u.segment.as_ref())
            .map(|g| (g.index, g.offset_ms)),
        Some((1, 200))
    );
    frame(&mut s, &mut now, 3);
    s.handle_command(now, Some(MediaCommand::Stop));
    let last = ops(&mut s);
    assert!(
        matches!(&last[..], [WriterOp::Audio { prospect, .. }, WriterOp::Pause { .. }, WriterOp::Close { .. }]
            if prospect.len() == 480),
        "{last:?}"
    );
}

fn recording_events(s: &mut MediaSession) -> Vec<RecordingUpdate> {
    std::iter::from_fn(|| s.poll_event())
        .filter_map(|e| match e {
            MediaEvent::Recording { update, .. } => Some(update),
            _ => None,
        })
        .collect()
}

#[test]
fn a_refused_open_is_reported_failed_and_never_opened() {
    let t0 = Instant::now();
    let (mut s, _) = session(Source::Silence, None, t0);
    s.set_recording(RecordingSink::new(std::path::PathBuf::from("/rec")));
    s.handle_command(t0, Some(MediaCommand::Record(RecordWant::On)));
    s.handle_command(t0, Some(MediaCommand::Bridge(browser(7, Codec::Pcmu))));
    let Some(open @ WriterOp::Open { .. }) = s.poll_recording_op() else {
        panic!("the file opens first");
    };
    s.handle_recording_refused(t0, open, "the recording writer stopped");
    let updates = recording_events(&mut s);
    assert_eq!(
        updates,
        vec![RecordingUpdate {
            state: RecordingState::Failed,
            path: None,
            segment: None,
        }],
        "no path or segment of a file that never was"
    );
    assert!(s.poll_recording_op().is_none(), "nothing to close");
    // The call's audio still flows; nothing more is written.
    s.handle_agent_packet(t0, mic(1, 0x44));
    assert_eq!(rtp_out(&mut s).len(), 1);
    for i in 0..20 {
        s.handle_frame(t0 + FRAME_TIME * i);
    }
    assert!(s.poll_recording_op().is_none());
}

#[test]
fn a_writer_falling_behind_fails_the_recording_and_the_call_goes_on() {
    let t0 = Instant::now();
    let (mut s, _) = session(Source::Silence, None, t0);
    s.set_recording(RecordingSink::new(std::path::PathBuf::from("/rec")));
    s.handle_command(t0, Some(MediaCommand::Record(RecordWant::On)));
    s.handle_command(t0, Some(MediaCommand::Bridge(browser(7, Codec::Pcmu))));
    assert!(matches!(s.poll_recording_op(), Some(WriterOp::Open { .. })));
    let opened = recording_events(&mut s);
    assert!(opened.last().is_some_and(|u| u.path.is_some()));
    let mut batch = None;
    for i in 1..=10u16 {
        let now = t0 + FRAME_TIME * u32::from(i);
        s.handle_agent_packet(now, mic(i, 0x44));
        s.handle_frame(now);
        batch = batch.or_else(|| s.poll_recording_op());
    }
    assert_eq!(rtp_out(&mut s).len(), 10, "the agent was heard meanwhile");
    let Some(audio @ WriterOp::Audio { .. }) = batch else {
        panic!("a batch after 200 ms: {batch:?}");
    };
    s.handle_recording_refused(
        t0 + FRAME_TIME * 10,
        audio,
        "the recording writer is too far behind (slow disk)",
    );
    let failed = recording_events(&mut s);
    assert_eq!(failed.last().map(|u| u.state), Some(RecordingState::Failed));
    assert_eq!(
        failed
            .last()
            .and_then(|u| u.segment.as_ref())
            .map(|g| (g.index, g.duration_ms)),
        Some((0, Some(200))),
        "the open segment closes where the writing stopped"
    );
    assert!(matches!(
        s.poll_recording_op(),
        Some(WriterOp::Close { .. })
    ));
    assert!(s.poll_recording_op().is_none());
    // The call's audio still flows.
    s.handle_agent_packet(t0 + FRAME_TIME * 11, mic(11, 0x44));
    assert_eq!(rtp_out(&mut s).len(), 1);
}

#[test]
fn opus_toward_the_trunk_carries_fec_only_while_the_trunk_reports_loss() {
    let t0 = Instant::now();
    let counters = Arc::new(MediaCounters::default());
    let opus = AudioSession {
        codec: Codec::Opus,
        pt: 111,
        clock_rate: 48000,
        opus_fec: true,
        ..audio(None)
    };
    // Voice-like audio: libopus adds FEC only to frames its voice detector calls active.
    let voice = Source::Loop(Arc::new(crate::media::tones::voice(8000, 400)));
    let mut s = MediaSession::new("c1".into(), opus, voice, counters, t0, SystemTime::now())
        .with_signalling_peer(Some(peer().ip()));
    let mut now = t0;
    let mut with_fec = |s: &mut MediaSession, frames: u32| {
        let mut n = 0;
        for _ in 0..frames {
            now += FRAME_TIME;
            s.handle_frame(now);
            n += rtp_out(s)
                .iter()
                .filter(|p| crate::media::codec::packet_has_fec(&p.payload))
                .count();
        }
        n
    };
    let report = |s: &mut MediaSession, fraction_lost: u8| {
        let ssrc = s.stream.ssrc();
        let mut rr = Vec::new();
        rtcp::write_receiver_report(
            0x5eed,
            &[rtcp::ReportBlock {
                ssrc,
                fraction_lost,
                cumulative_lost: 0,
                extended_highest_seq: 0,
                jitter: 0,
                last_sr: 0,
                delay_since_last_sr: 0,
            }],
            "peer",
            &mut rr,
        );
        s.handle_rtcp(t0, PEER_RTCP.parse().unwrap(), &mut rr);
    };
    assert_eq!(with_fec(&mut s, 100), 0, "no loss reported, no FEC");
    report(&mut s, 13); // 5 %
    let lossy = with_fec(&mut s, 100);
    assert!(
        lossy >= 60,
        "only {lossy} of 100 packets carry FEC at 5 % loss"
    );
    report(&mut s, 0);
    with_fec(&mut s, 2);
    assert_eq!(with_fec(&mut s, 100), 0, "FEC stops with the loss");
}
