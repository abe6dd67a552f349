//! What leaves every 20 ms: the frame each side hears (the bridge, a source, a mix for
//! monitors and conferences), and our RTCP reports.

use super::*;

impl MediaSession {
    pub(super) fn on_frame(&mut self, now: Instant, out: &mut Vec<u8>, payload: &mut Vec<u8>) {
        self.source_frame = None;
        self.play_frame(now, out, payload);
        if self.bridge.is_none() {
            self.monitor_held_call();
        }
    }

    /// A supervisor on a held call hears what the call is going through: the prospect and
    /// the hold audio played to them. Their own voice reaches nobody until the call resumes.
    pub(super) fn monitor_held_call(&mut self) {
        let Some(monitor) = self.monitor.as_mut() else {
            return;
        };
        let prospect = monitor.held_trunk_frame().map(frame_of);
        let _ = monitor.supervisor_frame(); // keep their buffer in step
        let frames = [
            prospect.as_ref().map(|f| &f[..]),
            self.source_frame.as_ref().map(|f| &f[..]),
            None,
        ];
        let heard = mix_minus(&frames, &MonitorMode::Listen.hearing(), &mut self.mix);
        if heard[MonitorMode::SUPERVISOR] {
            monitor.send(&self.mix[MonitorMode::SUPERVISOR]);
        }
    }

    pub(super) fn play_frame(&mut self, now: Instant, out: &mut Vec<u8>, payload: &mut Vec<u8>) {
        let ticks = self
            .encoder
            .as_ref()
            .map(|e| e.frame_ticks())
            .unwrap_or(160);
        // Both sides' frames of this tick: the trunk's toward the agent (decoded when
        // transcoding, recording or monitored), the agent's toward the trunk (encoded below).
        let mut agent_frame = false;
        let wall = self.wall_at(now);
        if let Some(bridge) = self.bridge.as_mut() {
            let writing = self.recording.as_ref().is_some_and(|r| r.writing());
            let monitored = self.monitor.as_ref().map(|m| m.mode);
            bridge.set_taps(writing || monitored.is_some());
            bridge.set_mixing(monitored.is_some_and(MonitorMode::speaks));
            // CPU accounting for the metrics, not behaviour, on the clock the shell lends.
            let started = self.cpu_clock.map(|clock| (clock, clock()));
            match (monitored, self.monitor.as_mut()) {
                (Some(mode), Some(monitor)) if mode.speaks() => {
                    // Whisper or barge: every side decoded, each hears its own mix.
                    let prospect = bridge.decode_trunk().map(frame_of);
                    let agent = bridge
                        .tick_toward_trunk(&mut self.pcm)
                        .map(|_| frame_of(&self.pcm));
                    let supervisor = monitor.supervisor_frame().map(frame_of);
                    let frames = [
                        prospect.as_ref().map(|f| &f[..]),
                        agent.as_ref().map(|f| &f[..]),
                        supervisor.as_ref().map(|f| &f[..]),
                    ];
                    let heard = mix_minus(&frames, &mode.hearing(), &mut self.mix);
                    if heard[MonitorMode::AGENT] {
                        bridge.send_pcm_to_agent(&self.mix[MonitorMode::AGENT]);
                    }
                    if heard[MonitorMode::SUPERVISOR] {
                        monitor.send(&self.mix[MonitorMode::SUPERVISOR]);
                    }
                    // What the prospect hears goes to the trunk below, and is the recording's
                    // agent channel: barge is in it, a whisper never.
                    agent_frame = heard[MonitorMode::PROSPECT];
                    self.pcm.clear();
                    self.pcm.extend_from_slice(&self.mix[MonitorMode::PROSPECT]);
                    if let Some(recording) = self.recording.as_mut().filter(|_| writing) {
                        recording.frame(
                            wall,
                            prospect.as_ref().map(|f| &f[..]),
                            agent_frame.then_some(&self.pcm[..]),
                            &mut self.recording_updates,
                        );
                    }
                }
                (_, monitor) => {
                    bridge.tick_toward_agent();
                    agent_frame = bridge.tick_toward_trunk(&mut self.pcm).is_some();
                    if let Some(monitor) = monitor {
                        // Listen: the supervisor hears both sides; their voice goes nowhere.
                        let _ = monitor.supervisor_frame();
                        let frames = [
                            bridge.trunk_frame(),
                            agent_frame.then_some(&self.pcm[..]),
                            None,
                        ];
                        let heard =
                            mix_minus(&frames, &MonitorMode::Listen.hearing(), &mut self.mix);
                        if heard[MonitorMode::SUPERVISOR] {
                            monitor.send(&self.mix[MonitorMode::SUPERVISOR]);
                        }
                    }
                    if let Some(recording) = self.recording.as_mut().filter(|_| writing) {
                        recording.frame(
                            wall,
                            bridge.trunk_frame(),
                            agent_frame.then_some(&self.pcm[..]),
                            &mut self.recording_updates,
                        );
                    }
                }
            }
            if let (false, Some((clock, t0))) = (bridge.passthrough(), started) {
                self.counters
                    .transcoded(clock().saturating_duration_since(t0));
            }
        }
        // DTMF replaces audio while a digit plays (RFC 4733 §2.5.1.2).
        if self.dtmf_sender.is_none() {
            if let Some(digit) = self.dtmf_out.pop() {
                // 100 ms digits: five frames, long enough for every IVR we know.
                if let Some(sender) = DigitSender::new(digit, ticks as u16, ticks * 5) {
                    self.dtmf_sender = Some((sender, self.stream.next_timestamp()));
                }
            }
        }
        if let (Some((sender, start_ts)), Some(pt)) =
            (self.dtmf_sender.as_mut(), self.audio.dtmf_pt)
        {
            match sender.next() {
                Some((marker, event)) => {
                    let start_ts = *start_ts;
                    let header = self.stream.event_header(pt, start_ts, marker, event.end);
                    payload.clear();
                    event.write(payload);
                    rtp::write(&header, payload, out);
                    self.stream.count_sent(payload.len());
                    let bytes = std::mem::take(out);
                    self.send_out(&bytes);
                    *out = bytes;
                    // The event's frames take media time like audio frames do.
                    self.stream.skip(ticks);
                    return;
                }
                None => self.dtmf_sender = None,
            }
        } else if self.dtmf_sender.is_some() {
            self.dtmf_sender = None; // the peer negotiated no telephone-event
        }
        if let Some(bridge) = self.bridge.as_mut() {
            if bridge.uplink_passthrough() {
                return; // the agent's packets went out as they came
            }
            let pcm = std::mem::take(&mut self.pcm);
            let started = self.cpu_clock.map(|clock| (clock, clock()));
            if agent_frame {
                if let Some(encoder) = self.encoder.as_mut() {
                    let encoded = encoder.encode(&pcm, payload).is_ok();
                    if let Some((clock, t0)) = started {
                        self.counters
                            .transcoded(clock().saturating_duration_since(t0));
                    }
                    if encoded {
                        let header = self.stream.next_header(self.audio.pt, ticks, false);
                        rtp::write(&header, payload, out);
                        self.stream.count_sent(payload.len());
                        let bytes = std::mem::take(out);
                        self.send_out(&bytes);
                        *out = bytes;
                    } else {
                        self.counters.codec_error();
                    }
                }
            } else {
                self.stream.skip(ticks);
            }
            self.pcm = pcm;
            return;
        }
        match &self.source {
            Source::Echo => {}
            Source::Silence => self.stream.skip(ticks),
            Source::Play(samples) | Source::Loop(samples) => {
                let samples = Arc::clone(samples);
                if matches!(self.source, Source::Loop(_)) && self.play_pos >= samples.len() {
                    self.play_pos = 0;
                }
                if self.play_pos >= samples.len() {
                    self.stream.skip(ticks);
                    if !self.finished_sent {
                        self.finished_sent = true;
                        self.events.push_back(MediaEvent::Finished {
                            call: self.call.clone(),
                        });
                    }
                    return;
                }
                let end = (self.play_pos + FRAME_SAMPLES).min(samples.len());
                let mut frame = [0i16; FRAME_SAMPLES];
                frame[..end - self.play_pos].copy_from_slice(&samples[self.play_pos..end]);
                let marker = self.play_pos == 0;
                self.play_pos = end;
                self.source_frame = Some(frame);
                let Some(encoder) = self.encoder.as_mut() else {
                    return;
                };
                if encoder.encode(&frame, payload).is_err() {
                    self.counters.codec_error();
                    return;
                }
                let header = self.stream.next_header(self.audio.pt, ticks, marker);
                rtp::write(&header, payload, out);
                self.stream.count_sent(payload.len());
                let bytes = std::mem::take(out);
                self.send_out(&bytes);
                *out = bytes;
            }
        }
    }

