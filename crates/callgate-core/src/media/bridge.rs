//! The media bridge between a call's SIP leg and its agent's browser, as the call's media task
//! runs it on each 20 ms frame. Same codec on both sides: packets pass through untouched, no
//! jitter buffer (the endpoints have theirs). Different codecs: each direction terminates here,
//! so each gets an adaptive jitter buffer, a decoder with loss concealment (Opus in-band FEC
//! when the next packet is at hand) and an encoder toward the other side. PCM runs at 8 kHz
//! throughout: Opus encodes straight from it and decodes to it, so nothing is resampled.
//! While the call is recorded, a passing-through bridge also decodes both sides (a tap with
//! its own jitter buffers), so the recorder gets each side's PCM on every frame either way.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::media::agent::{AgentPacket, PeerCodec, PeerId};
use crate::media::codec::{Decoder, Encoder, FRAME_SAMPLES};
use crate::media::jitter::{JitterBuffer, JitterStats, Playout};
use crate::sdp::Codec;

/// The encoder toward a browser's peer connection: it follows the codec the browser
/// negotiated and the loss it reports (which turns Opus in-band FEC on and off).
#[derive(Default)]
pub struct PeerEncoder(Option<(Codec, Encoder)>);

impl PeerEncoder {
    /// The encoder for `codec`, planned for the loss `peer` last reported.
    pub fn for_peer(&mut self, codec: Codec, peer: &PeerCodec) -> Option<&mut Encoder> {
        if self.0.as_ref().is_none_or(|(c, _)| *c != codec) {
            self.0 = Encoder::new(codec).ok().map(|e| (codec, e));
        }
        let (_, encoder) = self.0.as_mut()?;
        if let Err(e) = encoder.set_expected_loss(peer.loss_percent()) {
            tracing::debug!(error = %e, "cannot adapt the encoder to reported loss");
        }
        Some(encoder)
    }
}

/// What a call needs to know of its agent's peer connection (or, for the two legs of a
/// transfer, of the other leg's media, which then stands where the browser would). The
/// channels that carry the audio stay with the call's task (`media::call::AgentWires`).
#[derive(Debug)]
pub struct AgentLink {
    pub peer: PeerId,
    /// The codec the agent's browser negotiated; it may change when the browser re-offers.
    pub codec: Arc<PeerCodec>,
    /// Set for a leg joined to another call: frames go to that call's media as packets, and
    /// `peer` is unused.
    pub joined: Option<JoinedLeg>,
}

/// The numbering of the packets a joined leg sends the other leg, as if from a browser's
/// microphone.
#[derive(Debug)]
pub struct JoinedLeg {
    sequence: u16,
    timestamp: u32,
}

impl JoinedLeg {
    pub fn new() -> JoinedLeg {
        JoinedLeg {
            sequence: rand::random(),
            timestamp: rand::random(),
        }
    }

    /// One 20 ms frame, numbered and timed for the other leg's jitter buffer.
    fn packet(&mut self, codec: Codec, payload: Vec<u8>) -> AgentPacket {
        let packet = AgentPacket {
            sequence: self.sequence,
            timestamp: self.timestamp,
            codec,
            payload,
        };
        self.sequence = self.sequence.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(codec.clock_rate() / 50);
        packet
    }
}

impl Default for JoinedLeg {
    fn default() -> JoinedLeg {
        JoinedLeg::new()
    }
}

/// One direction of a transcoded bridge: packets in, one PCM frame out per tick.
pub(crate) struct Terminated {
    codec: Codec,
    jitter: JitterBuffer,
    decoder: Decoder,
    last: [i16; FRAME_SAMPLES],
    losses: u32,
}

impl Terminated {
    pub(crate) fn new(codec: Codec) -> Option<Terminated> {
        Some(Terminated {
            codec,
            jitter: JitterBuffer::new(codec.clock_rate()),
            decoder: Decoder::new(codec).ok()?,
            last: [0; FRAME_SAMPLES],
            losses: 0,
        })
    }

    pub(crate) fn codec(&self) -> Codec {
        self.codec
    }

