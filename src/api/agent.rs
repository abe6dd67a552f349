//! The agent WebSocket (`GET /v1/agent/ws`, `spec/agent-protocol.md`): authentication by token,
//! request/answer with `req`, the peer connection's offer and candidates, and the controller's
//! notices as events. A bad message gets an `error` and the connection stays; when the socket
//! closes for any reason the signalling task hears it and every call of the agent ends.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::response::Response;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::api::protocol::{self, Auth, ClientMessage, Envelope, Req, ServerMessage};
use crate::api::Peer;
use crate::app::{
    AgentCall, AgentError, AgentInput, AgentOutbound, AppHandle, AGENT_OUTBOUND_CAPACITY,
};
use crate::conn::ReadLimit;
use crate::controller::{AgentId, ConnId, ConnKind};
use crate::webrtc::{PeerCodec, WebrtcInput};

/// How long a client may take to send `auth` when the token is not in the URL.
const AUTH_TIMEOUT: Duration = Duration::from_secs(5);
/// WebSocket pings go out this often.
const PING_INTERVAL: Duration = Duration::from_secs(5);
/// Nothing heard from the client for this long: the connection is dead.
const PING_TIMEOUT: Duration = Duration::from_secs(15);
/// A message larger than this is refused (an SDP offer is a few KiB).
const MAX_MESSAGE: usize = 64 * 1024;
/// Before it has authenticated, a connection may send this many bytes (an `auth` message is a
/// few hundred); past them it is closed, so strangers cannot make the gateway hold
/// `MAX_MESSAGE` for each of their connections.
pub const PRE_AUTH_BYTES: u64 = 4096;

#[derive(Debug, serde::Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
    /// `?monitor=true`: a supervisor's monitoring connection (as `monitor` in `auth`).
    #[serde(default)]
    monitor: bool,
}

pub async fn upgrade(
    State(handle): State<AppHandle>,
    Query(query): Query<TokenQuery>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    ws: WebSocketUpgrade,
) -> Response {
    // Armed before the 101 goes out, so the first frame is already counted.
    peer.read_limit.limit(PRE_AUTH_BYTES);
    let kind = if query.monitor {
        ConnKind::Monitor
    } else {
        ConnKind::Calls
    };
    ws.max_message_size(MAX_MESSAGE)
        .on_upgrade(move |socket| session(handle, socket, query.token, kind, peer.read_limit))
}

/// The agent id a token belongs to.
fn agent_for(handle: &AppHandle, token: &str) -> Option<AgentId> {
    handle.config.agent_by_token(token).map(|a| a.id.clone())
}

/// The agent protocol's close code for why the controller closes a connection.
pub fn close_code(reason: crate::controller::CloseReason) -> u16 {
    match reason {
        crate::controller::CloseReason::Replaced => REPLACED,
        crate::controller::CloseReason::MonitorRefused => MONITOR_REFUSED,
    }
}

/// Close code: a newer sign-in of the same agent took over (agent protocol).
const REPLACED: u16 = 4409;
/// Close code: a monitoring connection from one who is not a supervisor, or who is signed in
/// on this node (and monitors from that connection).
const MONITOR_REFUSED: u16 = 4403;

async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        })))
        .await;
}

async fn send(socket: &mut WebSocket, message: &ServerMessage) -> bool {
    socket
        .send(Message::Text(message.to_json().into()))
        .await
        .is_ok()
}

fn error(req: &Req, code: &str, message: impl Into<String>) -> ServerMessage {
    ServerMessage::error(req.clone(), code, message)
}

fn ok(req: &Req, result: Value) -> ServerMessage {
    ServerMessage::ok(req.clone(), result)
}

/// Wait for `{"type":"auth","token":...}` as the first message; with it, whether the
/// connection is a monitoring one.
async fn first_message_token(socket: &mut WebSocket) -> Option<(String, Req, bool)> {
    let message = tokio::time::timeout(AUTH_TIMEOUT, socket.recv())
        .await
        .ok()??
        .ok()?;
    let Message::Text(text) = message else {
        return None;
    };
    match protocol::parse(&text).ok()? {
        Envelope {
            req,
            message:
                ClientMessage::Auth(Auth {
                    token: Some(token),
                    monitor,
                }),
        } => Some((token, req, monitor)),
        _ => None,
    }
}

async fn session(
    handle: AppHandle,
    mut socket: WebSocket,
    token: Option<String>,
    kind: ConnKind,
    read_limit: ReadLimit,
) {
    let (token, auth_req, kind) = match token {
        Some(t) => (Some(t), None, kind),
        None => match first_message_token(&mut socket).await {
            Some((t, req, true)) => (Some(t), req, ConnKind::Monitor),
            Some((t, req, false)) => (Some(t), req, kind),
            None => (None, None, kind),
        },
    };
    let Some(agent) = token.as_deref().and_then(|t| agent_for(&handle, t)) else {
        close(&mut socket, 4401, "unauthorized").await;
        return;
    };
    read_limit.lift();
    let conn: ConnId = handle.next_conn.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("agent", %agent, conn);
    serve_agent(handle, socket, agent, conn, kind, auth_req)
        .instrument(span)
        .await;
}

