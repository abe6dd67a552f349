//! Calls' media as the core decides it: RTP ports reserved for answers, dials and early
//! media, what each call plays, and which agent connection or other call it is bridged to.

use super::{unix_secs, Gateway, MediaOp, Output, SourceSpec};
use crate::controller::{AgentId, CallId, Event, MediaPlan};
use crate::media::monitor::MonitorMode;
use crate::media::recording_mode::RecordWant;
use crate::sdp::{AudioSession, LocalMedia};

/// A call's running media, as the core knows it.
pub(super) struct MediaState {
    pub(super) port: u16,
}

impl Gateway {
    pub(super) fn media_op(&mut self, call: &CallId, op: MediaOp) {
        self.out.push_back(Output::Media {
            call: call.clone(),
            op,
        });
    }

    pub(super) fn local_media(&self, port: u16) -> LocalMedia {
        LocalMedia {
            address: self.config.rtp.public_ip.unwrap_or(self.config.rtp.bind),
            port,
            session_id: unix_secs(self.wall),
            session_version: 1,
            username: "callgate".into(),
            // Set per leg by the b2bua, which knows the trunk and the transport.
            crypto: None,
        }
    }

    pub(super) fn source_for(plan: &MediaPlan) -> SourceSpec {
        match plan {
            MediaPlan::Echo => SourceSpec::Echo,
            // The bridge replaces the source once the agent's (or the other leg's) media is
            // attached.
            MediaPlan::Agent(_) | MediaPlan::Join(_) => SourceSpec::Silence,
            MediaPlan::Announce(path) => SourceSpec::Play(path.clone()),
        }
    }

    pub(super) fn start_media(
        &mut self,
        call: &CallId,
        port: u16,
        audio: AudioSession,
        source: SourceSpec,
        early: bool,
    ) {
        self.media.insert(call.clone(), MediaState { port });
        let signalling_peer = self.b2bua.signalling_peer(call);
        self.media_op(
            call,
            MediaOp::Start {
                port,
                audio,
                source,
                early,
                signalling_peer,
            },
        );
    }

    /// 183 with SDP and the waiting audio toward a caller who waits for a busy agent. False
    /// when there is none to play, the trunk takes no early media, or it could not start
    /// (the caller then gets a 180).
    pub(super) fn start_early_media(&mut self, call: &CallId) -> bool {
        if self.config.media.waiting_audio.is_none() || self.media.contains_key(call) {
            return false;
        }
        let Some(port) = self.ports.reserve() else {
            return false;
        };
        let local = self.local_media(port);
        match self.b2bua.early_media(self.now, call, local) {
            Ok(Some(audio)) => {
                self.start_media(call, port, audio, SourceSpec::Waiting, true);
                true
            }
            Ok(None) => {
                self.ports.release(port);
                false
            }
            Err(e) => {
                tracing::warn!(%call, error = %e, "no early media");
                self.ports.release(port);
                false
            }
        }
    }

    pub(super) fn answer(&mut self, call: CallId, plan: MediaPlan) {
        let now = self.now;
        // In early media already: the 200 carries the 183's session, and the running media
        // goes on from the waiting audio to the call.
        if let Some(port) = self.media.get(&call).map(|m| m.port) {
            let local = self.local_media(port);
            match self.b2bua.answer(now, &call, local) {
                Ok(_) => {
                    self.media_op(&call, MediaOp::Answered);
                    self.media_op(&call, MediaOp::Source(Self::source_for(&plan)));
                }
                Err(e) => {
                    tracing::warn!(%call, error = %e, "cannot answer");
                    self.b2bua.reject(now, &call, 488);
                }
            }
            return;
        }
        let Some(port) = self.ports.reserve() else {
            tracing::error!(%call, "no free RTP port pair");
            self.b2bua.reject(now, &call, 503);
            return;
        };
        let local = self.local_media(port);
        match self.b2bua.answer(now, &call, local) {
            Ok(audio) => self.start_media(&call, port, audio, Self::source_for(&plan), false),
            Err(e) => {
                tracing::warn!(%call, error = %e, "cannot answer");
                self.ports.release(port);
                self.b2bua.reject(now, &call, 488);
            }
        }
    }

    pub(super) fn dial_out(&mut self, call: CallId, to: String) {
        let Some(port) = self.ports.reserve() else {
            tracing::error!(%call, "no free RTP port pair");
            self.dial_failed(call, "no free RTP port".into());
            return;
        };
        let local = self.local_media(port);
        self.dialling.insert(call.clone(), port);
        let from = self
            .controller
            .call(&call)
            .map(|c| c.from.clone())
            .unwrap_or_default();
        // A leg toward an agent on another node goes through the cluster's registrar.
        let via = self
            .via_registrar
            .remove(&call)
            .then(|| self.config.cluster.as_ref().map(|c| c.registrar.clone()))
            .flatten();
        if let Err(e) = self
            .b2bua
            .dial(self.now, &call, &to, &from, local, via.as_deref())
        {
            self.dialling.remove(&call);
            self.ports.release(port);
            self.dial_failed(call, e.to_string());
        }
    }

    /// A dial that never left: the operator who asked hears why, and the call ends as failed.
    pub(super) fn dial_failed(&mut self, call: CallId, reason: String) {
        if self.operator_dials.remove(&call) {
            self.out.push_back(Output::Dialled {
                call: call.clone(),
                result: Err(reason),
            });
        }
        self.run(Event::LegEnded {
            call,
            remote: false,
            failed: true,
        });
    }

    /// Hand a call's media to an agent's connection. The recording learns what is wanted
    /// of it first, so it may start with the bridge.
    pub(super) fn bridge(&mut self, call: &CallId, agent: &AgentId) {
        let Some(conn) = self.connection_of(agent) else {
            return;
        };
        if !self.media.contains_key(call) {
            tracing::warn!(%call, "bridge without media");
            return;
        }
        self.media_op(call, MediaOp::Record(self.record_want(call)));
        self.media_op(call, MediaOp::Bridge { conn });
    }

    pub(super) fn record_want(&self, call: &CallId) -> RecordWant {
        self.controller
            .call(call)
            .map_or(RecordWant::Off, |c| c.record_want)
    }

    /// Run two calls' media into each other; recordings of either call continue.
    pub(super) fn join(&mut self, a: &CallId, b: &CallId) {
        if !(self.media.contains_key(a) && self.media.contains_key(b)) {
            tracing::warn!(%a, %b, "join without media");
            return;
        }
        self.media_op(a, MediaOp::Record(self.record_want(a)));
        self.media_op(b, MediaOp::Record(self.record_want(b)));
        self.media_op(a, MediaOp::Join { other: b.clone() });
        tracing::info!(%a, %b, "calls joined");
    }

    /// A supervisor's peer connection joins a call's media: the call mixes what they hear
    /// and takes their microphone (used in whisper and barge).
    pub(super) fn monitor_start(&mut self, call: &CallId, supervisor: &AgentId, mode: MonitorMode) {
        let Some(conn) = self.connection_of(supervisor) else {
            return;
        };
        if !self.media.contains_key(call) {
            tracing::warn!(%call, "monitor without media");
            return;
        }
        tracing::info!(%call, %supervisor, mode = mode.as_str(), "supervisor joined the call");
        self.media_op(call, MediaOp::MonitorStart { conn, mode });
    }
}
