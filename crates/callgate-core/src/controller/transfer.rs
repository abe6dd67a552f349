//! Transfers: a call leaves its agent for another agent (blind: it rings them, and comes back
//! to the first agent's queue when nobody answers in time), for a number (a new leg through a
//! trunk, joined to the caller's once answered, back to the agent when it fails), or for a
//! call the agent set up first (attended: the two legs are joined and both leave the agent).
//! Joined legs run media to each other with no agent; when either ends, so does the other.

use std::time::Instant;

use super::*;

/// Where `call.transfer` sends a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferTarget {
    /// `agent:<id>`.
    Agent(AgentId),
    /// A number or SIP URI through a trunk; `leg` is the id the shell chose for the new leg.
    Number { to: String, leg: CallId },
    /// A call of the same agent to the target, already answered.
    Attended(CallId),
}

/// A transfer in progress on a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// The agent it came from; it goes back to them if the transfer fails.
    pub from: AgentId,
    /// When an unanswered transfer to an agent comes back.
    pub deadline: Option<Instant>,
}

/// The call as an agent it left sees it: over for them, `transferred`.
fn transferred_away(c: &Call, now: Instant) -> Call {
    let mut gone = c.clone();
    gone.set_status(Status::Ended);
    gone.ended_at = Some(now);
    gone.end_reason = Some(EndReason::Transferred);
    gone
}

impl Controller {
    /// `call.transfer` from `agent`.
    pub(super) fn transfer(
        &mut self,
        agent: &AgentId,
        call: CallId,
        target: TransferTarget,
        now: Instant,
    ) -> (Result<CallId, RequestError>, Vec<Command>) {
        if let Err(e) = self.own_call_in(agent, &call, &[Status::Active, Status::OnHold]) {
            return (Err(e), Vec::new());
        }
        match target {
            TransferTarget::Agent(to) => self.transfer_to_agent(agent, call, &to, now),
            TransferTarget::Number { to, leg } => {
                self.transfer_to_number(agent, call, to, leg, now)
            }
            TransferTarget::Attended(consult) => self.complete_attended(agent, call, consult, now),
        }
    }

    fn transfer_to_agent(
        &mut self,
        from: &AgentId,
        call: CallId,
        to: &AgentId,
        now: Instant,
    ) -> (Result<CallId, RequestError>, Vec<Command>) {
        if to == from {
            return (
                Err(RequestError::BadRequest(
                    "to: the call is already yours".into(),
                )),
                Vec::new(),
            );
        }
        let Some(target) = self.agents.get(to) else {
            return (
                Err(RequestError::BadRequest(format!("to: no agent {to:?}"))),
                Vec::new(),
            );
        };
        if !target.takes_calls() {
            return (
                Err(RequestError::InvalidState(
                    "the target agent is not signed in",
                )),
                Vec::new(),
            );
        }
        let max = target.max_calls;
        if self.live_calls_of(to) >= max as usize {
            return (Err(RequestError::LimitReached(max)), Vec::new());
        }
        let mut commands = self.leave_agent(from, &call, now, false);
        commands.extend(self.offer_next(from));
        let busy = self.calls.values().any(|o| {
            o.agent.as_ref() == Some(to)
                && matches!(o.status, Status::Active | Status::Ringing | Status::Dialing)
        });
        let deadline = now + self.transfer_ring;
        if let Some(c) = self.calls.get_mut(&call) {
            c.agent = Some(to.clone());
            c.handled_by = Some(to.clone());
            c.plan = MediaPlan::Agent(to.clone());
            c.transfer = Some(Transfer {
                from: from.clone(),
                deadline: Some(deadline),
            });
            if busy {
                c.set_status(Status::Waiting);
                c.set_queued_at(Some(now));
            } else {
                c.set_status(Status::Ringing);
                c.set_queued_at(None);
            }
        }
        let Some(c) = self.calls.get(&call).cloned() else {
            return (Err(RequestError::NotFound), commands);
        };
        if busy {
            commands.extend(self.announce_waiting(to));
        } else {
            commands.push(Command::Notify {
                agent: to.clone(),
                notice: Notice::Incoming(Box::new(c)),
            });
        }
        commands.extend(self.updated_monitors(&call));
        (Ok(call), commands)
    }