    /// A packet (`arrival` in the codec's clock units).
    pub(crate) fn push(&mut self, sequence: u16, timestamp: u32, arrival: u32, payload: &[u8]) {
        self.jitter.push(sequence, timestamp, arrival, payload);
    }

    /// The frame due now, concealed when lost; `None` while nothing is playing.
    pub(crate) fn frame(&mut self, pcm: &mut Vec<i16>) -> Option<()> {
        pcm.clear();
        let decoded = match self.jitter.pop() {
            Playout::Idle => return None,
            Playout::Frame(payload) => {
                self.losses = 0;
                self.decoder.decode(&payload, pcm).is_ok()
            }
            Playout::Lost { next } => {
                self.losses += 1;
                match (&mut self.decoder, next) {
                    (Decoder::Opus(_), Some(next)) => self.decoder.decode_fec(&next, pcm).is_ok(),
                    (Decoder::Opus(_), None) => self.decoder.decode(&[], pcm).is_ok(),
                    _ => {
                        // G.711 has no concealment of its own: repeat the last frame, fading.
                        let gain = 0.5f32.powi(self.losses as i32);
                        pcm.extend(self.last.iter().map(|s| (f32::from(*s) * gain) as i16));
                        true
                    }
                }
            }
        };
        if !decoded {
            pcm.clear();
        }
        pcm.resize(FRAME_SAMPLES, 0);
        self.last.copy_from_slice(&pcm[..FRAME_SAMPLES]);
        Some(())
    }
}

/// What the call task does with an agent packet.
pub enum FromAgent {
    /// Same codec as the trunk: send this payload on as it is.
    Forward(Vec<u8>),
    /// Buffered for the frame clock.
    Buffered,
    /// Not usable (a codec the trunk side cannot be fed from).
    Dropped,
}

pub struct Bridge {
    pub link: AgentLink,
    trunk_codec: Codec,
    /// Trunk → agent, when transcoding.
    from_trunk: Option<Terminated>,
    /// Agent → trunk, when transcoding.
    from_agent: Option<Terminated>,
    toward_agent: PeerEncoder,
    pcm: Vec<i16>,
    /// `pcm` holds the trunk's frame of this tick.
    trunk_frame: bool,
    /// Decode both sides even when passing through: the call is being recorded.
    record: bool,
    /// A supervisor whispers or barges: audio is mixed both ways, so nothing passes through.
    mixing: bool,
    /// The codec of the agent's last packet: with an adaptive downlink the browser may hear
    /// PCMU (passed through) while it speaks Opus (transcoded), so each direction decides
    /// apart.
    agent_sends: Option<Codec>,
    /// Whether the trunk's packets passed through at the last look: the downlink codec can
    /// change under a call, and a jitter buffer left idle meanwhile holds stale audio.
    was_downlink_passthrough: bool,
    /// The sequence number of the trunk's last packet passed through to the browser.
    last_forwarded: Option<u16>,
    payload: Vec<u8>,
    /// Packets for the agent's side until the call's task takes them.
    sent: VecDeque<AgentPacket>,
    pub frames_to_agent: u64,
    pub frames_from_agent: u64,
}

impl Bridge {
    pub fn new(link: AgentLink, trunk_codec: Codec) -> Bridge {
        Bridge {
            link,
            trunk_codec,
            from_trunk: None,
            from_agent: None,
            toward_agent: PeerEncoder::default(),
            pcm: Vec::with_capacity(FRAME_SAMPLES * 6),
            trunk_frame: false,
            record: false,
            mixing: false,
            agent_sends: None,
            was_downlink_passthrough: false,
            last_forwarded: None,
            payload: Vec::with_capacity(512),
            sent: VecDeque::new(),
            frames_to_agent: 0,
            frames_from_agent: 0,
        }
    }

    pub fn peer(&self) -> PeerId {
        self.link.peer
    }

    /// The trunk side renegotiated its codec.
    pub fn set_trunk_codec(&mut self, codec: Codec) {
        if codec != self.trunk_codec {
            self.trunk_codec = codec;
            self.from_trunk = None;
            self.from_agent = None;
        }
    }

