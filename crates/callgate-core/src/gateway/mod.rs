//! The gateway core: the b2bua (SIP legs toward trunks) and the controller (calls, agents,
//! queues) behind one sans-IO interface, in the manner of quinn-proto's `Connection`.
//!
//! The shell hands it what arrived with the time (`handle(now, wall, Input)`), asks it
//! things an API answers at once (`request`, `dial`, `agents`, ...), and carries out what it
//! queues (`poll_output`): SIP to send, media tasks to start and steer, notices for agents,
//! changes for the call log, names to look up. It sleeps until `poll_timeout`. Every call
//! decision is made here: the dial plan, the caller number, which trunk records, early
//! media, what a party on hold hears, when the call log hears of a change. The core owns no
//! socket, task, file or clock; RTP ports come from `MediaPorts`, which the shell implements
//! by binding them.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::{Rng, SeedableRng};

use crate::b2bua::{B2bua, B2buaSettings, EndCause, LegEvent};
use crate::config::Config;
use crate::controller::{
    AgentId, Call, CallId, CloseReason, Command, ConnId, ConnKind, Controller, Event, MediaPlan,
    Notice, Prospect,
};
use crate::log::{CallRecord, RecordingSegment};
use crate::media::session::MediaEvent;
use crate::sip::transaction::{LocalAddress, TimerValues, TransactionLayer, TransactionLimits};

mod agents;
pub use agents::{AgentCall, AgentError, AgentView, LiveCall};

#[cfg(test)]
mod pair;
#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;

mod io;
mod media;
pub use io::*;
use media::MediaState;

pub struct Gateway {
    config: Arc<Config>,
    b2bua: B2bua,
    controller: Controller,
    ports: Box<dyn MediaPorts>,
    /// Calls whose media task runs.
    media: HashMap<CallId, MediaState>,
    /// Ports reserved for dialled calls, until their answer starts the media.
    dialling: HashMap<CallId, u16>,
    /// Operators' dials not yet answered or failed.
    operator_dials: std::collections::HashSet<CallId>,
    /// Transfer legs toward an agent on another node: dialled through the registrar trunk.
    via_registrar: std::collections::HashSet<CallId>,
    /// Open agent connections, and what each is for.
    connections: HashMap<ConnId, (AgentId, ConnKind)>,
    /// Inbound calls waiting for their caller's name before the controller hears of them.
    naming: HashMap<CallId, Event>,
    ids: rand::rngs::StdRng,
    out: VecDeque<Output>,
    /// The time of the input being handled, both clocks (for the call log's timestamps).
    now: Instant,
    wall: SystemTime,
}

impl Gateway {
    pub fn new(
        config: Arc<Config>,
        seeds: Seeds,
        ports: Box<dyn MediaPorts>,
        now: Instant,
        wall: SystemTime,
    ) -> Gateway {
        let sip_addr = config.sip.listen;
        let host = config
            .sip
            .public_host
            .clone()
            .unwrap_or_else(|| sip_addr.ip().to_string());
        let layer = TransactionLayer::new(
            LocalAddress {
                host: host.clone(),
                port: sip_addr.port(),
                tls_port: config.sip.tls_listen.map(|a| a.port()),
            },
            TimerValues::default(),
            seeds.sip,
            config.sip.user_agent.clone(),
        );
        let settings = B2buaSettings {
            contact_host: host,
            contact_port: sip_addr.port(),
            tls_port: config.sip.tls_listen.map(|a| a.port()),
            codecs: config.codec_preference(),
            nonce_secret: seeds.nonce,
            guard: config.security.guard(),
            digest_algorithms: config.security.digest_algorithms(),
            limits: TransactionLimits {
                max_server: config.security.max_transactions,
                max_per_source: config.security.max_transactions_per_source,
            },
        };
        let mut b2bua = B2bua::new(layer, settings, &config.trunks, now);
        b2bua.set_unix_time(unix_secs(wall));
        let mut controller = Controller::new(&config.routes, &config.agents);
        controller.set_recording_policy(config.recording_policy());
        controller.set_transfer_ring(Duration::from_secs(config.transfer.ring_seconds));
        controller.set_ring_timeout(Duration::from_secs(config.security.ring_timeout));
        Gateway {
            config,
            b2bua,
            controller,
            ports,
            media: HashMap::new(),
            dialling: HashMap::new(),
            operator_dials: Default::default(),
            via_registrar: Default::default(),
            connections: HashMap::new(),
            naming: HashMap::new(),
            ids: rand::rngs::StdRng::from_seed(seeds.call_ids),
            out: VecDeque::new(),
            now,
            wall,
        }
    }