async fn serve_agent(
    handle: AppHandle,
    mut socket: WebSocket,
    agent: AgentId,
    conn: ConnId,
    kind: ConnKind,
    auth_req: Req,
) {
    let codec = Arc::new(PeerCodec::default());
    let (outbound_tx, mut outbound) = mpsc::channel(AGENT_OUTBOUND_CAPACITY);
    let (reply, snapshot) = oneshot::channel();
    let connect = AgentInput::Connect {
        agent: agent.clone(),
        conn,
        kind,
        codec: Arc::clone(&codec),
        outbound: outbound_tx,
        reply,
    };
    if handle.agents.send(connect).await.is_err() {
        close(&mut socket, 1011, "gateway stopping").await;
        return;
    }
    let calls = match snapshot.await {
        Ok(Some(calls)) => calls,
        Ok(None) => {
            let refusal =
                "only a supervisor not signed in on this node opens a monitoring connection";
            send(&mut socket, &error(&auth_req, "forbidden", refusal)).await;
            close(&mut socket, MONITOR_REFUSED, "monitoring refused").await;
            return;
        }
        Err(_) => {
            close(&mut socket, 1011, "gateway stopping").await;
            return;
        }
    };
    // The page's peer connection needs its STUN/TURN servers before it offers.
    let ice_servers = crate::api::ice::ice_servers(
        &handle.config.webrtc.ice_servers,
        &agent,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    );
    if auth_req.is_some()
        && !send(
            &mut socket,
            &ok(&auth_req, signed_in(&handle, &agent, &ice_servers)),
        )
        .await
    {
        disconnect(&handle, &agent, conn).await;
        return;
    }
    let mut session = Session {
        handle: handle.clone(),
        agent: agent.clone(),
        conn,
        codec,
    };
    handle
        .gateway_counters
        .websockets
        .fetch_add(1, Ordering::Relaxed);
    // The first snapshot also carries the ICE servers, for clients that authenticated with
    // the query token and so got no `ok` to `auth`.
    let mut first = crate::api::wire::snapshot(&handle.clock, &calls, None);
    if let ServerMessage::Snapshot { ice_servers: i, .. } = &mut first {
        *i = Some(ice_servers);
    }
    if send(&mut socket, &first).await {
        session.run(&mut socket, &mut outbound).await;
    }
    handle
        .gateway_counters
        .websockets
        .fetch_sub(1, Ordering::Relaxed);
    disconnect(&handle, &agent, conn).await;
}

/// The `ok` to `auth`: the agent, its ICE servers and, in a cluster, this node and the live
/// nodes' URLs (the page reconnects to another when this one is lost).
fn signed_in(handle: &AppHandle, agent: &AgentId, ice_servers: &Value) -> Value {
    let mut ok = json!({"agent_id": agent, "ice_servers": ice_servers});
    if let (Some(nodes), Some(cluster)) = (&handle.nodes, &handle.config.cluster) {
        ok["node"] = json!(cluster.node);
        ok["nodes"] = json!(nodes.live());
    }
    ok
}

async fn disconnect(handle: &AppHandle, agent: &AgentId, conn: ConnId) {
    let _ = handle
        .agents
        .send(AgentInput::Disconnect {
            agent: agent.clone(),
            conn,
        })
        .await;
}

struct Session {
    handle: AppHandle,
    agent: AgentId,
    conn: ConnId,
    codec: Arc<PeerCodec>,
}

