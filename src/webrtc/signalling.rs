//! A peer's offer answered, and what str0m tells us about it afterwards (ICE and DTLS state,
//! codec changes, incoming audio).

use super::*;

impl WebrtcHost {
    pub(super) fn accept_offer(
        &mut self,
        id: PeerId,
        sdp: &str,
        codec: Arc<PeerCodec>,
    ) -> Result<String, WebrtcError> {
        let offer =
            SdpOffer::from_sdp_string(sdp).map_err(|e| WebrtcError::BadOffer(e.to_string()))?;
        let now = Instant::now();
        let mut rtc = Rtc::builder()
            .set_ice_lite(true)
            // Audio needs no RTP header extensions: without transport-cc the browser sends no
            // per-packet feedback, which is most of the RTCP a peer would otherwise cost.
            .clear_extension_map()
            // Receiver reports are read for the loss the browser sees, which decides whether
            // our Opus carries in-band FEC.
            .set_stats_interval(Some(STATS_INTERVAL))
            .clear_codecs()
            .enable_opus(true, false)
            .enable_pcmu(true, false)
            .enable_pcma(true, false)
            .build(now);
        let candidate =
            Candidate::host(self.advertised, "udp").map_err(|e| WebrtcError::Rtc(e.to_string()))?;
        rtc.add_local_candidate(candidate);
        if let Some(tcp) = &self.tcp {
            let candidate = Candidate::builder()
                .tcp()
                .host(tcp.advertised)
                .tcptype(str0m::net::TcpType::Passive)
                .build()
                .map_err(|e| WebrtcError::Rtc(e.to_string()))?;
            rtc.add_local_candidate(candidate);
        }
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| WebrtcError::BadOffer(e.to_string()))?;
        let mut peer = Peer {
            rtc,
            created: now,
            connected: false,
            mid: None,
            codec,
            stream_time: rand::random::<u32>().into(),
            // A second offer keeps what the reports decided for the first.
            downlink: self.peers.get(&id).map_or_else(
                || Downlink::new(self.downlink.mode, self.downlink.recover),
                |old| old.downlink.clone(),
            ),
            connected_at: None,
            rtp_sent: 0,
            stream_codec: None,
            last_write: None,
            next_timeout: now,
            opus_logged: false,
        };
        // The audio m-line is known from the offer already; media flows once ICE is up.
        let audio_mid = sdp_audio_mids(sdp);
        peer.mid = audio_mid.into_iter().find_map(|m| {
            let mid = Mid::from(m.as_str());
            peer.rtc.media(mid).map(|_| mid)
        });
        // Decided, but published only once the new peer connection replaces the old one: an
        // offer without usable audio must not silence the call the old one carries.
        let codecs = peer.negotiated();
        let negotiated = peer.downlink.negotiated(&codecs);
        if negotiated.is_none() {
            return Err(WebrtcError::NoAudio);
        }
        peer.codec.publish(&peer.downlink, &codecs);
        if let Some(mut old) = self.peers.insert(id, peer) {
            old.rtc.disconnect();
            if old.connected {
                self.counters
                    .peers_connected
                    .fetch_sub(1, Ordering::Relaxed);
            }
            self.sources.retain(|_, p| *p != id);
        }
        tracing::debug!(peer = id, codec = ?negotiated, "answered browser offer");
        Ok(opus_narrowband(&answer.to_sdp_string()))
    }

    pub(super) fn on_event(&mut self, id: PeerId, event: Event) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        match event {
            Event::Connected => {
                peer.connected = true;
                peer.connected_at = Some(Instant::now());
                self.counters
                    .peers_connected
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    peer = id,
                    setup_ms = peer.created.elapsed().as_millis() as u64,
                    "peer connection up"
                );
                let _ = self.events.try_send(WebrtcEvent::Connected { peer: id });
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                tracing::info!(peer = id, "ICE disconnected");
                peer.rtc.disconnect();
            }
            Event::MediaAdded(added) if peer.mid.is_none() => {
                peer.mid = Some(added.mid);
                peer.renegotiated();
            }
            Event::MediaEgressStats(stats) => {
                // `None` when no receiver report came since the last look: keep what we know.
                if let Some(loss) = stats.loss {
                    peer.codec.set_loss(loss);
                    let before = peer.downlink.current();
                    let now = peer.downlink.on_report(Instant::now(), loss);
                    tracing::debug!(peer = id, loss, "receiver report");
                    if now != before {
                        tracing::info!(peer = id, loss, codec = ?now, "downlink codec switched");
                        let codecs = peer.negotiated();
                        peer.codec.publish(&peer.downlink, &codecs);
                    }
                }
            }
            Event::MediaData(data) => {
                self.counters.frames_in.fetch_add(1, Ordering::Relaxed);
                let Some(codec) = codec_of(data.params.spec().codec) else {
                    return;
                };
                if codec == Codec::Opus && !peer.opus_logged {
                    if let Some(toc) = data.data.first() {
                        peer.opus_logged = true;
                        tracing::info!(peer = id, "browser sends Opus {}", opus_bandwidth(*toc));
                    }
                }
                let Some(route) = self.routes.get(&id) else {
                    return;
                };
                let packet = AgentPacket {
                    sequence: (*data.seq_range.start()).as_u16(),
                    timestamp: data.time.numer() as u32,
                    codec,
                    payload: data.data.to_vec(),
                };
                if route.to_call.try_send(packet).is_err() {
                    self.counters.frames_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {}
        }
    }
}
