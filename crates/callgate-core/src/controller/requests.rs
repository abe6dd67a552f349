//! What agents ask for over the agent protocol (answer, decline, hang up, dial, hold,
//! resume, accept, DTMF, record, monitor, transfer), checked against who owns the call.

use super::*;

impl Controller {
    /// An agent's request; `Ok` carries the call it concerns.
    pub fn request(
        &mut self,
        agent: &AgentId,
        request: AgentRequest,
        now: Instant,
    ) -> (Result<CallId, RequestError>, Vec<Command>) {
        let outcome = self.on_request(agent, request, now);
        self.next_due = self.due_at();
        self.touched = true;
        outcome
    }

    fn on_request(
        &mut self,
        agent: &AgentId,
        request: AgentRequest,
        now: Instant,
    ) -> (Result<CallId, RequestError>, Vec<Command>) {
        if !self.is_connected(agent) {
            return (Err(RequestError::NotConnected), Vec::new());
        }
        let monitoring_only = !self.takes_calls(agent);
        if monitoring_only && !matches!(request, AgentRequest::Act(CallAction::Monitor { .. })) {
            return (
                Err(RequestError::Forbidden(
                    "a monitoring connection may only monitor; calls are on the node signed in on",
                )),
                Vec::new(),
            );
        }
        // A supervisor taking a call of their own leaves the call they monitor first: their
        // one peer connection carries one call.
        let takes_a_call = matches!(
            request,
            AgentRequest::Act(CallAction::Answer { .. })
                | AgentRequest::Act(CallAction::Accept { .. })
                | AgentRequest::Act(CallAction::Resume { .. })
                | AgentRequest::Dial { .. }
        );
        let saved = self.agents.get(agent).and_then(|a| a.monitoring.clone());
        let mut leave = if takes_a_call {
            self.stop_monitoring(agent)
        } else {
            Vec::new()
        };
        let (result, commands) = self.agent_request(agent, request, now);
        if result.is_err() {
            // Nothing changed, so they go on monitoring.
            if let Some(a) = self.agents.get_mut(agent) {
                a.monitoring = saved;
            }
            return (result, commands);
        }
        leave.extend(commands);
        (result, leave)
    }

    /// An unanswered call the agent turned away: the caller hears busy (486).
    fn decline(&mut self, call: &CallId, now: Instant) -> Vec<Command> {
        let mut commands = vec![Command::Reject {
            call: call.clone(),
            reason: RejectReason::Busy,
        }];
        commands.extend(self.end(call, EndReason::Declined, now));
        commands
    }

