//! A harness that drives the whole gateway core with fake time and no sockets, in the
//! manner of quinn-proto's `tests/util.rs`: a SIP trunk written as text, agents as
//! connection ids, and every output sorted into what the tests assert on.

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::{AgentCall, AgentError, Gateway, Input, MediaOp, MediaPorts, Output, Persist, Seeds};
use crate::config::Config;
use crate::controller::{CallId, CloseReason, ConnId, ConnKind, Notice};
use crate::sip::message::{Message, Request, Response};

/// The shipped configuration: the `local` trunk at 127.0.0.1:5080 (trusted from
/// 127.0.0.0/8), agents `demo` (+15550000100), `demo2` (+15550000200) and `super`.
const SHIPPED: &str = include_str!("../../../../config/callgate.toml");

pub const TRUNK: &str = "127.0.0.1:5080";
pub const DEMO_DID: &str = "+15550000100";

/// RTP ports as a fake: an even number each, and the set in use.
#[derive(Clone, Default)]
pub struct FakePorts {
    pub in_use: Arc<Mutex<BTreeSet<u16>>>,
    next: Arc<Mutex<u16>>,
}

impl MediaPorts for FakePorts {
    fn reserve(&mut self) -> Option<u16> {
        let mut next = self.next.lock().unwrap();
        let port = 20000 + *next;
        *next += 2;
        self.in_use.lock().unwrap().insert(port);
        Some(port)
    }

    fn release(&mut self, port: u16) {
        assert!(
            self.in_use.lock().unwrap().remove(&port),
            "port {port} released twice or never reserved"
        );
    }
}

pub struct Pair {
    pub gw: Gateway,
    pub now: Instant,
    pub wall: SystemTime,
    pub ports: FakePorts,
    /// SIP the gateway sent, oldest first.
    pub sip: VecDeque<(SocketAddr, Message)>,
    pub notices: Vec<(ConnId, Notice)>,
    pub media: Vec<(CallId, MediaOp)>,
    pub unrouted: Vec<ConnId>,
    pub closed: Vec<(ConnId, CloseReason)>,
    pub persisted: Vec<Persist>,
    pub dialled: Vec<(CallId, Result<CallId, String>)>,
}

pub fn test_config() -> Config {
    let mut config: Config = toml::from_str(SHIPPED).expect("shipped config parses");
    // No keepalive OPTIONS: the tests' trunk answers only what a scenario needs.
    for trunk in &mut config.trunks {
        trunk.options_interval = 0;
    }
    config
}

impl Pair {
    pub fn new() -> Pair {
        Pair::with_config(test_config())
    }

    pub fn with_config(config: Config) -> Pair {
        let now = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let ports = FakePorts::default();
        let seeds = Seeds {
            sip: [1; 32],
            nonce: [2; 32],
            call_ids: [3; 32],
        };
        let gw = Gateway::new(Arc::new(config), seeds, Box::new(ports.clone()), now, wall);
        Pair {
            gw,
            now,
            wall,
            ports,
            sip: VecDeque::new(),
            notices: Vec::new(),
            media: Vec::new(),
            unrouted: Vec::new(),
            closed: Vec::new(),
            persisted: Vec::new(),
            dialled: Vec::new(),
        }
    }

    fn wall_now(&self) -> SystemTime {
        self.wall
    }

    pub fn handle(&mut self, input: Input<'_>) {
        let (now, wall) = (self.now, self.wall_now());
        self.gw.handle(now, wall, input);
        self.progress();
    }

    /// Sort the core's output; name lookups are answered at once, as the shell does when
    /// there is nowhere to look.
    pub fn progress(&mut self) {
        while let Some(output) = self.gw.poll_output() {
            match output {
                Output::Transmit(t) => {
                    let message = Message::parse_datagram(&t.bytes).unwrap_or_else(|e| {
                        panic!(
                            "the gateway sent unparsable SIP ({e:?}):\n{}",
                            String::from_utf8_lossy(&t.bytes)
                        )
                    });
                    self.sip.push_back((t.destination, message));
                }
                Output::Media { call, op } => self.media.push((call, op)),
                Output::Unroute { conn } => self.unrouted.push(conn),
                Output::Notify { conn, notice } => self.notices.push((conn, notice)),
                Output::Close { conn, reason } => self.closed.push((conn, reason)),
                Output::Persist(p) => self.persisted.push(p),
                Output::Dialled { call, result } => self.dialled.push((call, result)),
                Output::LookupName { call, .. } => {
                    let (now, wall) = (self.now, self.wall_now());
                    self.gw.handle(
                        now,
                        wall,
                        Input::Named {
                            call,
                            prospect: Default::default(),
                        },
                    );
                }
            }
        }
    }

