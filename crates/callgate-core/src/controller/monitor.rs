//! Supervisors on other agents' calls: listen, whisper, barge, and leaving.

use super::*;

impl Controller {
    /// The supervisors on this call.
    pub(super) fn monitors_of(&self, call: &CallId) -> Vec<(AgentId, MonitorMode)> {
        let mut found: Vec<(AgentId, MonitorMode)> = self
            .agents
            .iter()
            .filter_map(|(id, a)| match &a.monitoring {
                Some((c, mode)) if c == call => Some((id.clone(), *mode)),
                _ => None,
            })
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found
    }

    /// The supervisor leaves whatever call they monitor (to take a call of their own, or
    /// because they are gone).
    pub(super) fn stop_monitoring(&mut self, supervisor: &AgentId) -> Vec<Command> {
        let Some(a) = self.agents.get_mut(supervisor) else {
            return Vec::new();
        };
        match a.monitoring.take() {
            Some((call, _)) => vec![Command::MonitorStop {
                call,
                supervisor: supervisor.clone(),
            }],
            None => Vec::new(),
        }
    }

    /// The supervisor's `call.monitor`.
    pub(super) fn monitor(
        &mut self,
        supervisor: &AgentId,
        call: CallId,
        mode: Option<MonitorMode>,
    ) -> (Result<CallId, RequestError>, Vec<Command>) {
        let Some(a) = self.agents.get(supervisor) else {
            return (Err(RequestError::NotFound), Vec::new());
        };
        if !a.supervisor {
            return (
                Err(RequestError::Forbidden(
                    "only supervisors may monitor calls",
                )),
                Vec::new(),
            );
        }
        let current = a.monitoring.clone();
        let Some(mode) = mode else {
            return match current {
                Some((c, _)) if c == call => (Ok(call), self.stop_monitoring(supervisor)),
                _ => (
                    Err(RequestError::InvalidState("not monitoring this call")),
                    Vec::new(),
                ),
            };
        };
        let Some(c) = self.calls.get(&call) else {
            return (Err(RequestError::NotFound), Vec::new());
        };
        if !matches!(c.status, Status::Active | Status::OnHold) || c.agent.is_none() {
            return (
                Err(RequestError::InvalidState(c.status.as_str())),
                Vec::new(),
            );
        }
        if c.agent.as_deref() == Some(supervisor) {
            return (Err(RequestError::InvalidState("your own call")), Vec::new());
        }
        if self.active_call(supervisor).is_some() {
            // Their one peer connection carries their own active call.
            return (
                Err(RequestError::InvalidState("busy with a call of your own")),
                Vec::new(),
            );
        }
        let mut commands = Vec::new();
        match current {
            Some((c, _)) if c == call => commands.push(Command::MonitorMode {
                call: call.clone(),
                mode,
            }),
            _ => {
                commands.extend(self.stop_monitoring(supervisor));
                commands.push(Command::MonitorStart {
                    call: call.clone(),
                    supervisor: supervisor.clone(),
                    mode,
                });
            }
        }
        if let Some(a) = self.agents.get_mut(supervisor) {
            a.monitoring = Some((call.clone(), mode));
        }
        if let Some(c) = self.calls.get(&call) {
            commands.push(Command::Notify {
                agent: supervisor.clone(),
                notice: Notice::Monitoring {
                    call: Box::new(c.clone()),
                    mode,
                },
            });
        }
        (Ok(call), commands)
    }
}
