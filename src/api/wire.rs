//! Wire forms of the agent protocol and the HTTP API (`docs/agent-protocol.md`): times, the
//! call object and the events built from controller notices. Only the edge knows JSON.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::api::protocol::{CallView, ProspectView, Req, ServerMessage};
use crate::app::WallClock;
use crate::controller::{Call, Notice};

/// RFC 3339 in UTC with milliseconds, e.g. `2026-11-27T18:30:00.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_800_000_123);
        assert_eq!(rfc3339(t), "2026-11-27T17:20:00.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }
}