    /// Let `by` pass, waking the core at each timeout it asks for on the way.
    pub fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        while let Some(due) = self.gw.poll_timeout().filter(|&due| due <= until) {
            let step = due.max(self.now);
            self.wall += step - self.now;
            self.now = step;
            self.handle(Input::Timeout);
        }
        self.wall += until - self.now;
        self.now = until;
    }

    /// A datagram from the trunk.
    pub fn trunk_sends(&mut self, text: &str) {
        let source: SocketAddr = TRUNK.parse().unwrap();
        self.handle(Input::Datagram {
            source,
            bytes: text.as_bytes(),
        });
    }

    pub fn connect(&mut self, agent: &str, conn: ConnId) {
        self.connect_as(agent, conn, ConnKind::Calls);
    }

    pub fn connect_as(&mut self, agent: &str, conn: ConnId, kind: ConnKind) {
        self.handle(Input::AgentConnected {
            agent: agent.into(),
            conn,
            kind,
        });
    }

    pub fn disconnect(&mut self, agent: &str, conn: ConnId) {
        self.handle(Input::AgentDisconnected {
            agent: agent.into(),
            conn,
        });
    }

    pub fn request(&mut self, agent: &str, request: AgentCall) -> Result<CallId, AgentError> {
        let (now, wall) = (self.now, self.wall_now());
        let result = self.gw.request(now, wall, &agent.into(), request);
        self.progress();
        result
    }

    /// Everything the gateway sent since the last take, as `(first line, message)`.
    pub fn take_sip(&mut self) -> Vec<Message> {
        self.sip.drain(..).map(|(_, m)| m).collect()
    }

    /// The responses sent since the last take, by status.
    pub fn statuses(&mut self) -> Vec<u16> {
        self.take_sip()
            .into_iter()
            .filter_map(|m| match m {
                Message::Response(r) => Some(r.status),
                Message::Request(_) => None,
            })
            .collect()
    }

    /// The one response with this status sent since the last take (others are dropped).
    pub fn response(&mut self, status: u16) -> Response {
        let mut found = self.take_sip().into_iter().filter_map(|m| match m {
            Message::Response(r) if r.status == status => Some(r),
            _ => None,
        });
        found
            .next()
            .unwrap_or_else(|| panic!("no {status} was sent"))
    }

    /// The one request with this method sent since the last take (others are dropped).
    pub fn request_sent(&mut self, method: &str) -> Request {
        let mut found = self.take_sip().into_iter().filter_map(|m| match m {
            Message::Request(r) if r.method.as_str() == method => Some(r),
            _ => None,
        });
        found
            .next()
            .unwrap_or_else(|| panic!("no {method} was sent"))
    }

    pub fn take_notices(&mut self, conn: ConnId) -> Vec<Notice> {
        let (mine, rest): (Vec<_>, Vec<_>) = self.notices.drain(..).partition(|(c, _)| *c == conn);
        self.notices = rest;
        mine.into_iter().map(|(_, n)| n).collect()
    }

    pub fn take_media(&mut self, call: &str) -> Vec<MediaOp> {
        let (mine, rest): (Vec<_>, Vec<_>) = self.media.drain(..).partition(|(c, _)| c == call);
        self.media = rest;
        mine.into_iter().map(|(_, op)| op).collect()
    }

    /// The call log's last word on a call: its status.
    pub fn stored_status(&self, call: &str) -> Option<String> {
        self.persisted.iter().rev().find_map(|p| match p {
            Persist::Call { record, .. } if record.id == call => Some(record.status.clone()),
            _ => None,
        })
    }
}

/// A caller on the trunk's side: writes its requests and answers ours.
pub struct Caller {
    pub call_id: String,
    pub from: String,
    pub to: String,
    from_tag: String,
    pub to_tag: Option<String>,
    cseq: u32,
    branch: u32,
    rtp_port: u16,
}