    /// The SIP side, for its counters.
    pub fn b2bua(&self) -> &B2bua {
        &self.b2bua
    }

    /// Admission control from the shell's measure of load (overload control).
    pub fn set_admission(&mut self, rate: Option<f64>, shed_all: bool) {
        self.b2bua.set_admission(rate, shed_all);
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When `Input::Timeout` is next due: a SIP timer or a call's ring timeout.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.b2bua.poll_timeout(), self.controller.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// SIP legs still up (a shutdown waits for them).
    pub fn live_legs(&self) -> usize {
        self.b2bua.live_legs()
    }

    pub fn handle(&mut self, now: Instant, wall: SystemTime, input: Input<'_>) {
        self.set_time(now, wall);
        match input {
            Input::Datagram { source, bytes } => self.b2bua.handle_datagram(now, source, bytes),
            Input::Stream {
                peer,
                transport,
                message,
            } => self.b2bua.handle_message(now, peer, transport, *message),
            Input::StreamInvalid {
                peer,
                transport,
                error,
            } => self.b2bua.handle_parse_error(now, peer, transport, *error),
            // What still waited for an answer over it fails now (and an INVITE tries its
            // next trunk) instead of at Timer B.
            Input::StreamClosed { peer, transport } => {
                self.b2bua.handle_transport_error(now, peer, transport)
            }
            Input::Media(event) => self.on_media_event(event),
            Input::Named { call, prospect } => self.on_named(call, prospect),
            Input::AgentConnected { agent, conn, kind } => {
                self.on_agent_connected(agent, conn, kind)
            }
            Input::AgentDisconnected { agent, conn } => self.on_agent_disconnected(agent, conn),
            Input::AgentClaimedElsewhere { agent } => {
                if let Some(conn) = self
                    .connection_of(&agent)
                    .filter(|_| self.is_signed_in(&agent))
                {
                    tracing::info!(%agent, conn, "agent signed in on another node");
                    self.out.push_back(Output::Close {
                        conn,
                        reason: CloseReason::Replaced,
                    });
                    self.on_agent_disconnected(agent, conn);
                }
            }
            Input::LogSaved { agent, prospect } => {
                self.controller.close_prompt(&agent, &prospect);
            }
            Input::Timeout => {
                self.b2bua.handle_timeout(now);
                if self.controller.poll_timeout().is_some_and(|due| due <= now) {
                    self.run(Event::Tick);
                }
            }
            Input::Shutdown => {
                self.run(Event::Shutdown);
                // The registrar stops sending this node calls at once rather than at expiry.
                for (did, _) in self.b2bua.locations() {
                    self.b2bua.unregister_location(now, &did);
                }
                for leg in self.b2bua.leg_ids() {
                    self.b2bua.hangup(now, &leg);
                }
            }
        }
        self.settle();
    }

    /// An operator's test call (`POST /v1/dial`): its id now, its outcome as `Dialled`.
    pub fn dial(&mut self, now: Instant, wall: SystemTime, to: String, plan: MediaPlan) -> CallId {
        self.set_time(now, wall);
        let call = self.new_call_id();
        self.operator_dials.insert(call.clone());
        self.run(Event::Dial {
            call: call.clone(),
            to,
            plan,
        });
        self.settle();
        call
    }

    /// An operator ends a call; false when there is no such call.
    pub fn hangup(&mut self, now: Instant, wall: SystemTime, call: &CallId) -> bool {
        self.set_time(now, wall);
        let known = self.controller.call(call).is_some();
        self.run(Event::Hangup { call: call.clone() });
        self.settle();
        known
    }

    /// An operator's digits toward a call's far end; false when the call has no media.
    pub fn send_dtmf(&mut self, call: &CallId, digits: String) -> bool {
        if !self.media.contains_key(call) {
            return false;
        }
        self.media_op(call, MediaOp::SendDtmf(digits));
        true
    }

    /// The agent's calls, as a newly connected page is given them.
    pub fn snapshot(&self, agent: &AgentId) -> Vec<Call> {
        self.controller.snapshot(agent)
    }

    pub fn call(&self, id: &str) -> Option<&Call> {
        self.controller.call(id)
    }

    #[cfg(test)]
    pub(crate) fn controller(&self) -> &Controller {
        &self.controller
    }

    fn set_time(&mut self, now: Instant, wall: SystemTime) {
        self.now = now;
        self.wall = wall;
        self.b2bua.set_unix_time(unix_secs(wall));
    }

    /// Bring the b2bua's output and events through, then tell the call log what changed.
    fn settle(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(transmit) = self.b2bua.poll_transmit() {
                progressed = true;
                self.out.push_back(Output::Transmit(transmit));
            }
            while let Some(event) = self.b2bua.poll_event() {
                progressed = true;
                self.on_leg_event(event);
            }
            if !progressed {
                break;
            }
        }
        for c in self.controller.take_changed() {
            self.persist(&c, self.now);
        }
        for c in self.controller.take_ended() {
            let at = c.ended_at.unwrap_or(self.now);
            self.persist(&c, at);
        }
    }

