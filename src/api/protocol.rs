//! The agent protocol's messages, typed, in one place: what a client may send
//! (`ClientMessage`, read by `parse`) and what the gateway sends (`ServerMessage`). The text
//! is in `docs/agent-protocol.md`, whose every example a test reads with these types; the
//! external contract is `spec/agent-protocol.md`, which this follows exactly.
//!
//! A client message's fields are read by serde; a field that is missing or of the wrong
//! type is refused with an `error` naming it (`call_id: missing`), and the connection stays.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::controller::{CallAction, Prospect, RecordAction};
use crate::gateway::AgentCall;
use crate::ids::{AgentId, CallId};
use crate::media::monitor::MonitorMode;

/// A request's correlation token: any JSON the client sent as `req`, echoed in the reply.
pub type Req = Option<Value>;

/// One message from a client, with its `req`.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub req: Req,
    pub message: ClientMessage,
}

/// What a client may send, one variant per `type`.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    /// `auth`: the token as the first message (or `?token=` in the URL); later ones are
    /// answered `ok` with the agent's id.
    Auth(Auth),
    /// `ping`: answered `pong`.
    Ping,
    /// `calls.list`: answered `calls.snapshot`.
    List,
    /// `webrtc.offer`: answered `webrtc.answer`.
    Offer(Offer),
    /// `webrtc.candidate`: a trickled ICE candidate.
    Candidate(Candidate),
    /// `call_log.dismiss`: the agent will not log this prospect; the open prompt closes.
    DismissLog(Dismiss),
    /// `call.*`: a request about the agent's calls.
    Call(AgentCall),
}

impl ClientMessage {
    /// Every `type` a client may send.
    pub const TYPES: &'static [&'static str] = &[
        "auth",
        "ping",
        "calls.list",
        "webrtc.offer",
        "webrtc.candidate",
        "call_log.dismiss",
        "call.answer",
        "call.decline",
        "call.hangup",
        "call.hold",
        "call.resume",
        "call.dial",
        "call.dtmf",
        "call.accept",
        "call.monitor",
        "call.record",
        "call.transfer",
    ];
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Auth {
    #[serde(default)]
    pub token: Option<String>,
    /// A supervisor's monitoring connection to the node of a call it monitors (in a cluster,
    /// signed in on another node): it may only monitor, and signs the supervisor in nowhere.
    #[serde(default)]
    pub monitor: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Offer {
    pub sdp: NonEmpty,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Candidate {
    /// The `RTCIceCandidateInit` fields, a bare candidate line, or null (end of candidates).
    pub candidate: Value,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Dismiss {
    pub number: NonEmpty,
}

/// A request about one call.
#[derive(Debug, Deserialize)]
struct CallRef {
    call_id: NonEmpty,
}

#[derive(Debug, Deserialize)]
struct Dial {
    to: NonEmpty,
    /// The prospect's name, kept on the call and its log.
    #[serde(default)]
    name: Option<ProspectField>,
    /// The CRM's id for the prospect.
    #[serde(default)]
    prospect_id: Option<ProspectField>,
}

#[derive(Debug, Deserialize)]
struct Dtmf {
    call_id: NonEmpty,
    digits: NonEmpty,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum AcceptMode {
    /// End & Accept.
    End,
    /// Hold & Accept.
    Hold,
}

#[derive(Debug, Deserialize)]
struct Accept {
    call_id: NonEmpty,
    mode: AcceptMode,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum MonitorChoice {
    Listen,
    Whisper,
    Barge,
    Stop,
}

#[derive(Debug, Deserialize)]
struct Monitor {
    call_id: NonEmpty,
    mode: MonitorChoice,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RecordChoice {
    Start,
    Pause,
    Resume,
    Stop,
}

#[derive(Debug, Deserialize)]
struct Record {
    call_id: NonEmpty,
    action: RecordChoice,
}

#[derive(Debug, Deserialize)]
struct Transfer {
    call_id: NonEmpty,
    /// Blind: `agent:<id>` or a number.
    #[serde(default)]
    to: Option<String>,
    /// Attended: a call of this agent to the target.
    #[serde(default)]
    attended_call_id: Option<String>,
}

/// A string field that may not be empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonEmpty(pub String);

impl<'de> Deserialize<'de> for NonEmpty {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<NonEmpty, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            return Err(serde::de::Error::custom("must be a non-empty string"));
        }
        Ok(NonEmpty(s))
    }
}

/// A prospect's name or CRM id from the client: bounded like a directory entry and cleaned
/// of control characters; blank is none.
#[derive(Debug)]
struct ProspectField(Option<String>);

impl<'de> Deserialize<'de> for ProspectField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ProspectField, D::Error> {
        let s = String::deserialize(d)?;
        let max = crate::store::contacts::MAX_FIELD;
        if s.chars().count() > max {
            return Err(serde::de::Error::custom(format!(
                "at most {max} characters"
            )));
        }
        Ok(ProspectField(
            Some(crate::names::clean(&s)).filter(|s| !s.is_empty()),
        ))
    }
}

impl Dial {
    fn into_call(self) -> AgentCall {
        let field = |f: Option<ProspectField>| f.and_then(|f| f.0);
        AgentCall::Dial {
            to: self.to.0,
            prospect: Prospect {
                name: field(self.name),
                id: field(self.prospect_id),
            },
        }
    }
}

impl Transfer {
    fn into_call(self) -> Result<AgentCall, String> {
        let call = self.call_id.0;
        match (self.to, self.attended_call_id) {
            (Some(to), None) if !to.trim().is_empty() => Ok(AgentCall::Transfer {
                call: call.into(),
                to: Some(to.trim().to_string()),
                attended: None,
            }),
            (None, Some(consult)) if !consult.is_empty() => Ok(AgentCall::Transfer {
                call: call.into(),
                to: None,
                attended: Some(consult),
            }),
            _ => Err(
                "to: either \"to\" (agent:<id> or a number) or \"attended_call_id\" is required"
                    .into(),
            ),
        }
    }
}

/// Read a message's fields as `T`; a refusal names the field.
fn fields<T: serde::de::DeserializeOwned>(value: &Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.inner().to_string();
        let path = e.path().to_string();
        // serde says "missing field `x`" at the object itself.
        if let Some(name) = inner
            .strip_prefix("missing field `")
            .and_then(|rest| rest.strip_suffix('`'))
        {
            return format!("{name}: missing");
        }
        if path == "." {
            inner
        } else {
            format!("{path}: {inner}")
        }
    })
}

/// A message that cannot be read: answered `bad_request`, naming what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub req: Req,
    pub message: String,
}

