//! What the HTTP side (the API and the agents' WebSockets) uses to reach the signalling
//! task: requests answered on oneshots, and the handle it is served with.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::config::Config;
use crate::controller::{AgentId, Call, CallId, ConnId, ConnKind, MediaPlan, Notice};
use crate::gateway::{AgentCall, AgentError, AgentView, LiveCall, WallClock};
use crate::media::stats::MediaCounters;
use crate::store::StoreOp;
use crate::webrtc::{PeerCodec, WebrtcCounters, WebrtcInput};

/// Notices queued toward one agent's WebSocket; when full the agent is too slow to follow its
/// calls and the connection is closed (it gets a fresh snapshot when it reconnects).
pub const AGENT_OUTBOUND_CAPACITY: usize = 256;

/// Operator requests, answered on a oneshot.
pub enum AdminRequest {
    Dial {
        to: String,
        plan: MediaPlan,
        reply: oneshot::Sender<Result<CallId, String>>,
    },
    Hangup {
        call: CallId,
        reply: oneshot::Sender<bool>,
    },
    Calls {
        reply: oneshot::Sender<Vec<LiveCall>>,
    },
    /// Every agent with its connection and calls right now.
    Agents {
        reply: oneshot::Sender<Vec<AgentView>>,
    },
    Dtmf {
        call: CallId,
        digits: String,
        reply: oneshot::Sender<bool>,
    },
}

/// From an agent's WebSocket to the signalling task.
#[derive(Debug)]
pub enum AgentInput {
    /// Authenticated; the reply is the agent's snapshot, or None when the gateway refused a
    /// monitoring connection. A connection already open for this agent is closed (4409) and
    /// this one inherits its calls.
    Connect {
        agent: AgentId,
        conn: ConnId,
        kind: ConnKind,
        codec: Arc<PeerCodec>,
        outbound: mpsc::Sender<AgentOutbound>,
        reply: oneshot::Sender<Option<Vec<Call>>>,
    },
    Disconnect {
        agent: AgentId,
        conn: ConnId,
    },
    Request {
        agent: AgentId,
        request: AgentCall,
        reply: oneshot::Sender<Result<CallId, AgentError>>,
    },
    Snapshot {
        agent: AgentId,
        reply: oneshot::Sender<Vec<Call>>,
    },
    /// The prospect's call log was saved: its prompt is closed.
    LogSaved {
        agent: AgentId,
        prospect: String,
    },
}

/// From the signalling task to one agent's WebSocket.
#[derive(Debug, Clone)]
pub enum AgentOutbound {
    Notice(Notice),
    /// Close the WebSocket with this code.
    Close(u16),
}

/// What the HTTP shell needs to reach the running gateway.
#[derive(Clone)]
pub struct AppHandle {
    pub admin: mpsc::Sender<AdminRequest>,
    pub agents: mpsc::Sender<AgentInput>,
    pub webrtc: mpsc::Sender<WebrtcInput>,
    pub config: Arc<Config>,
    pub counters: Arc<MediaCounters>,
    pub webrtc_counters: Arc<WebrtcCounters>,
    pub clock: WallClock,
    pub next_conn: Arc<std::sync::atomic::AtomicU64>,
    /// The call log's writer (log edits go through it like every other write).
    /// Weak, so that at shutdown the writer finishes once the signalling task lets go of it
    /// (the HTTP server, which holds this, runs until the process exits).
    pub store: mpsc::WeakSender<StoreOp>,
    pub gateway_counters: Arc<crate::metrics::GatewayCounters>,
    /// The contacts directory and the CRM lookup.
    pub names: Arc<crate::names::Names>,
    /// Read connections to the call log, for the API.
    pub call_log: Arc<crate::store::Readers>,
    /// In a cluster, its live nodes: given to pages, named on calls, trusted as origins.
    pub nodes: Option<crate::cluster::Nodes>,
}
