//! SIP dialogs (RFC 3261 §12): identifiers, CSeq spaces, route set and remote target, and the
//! in-dialog requests built from them. Knows nothing of calls, media or sockets beyond the
//! address of the peer's flow, which in-dialog requests fall back to when the remote target
//! is not an IP literal (cores do no DNS).

use std::net::{IpAddr, SocketAddr};

use super::message::{Headers, Method, NameAddr, Request, Response};
use super::transaction::Transport;
use super::uri::Uri;

#[derive(Debug, Clone)]
pub struct Dialog {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
    /// Our From/To value without tag.
    pub local: NameAddr,
    pub remote: NameAddr,
    pub local_seq: u32,
    pub remote_seq: Option<u32>,
    pub remote_target: Uri,
    /// Route headers for requests we send, in order.
    pub route_set: Vec<String>,
    /// Where the peer's messages come from: the flow that in-dialog requests reuse when the
    /// target cannot be reached directly (NAT, hostnames).
    pub peer: SocketAddr,
    pub transport: Transport,
    pub contact: String,
}

fn strip_tag(mut name: NameAddr) -> NameAddr {
    name.params.retain(|(k, _)| !k.eq_ignore_ascii_case("tag"));
    name
}

impl Dialog {
    /// The dialog a UAS forms when it answers `request` (§12.1.1).
    pub fn as_uas(
        request: &Request,
        local_tag: &str,
        contact: String,
        source: SocketAddr,
        transport: Transport,
    ) -> Option<Dialog> {
        let from = request.headers.from()?;
        let to = request.headers.to()?;
        let remote_target = request.headers.contact()?.uri;
        Some(Dialog {
            call_id: request.headers.call_id()?.to_string(),
            local_tag: local_tag.to_string(),
            remote_tag: from.tag().unwrap_or("").to_string(),
            local: strip_tag(to),
            remote: strip_tag(from),
            local_seq: 0,
            remote_seq: request.headers.cseq().map(|c| c.seq),
            remote_target,
            route_set: request
                .headers
                .all("Record-Route")
                .map(str::to_string)
                .collect(),
            peer: source,
            transport,
            contact,
        })
    }

    /// The dialog a UAC forms from a 2xx (or a tagged 1xx) to its INVITE (§12.1.2).
    pub fn as_uac(
        invite: &Request,
        response: &Response,
        contact: String,
        destination: SocketAddr,
        transport: Transport,
    ) -> Option<Dialog> {
        let from = invite.headers.from()?;
        let to = response.headers.to()?;
        let remote_target = response
            .headers
            .contact()
            .map(|c| c.uri)
            .unwrap_or_else(|| invite.uri.clone());
        let mut route_set: Vec<String> = response
            .headers
            .all("Record-Route")
            .map(str::to_string)
            .collect();
        route_set.reverse();
        Some(Dialog {
            call_id: invite.headers.call_id()?.to_string(),
            local_tag: from.tag()?.to_string(),
            remote_tag: to.tag().unwrap_or("").to_string(),
            local: strip_tag(from),
            remote: strip_tag(to),
            local_seq: invite.headers.cseq()?.seq,
            remote_seq: None,
            remote_target,
            route_set,
            peer: destination,
            transport,
            contact,
        })
    }

    /// Does this in-dialog request belong to us, and is its CSeq in order (§12.2.2)?
    /// `Err(500)` for a CSeq lower than the last one.
    pub fn accept_remote_cseq(&mut self, request: &Request) -> Result<(), u16> {
        let Some(cseq) = request.headers.cseq() else {
            return Err(400);
        };
        if request.method == Method::Ack || request.method == Method::Cancel {
            return Ok(());
        }
        match self.remote_seq {
            Some(last) if cseq.seq < last => Err(500),
            _ => {
                self.remote_seq = Some(cseq.seq);
                Ok(())
            }
        }
    }

    fn headers(&self, seq: u32, method: &Method) -> Headers {
        let mut headers = Headers::new();
        for route in &self.route_set {
            headers.push("Route", route.clone());
        }
        let mut from = self.local.clone();
        from.set_param("tag", Some(&self.local_tag));
        let mut to = self.remote.clone();
        if !self.remote_tag.is_empty() {
            to.set_param("tag", Some(&self.remote_tag));
        }
        headers.push("From", from.to_string());
        headers.push("To", to.to_string());
        headers.push("Call-ID", self.call_id.clone());
        headers.push("CSeq", format!("{seq} {method}"));
        headers.push("Max-Forwards", "70");
        headers.push("Contact", self.contact.clone());
        headers
    }

    /// A new in-dialog request (BYE, re-INVITE, INFO, UPDATE...), taking the next CSeq.
    pub fn request(&mut self, method: Method) -> Request {
        self.local_seq = self.local_seq.wrapping_add(1);
        let headers = self.headers(self.local_seq, &method);
        Request {
            method,
            uri: self.request_uri(),
            headers,
            body: Vec::new(),
        }
    }

    /// The ACK for a 2xx to the INVITE with CSeq `seq` (§13.2.2.4).
    pub fn ack(&self, seq: u32) -> Request {
        let mut headers = self.headers(seq, &Method::Ack);
        headers.remove("Contact");
        Request {
            method: Method::Ack,
            uri: self.request_uri(),
            headers,
            body: Vec::new(),
        }
    }

    /// With a strict-routing first hop (§12.2.1.1), it takes the Request-URI.
    fn request_uri(&self) -> Uri {
        self.remote_target.clone()
    }

    /// Where in-dialog requests go: a loose-routing first Route, else the remote target,
    /// else the flow the peer used.
    pub fn destination(&self) -> SocketAddr {
        let first_hop = self
            .route_set
            .first()
            .and_then(|r| NameAddr::parse(r).ok())
            .map(|r| r.uri)
            .unwrap_or_else(|| self.remote_target.clone());
        uri_socket_addr(&first_hop).unwrap_or(self.peer)
    }
}

/// The socket address a URI names, when its host is an IP literal.
pub fn uri_socket_addr(uri: &Uri) -> Option<SocketAddr> {
    let ip: IpAddr = if uri.host.eq_ignore_ascii_case("localhost") {
        IpAddr::from([127, 0, 0, 1])
    } else {
        uri.host.parse().ok()?
    };
    let default_port = if matches!(uri.scheme, super::uri::Scheme::Sips) {
        5061
    } else {
        5060
    };
    Some(SocketAddr::new(ip, uri.port.unwrap_or(default_port)))
}