impl Session {
    async fn run(&mut self, socket: &mut WebSocket, outbound: &mut mpsc::Receiver<AgentOutbound>) {
        let mut pings = tokio::time::interval(PING_INTERVAL);
        let mut last_heard = Instant::now();
        loop {
            tokio::select! {
                message = socket.recv() => {
                    let Some(Ok(message)) = message else {
                        tracing::info!("agent socket closed");
                        return;
                    };
                    last_heard = Instant::now();
                    let reply = match message {
                        Message::Text(text) => self.on_text(&text).await,
                        Message::Binary(_) => Some(ServerMessage::error(None, "bad_request", "binary messages are not part of the protocol")),
                        Message::Close(_) => return,
                        Message::Ping(_) | Message::Pong(_) => None,
                    };
                    if let Some(reply) = reply {
                        if !send(socket, &reply).await {
                            return;
                        }
                    }
                }
                out = outbound.recv() => match out {
                    Some(AgentOutbound::Notice(notice)) => {
                        if !send(socket, &crate::api::wire::notice(&self.handle.clock, &notice)).await {
                            return;
                        }
                    }
                    Some(AgentOutbound::Close(code)) => {
                        let reason = if code == REPLACED { "replaced by a new connection" } else { "closing" };
                        close(socket, code, reason).await;
                        return;
                    }
                    None => return,
                },
                _ = pings.tick() => {
                    if last_heard.elapsed() > PING_TIMEOUT {
                        tracing::info!("agent silent past the ping timeout; closing");
                        close(socket, 1001, "ping timeout").await;
                        return;
                    }
                    if socket.send(Message::Ping(Default::default())).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    async fn on_text(&mut self, text: &str) -> Option<ServerMessage> {
        let Envelope { req, message } = match protocol::parse(text) {
            Ok(envelope) => envelope,
            Err(refusal) => return Some(refusal.into_error()),
        };
        let request = match message {
            ClientMessage::Auth(_) => return Some(ok(&req, json!({"agent_id": self.agent}))),
            ClientMessage::Ping => return Some(ServerMessage::Pong { req }),
            ClientMessage::List => {
                let (reply, answer) = oneshot::channel();
                let asked = self
                    .handle
                    .agents
                    .send(AgentInput::Snapshot {
                        agent: self.agent.clone(),
                        reply,
                    })
                    .await;
                return match (asked, answer.await) {
                    (Ok(()), Ok(calls)) => {
                        Some(crate::api::wire::snapshot(&self.handle.clock, &calls, req))
                    }
                    _ => Some(error(&req, "unavailable", "gateway stopping")),
                };
            }
            ClientMessage::Offer(offer) => return Some(self.offer(&req, offer.sdp.0).await),
            ClientMessage::Candidate(c) => return Some(self.candidate(&req, c.candidate).await),
            ClientMessage::DismissLog(dismiss) => {
                let closed = self
                    .handle
                    .agents
                    .send(AgentInput::LogSaved {
                        agent: self.agent.clone(),
                        prospect: dismiss.number.0,
                    })
                    .await;
                return Some(match closed {
                    Ok(()) => ok(&req, json!({})),
                    Err(_) => error(&req, "unavailable", "gateway stopping"),
                });
            }
            ClientMessage::Call(request) => request,
        };
        // A dial without a name takes the directory's, if the number is in it.
        let request = match request {
            AgentCall::Dial { to, mut prospect } if prospect.name.is_none() => {
                if let Some(contact) = self.handle.names.directory(&to).await {
                    prospect.name = Some(contact.name);
                    prospect.id = prospect.id.or(contact.prospect_id);
                }
                AgentCall::Dial { to, prospect }
            }
            other => other,
        };
        let (reply, answer) = oneshot::channel();
        let input = AgentInput::Request {
            agent: self.agent.clone(),
            request,
            reply,
        };
        if self.handle.agents.send(input).await.is_err() {
            return Some(error(&req, "unavailable", "gateway stopping"));
        }
        Some(match answer.await {
            Ok(Ok(call_id)) => ok(&req, json!({"call_id": call_id})),
            Ok(Err(AgentError { code, message })) => error(&req, code, message),
            Err(_) => error(&req, "unavailable", "gateway stopping"),
        })
    }

    async fn offer(&mut self, req: &Req, sdp: String) -> ServerMessage {
        let (reply, answer) = oneshot::channel();
        let input = WebrtcInput::Offer {
            peer: self.conn,
            sdp,
            codec: Arc::clone(&self.codec),
            reply,
        };
        if self.handle.webrtc.send(input).await.is_err() {
            return error(req, "unavailable", "media stopping");
        }
        match answer.await {
            Ok(Ok(sdp)) => ServerMessage::WebrtcAnswer {
                req: req.clone(),
                sdp,
            },
            Ok(Err(e)) => error(req, "bad_request", format!("sdp: {e}")),
            Err(_) => error(req, "unavailable", "media stopping"),
        }
    }

    async fn candidate(&mut self, req: &Req, candidate: Value) -> ServerMessage {
        let candidate = match candidate {
            Value::Object(init) => init
                .get("candidate")
                .and_then(Value::as_str)
                .map(str::to_string),
            Value::String(s) => Some(s),
            Value::Null => Some(String::new()),
            _ => None,
        };
        let Some(candidate) = candidate else {
            return error(
                req,
                "bad_request",
                "candidate: an RTCIceCandidateInit object is required",
            );
        };
        let (reply, answer) = oneshot::channel();
        let input = WebrtcInput::Candidate {
            peer: self.conn,
            candidate,
            reply,
        };
        if self.handle.webrtc.send(input).await.is_err() {
            return error(req, "unavailable", "media stopping");
        }
        match answer.await {
            Ok(Ok(())) => ok(req, json!({})),
            Ok(Err(e)) => error(req, "bad_request", format!("candidate: {e}")),
            Err(_) => error(req, "unavailable", "media stopping"),
        }
    }
}
