//! A simulated browser: a str0m peer with full ICE, DTLS and SRTP on its own loopback socket,
//! sending pre-encoded audio frames. `callgate bench` runs many of them as its load, and tests
//! use one as an agent's browser where timing must be exact (a real Chromium is driven by the
//! browser tests).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::media::{Direction as RtcDirection, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;

use crate::media::codec::Encoder;
use crate::media::g711;
use crate::sdp::Codec;

/// A simulated browser: a str0m peer with full ICE on its own socket.
pub struct SimulatedBrowser {
    pub rtc: Rtc,
    pub socket: Arc<UdpSocket>,
    local: SocketAddr,
    mid: Option<Mid>,
    pending: Option<SdpPendingOffer>,
    started: Instant,
    /// How long ICE and DTLS took, once connected.
    pub connected: Option<Duration>,
    media_time: u64,
    /// Audio frames received, and how many of them were Opus.
    pub received: u64,
    pub received_opus: u64,
    /// Keep what arrives (`heard`), for tests that listen to it.
    pub keep_audio: bool,
    /// Each audio frame received, in order.
    pub heard: Vec<HeardFrame>,
}

/// One audio frame a simulated browser received.
#[derive(Debug, Clone)]
pub struct HeardFrame {
    /// When the peer gave it out (its depacketiser holds frames while a packet is missing).
    pub at: Instant,
    /// When its packet came off the socket.
    pub arrived: Instant,
    pub codec: Option<Codec>,
    /// The RTP sequence number, extended (it does not wrap).
    pub sequence: u64,
    /// The RTP timestamp, in the codec's clock.
    pub time: MediaTime,
    pub payload: Vec<u8>,
}

impl SimulatedBrowser {
    /// A peer offering only PCMU (`pcmu_only`) or only Opus, on a loopback socket.
    pub async fn new(pcmu_only: bool) -> std::io::Result<SimulatedBrowser> {
        SimulatedBrowser::offering(!pcmu_only, pcmu_only).await
    }

    /// A peer offering Opus, PCMU or both (as Chrome does); it sends the first it offers.
    pub async fn offering(opus: bool, pcmu: bool) -> std::io::Result<SimulatedBrowser> {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let local = socket.local_addr()?;
        let builder = Rtc::builder()
            .clear_codecs()
            .enable_opus(opus, false)
            .enable_pcmu(pcmu, false);
        let mut rtc = builder.build(Instant::now());
        if let Ok(c) = Candidate::host(local, "udp") {
            rtc.add_local_candidate(c);
        }
        Ok(SimulatedBrowser {
            rtc,
            socket,
            local,
            mid: None,
            pending: None,
            started: Instant::now(),
            connected: None,
            media_time: 0,
            received: 0,
            received_opus: 0,
            keep_audio: false,
            heard: Vec::new(),
        })
    }

    pub fn offer(&mut self) -> Option<String> {
        let mut change = self.rtc.sdp_api();
        let mid = change.add_media(MediaKind::Audio, RtcDirection::SendRecv, None, None, None);
        let (offer, pending) = change.apply()?;
        self.mid = Some(mid);
        self.pending = Some(pending);
        self.started = Instant::now();
        Some(offer.to_sdp_string())
    }

    pub fn answer(&mut self, sdp: &str) -> bool {
        let (Some(pending), Ok(answer)) = (self.pending.take(), SdpAnswer::from_sdp_string(sdp))
        else {
            return false;
        };
        self.rtc.sdp_api().accept_answer(pending, answer).is_ok()
    }

