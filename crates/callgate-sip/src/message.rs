//! SIP message parsing and printing (RFC 3261 §7, §18.3, §20, §25; RFC 4475 and RFC 5118
//! torture rules). Pure: bytes in, typed messages out, and back; no I/O. Never panics on input,
//! tells "incomplete" (a TCP stream needs more bytes) from "invalid", and for an invalid request
//! that framed well keeps what it parsed so the caller can answer with the precise problem.

use std::fmt;

use super::uri::{parse_hostport, write_host, Uri, UriError};

mod address;
mod headers;
mod parse;

pub use address::*;
pub use headers::*;

/// Framed messages larger than this are refused (a UDP datagram cannot be larger anyway).
pub const MAX_MESSAGE_SIZE: usize = 65_535;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Info,
    Update,
    Prack,
    Subscribe,
    Notify,
    Refer,
    Message,
    Publish,
    Extension(String),
}

/// RFC 3261 §25.1 `token` characters.
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-.!%*_+`'~".contains(c)
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

impl Method {
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Extension(s) => s,
        }
    }

    /// Method names are case-sensitive (§7.1): "invite" is an extension method, not INVITE.
    pub fn from_token(s: &str) -> Option<Method> {
        if s.is_empty() || !s.chars().all(is_token_char) {
            return None;
        }
        Some(match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "REGISTER" => Method::Register,
            "INFO" => Method::Info,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "REFER" => Method::Refer,
            "MESSAGE" => Method::Message,
            "PUBLISH" => Method::Publish,
            other => Method::Extension(other.to_string()),
        })
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub uri: Uri,
    pub headers: Headers,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Request(Request),
    Response(Response),
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ParseError {
    #[error("incomplete message")]
    Incomplete,
    /// `request` is the request as parsed when its start line and header block framed, so the
    /// caller can answer `problem.status()`; `None` for responses and unframeable input.
    #[error("{problem}")]
    Invalid {
        problem: Problem,
        request: Option<Box<Request>>,
    },
}

/// What is wrong with a message; the text is the reason phrase of our error response.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    #[error("Empty Message")]
    Empty,
    #[error("Bad Start Line")]
    BadStartLine,
    #[error("Bad Method")]
    BadMethod,
    #[error("Unsupported SIP Version")]
    UnsupportedVersion,
    #[error("Bad Status Code")]
    BadStatusCode,
    #[error("Malformed Request-URI")]
    MalformedRequestUri,
    /// NUL, control or non-ASCII bytes where the grammar has none; names where.
    #[error("Invalid Bytes In {0}")]
    InvalidBytes(&'static str),
    #[error("Malformed Header Line")]
    MalformedHeaderLine,
    #[error("Missing {0}")]
    MissingHeader(&'static str),
    /// A header that must appear once appears more often (RFC 4475 "multi01").
    #[error("Multiple {0}")]
    MultipleHeader(&'static str),
    #[error("Malformed Call-ID")]
    MalformedCallId,
    #[error("Malformed CSeq")]
    MalformedCSeq,
    #[error("CSeq Method Mismatch")]
    CSeqMethodMismatch,
    #[error("Malformed Via")]
    MalformedVia,
    /// From, To, Contact, Route or Record-Route that is not a name-addr / addr-spec.
    #[error("Malformed {0}")]
    MalformedAddress(&'static str),
    #[error("Malformed Max-Forwards")]
    MalformedMaxForwards,
    #[error("Bad Content-Length")]
    BadContentLength,
    #[error("Multiple Content-Length")]
    MultipleContentLength,
    #[error("Body Shorter Than Content-Length")]
    BodyTooShort,
    #[error("Missing Content-Length")]
    MissingContentLength,
    #[error("Message Too Large")]
    TooLarge,
}

impl Problem {
    pub fn status(&self) -> u16 {
        match self {
            Problem::UnsupportedVersion => 505,
            Problem::TooLarge => 513,
            _ => 400,
        }
    }
}

fn invalid(problem: Problem) -> ParseError {
    ParseError::Invalid {
        problem,
        request: None,
    }
}

/// CR and LF inside a field would end it early and let the rest pose as another header.
fn push_field(out: &mut Vec<u8>, text: &str) {
    out.extend(
        text.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
}

fn write_headers(headers: &Headers, body: &[u8], out: &mut Vec<u8>) {
    let mut wrote_length = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("Content-Length") {
            if !wrote_length {
                out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
                wrote_length = true;
            }
            continue;
        }
        push_field(out, &h.name);
        out.extend_from_slice(b": ");
        push_field(out, &h.value);
        out.extend_from_slice(b"\r\n");
    }
    if !wrote_length {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

impl Request {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512 + self.body.len());
        push_field(&mut out, &format!("{} {} SIP/2.0", self.method, self.uri));
        out.extend_from_slice(b"\r\n");
        write_headers(&self.headers, &self.body, &mut out);
        out
    }
}

impl Response {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512 + self.body.len());
        push_field(
            &mut out,
            &format!("SIP/2.0 {} {}", self.status, self.reason),
        );
        out.extend_from_slice(b"\r\n");
        write_headers(&self.headers, &self.body, &mut out);
        out
    }

    /// Default reason phrases (RFC 3261 §21 and extensions).
    pub fn reason_for(status: u16) -> &'static str {
        match status {
            100 => "Trying",
            180 => "Ringing",
            181 => "Call Is Being Forwarded",
            182 => "Queued",
            183 => "Session Progress",
            199 => "Early Dialog Terminated",
            200 => "OK",
            202 => "Accepted",
            204 => "No Notification",
            300 => "Multiple Choices",
            301 => "Moved Permanently",
            302 => "Moved Temporarily",
            305 => "Use Proxy",
            380 => "Alternative Service",
            400 => "Bad Request",
            401 => "Unauthorized",
            402 => "Payment Required",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            406 => "Not Acceptable",
            407 => "Proxy Authentication Required",
            408 => "Request Timeout",
            410 => "Gone",
            412 => "Conditional Request Failed",
            413 => "Request Entity Too Large",
            414 => "Request-URI Too Long",
            415 => "Unsupported Media Type",
            416 => "Unsupported URI Scheme",
            420 => "Bad Extension",
            421 => "Extension Required",
            422 => "Session Interval Too Small",
            423 => "Interval Too Brief",
            480 => "Temporarily Unavailable",
            481 => "Call/Transaction Does Not Exist",
            482 => "Loop Detected",
            483 => "Too Many Hops",
            484 => "Address Incomplete",
            485 => "Ambiguous",
            486 => "Busy Here",
            487 => "Request Terminated",
            488 => "Not Acceptable Here",
            489 => "Bad Event",
            491 => "Request Pending",
            493 => "Undecipherable",
            500 => "Server Internal Error",
            501 => "Not Implemented",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            504 => "Server Time-out",
            505 => "Version Not Supported",
            513 => "Message Too Large",
            580 => "Precondition Failure",
            600 => "Busy Everywhere",
            603 => "Decline",
            604 => "Does Not Exist Anywhere",
            606 => "Not Acceptable",
            _ => match status / 100 {
                1 => "Session Progress",
                2 => "OK",
                3 => "Redirected",
                4 => "Request Failure",
                5 => "Server Failure",
                _ => "Global Failure",
            },
        }
    }
}

#[cfg(test)]
mod tests;
