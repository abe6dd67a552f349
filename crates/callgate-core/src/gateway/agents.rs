//! What agents and operators ask of the gateway and see of it: an agent's call requests
//! (checked against the dial plan before the controller hears of them), and the views of
//! agents and live calls the HTTP API shows.

use std::time::{Instant, SystemTime};

use super::Gateway;
use crate::b2bua::DialError;
use crate::controller::{
    AgentId, AgentRequest, CallAction, CallId, Prospect, RequestError, Status, TransferTarget,
};

/// An agent's request as the protocol reads it: an action on a call as the controller takes
/// it, or a dial or transfer the gateway checks against the dial plan and gives ids first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentCall {
    Act(CallAction),
    Dial {
        to: String,
        /// Who is called, from `call.dial` or the directory.
        prospect: Prospect,
    },
    /// `to` (`agent:<id>` or a number) for a blind transfer, `attended` for an attended one.
    Transfer {
        call: CallId,
        to: Option<String>,
        attended: Option<String>,
    },
}

/// An agent request's failure, with the agent protocol's error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentError {
    pub code: &'static str,
    pub message: String,
}

impl From<RequestError> for AgentError {
    fn from(e: RequestError) -> AgentError {
        AgentError {
            code: e.code(),
            message: e.to_string(),
        }
    }
}

impl AgentError {
    /// A target the dial plan refuses, or that is no number or SIP URI at all.
    fn dial(e: DialError, message: String) -> AgentError {
        let code = match e {
            DialError::DialPlanDenied(_) => "dial_plan_denied",
            _ => "bad_request",
        };
        AgentError { code, message }
    }
}

/// An agent as `GET /v1/agents` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AgentView {
    pub agent_id: AgentId,
    pub name: String,
    pub role: crate::config::Role,
    pub connected: bool,
    pub active_call: Option<CallId>,
    pub held_calls: Vec<CallId>,
    pub waiting_calls: Vec<CallId>,
}

/// A live call as `GET /v1/calls/live` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LiveCall {
    pub call_id: CallId,
    pub direction: &'static str,
    pub from: String,
    pub to: String,
    pub status: &'static str,
    /// Digits the far end sent.
    pub dtmf: String,
}

impl Gateway {
    /// An agent's request: the call it concerns (a new one for a dial), or why not.
    pub fn request(
        &mut self,
        now: Instant,
        wall: SystemTime,
        agent: &AgentId,
        request: AgentCall,
    ) -> Result<CallId, AgentError> {
        self.set_time(now, wall);
        let result = self.agent_request(agent, request);
        self.settle();
        // A transfer's leg is dialled while its request is carried out, or never (refused).
        self.via_registrar.clear();
        result
    }

    /// In a cluster, the DID an agent who is not signed in here is reached at (their first);
    /// `None` for one signed in here, unknown, without DIDs, or on a single node.
    fn agent_elsewhere(&self, id: &str) -> Option<String> {
        self.config.cluster.as_ref()?;
        let agent = self.config.agents.iter().find(|a| a.id.as_str() == id)?;
        if self.is_signed_in(&agent.id) {
            return None;
        }
        agent.dids.first().cloned()
    }

    fn agent_request(&mut self, agent: &AgentId, request: AgentCall) -> Result<CallId, AgentError> {
        let request = match request {
            AgentCall::Act(action) => AgentRequest::Act(action),
            AgentCall::Transfer { call, to, attended } => {
                let target = match (to, attended) {
                    (_, Some(consult)) => TransferTarget::Attended(consult.into()),
                    (Some(to), None) => match to.strip_prefix("agent:") {
                        Some(id) => match self.agent_elsewhere(id) {
                            // In a cluster, an agent not signed in here is reached through the
                            // registrar at their DID, on whichever node they are.
                            Some(did) => {
                                let leg = self.new_call_id();
                                self.via_registrar.insert(leg.clone());
                                TransferTarget::Number { to: did, leg }
                            }
                            None => TransferTarget::Agent(id.into()),
                        },
                        // Through a trunk, as a dial: the dial plan decides.
                        None => {
                            if let Err(e) = self.b2bua.trunks_for(&to) {
                                let message = format!("to: {e}");
                                return Err(AgentError::dial(e, message));
                            }
                            TransferTarget::Number {
                                to,
                                leg: self.new_call_id(),
                            }
                        }
                    },
                    (None, None) => {
                        return Err(AgentError {
                            code: "bad_request",
                            message: "to: required".into(),
                        })
                    }
                };
                AgentRequest::Transfer { call, target }
            }
            AgentCall::Dial { to, prospect } => {
                let to = to.trim().to_string();
                // The trunk that will carry it first decides its recording mode.
                let trunk = match self.b2bua.trunks_for(&to) {
                    Ok(trunks) => trunks
                        .first()
                        .and_then(|&i| self.b2bua.trunk_name(i))
                        .map(str::to_string),
                    Err(e) => {
                        let message = e.to_string();
                        return Err(AgentError::dial(e, message));
                    }
                };
                AgentRequest::Dial {
                    call: self.new_call_id(),
                    to,
                    trunk,
                    prospect,
                }
            }
        };
        let (result, commands) = self.controller.request(agent, request, self.now);
        self.execute(commands);
        result.map_err(AgentError::from)
    }

    /// Every configured agent with its connection and calls right now.
    pub fn agents(&self) -> Vec<AgentView> {
        self.config
            .agents
            .iter()
            .map(|a| {
                let queue = self.controller.queue(&a.id);
                let of = |status: Status| {
                    queue
                        .iter()
                        .filter(|c| c.status == status)
                        .map(|c| c.id.clone())
                        .collect()
                };
                AgentView {
                    agent_id: a.id.clone(),
                    name: a.name.clone(),
                    role: a.role,
                    connected: self.controller.is_connected(&a.id),
                    active_call: self.controller.active_call(&a.id).map(|c| c.id.clone()),
                    held_calls: of(Status::OnHold),
                    waiting_calls: of(Status::Waiting),
                }
            })
            .collect()
    }

    /// Every live call.
    pub fn calls(&self) -> Vec<LiveCall> {
        self.controller
            .calls()
            .map(|c| LiveCall {
                call_id: c.id.clone(),
                direction: c.direction.as_str(),
                from: c.from.clone(),
                to: c.to.clone(),
                status: c.status.as_str(),
                dtmf: c.dtmf.clone(),
            })
            .collect()
    }
}