    /// Whether both sides must be decoded for the recorder or a listening supervisor.
    pub fn set_taps(&mut self, on: bool) {
        if self.record != on {
            self.record = on;
            if !on {
                // The taps only served the recorder; stale audio must not play into the next
                // recorded stretch.
                if self.downlink_passthrough() {
                    self.from_trunk = None;
                }
                if self.uplink_passthrough() {
                    self.from_agent = None;
                }
            }
        }
    }

    /// The trunk side's PCM of this tick, when it had a frame.
    pub fn trunk_frame(&self) -> Option<&[i16]> {
        self.trunk_frame.then_some(&self.pcm[..])
    }

    /// The codec the browser hears (the trunk's own on an adaptive downlink's clean path).
    fn agent_codec(&self) -> Option<Codec> {
        self.link.codec.toward(self.trunk_codec)
    }

    /// The trunk's packets go to the browser untouched (it hears the trunk's codec).
    pub fn downlink_passthrough(&self) -> bool {
        !self.mixing && self.agent_codec() == Some(self.trunk_codec)
    }

    /// The agent's packets go to the trunk untouched (it speaks the trunk's codec).
    pub fn uplink_passthrough(&self) -> bool {
        !self.mixing && self.agent_sends == Some(self.trunk_codec)
    }

    /// Nothing is decoded or encoded on this call's way through, either direction.
    pub fn passthrough(&self) -> bool {
        self.downlink_passthrough() && self.uplink_passthrough()
    }

    /// Mix both ways (a supervisor's voice joins one side or both) instead of passing
    /// packets through; the call media encodes what each side hears.
    pub fn set_mixing(&mut self, on: bool) {
        if self.mixing != on {
            let was = (self.downlink_passthrough(), self.uplink_passthrough());
            self.mixing = on;
            // Jitter buffers that sat idle while packets passed through hold stale audio.
            if was.0 != self.downlink_passthrough() {
                self.from_trunk = None;
            }
            if was.1 != self.uplink_passthrough() {
                self.from_agent = None;
            }
        }
    }

    /// Follow a change of the browser's downlink codec (adaptive downlink) without skipping
    /// or repeating audio. Into passing through: what the trunk's jitter buffer holds is in
    /// the trunk's codec already and goes out first, unplayed. Into transcoding: a buffer the
    /// recorder kept current skips what already went out; an idle one starts afresh.
    fn follow_downlink(&mut self) -> bool {
        let now = self.downlink_passthrough();
        if now == self.was_downlink_passthrough {
            return now;
        }
        self.was_downlink_passthrough = now;
        if now {
            let waiting: Vec<Vec<u8>> = self
                .from_trunk
                .as_ref()
                .map(|t| t.jitter.pending().map(<[u8]>::to_vec).collect())
                .unwrap_or_default();
            for payload in waiting {
                self.send_to_agent(self.trunk_codec, payload);
            }
            if !self.record {
                self.from_trunk = None;
            }
        } else {
            match (self.record, self.from_trunk.as_mut(), self.last_forwarded) {
                (true, Some(t), Some(seq)) => t.jitter.skip_through(seq),
                _ => self.from_trunk = None,
            }
        }
        now
    }

    /// The trunk's frame of this tick, decoded but not sent (the caller mixes and sends it
    /// with `send_pcm_to_agent`).
    pub fn decode_trunk(&mut self) -> Option<&[i16]> {
        self.trunk_frame = false;
        self.from_trunk.as_mut()?.frame(&mut self.pcm)?;
        self.trunk_frame = true;
        Some(&self.pcm[..])
    }

    /// Encode a mixed frame for the agent's browser and send it.
    pub fn send_pcm_to_agent(&mut self, pcm: &[i16]) {
        let Some(agent_codec) = self.agent_codec() else {
            return;
        };
        self.encode_for_agent(agent_codec, pcm);
    }

    /// Encode in the browser's codec (the encoder follows a renegotiated codec) and send.
    fn encode_for_agent(&mut self, agent_codec: Codec, pcm: &[i16]) {
        let Some(encoder) = self.toward_agent.for_peer(agent_codec, &self.link.codec) else {
            return;
        };
        let mut payload = std::mem::take(&mut self.payload);
        if encoder.encode(pcm, &mut payload).is_ok() {
            self.send_to_agent(agent_codec, payload.clone());
        }
        self.payload = payload;
    }