    /// The controller decides; its commands are carried out at once.
    fn run(&mut self, event: Event) {
        let commands = self.controller.handle(event, self.now);
        self.execute(commands);
    }

    fn new_call_id(&mut self) -> CallId {
        format!(
            "c_{:010x}{:010x}",
            unix_secs(self.wall),
            self.ids.gen::<u64>() & 0xff_ffff_ffff
        )
        .into()
    }

    fn ms(&self, t: Instant) -> i64 {
        crate::time::millis(WallClock::pinned(self.now, self.wall).at(t))
    }

    fn persist(&mut self, c: &Call, at: Instant) {
        let ms = |t| self.ms(t);
        let record = CallRecord {
            id: c.id.clone().into(),
            direction: c.direction.as_str().into(),
            from_number: c.from.clone(),
            from_name: c.from_name.clone(),
            to_number: c.to.clone(),
            prospect: c.prospect().to_string(),
            // A call that left every agent (joined to a number) stays with the last one.
            agent_id: c
                .agent
                .clone()
                .or_else(|| c.handled_by.clone())
                .map(String::from),
            status: c.status.as_str().into(),
            created_at: ms(c.created_at),
            answered_at: c.answered_at.map(ms),
            queued_at: c.queued_at.map(ms),
            ended_at: c.ended_at.map(ms),
            end_reason: c.end_reason.map(|r| r.as_str().to_string()),
            recording: c.recording.as_str().into(),
            recording_path: None,
            prospect_name: c.prospect_name.clone(),
            prospect_id: c.prospect_id.clone(),
            node: None,
        };
        let at = ms(at);
        self.out.push_back(Output::Persist(Persist::Call {
            record: Box::new(record),
            at,
        }));
    }

    fn on_leg_event(&mut self, event: LegEvent) {
        let event = match event {
            LegEvent::Incoming {
                leg,
                from_number,
                from_name,
                to_user,
                trunk,
            } => {
                let call = leg.call();
                let event = Event::Incoming {
                    call: call.clone(),
                    from: from_number.clone(),
                    from_name,
                    prospect: Default::default(),
                    to_user,
                    trunk: Some(trunk),
                };
                if self.naming.len() >= NAMING_CAPACITY {
                    tracing::warn!(call = %call, "too many calls waiting for names; this one goes on without");
                    event
                } else {
                    // The controller hears of the call once its name is known.
                    self.naming.insert(call.clone(), event);
                    self.out.push_back(Output::LookupName {
                        call,
                        number: from_number,
                    });
                    return;
                }
            }
            LegEvent::Answered { leg, audio } => {
                let call = leg.call();
                if let Some(port) = self.dialling.remove(&call) {
                    self.start_media(&call, port, audio, SourceSpec::Silence, false);
                }
                if self.operator_dials.remove(&call) {
                    self.out.push_back(Output::Dialled {
                        call: call.clone(),
                        result: Ok(call.clone()),
                    });
                }
                Event::Answered { call }
            }
            LegEvent::MediaChanged { leg, audio } => {
                let call = leg.call();
                if self.media.contains_key(&call) {
                    self.media_op(&call, MediaOp::Update(audio));
                }
                return;
            }
            LegEvent::Dtmf { leg, digit } => Event::Dtmf {
                call: leg.call(),
                digit,
            },
            LegEvent::Ringing { leg } => {
                tracing::debug!(%leg, "ringing");
                return;
            }
            LegEvent::Ended { leg, cause } => {
                let call = leg.call();
                // Gone (cancelled) before its name came: the controller never knew it.
                if self.naming.remove(&call).is_some() {
                    return;
                }
                if let Some(port) = self.dialling.remove(&call) {
                    self.ports.release(port);
                }
                if self.operator_dials.remove(&call) {
                    let status = match cause {
                        EndCause::Failed(s) => s,
                        _ => 487,
                    };
                    self.out.push_back(Output::Dialled {
                        call: call.clone(),
                        result: Err(format!("call failed with SIP {status}")),
                    });
                }
                self.run(Event::LegEnded {
                    call: call.clone(),
                    remote: matches!(cause, EndCause::RemoteBye | EndCause::Cancelled),
                    failed: matches!(cause, EndCause::Failed(_) | EndCause::Timeout),
                });
                // A call no call owns any more (answered after its call ended, its 200
                // crossing our CANCEL) takes its media with it.
                if self.controller.call(&call).is_none() {
                    if let Some(media) = self.media.remove(&call) {
                        self.media_op(&call, MediaOp::Stop);
                        self.ports.release(media.port);
                    }
                }
                return;
            }
            LegEvent::TrunkHealth { trunk, up } => {
                tracing::info!(%trunk, up, "trunk health");
                return;
            }
        };
        self.run(event);
    }