impl Refusal {
    /// The `error` that answers it.
    pub fn into_error(self) -> ServerMessage {
        ServerMessage::error(self.req, "bad_request", self.message)
    }
}

/// Read one text frame. Pure, and never panics on any input: a message that cannot be read
/// is refused with the reason (`fuzz/fuzz_targets/agent_message.rs`).
pub fn parse(text: &str) -> Result<Envelope, Refusal> {
    let refuse = |req: &Req, message: String| Refusal {
        req: req.clone(),
        message,
    };
    let value: Value = match serde_json::from_str(text) {
        Ok(value @ Value::Object(_)) => value,
        Ok(_) => return Err(refuse(&None, "a message is one JSON object".into())),
        Err(e) => return Err(refuse(&None, format!("malformed JSON: {e}"))),
    };
    let req = value.get("req").cloned();
    let kind = match value.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        Some(_) => return Err(refuse(&req, "type: must be a string".into())),
        None => return Err(refuse(&req, "type: missing".into())),
    };
    let call_ref = |make: fn(String) -> AgentCall| {
        fields::<CallRef>(&value).map(|r| ClientMessage::Call(make(r.call_id.0)))
    };
    let message = match kind {
        "auth" => fields(&value).map(ClientMessage::Auth),
        "ping" => Ok(ClientMessage::Ping),
        "calls.list" => Ok(ClientMessage::List),
        "webrtc.offer" => fields(&value).map(ClientMessage::Offer),
        "webrtc.candidate" => fields(&value).map(ClientMessage::Candidate),
        "call_log.dismiss" => fields(&value).map(ClientMessage::DismissLog),
        "call.answer" => call_ref(|call| AgentCall::Act(CallAction::Answer { call: call.into() })),
        "call.decline" => {
            call_ref(|call| AgentCall::Act(CallAction::Decline { call: call.into() }))
        }
        "call.hangup" => call_ref(|call| AgentCall::Act(CallAction::Hangup { call: call.into() })),
        "call.hold" => call_ref(|call| AgentCall::Act(CallAction::Hold { call: call.into() })),
        "call.resume" => call_ref(|call| AgentCall::Act(CallAction::Resume { call: call.into() })),
        "call.dial" => fields::<Dial>(&value).map(|d| ClientMessage::Call(d.into_call())),
        "call.dtmf" => fields::<Dtmf>(&value).map(|d| {
            ClientMessage::Call(AgentCall::Act(CallAction::Dtmf {
                call: d.call_id.0.into(),
                digits: d.digits.0,
            }))
        }),
        "call.accept" => fields::<Accept>(&value).map(|a| {
            ClientMessage::Call(AgentCall::Act(CallAction::Accept {
                call: a.call_id.0.into(),
                hold_active: matches!(a.mode, AcceptMode::Hold),
            }))
        }),
        "call.monitor" => fields::<Monitor>(&value).map(|m| {
            let mode = match m.mode {
                MonitorChoice::Listen => Some(MonitorMode::Listen),
                MonitorChoice::Whisper => Some(MonitorMode::Whisper),
                MonitorChoice::Barge => Some(MonitorMode::Barge),
                MonitorChoice::Stop => None,
            };
            ClientMessage::Call(AgentCall::Act(CallAction::Monitor {
                call: m.call_id.0.into(),
                mode,
            }))
        }),
        "call.record" => fields::<Record>(&value).map(|r| {
            let action = match r.action {
                RecordChoice::Start => RecordAction::Start,
                RecordChoice::Pause => RecordAction::Pause,
                RecordChoice::Resume => RecordAction::Resume,
                RecordChoice::Stop => RecordAction::Stop,
            };
            ClientMessage::Call(AgentCall::Act(CallAction::Record {
                call: r.call_id.0.into(),
                action,
            }))
        }),
        "call.transfer" => fields::<Transfer>(&value)
            .and_then(Transfer::into_call)
            .map(ClientMessage::Call),
        other => Err(format!("type: unknown message type {other:?}")),
    };
    match message {
        Ok(message) => Ok(Envelope { req, message }),
        Err(reason) => Err(refuse(&req, reason)),
    }
}

