//! Wire forms of the agent protocol and the HTTP API (`docs/agent-protocol.md`): times, the
//! call object and the events built from controller notices. Only the edge knows JSON.

use std::time::Instant;

pub use callgate_core::time::rfc3339;

use crate::api::protocol::{CallView, ProspectView, Req, ServerMessage};
use crate::app::WallClock;
use crate::controller::{Call, Notice};

fn time(clock: &WallClock, t: Instant) -> String {
    rfc3339(clock.at(t))
}

/// The agent protocol's call object.
pub fn call(clock: &WallClock, c: &Call) -> CallView {
    CallView {
        call_id: c.id.clone(),
        direction: c.direction.as_str().into(),
        from: c.from.clone(),
        to: c.to.clone(),
        prospect: ProspectView {
            number: c.prospect().to_string(),
            name: c.prospect_name.clone(),
            prospect_id: c.prospect_id.clone(),
        },
        status: c.status.as_str().into(),
        queued_at: c.queued_at.map(|t| time(clock, t)),
        created_at: time(clock, c.created_at),
        answered_at: c.answered_at.map(|t| time(clock, t)),
        ended_at: c.ended_at.map(|t| time(clock, t)),
        end_reason: c.end_reason.map(|r| r.as_str().to_string()),
        recording: c.recording.as_str().into(),
        agent_id: c.agent.clone(),
    }
}

pub fn snapshot(clock: &WallClock, calls: &[Call], req: Req) -> ServerMessage {
    ServerMessage::Snapshot {
        req,
        calls: calls.iter().map(|c| call(clock, c)).collect(),
        ice_servers: None,
    }
}

/// The event a controller notice is on the wire.
pub fn notice(clock: &WallClock, notice: &Notice) -> ServerMessage {
    let view = |c: &Call| call(clock, c);
    match notice {
        Notice::Incoming(c) => ServerMessage::Incoming { call: view(c) },
        Notice::Updated(c) => ServerMessage::Updated { call: view(c) },
        Notice::Ended(c) => ServerMessage::Ended { call: view(c) },
        Notice::Waiting {
            call: c,
            queue_length,
        } => ServerMessage::Waiting {
            call: view(c),
            queue_length: *queue_length,
        },
        Notice::Offer(c) => ServerMessage::Offer { call: view(c) },
        Notice::LogPrompt { call: c, call_ids } => ServerMessage::LogPrompt {
            call: view(c),
            call_ids: call_ids.clone(),
        },
        Notice::Monitoring { call: c, mode } => ServerMessage::MonitorUpdated {
            call: view(c),
            mode: mode.as_str().into(),
        },
        Notice::MonitorEnded(c) => ServerMessage::MonitorEnded { call: view(c) },
    }
}