    fn on_named(&mut self, call: CallId, prospect: Prospect) {
        let Some(mut event) = self.naming.remove(&call) else {
            return;
        };
        if let Event::Incoming { prospect: p, .. } = &mut event {
            *p = prospect;
        }
        self.run(event);
    }

    fn on_media_event(&mut self, event: MediaEvent) {
        let event = match event {
            MediaEvent::Finished { call } => Event::MediaFinished { call },
            MediaEvent::RtpTimeout { call } => {
                tracing::warn!(%call, "no RTP from the peer; ending the call");
                Event::Hangup { call }
            }
            MediaEvent::Dtmf { call, digit } => Event::Dtmf { call, digit },
            MediaEvent::Recording { call, update } => {
                let segment = update.segment.map(|s| RecordingSegment {
                    index: s.index,
                    started_at: crate::time::millis(s.started_at),
                    ended_at: s.ended_at.map(crate::time::millis),
                    offset_ms: s.offset_ms as i64,
                    duration_ms: s.duration_ms.map(|d| d as i64),
                });
                self.out.push_back(Output::Persist(Persist::Recording {
                    call: call.clone(),
                    path: update.path.map(|p| p.display().to_string()),
                    segment,
                }));
                Event::Recording {
                    call,
                    state: update.state,
                }
            }
        };
        self.run(event);
    }

    /// In a cluster, the registrar learns that `agent`'s DIDs are here (`here`) or no longer.
    fn locate(&mut self, now: Instant, agent: &AgentId, here: bool) {
        let Some(cluster) = self.config.cluster.as_ref() else {
            return;
        };
        let Some(config) = self.config.agents.iter().find(|a| &a.id == agent) else {
            return;
        };
        for did in &config.dids {
            if here {
                if !self.b2bua.register_location(now, &cluster.registrar, did) {
                    tracing::warn!(registrar = %cluster.registrar, "no registrar trunk to locate agents with");
                }
            } else {
                self.b2bua.unregister_location(now, did);
            }
        }
    }

    fn on_agent_connected(&mut self, agent: AgentId, conn: ConnId, kind: ConnKind) {
        if kind == ConnKind::Monitor
            && (!self.controller.is_supervisor(&agent) || self.is_signed_in(&agent))
        {
            // Only a supervisor monitors, and one signed in here monitors from that
            // connection: this one is not taken (`is_connected` tells the shell).
            tracing::info!(%agent, conn, "monitoring connection refused");
            self.out.push_back(Output::Close {
                conn,
                reason: CloseReason::MonitorRefused,
            });
            return;
        }
        tracing::info!(%agent, conn, ?kind, "agent connected");
        if kind == ConnKind::Calls && !self.is_signed_in(&agent) {
            self.locate(self.now, &agent, true);
        }
        self.run(Event::AgentConnected {
            agent: agent.clone(),
            conn,
            kind,
        });
        self.connections.insert(conn, (agent.clone(), kind));
        // Calls inherited from a replaced connection keep their media on this one, and so
        // does a call the supervisor was monitoring.
        if let Some(active) = self.controller.active_call(&agent).map(|c| c.id.clone()) {
            self.bridge(&active, &agent);
        }
        if let Some((call, mode)) = self.controller.monitoring(&agent) {
            self.monitor_start(&call, &agent, mode);
        }
    }