/// What the gateway sends, one variant per `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ServerMessage {
    /// A request done; `result` holds what it returns (e.g. `call_id`).
    #[serde(rename = "ok")]
    Ok {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Req,
        #[serde(flatten)]
        result: Map<String, Value>,
    },
    #[serde(rename = "error")]
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Req,
        /// Stable, snake_case: `bad_request`, `not_found`, `invalid_state`, ...
        code: String,
        message: String,
    },
    #[serde(rename = "pong")]
    Pong {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Req,
    },
    #[serde(rename = "webrtc.answer")]
    WebrtcAnswer {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Req,
        sdp: String,
    },
    /// Right after sign-in, and in reply to `calls.list`.
    #[serde(rename = "calls.snapshot")]
    Snapshot {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Req,
        calls: Vec<CallView>,
        /// In the first snapshot after sign-in: the STUN/TURN servers for the page.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ice_servers: Option<Value>,
    },
    #[serde(rename = "call.incoming")]
    Incoming { call: CallView },
    #[serde(rename = "call.waiting")]
    Waiting { call: CallView, queue_length: usize },
    #[serde(rename = "call.offer")]
    Offer { call: CallView },
    #[serde(rename = "call.updated")]
    Updated { call: CallView },
    #[serde(rename = "call.ended")]
    Ended { call: CallView },
    #[serde(rename = "call_log.prompt")]
    LogPrompt {
        call: CallView,
        call_ids: Vec<CallId>,
    },
    /// To a supervisor: the call they monitor, or their mode, changed.
    #[serde(rename = "monitor.updated")]
    MonitorUpdated { call: CallView, mode: String },
    /// To a supervisor: the call they monitored ended.
    #[serde(rename = "monitor.ended")]
    MonitorEnded { call: CallView },
}

impl ServerMessage {
    /// Every `type` the gateway sends.
    pub const TYPES: &'static [&'static str] = &[
        "ok",
        "error",
        "pong",
        "webrtc.answer",
        "calls.snapshot",
        "call.incoming",
        "call.waiting",
        "call.offer",
        "call.updated",
        "call.ended",
        "call_log.prompt",
        "monitor.updated",
        "monitor.ended",
    ];

    pub fn error(req: Req, code: &str, message: impl Into<String>) -> ServerMessage {
        ServerMessage::Error {
            req,
            code: code.to_string(),
            message: message.into(),
        }
    }

    /// `ok`, with the fields of `result` (an object) beside it.
    pub fn ok(req: Req, result: Value) -> ServerMessage {
        let result = match result {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        ServerMessage::Ok { req, result }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            // Every field is a string, number, list or map: this cannot fail.
            tracing::error!(error = %e, "agent message not serialisable");
            String::from(r#"{"type":"error","code":"internal","message":"not serialisable"}"#)
        })
    }
}

/// The call object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallView {
    pub call_id: CallId,
    /// `inbound` or `outbound`.
    pub direction: String,
    pub from: String,
    pub to: String,
    pub prospect: ProspectView,
    /// `ringing`, `waiting`, `dialing`, `active`, `on_hold` or `ended`.
    pub status: String,
    /// RFC 3339 times; null where it has not happened.
    pub queued_at: Option<String>,
    pub created_at: String,
    pub answered_at: Option<String>,
    pub ended_at: Option<String>,
    pub end_reason: Option<String>,
    /// `off`, `recording`, `paused` (or `failed`).
    pub recording: String,
    pub agent_id: Option<AgentId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProspectView {
    pub number: String,
    pub name: Option<String>,
    pub prospect_id: Option<String>,
}

#[cfg(test)]
mod tests;