    /// Drive the peer: send what it wants sent; returns its next timeout.
    pub async fn drain(&mut self) -> Instant {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => return t,
                Ok(Output::Transmit(t)) => {
                    let _ = self.socket.send_to(&t.contents, t.destination).await;
                }
                Ok(Output::Event(Event::Connected)) => {
                    self.connected = Some(self.started.elapsed());
                }
                Ok(Output::Event(Event::MediaData(data))) => {
                    self.received += 1;
                    if super::codec_of(data.params.spec().codec) == Some(Codec::Opus) {
                        self.received_opus += 1;
                    }
                    if self.keep_audio {
                        self.heard.push(HeardFrame {
                            at: Instant::now(),
                            arrived: data.network_time,
                            codec: super::codec_of(data.params.spec().codec),
                            sequence: **data.seq_range.start(),
                            time: data.time,
                            payload: data.data.to_vec(),
                        });
                    }
                }
                Ok(Output::Event(_)) => {}
                Err(_) => return Instant::now() + Duration::from_secs(1),
            }
        }
    }

    pub fn receive(&mut self, from: SocketAddr, bytes: &[u8]) {
        self.receive_at(from, bytes, Instant::now());
    }

    /// A datagram that came off the socket at `at` (a load that queues datagrams keeps their
    /// arrival times).
    pub fn receive_at(&mut self, from: SocketAddr, bytes: &[u8], at: Instant) {
        let Ok(contents) = bytes.try_into() else {
            return;
        };
        let input = Input::Receive(
            at,
            Receive {
                proto: Protocol::Udp,
                source: from,
                destination: self.local,
                contents,
            },
        );
        let _ = self.rtc.handle_input(input);
    }

    pub fn send_frame(&mut self, payload: &[u8]) {
        let Some(mid) = self.mid else {
            return;
        };
        let Some(writer) = self.rtc.writer(mid) else {
            return;
        };
        let Some(params) = writer.payload_params().next().cloned() else {
            return;
        };
        let rate = params.spec().clock_rate.get();
        let time = MediaTime::new(
            self.media_time,
            Frequency::new(rate).unwrap_or(Frequency::FORTY_EIGHT_KHZ),
        );
        self.media_time += u64::from(rate / 50);
        let _ = writer.write(params.pt(), Instant::now(), time, payload.to_vec());
    }
}

/// A second of a tone at `hz`, encoded once in `codec` (a load must stay cheap).
pub fn tone_frames(codec: Codec, hz: f64) -> Vec<Vec<u8>> {
    second_of(codec, |t| (t * hz * std::f64::consts::TAU).sin() * 8000.0)
}

/// A second of voice-like audio (`bench::voice_sample`), encoded once in `codec`. What Opus
/// costs depends on the signal: voice costs it about half again as much as a steady tone.
pub fn voice_frames(codec: Codec) -> Vec<Vec<u8>> {
    second_of(codec, crate::bench::voice_sample)
}

/// Frames in one period of `pulse_frames`, and how many of them carry the tone.
pub const PULSE_PERIOD: usize = 10;
pub const PULSE_LENGTH: usize = 3;

/// A second of pulses: 60 ms of a 1 kHz tone every 200 ms, silence between, encoded in
/// `codec`. Frame `f` starts a pulse when `f % PULSE_PERIOD == 0`; the receiver times the
/// first loud frame it hears (see `bench::OnsetDetector`).
pub fn pulse_frames(codec: Codec) -> Vec<Vec<u8>> {
    second_of(codec, |t| {
        if ((t * 50.0) as usize % PULSE_PERIOD) < PULSE_LENGTH {
            (t * 1000.0 * std::f64::consts::TAU).sin() * 8000.0
        } else {
            0.0
        }
    })
}

/// Fifty 20 ms frames of `signal` (sample value at t seconds), encoded in `codec`.
fn second_of(codec: Codec, signal: impl Fn(f64) -> f64) -> Vec<Vec<u8>> {
    let mut encoder = match Encoder::new(codec) {
        Ok(e) => e,
        Err(_) => return vec![vec![0xff; 160]],
    };
    (0..50)
        .map(|f| {
            let pcm: Vec<i16> = (0..160)
                .map(|i| signal((f * 160 + i) as f64 / 8000.0) as i16)
                .collect();
            let mut out = Vec::new();
            if codec == Codec::Pcmu {
                g711::encode_ulaw_into(&pcm, &mut out);
            } else if encoder.encode(&pcm, &mut out).is_err() {
                out = vec![0xf8, 0xff, 0xfe];
            }
            out
        })
        .collect()
}