    pub(super) fn send_rtcp(&mut self, now: Instant, out: &mut Vec<u8>, goodbye: bool) {
        let Some(dest) = self.rtcp_destination() else {
            return;
        };
        let mut reports = Vec::new();
        if let Some(stats) = self.reception.as_mut() {
            let (lsr, dlsr) = match self.last_sr {
                Some((middle, at)) => (
                    middle,
                    (now.saturating_duration_since(at).as_secs_f64() * 65536.0) as u32,
                ),
                None => (0, 0),
            };
            reports.push(stats.report_block(lsr, dlsr));
        }
        let cname = format!("callgate-{}", self.call);
        out.clear();
        if self.stream.packets_sent() > 0 {
            let unix_micros = self
                .wall_at(now)
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or(0);
            let info = SenderInfo {
                ntp_timestamp: rtcp::ntp_timestamp(unix_micros),
                rtp_timestamp: self.stream.last_timestamp(),
                packet_count: self.stream.packets_sent(),
                octet_count: self.stream.octets_sent(),
            };
            rtcp::write_sender_report(self.stream.ssrc(), &info, &reports, &cname, out);
        } else {
            rtcp::write_receiver_report(self.stream.ssrc(), &reports, &cname, out);
        }
        if goodbye {
            rtcp::append_goodbye(self.stream.ssrc(), out);
        }
        match &mut self.protection {
            Protection::Plain => {}
            Protection::Srtp(session) => {
                if session.protect_rtcp(out).is_err() {
                    return;
                }
            }
            Protection::Failed => return,
        }
        self.transmits.push_back(Transmit {
            to: dest,
            rtcp: true,
            bytes: out.clone(),
        });
    }
}
