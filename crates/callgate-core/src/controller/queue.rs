//! Each agent's calls: the one active call, and the FIFO of held and waiting calls the
//! agent picks from; holding, activating, and the call-log prompts once a prospect is gone.

use super::*;

impl Controller {
    /// The agent's queue: waiting and held calls, oldest `queued_at` first.
    pub fn queue(&self, agent: &AgentId) -> Vec<&Call> {
        let mut queue: Vec<&Call> = self
            .calls
            .values()
            .filter(|c| {
                c.agent.as_deref() == Some(agent)
                    && matches!(c.status, Status::Waiting | Status::OnHold)
            })
            .collect();
        queue.sort_by(|a, b| a.queued_at.cmp(&b.queued_at).then(a.id.cmp(&b.id)));
        queue
    }

    /// `call.waiting` for the oldest waiting call, once per head.
    pub(super) fn announce_waiting(&mut self, agent: &AgentId) -> Vec<Command> {
        let queue = self.queue(agent);
        let queue_length = queue.len();
        let head = queue
            .into_iter()
            .find(|c| c.status == Status::Waiting)
            .cloned();
        let Some(a) = self.agents.get_mut(agent) else {
            return Vec::new();
        };
        match head {
            Some(head) if a.announced_head.as_deref() != Some(head.id.as_str()) => {
                a.announced_head = Some(head.id.clone());
                vec![Command::Notify {
                    agent: agent.clone(),
                    notice: Notice::Waiting {
                        call: Box::new(head),
                        queue_length,
                    },
                }]
            }
            Some(_) => Vec::new(),
            None => {
                a.announced_head = None;
                Vec::new()
            }
        }
    }

    /// Keep an ended call (as the agent saw it end) for the agent's snapshots.
    pub(super) fn remember_ended(&mut self, agent: &AgentId, call: &Call) {
        if let Some(a) = self.agents.get_mut(agent) {
            a.recent.push_back(call.clone());
            while a.recent.len() > RECENT_ENDED {
                a.recent.pop_front();
            }
        }
    }

    /// Open (or merge into) the call-log prompt for the call's prospect.
    pub(super) fn prompt(&mut self, agent: &AgentId, call: &Call) -> Vec<Command> {
        let Some(a) = self.agents.get_mut(agent) else {
            return Vec::new();
        };
        let ids = a.prompts.entry(call.prospect().to_string()).or_default();
        if !ids.contains(&call.id) {
            ids.push(call.id.clone());
        }
        vec![Command::Notify {
            agent: agent.clone(),
            notice: Notice::LogPrompt {
                call: Box::new(call.clone()),
                call_ids: ids.clone(),
            },
        }]
    }

    /// The prospect's call log was saved or dismissed: its prompt closes.
    pub fn close_prompt(&mut self, agent: &AgentId, prospect: &str) -> bool {
        self.agents
            .get_mut(agent)
            .is_some_and(|a| a.prompts.remove(prospect).is_some())
    }

    /// Park the agent's active call, if any: it joins the queue with `queued_at = now`.
    pub(super) fn hold_active(&mut self, agent: &AgentId, now: Instant) -> Vec<Command> {
        let Some(id) = self.active_call(agent).map(|c| c.id.clone()) else {
            return Vec::new();
        };
        self.hold(agent, &id, now)
    }

    pub(super) fn hold(&mut self, agent: &AgentId, call: &CallId, now: Instant) -> Vec<Command> {
        let Some(c) = self.calls.get_mut(call) else {
            return Vec::new();
        };
        c.set_status(Status::OnHold);
        c.set_queued_at(Some(now));
        let mut commands = vec![
            Command::Unbridge {
                call: call.clone(),
                agent: agent.clone(),
            },
            Command::Park { call: call.clone() },
        ];
        commands.extend(self.updated(call));
        commands
    }

    /// Make a ringing, waiting or held call the active one (the agent has none active).
    pub(super) fn activate(
        &mut self,
        agent: &AgentId,
        call: &CallId,
        now: Instant,
    ) -> Vec<Command> {
        let Some(c) = self.calls.get_mut(call) else {
            return Vec::new();
        };
        // A transferred call was answered long ago: it only needs bridging.
        let answer =
            matches!(c.status, Status::Ringing | Status::Waiting) && c.answered_at.is_none();
        c.transfer = None;
        c.set_status(Status::Active);
        c.set_queued_at(None);
        if answer {
            c.answered_at = Some(now);
        }
        let mut commands = Vec::new();
        if answer {
            commands.push(Command::Answer {
                call: call.clone(),
                plan: MediaPlan::Agent(agent.clone()),
            });
        }
        commands.push(Command::Bridge {
            call: call.clone(),
            agent: agent.clone(),
        });
        commands.extend(self.updated(call));
        commands.extend(self.announce_waiting(agent));
        commands
    }
}