    fn on_agent_disconnected(&mut self, agent: AgentId, conn: ConnId) {
        if let Some((_, kind)) = self.connections.remove(&conn) {
            self.run(Event::AgentDisconnected {
                agent: agent.clone(),
                conn,
            });
            if kind == ConnKind::Calls && !self.is_signed_in(&agent) {
                self.locate(self.now, &agent, false);
            }
        }
    }

    /// Whether the agent is signed in here (a connection for calls, not only monitoring).
    pub fn is_signed_in(&self, agent: &AgentId) -> bool {
        self.connections
            .values()
            .any(|(a, kind)| a == agent && *kind == ConnKind::Calls)
    }

    /// Whether the connection is open here (a refused one never was).
    pub fn is_connected(&self, conn: ConnId) -> bool {
        self.connections.contains_key(&conn)
    }

    /// The agent's connection, whatever it is for.
    fn connection_of(&self, agent: &AgentId) -> Option<ConnId> {
        self.connections
            .iter()
            .find(|(_, (a, _))| a == agent)
            .map(|(id, _)| *id)
    }

    fn notify(&mut self, agent: &AgentId, notice: Notice) {
        if let Some(conn) = self.connection_of(agent) {
            self.out.push_back(Output::Notify { conn, notice });
        }
    }

    fn execute(&mut self, commands: Vec<Command>) {
        let now = self.now;
        for command in commands {
            match command {
                Command::Answer { call, plan } => self.answer(call, plan),
                Command::Reject { call, reason } => {
                    self.b2bua
                        .reject(now, &call, crate::b2bua::reject_status(reason))
                }
                Command::Dial { call, to } => self.dial_out(call, to),
                Command::StartMedia { call, plan } => {
                    if self.media.contains_key(&call) {
                        self.media_op(&call, MediaOp::Source(Self::source_for(&plan)));
                    }
                }
                Command::Hangup { call } => self.b2bua.hangup(now, &call),
                Command::Ring { call, waiting } => {
                    // A waiting caller hears the waiting audio as early media, when the
                    // operator chose one and the trunk takes it; otherwise a 180.
                    if !(waiting && self.start_early_media(&call)) {
                        self.b2bua.ring(now, &call);
                    }
                }
                Command::Bridge { call, agent } => self.bridge(&call, &agent),
                Command::Unbridge { call, agent } => {
                    if self.media.contains_key(&call) {
                        self.media_op(&call, MediaOp::Unbridge);
                    }
                    if let Some(conn) = self.connection_of(&agent) {
                        self.out.push_back(Output::Unroute { conn });
                    }
                }
                Command::Join { a, b } => self.join(&a, &b),
                Command::MonitorStart {
                    call,
                    supervisor,
                    mode,
                } => self.monitor_start(&call, &supervisor, mode),
                Command::MonitorMode { call, mode } => {
                    if self.media.contains_key(&call) {
                        self.media_op(&call, MediaOp::MonitorMode(mode));
                    }
                }
                Command::MonitorStop { call, supervisor } => {
                    if self.media.contains_key(&call) {
                        self.media_op(&call, MediaOp::MonitorStop);
                    }
                    if let Some(conn) = self.connection_of(&supervisor) {
                        self.out.push_back(Output::Unroute { conn });
                    }
                }
                Command::Record { call, want } => {
                    if self.media.contains_key(&call) {
                        self.media_op(&call, MediaOp::Record(want));
                    }
                }
                Command::SendDtmf { call, digits } => {
                    if self.media.contains_key(&call) {
                        self.media_op(&call, MediaOp::SendDtmf(digits));
                    }
                }
                Command::Notify { agent, notice } => self.notify(&agent, notice),
                Command::CloseConnection { conn, reason, .. } => {
                    if self.connections.remove(&conn).is_some() {
                        self.out.push_back(Output::Close { conn, reason });
                    }
                }
                Command::Park { call } => {
                    if self.media.contains_key(&call) {
                        self.media_op(&call, MediaOp::Source(SourceSpec::Hold));
                    }
                }
                Command::StopMedia { call } => {
                    if let Some(media) = self.media.remove(&call) {
                        self.media_op(&call, MediaOp::Stop);
                        self.ports.release(media.port);
                    }
                }
            }
        }
    }
}

fn unix_secs(wall: SystemTime) -> u64 {
    wall.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