    fn send_to_agent(&mut self, codec: Codec, payload: Vec<u8>) {
        let packet = match self.link.joined.as_mut() {
            Some(leg) => leg.packet(codec, payload),
            // The WebRTC side numbers a browser's packets itself.
            None => AgentPacket {
                sequence: 0,
                timestamp: 0,
                codec,
                payload,
            },
        };
        self.sent.push_back(packet);
        self.frames_to_agent += 1;
    }

    /// The next packet for the agent's side, in the order they were made.
    pub fn poll_sent(&mut self) -> Option<AgentPacket> {
        self.sent.pop_front()
    }

    /// An audio packet from the trunk (`arrival` in the trunk codec's clock units).
    pub fn on_trunk_packet(&mut self, sequence: u16, timestamp: u32, arrival: u32, payload: &[u8]) {
        if self.agent_codec().is_none() {
            return; // the browser has not negotiated media yet: nobody to play it to
        }
        if self.follow_downlink() {
            self.send_to_agent(self.trunk_codec, payload.to_vec());
            self.last_forwarded = Some(sequence);
            if !self.record {
                return;
            }
        }
        let codec = self.trunk_codec;
        if self.from_trunk.as_ref().is_none_or(|t| t.codec != codec) {
            self.from_trunk = Terminated::new(codec);
        }
        if let Some(t) = self.from_trunk.as_mut() {
            t.jitter.push(sequence, timestamp, arrival, payload);
        }
    }

    /// A packet of the agent's microphone (`arrival` in its codec's clock units).
    pub fn on_agent_packet(&mut self, packet: AgentPacket, arrival: u32) -> FromAgent {
        self.frames_from_agent += 1;
        if self.agent_sends != Some(packet.codec) {
            let was = self.uplink_passthrough();
            self.agent_sends = Some(packet.codec);
            if was && !self.uplink_passthrough() && !self.record {
                self.from_agent = None;
            }
        }
        if self.uplink_passthrough() {
            if self.record {
                self.buffer_agent(&packet, arrival);
            }
            return FromAgent::Forward(packet.payload);
        }
        if self.buffer_agent(&packet, arrival) {
            FromAgent::Buffered
        } else {
            FromAgent::Dropped
        }
    }

    fn buffer_agent(&mut self, packet: &AgentPacket, arrival: u32) -> bool {
        if self
            .from_agent
            .as_ref()
            .is_none_or(|t| t.codec != packet.codec)
        {
            self.from_agent = Terminated::new(packet.codec);
        }
        match self.from_agent.as_mut() {
            Some(t) => {
                t.jitter
                    .push(packet.sequence, packet.timestamp, arrival, &packet.payload);
                true
            }
            None => false,
        }
    }

    /// One tick toward the agent: the trunk's frame, decoded and encoded for the browser
    /// (decoded only, for the recorder, when passing through).
    pub fn tick_toward_agent(&mut self) {
        self.trunk_frame = false;
        let transcoding = !self.follow_downlink();
        if !transcoding && !self.record {
            return;
        }
        let Some(agent_codec) = self.agent_codec() else {
            return;
        };
        let Some(from_trunk) = self.from_trunk.as_mut() else {
            return;
        };
        if from_trunk.frame(&mut self.pcm).is_none() {
            return;
        }
        self.trunk_frame = true;
        if !transcoding {
            return;
        }
        let pcm = std::mem::take(&mut self.pcm);
        self.encode_for_agent(agent_codec, &pcm);
        self.pcm = pcm;
    }

    /// One tick toward the trunk: the agent's frame as 8 kHz PCM, or `None` when the agent
    /// sends nothing (or passes through).
    pub fn tick_toward_trunk(&mut self, pcm: &mut Vec<i16>) -> Option<()> {
        self.from_agent.as_mut()?.frame(pcm)
    }

    pub fn jitter_stats(&self) -> (Option<JitterStats>, Option<JitterStats>) {
        (
            self.from_trunk.as_ref().map(|t| t.jitter.stats()),
            self.from_agent.as_ref().map(|t| t.jitter.stats()),
        )
    }
}