    fn transfer_to_number(
        &mut self,
        from: &AgentId,
        call: CallId,
        to: String,
        leg: CallId,
        now: Instant,
    ) -> (Result<CallId, RequestError>, Vec<Command>) {
        let to = match dial_target(&to) {
            Ok(to) => to,
            Err(e) => return (Err(e), Vec::new()),
        };
        // The log prompt waits for the far end to answer: a failed transfer comes back.
        let mut commands = self.leave_agent(from, &call, now, false);
        commands.extend(self.offer_next(from));
        if let Some(c) = self.calls.get_mut(&call) {
            c.agent = None;
            c.set_status(Status::Active);
            c.set_queued_at(None);
            c.joined = Some(leg.clone());
            c.transfer = Some(Transfer {
                from: from.clone(),
                deadline: None,
            });
        }
        let mut t = new_call(
            &leg,
            Direction::Outbound,
            String::new(),
            None,
            &to,
            MediaPlan::Join(call.clone()),
            None,
            now,
        );
        t.joined = Some(call.clone());
        t.handled_by = Some(from.clone());
        self.calls.insert(leg.clone(), t);
        commands.push(Command::Dial { call: leg, to });
        (Ok(call), commands)
    }

    fn complete_attended(
        &mut self,
        agent: &AgentId,
        call: CallId,
        consult: CallId,
        now: Instant,
    ) -> (Result<CallId, RequestError>, Vec<Command>) {
        if consult == call {
            return (
                Err(RequestError::BadRequest(
                    "attended_call_id: must be another call".into(),
                )),
                Vec::new(),
            );
        }
        let Some(t) = self.own_call(agent, &consult) else {
            return (
                Err(RequestError::BadRequest(
                    "attended_call_id: no such call of this agent".into(),
                )),
                Vec::new(),
            );
        };
        if !matches!(t.status, Status::Active | Status::OnHold) {
            return (
                Err(RequestError::InvalidState(t.status.as_str())),
                Vec::new(),
            );
        }
        let mut commands = self.leave_agent(agent, &call, now, true);
        commands.extend(self.leave_agent(agent, &consult, now, true));
        for (id, other) in [(&call, &consult), (&consult, &call)] {
            if let Some(c) = self.calls.get_mut(id) {
                c.agent = None;
                c.set_status(Status::Active);
                c.set_queued_at(None);
                c.joined = Some(other.clone());
            }
        }
        commands.push(Command::Join {
            a: call.clone(),
            b: consult,
        });
        commands.extend(self.offer_next(agent));
        (Ok(call), commands)
    }

    /// The call leaves `agent`: off their peer connection (the caller hears hold audio until
    /// the call lands), and to them it is over (`transferred`), with the call-log prompt when
    /// `prompt` (an attended transfer is done at once; a transfer to a number prompts when the
    /// far end answers; a call handed to another agent is theirs to log). The caller offers
    /// the agent's next call after.
    fn leave_agent(
        &mut self,
        agent: &AgentId,
        call: &CallId,
        now: Instant,
        prompt: bool,
    ) -> Vec<Command> {
        let Some(c) = self.calls.get_mut(call) else {
            return Vec::new();
        };
        let was = c.status;
        c.handled_by = Some(agent.clone());
        let mut commands = Vec::new();
        if was == Status::Active {
            commands.push(Command::Unbridge {
                call: call.clone(),
                agent: agent.clone(),
            });
            commands.push(Command::Park { call: call.clone() });
        }
        let gone = transferred_away(c, now);
        self.remember_ended(agent, &gone);
        commands.push(Command::Notify {
            agent: agent.clone(),
            notice: Notice::Ended(Box::new(gone.clone())),
        });
        if prompt && gone.answered_at.is_some() {
            commands.extend(self.prompt(agent, &gone));
        }
        // Detached now, so an offer of the agent's next call sees them free.
        if let Some(c) = self.calls.get_mut(call) {
            c.agent = None;
            c.set_status(Status::OnHold);
            c.set_queued_at(None);
        }
        commands
    }

