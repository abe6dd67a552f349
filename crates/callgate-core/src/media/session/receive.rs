//! What arrives: RTP and RTCP from the trunk (latched, decrypted, through the jitter buffer),
//! the loss it reports back, and the agent's packets.

use super::*;

impl MediaSession {
    pub(super) fn on_rtp(
        &mut self,
        now: Instant,
        bytes: &mut [u8],
        from: SocketAddr,
        out: &mut Vec<u8>,
    ) {
        if rtp::is_rtcp(bytes) {
            self.on_rtcp(now, bytes, from);
            return;
        }
        let Some(bytes) = self.open(bytes, false) else {
            return;
        };
        let Ok(packet) = rtp::parse(bytes) else {
            self.counters.bad_packet();
            return;
        };
        let before = self.latch.rtp_destination();
        if !self.latch.accept_rtp(now, from) {
            // Injected or stray: never heard, never answered.
            self.counters.foreign_packet();
            return;
        }
        if before != Some(from) {
            tracing::debug!(%from, "latched RTP source");
        }
        self.counters.packet_in(bytes.len());
        self.last_rtp_in = now;
        let header = &packet.header;
        let arrival = (now.duration_since(self.started).as_micros() as u64
            * u64::from(self.audio.clock_rate)
            / 1_000_000) as u32;
        match self.reception.as_mut() {
            Some(stats) if stats.ssrc() == header.ssrc => {
                stats.update(header.sequence, header.timestamp, arrival);
            }
            _ => {
                self.reception = Some(ReceptionStats::new(header.ssrc, header.sequence));
                self.echo_offset = None;
            }
        }
        if Some(header.payload_type) == self.audio.dtmf_pt {
            if let Ok(event) = crate::media::dtmf::TelephoneEvent::parse(packet.payload) {
                if let Some(digit) = self.dtmf_in.on_packet(header.timestamp, &event) {
                    tracing::info!(%digit, "DTMF received");
                    self.events.push_back(MediaEvent::Dtmf {
                        call: self.call.clone(),
                        digit,
                    });
                }
            }
        }
        if let Some(bridge) = self.bridge.as_mut() {
            if header.payload_type == self.audio.pt {
                bridge.on_trunk_packet(header.sequence, header.timestamp, arrival, packet.payload);
            }
            return;
        }
        if let Some(monitor) = self.monitor.as_mut() {
            // Held with a supervisor listening: the prospect is decoded for them.
            if header.payload_type == self.audio.pt {
                monitor.on_held_trunk_packet(
                    self.audio.codec,
                    header.sequence,
                    header.timestamp,
                    arrival,
                    packet.payload,
                );
            }
        }
        if matches!(self.source, Source::Echo) {
            // Map the peer's timestamps into our stream: a new peer SSRC continues from where
            // our stream is, so the far end never sees our timestamps jump.
            let next = self.stream.next_timestamp();
            let offset = *self
                .echo_offset
                .get_or_insert_with(|| next.wrapping_sub(header.timestamp));
            let ticks = self
                .encoder
                .as_ref()
                .map(|e| e.frame_ticks())
                .unwrap_or(160);
            let echoed = self.stream.header_at(
                header.payload_type,
                header.timestamp.wrapping_add(offset),
                header.marker,
                ticks,
            );
            rtp::write(&echoed, packet.payload, out);
            self.stream.count_sent(packet.payload.len());
            let bytes = std::mem::take(out);
            self.send_out(&bytes);
            *out = bytes;
        }
    }

    pub(super) fn on_rtcp(&mut self, now: Instant, bytes: &mut [u8], from: SocketAddr) {
        if !self.latch.accept_rtcp(from) {
            self.counters.foreign_packet();
            return;
        }
        let Some(bytes) = self.open(bytes, true) else {
            return;
        };
        match rtcp::parse_compound(bytes) {
            Ok(packets) => {
                for packet in packets {
                    if let RtcpPacket::SenderReport { info, .. } = &packet {
                        self.last_sr = Some((rtcp::ntp_middle(info.ntp_timestamp), now));
                    }
                    if let RtcpPacket::SenderReport { reports, .. }
                    | RtcpPacket::ReceiverReport { reports, .. } = &packet
                    {
                        for report in reports {
                            tracing::trace!(
                                lost = report.cumulative_lost,
                                jitter = report.jitter,
                                "RTCP report from peer"
                            );
                            self.counters
                                .peer_report(report.cumulative_lost, report.jitter);
                            if report.ssrc == self.stream.ssrc() {
                                self.on_reported_loss(report.fraction_lost);
                            }
                        }
                    }
                }
            }
            Err(e) => {
                tracing::trace!(error = %e, "bad RTCP");
                self.counters.bad_packet();
            }
        }
    }

    /// The peer's report on our stream: the share it lost (of 256) since its last report.
    /// An Opus peer that takes in-band FEC (`useinbandfec=1`) gets it while it loses packets.
    pub(super) fn on_reported_loss(&mut self, fraction_lost: u8) {
        if !self.audio.opus_fec {
            return;
        }
        let percent = (u32::from(fraction_lost) * 100).div_ceil(256) as u8;
        if let Some(encoder) = self.encoder.as_mut() {
            if let Err(e) = encoder.set_expected_loss(percent) {
                tracing::debug!(error = %e, "cannot adapt the encoder to reported loss");
            }
        }
    }

    /// A packet of the agent's microphone: passed on as it is, or buffered for the frame clock.
    pub(super) fn on_agent_packet(&mut self, now: Instant, packet: AgentPacket, out: &mut Vec<u8>) {
        let Some(bridge) = self.bridge.as_mut() else {
            return;
        };
        let arrival = arrival_in(self.started, now, packet.codec);
        let timestamp = packet.timestamp;
        let FromAgent::Forward(payload) = bridge.on_agent_packet(packet, arrival) else {
            return;
        };
        if self.dtmf_sender.is_some() {
            return; // a digit is playing toward the trunk
        }
        // Same codec both sides: keep the agent's timing, on our stream's clock.
        let next = self.stream.next_timestamp();
        let offset = match self.bridge_offset {
            Some((last_in, offset)) if timestamp.wrapping_sub(last_in) < 48_000 => offset,
            _ => next.wrapping_sub(timestamp),
        };
        self.bridge_offset = Some((timestamp, offset));
        let ticks = self
            .encoder
            .as_ref()
            .map(|e| e.frame_ticks())
            .unwrap_or(160);
        let header =
            self.stream
                .header_at(self.audio.pt, timestamp.wrapping_add(offset), false, ticks);
        rtp::write(&header, &payload, out);
        self.stream.count_sent(payload.len());
        let bytes = std::mem::take(out);
        self.send_out(&bytes);
        *out = bytes;
    }
}