    fn agent_request(
        &mut self,
        agent: &AgentId,
        request: AgentRequest,
        now: Instant,
    ) -> (Result<CallId, RequestError>, Vec<Command>) {
        match request {
            AgentRequest::Act(CallAction::Monitor { call, mode }) => {
                self.monitor(agent, call, mode)
            }
            AgentRequest::Act(CallAction::Answer { call }) => {
                let status = match self.own_call(agent, &call) {
                    Some(c) => c.status,
                    None => return (Err(RequestError::NotFound), Vec::new()),
                };
                let mut commands = Vec::new();
                match status {
                    // The agent may have resumed a held call while this one rang: that one
                    // goes back on hold.
                    Status::Ringing => commands.extend(self.hold_active(agent, now)),
                    // Taking an offered (or any queued) call while nothing is active.
                    Status::Waiting | Status::OnHold if self.active_call(agent).is_none() => {}
                    other => return (Err(RequestError::InvalidState(other.as_str())), Vec::new()),
                }
                commands.extend(self.activate(agent, &call, now));
                (Ok(call), commands)
            }
            AgentRequest::Act(CallAction::Accept { call, hold_active }) => {
                let queued = [Status::Ringing, Status::Waiting, Status::OnHold];
                if let Err(e) = self.own_call_in(agent, &call, &queued) {
                    return (Err(e), Vec::new());
                }
                let mut commands = Vec::new();
                if let Some(active) = self.active_call(agent).map(|c| c.id.clone()) {
                    if hold_active {
                        commands.extend(self.hold(agent, &active, now));
                    } else {
                        // The BYE goes out now and the call is over for the agent at once
                        // (the b2bua's later report of the leg's end finds nothing to do);
                        // no offer, since the accepted call takes its place.
                        commands.push(Command::Hangup {
                            call: active.clone(),
                        });
                        commands.extend(self.end_call(&active, EndReason::AgentHangup, now, false));
                    }
                }
                commands.extend(self.activate(agent, &call, now));
                (Ok(call), commands)
            }
            AgentRequest::Act(CallAction::Hold { call }) => {
                if let Err(e) = self.own_call_in(agent, &call, &[Status::Active]) {
                    return (Err(e), Vec::new());
                }
                let commands = self.hold(agent, &call, now);
                (Ok(call), commands)
            }
            AgentRequest::Act(CallAction::Resume { call }) => {
                if let Err(e) = self.own_call_in(agent, &call, &[Status::OnHold, Status::Waiting]) {
                    return (Err(e), Vec::new());
                }
                let mut commands = self.hold_active(agent, now);
                commands.extend(self.activate(agent, &call, now));
                (Ok(call), commands)
            }
            AgentRequest::Act(CallAction::Decline { call }) => {
                let c = match self.own_call_in(agent, &call, &[Status::Ringing, Status::Waiting]) {
                    Ok(c) => c,
                    Err(e) => return (Err(e), Vec::new()),
                };
                if c.transfer.is_some() {
                    // Declining a transferred call sends it back, not away.
                    return (Ok(call.clone()), self.transfer_failed(&call, now));
                }
                c.end_reason = Some(EndReason::Declined);
                let commands = self.decline(&call, now);
                (Ok(call), commands)
            }
            AgentRequest::Act(CallAction::Hangup { call }) => {
                let Some(c) = self.own_call(agent, &call) else {
                    return (Err(RequestError::NotFound), Vec::new());
                };
                match c.status {
                    Status::Ringing | Status::Waiting if c.transfer.is_some() => {
                        (Ok(call.clone()), self.transfer_failed(&call, now))
                    }
                    Status::Ringing | Status::Waiting => {
                        c.end_reason = Some(EndReason::Declined);
                        let commands = self.decline(&call, now);
                        (Ok(call), commands)
                    }
                    _ => {
                        c.end_reason = Some(EndReason::AgentHangup);
                        (Ok(call.clone()), vec![Command::Hangup { call }])
                    }
                }
            }
            AgentRequest::Transfer { call, target } => self.transfer(agent, call, target, now),
            AgentRequest::Act(CallAction::Record { call, action }) => {
                let Some(c) = self.own_call(agent, &call) else {
                    return (Err(RequestError::NotFound), Vec::new());
                };
                if c.record_mode == RecordMode::Off {
                    return (
                        Err(RequestError::Forbidden("recording is off for this call")),
                        Vec::new(),
                    );
                }
                let want = match (action, c.record_want) {
                    (RecordAction::Start, RecordWant::Off | RecordWant::Paused) => RecordWant::On,
                    (RecordAction::Resume, RecordWant::Paused) => RecordWant::On,
                    (RecordAction::Pause, RecordWant::On) => RecordWant::Paused,
                    (RecordAction::Stop, RecordWant::On | RecordWant::Paused) => RecordWant::Off,
                    (_, current) => {
                        return (
                            Err(RequestError::InvalidState(match current {
                                RecordWant::On => "already being recorded",
                                RecordWant::Paused => "recording is paused",
                                RecordWant::Off => "not being recorded",
                            })),
                            Vec::new(),
                        )
                    }
                };
                if let Some(c) = self.calls.get_mut(&call) {
                    c.record_want = want;
                }
                (Ok(call.clone()), vec![Command::Record { call, want }])
            }
            AgentRequest::Dial {
                call,
                to,
                trunk,
                prospect,
            } => {
                let to = match dial_target(&to) {
                    Ok(to) => to,
                    Err(e) => return (Err(e), Vec::new()),
                };
                let max = self.agents.get(agent).map_or(0, |a| a.max_calls);
                if self.live_calls_of(agent) >= max as usize {
                    return (Err(RequestError::LimitReached(max)), Vec::new());
                }
                let dialing = self.calls.values().any(|c| {
                    c.agent.as_deref() == Some(agent)
                        && matches!(c.status, Status::Dialing | Status::Ringing)
                });
                if dialing {
                    return (
                        Err(RequestError::InvalidState("busy with a call being set up")),
                        Vec::new(),
                    );
                }
                // The active call goes on hold first.
                let mut commands = self.hold_active(agent, now);
                let caller = self
                    .agents
                    .get(agent)
                    .and_then(|a| a.caller.clone())
                    .unwrap_or_default();
                let mut c = new_call(
                    &call,
                    Direction::Outbound,
                    caller,
                    None,
                    &to,
                    MediaPlan::Agent(agent.clone()),
                    Some(agent.clone()),
                    now,
                );
                c.name(prospect);
                self.calls.insert(call.clone(), c);
                self.apply_record_mode(&call, trunk.as_deref());
                commands.push(Command::Dial {
                    call: call.clone(),
                    to,
                });
                commands.extend(self.updated(&call));
                (Ok(call), commands)
            }
            AgentRequest::Act(CallAction::Dtmf { call, digits }) => {
                if digits.is_empty()
                    || digits.len() > MAX_DTMF_SEND
                    || !digits
                        .chars()
                        .all(|d| matches!(d, '0'..='9' | '*' | '#' | 'A'..='D'))
                {
                    return (
                        Err(RequestError::BadRequest(
                            "digits: 1 to 32 of 0-9, *, # or A-D".into(),
                        )),
                        Vec::new(),
                    );
                }
                let Some(c) = self.own_call(agent, &call) else {
                    return (Err(RequestError::NotFound), Vec::new());
                };
                if c.status != Status::Active {
                    return (
                        Err(RequestError::InvalidState(c.status.as_str())),
                        Vec::new(),
                    );
                }
                (Ok(call.clone()), vec![Command::SendDtmf { call, digits }])
            }
        }
    }

    pub(super) fn own_call(&mut self, agent: &AgentId, call: &CallId) -> Option<&mut Call> {
        self.calls
            .get_mut(call)
            .filter(|c| c.agent.as_deref() == Some(agent))
    }

    /// The agent's call, if it is in one of `allowed` statuses: `not_found` or
    /// `invalid_state` otherwise.
    pub(super) fn own_call_in(
        &mut self,
        agent: &AgentId,
        call: &CallId,
        allowed: &[Status],
    ) -> Result<&mut Call, RequestError> {
        let c = self.own_call(agent, call).ok_or(RequestError::NotFound)?;
        if allowed.contains(&c.status) {
            Ok(c)
        } else {
            Err(RequestError::InvalidState(c.status.as_str()))
        }
    }
}