impl Caller {
    pub fn new(n: u32, from: &str, to: &str) -> Caller {
        Caller {
            call_id: format!("call-{n}@trunk"),
            from: from.into(),
            to: to.into(),
            from_tag: format!("caller-{n}"),
            to_tag: None,
            cseq: 1,
            branch: n * 1000,
            rtp_port: 30000 + 2 * n as u16,
        }
    }

    fn via(&mut self, new_branch: bool) -> String {
        if new_branch {
            self.branch += 1;
        }
        format!("SIP/2.0/UDP {TRUNK};branch=z9hG4bK-{};rport", self.branch)
    }

    fn sdp(&self) -> String {
        format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\n",
            self.rtp_port
        )
    }

    fn request(&self, method: &str, via: &str, cseq: u32, body: &str) -> String {
        let to_tag = self
            .to_tag
            .as_ref()
            .map(|t| format!(";tag={t}"))
            .unwrap_or_default();
        let content_type = if body.is_empty() {
            String::new()
        } else {
            "Content-Type: application/sdp\r\n".into()
        };
        format!(
            "{method} sip:{to}@127.0.0.1:5060 SIP/2.0\r\n\
             Via: {via}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{from}@127.0.0.1>;tag={from_tag}\r\n\
             To: <sip:{to}@127.0.0.1>{to_tag}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <sip:caller@{TRUNK}>\r\n\
             {content_type}Content-Length: {len}\r\n\r\n{body}",
            to = self.to,
            from = self.from,
            from_tag = self.from_tag,
            call_id = self.call_id,
            len = body.len(),
        )
    }

    pub fn invite(&mut self) -> String {
        let via = self.via(true);
        let sdp = self.sdp();
        self.request("INVITE", &via, self.cseq, &sdp)
    }

    /// The INVITE again, byte for byte (a retransmission).
    pub fn invite_again(&mut self) -> String {
        let via = self.via(false);
        let sdp = self.sdp();
        self.request("INVITE", &via, self.cseq, &sdp)
    }

    /// The ACK for a 2xx: its own transaction, the dialog's tag from the answer.
    pub fn ack(&mut self, answer: &Response) -> String {
        self.to_tag = answer
            .headers
            .to()
            .and_then(|t| t.tag().map(str::to_string));
        let via = self.via(true);
        self.request("ACK", &via, self.cseq, "")
    }

    /// The ACK for a final refusal: part of the INVITE's transaction (its branch).
    pub fn ack_failure(&mut self, refusal: &Response) -> String {
        let tag = refusal
            .headers
            .to()
            .and_then(|t| t.tag().map(str::to_string));
        let via = self.via(false);
        let dialog_tag = std::mem::replace(&mut self.to_tag, tag);
        let ack = self.request("ACK", &via, self.cseq, "");
        self.to_tag = dialog_tag;
        ack
    }

    pub fn cancel(&mut self) -> String {
        let via = self.via(false);
        self.request("CANCEL", &via, self.cseq, "")
    }

    pub fn bye(&mut self) -> String {
        self.cseq += 1;
        let via = self.via(true);
        self.request("BYE", &via, self.cseq, "")
    }
}

/// The trunk's answer to a request of ours: its Via, From, Call-ID and CSeq, and a To tag.
pub fn reply(request: &Request, status: u16, body: &str) -> String {
    let h = &request.headers;
    let mut to = h.get("To").unwrap_or_default().to_string();
    if !to.contains("tag=") && status > 100 {
        to.push_str(";tag=trunk");
    }
    let vias: String = h.all("Via").map(|v| format!("Via: {v}\r\n")).collect();
    let content_type = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/sdp\r\n".into()
    };
    format!(
        "SIP/2.0 {status} {reason}\r\n{vias}From: {from}\r\nTo: {to}\r\nCall-ID: {cid}\r\n\
         CSeq: {cseq}\r\nContact: <sip:callee@{TRUNK}>\r\n{content_type}Content-Length: {len}\r\n\r\n{body}",
        reason = Response::reason_for(status),
        from = h.get("From").unwrap_or_default(),
        cid = h.get("Call-ID").unwrap_or_default(),
        cseq = h.get("CSeq").unwrap_or_default(),
        len = body.len(),
    )
}

/// The SDP a called party answers with.
pub fn answer_sdp(port: u16) -> String {
    format!(
        "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
    )
}
