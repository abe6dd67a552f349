//! A supervisor on a call: their own peer connection joined to the call's media task, which
//! mixes on its 20 ms clock what each party hears (`media/mixer`). Listen: the supervisor
//! hears the prospect and the agent. Whisper: the agent hears the supervisor too. Barge: both
//! do. The link belongs to the call, not to the agent, so when the agent holds the call the
//! supervisor hears what the call is going through (the prospect and the hold audio) instead
//! of the agent's next call, and on resume monitoring simply carries on.

use std::collections::VecDeque;

use crate::media::agent::AgentPacket;
use crate::media::bridge::{AgentLink, PeerEncoder, Terminated};
use crate::media::codec::FRAME_SAMPLES;
pub use crate::media::mixer::MonitorMode;
use crate::sdp::Codec;

/// What a call's media is told about its supervisor.
#[derive(Debug)]
pub enum MonitorChange {
    Start(AgentLink, MonitorMode),
    Mode(MonitorMode),
    Stop,
}

pub struct Monitor {
    pub link: AgentLink,
    pub mode: MonitorMode,
    from_supervisor: Option<Terminated>,
    /// The prospect's audio while the call is not bridged to its agent (on hold): the bridge
    /// decodes it otherwise.
    from_trunk: Option<Terminated>,
    toward: PeerEncoder,
    supervisor_pcm: Vec<i16>,
    trunk_pcm: Vec<i16>,
    payload: Vec<u8>,
    /// Packets for the supervisor until the call's task takes them.
    sent: VecDeque<AgentPacket>,
    pub frames_to_supervisor: u64,
}

impl Monitor {
    pub fn new(link: AgentLink, mode: MonitorMode) -> Monitor {
        Monitor {
            link,
            mode,
            from_supervisor: None,
            from_trunk: None,
            toward: PeerEncoder::default(),
            supervisor_pcm: Vec::with_capacity(FRAME_SAMPLES * 6),
            trunk_pcm: Vec::with_capacity(FRAME_SAMPLES * 6),
            payload: Vec::with_capacity(512),
            sent: VecDeque::new(),
            frames_to_supervisor: 0,
        }
    }

    /// A packet of the supervisor's microphone (`arrival` in its codec's clock units).
    pub fn on_supervisor_packet(&mut self, packet: &AgentPacket, arrival: u32) {
        if self
            .from_supervisor
            .as_ref()
            .is_none_or(|t| t.codec() != packet.codec)
        {
            self.from_supervisor = Terminated::new(packet.codec);
        }
        if let Some(t) = self.from_supervisor.as_mut() {
            t.push(packet.sequence, packet.timestamp, arrival, &packet.payload);
        }
    }

    /// The supervisor's frame of this tick, if they are heard at all and sent something.
    pub fn supervisor_frame(&mut self) -> Option<&[i16]> {
        let t = self.from_supervisor.as_mut()?;
        t.frame(&mut self.supervisor_pcm)?;
        // Listening only: the frame is taken (the buffer keeps pace) and dropped.
        self.mode.speaks().then_some(&self.supervisor_pcm[..])
    }

    /// A trunk packet while the call is held (arrival in the trunk codec's clock units).
    pub fn on_held_trunk_packet(
        &mut self,
        codec: Codec,
        sequence: u16,
        timestamp: u32,
        arrival: u32,
        payload: &[u8],
    ) {
        if self.from_trunk.as_ref().is_none_or(|t| t.codec() != codec) {
            self.from_trunk = Terminated::new(codec);
        }
        if let Some(t) = self.from_trunk.as_mut() {
            t.push(sequence, timestamp, arrival, payload);
        }
    }

    /// The prospect's frame of this tick while held.
    pub fn held_trunk_frame(&mut self) -> Option<&[i16]> {
        let t = self.from_trunk.as_mut()?;
        t.frame(&mut self.trunk_pcm)?;
        Some(&self.trunk_pcm[..])
    }

    /// The call is bridged again: the bridge decodes the prospect from now on.
    pub fn bridged(&mut self) {
        self.from_trunk = None;
    }

    /// Encode what the supervisor hears and send it to their peer connection.
    pub fn send(&mut self, pcm: &[i16]) {
        let Some(codec) = self.link.codec.get() else {
            return; // their browser has not negotiated media yet
        };
        let Some(encoder) = self.toward.for_peer(codec, &self.link.codec) else {
            return;
        };
        if encoder.encode(pcm, &mut self.payload).is_err() {
            return;
        }
        self.sent.push_back(AgentPacket {
            sequence: 0,
            timestamp: 0,
            codec,
            payload: self.payload.clone(),
        });
        self.frames_to_supervisor += 1;
    }

    /// The next packet for the supervisor's peer connection.
    pub fn poll_sent(&mut self) -> Option<AgentPacket> {
        self.sent.pop_front()
    }
}