    /// The agent has nothing active: offer the head of their queue, and tell them of it.
    fn offer_next(&mut self, agent: &AgentId) -> Vec<Command> {
        let mut commands = Vec::new();
        if self.active_call(agent).is_none() && self.is_connected(agent) {
            if let Some(head) = self.queue(agent).first().map(|h| (*h).clone()) {
                commands.push(Command::Notify {
                    agent: agent.clone(),
                    notice: Notice::Offer(Box::new(head)),
                });
            }
        }
        commands.extend(self.announce_waiting(agent));
        commands
    }

    /// A transfer that did not land: back on hold in the first agent's queue (the caller has
    /// been hearing hold audio all along). Gone too if that agent is gone.
    pub(super) fn transfer_failed(&mut self, call: &CallId, now: Instant) -> Vec<Command> {
        let Some(c) = self.calls.get_mut(call) else {
            return Vec::new();
        };
        let Some(transfer) = c.transfer.take() else {
            return Vec::new();
        };
        let mut commands = Vec::new();
        // The agent it rang sees it go.
        if let Some(target) = c.agent.take() {
            let gone = transferred_away(c, now);
            commands.push(Command::Notify {
                agent: target.clone(),
                notice: Notice::Ended(Box::new(gone)),
            });
            c.joined = None;
            commands.extend(self.announce_waiting(&target));
        }
        let from = transfer.from;
        if !self.is_connected(&from) {
            commands.push(Command::Hangup { call: call.clone() });
            commands.extend(self.end(call, EndReason::AgentDisconnected, now));
            return commands;
        }
        if let Some(c) = self.calls.get_mut(call) {
            c.agent = Some(from.clone());
            c.handled_by = Some(from.clone());
            c.plan = MediaPlan::Agent(from.clone());
            c.joined = None;
            c.set_status(Status::OnHold);
            c.set_queued_at(Some(now));
        }
        commands.extend(self.updated(call));
        commands.extend(self.offer_next(&from));
        commands
    }

    /// Transfers to agents that were not answered in time come back.
    pub(super) fn expire_transfers(&mut self, now: Instant) -> Vec<Command> {
        let mut due: Vec<CallId> = self
            .calls
            .values()
            .filter(|c| {
                matches!(c.status, Status::Ringing | Status::Waiting)
                    && c.transfer
                        .as_ref()
                        .and_then(|t| t.deadline)
                        .is_some_and(|d| d <= now)
            })
            .map(|c| c.id.clone())
            .collect();
        due.sort();
        due.into_iter()
            .flat_map(|call| self.transfer_failed(&call, now))
            .collect()
    }

    /// A leg of a joined pair ended (`call`, already removed): the other one ends too, or, for
    /// a transfer to a number that never answered, the caller goes back to the agent.
    pub(super) fn joined_leg_ended(
        &mut self,
        ended: &Call,
        reason: EndReason,
        now: Instant,
    ) -> Vec<Command> {
        let Some(other) = ended.joined.clone() else {
            return Vec::new();
        };
        let pending = ended.status == Status::Dialing
            && self.calls.get(&other).is_some_and(|o| o.transfer.is_some());
        if pending {
            return self.transfer_failed(&other, now);
        }
        if !self.calls.contains_key(&other) {
            return Vec::new();
        }
        if let Some(o) = self.calls.get_mut(&other) {
            o.joined = None;
        }
        let mut commands = vec![Command::Hangup {
            call: other.clone(),
        }];
        commands.extend(self.end(&other, reason, now));
        commands
    }

    /// Monitoring supervisors hear of the call (its agent may have changed).
    pub(super) fn updated_monitors(&self, call: &CallId) -> Vec<Command> {
        let Some(c) = self.calls.get(call) else {
            return Vec::new();
        };
        self.monitors_of(call)
            .into_iter()
            .map(|(supervisor, mode)| Command::Notify {
                agent: supervisor,
                notice: Notice::Monitoring {
                    call: Box::new(c.clone()),
                    mode,
                },
            })
            .collect()
    }
}
