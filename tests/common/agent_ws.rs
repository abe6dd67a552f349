//! A plain agent-protocol client for the tests: connect, read the next message (of a kind),
//! send, and send a request and wait for its answer.

use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use super::{rand_u64, Gateway};

pub type AgentSocket = WebSocket<MaybeTlsStream<TcpStream>>;

/// `query` is appended to `/v1/agent/ws` (`?token=...`, or empty to authenticate later).
pub fn connect_agent(gw: &Gateway, query: &str) -> AgentSocket {
    let url = format!("ws://127.0.0.1:{}/v1/agent/ws{query}", gw.ports.http);
    let (mut socket, _) = tungstenite::connect(url).expect("WebSocket handshake");
    if let MaybeTlsStream::Plain(s) = socket.get_mut() {
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
    }
    socket
}

/// The next JSON message, skipping pings; `Err(code)` when the server closed.
pub fn next_message(socket: &mut AgentSocket) -> Result<Value, Option<u16>> {
    loop {
        match socket.read() {
            Ok(Message::Text(text)) => return Ok(serde_json::from_str(&text).expect("JSON")),
            Ok(Message::Close(frame)) => return Err(frame.map(|f| u16::from(f.code))),
            Ok(_) => continue,
            Err(_) => return Err(None),
        }
    }
}

/// The next message of `kind`, skipping events of other kinds.
pub fn next_of(socket: &mut AgentSocket, kind: &str) -> Value {
    loop {
        let message =
            next_message(socket).unwrap_or_else(|c| panic!("closed ({c:?}) waiting for {kind}"));
        if message["type"] == kind {
            return message;
        }
    }
}

pub fn send_message(socket: &mut AgentSocket, value: Value) {
    socket
        .send(Message::Text(value.to_string().into()))
        .expect("send");
}

/// Send with a fresh `req` and return the answer to it, skipping events in between.
pub fn request(socket: &mut AgentSocket, message: Value) -> Value {
    let req = format!("{:x}", rand_u64());
    let mut message = message;
    message["req"] = json!(req);
    send_message(socket, message.clone());
    loop {
        let answer = next_message(socket)
            .unwrap_or_else(|c| panic!("closed ({c:?}) waiting for the answer to {message}"));
        if answer["req"] == req.as_str() {
            return answer;
        }
    }
}
