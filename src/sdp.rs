//! SDP (RFC 4566) parsing/printing and RFC 3264 offer/answer for callgate's
//! audio legs; knows codecs, not calls.
//!
//! The model keeps what a media gateway acts on (origin, connection,
//! bandwidth, timing, attributes, m= lines) and silently drops the purely
//! informational lines (`i=`, `u=`, `e=`, `p=`, `z=`, `k=`, `r=`), so a
//! parse/print round trip is faithful for everything except those.
//! Address types (`IP4`/`IP6`) are not stored: they are derived from the
//! address text when printing, which is exact for every literal address.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use crate::sdes::{CryptoAttribute, MasterKey, SrtpSuite};

/// Media direction attribute (RFC 3264 §5.1), always from the point of view
/// of whoever wrote the SDP it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    /// The same stream seen from the other end.
    pub fn reversed(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            other => other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    pub fn from_flags(sends: bool, receives: bool) -> Direction {
        match (sends, receives) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    /// Both sides' wishes combined: a flow happens only if both allow it.
    pub fn intersect(self, other: Direction) -> Direction {
        Direction::from_flags(
            self.sends() && other.sends(),
            self.receives() && other.receives(),
        )
    }

    /// Attribute name to direction; `None` for any other attribute.
    pub fn from_attribute(name: &str) -> Option<Direction> {
        match name {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Audio codecs callgate can transcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    Pcmu,
    Pcma,
    Opus,
}

/// The payload type callgate offers opus on; 111 because that is what
/// browsers use, which saves a remap on the WebRTC side.
pub const OPUS_OFFER_PT: u8 = 111;
/// telephone-event/8000 in our offers.
pub const DTMF_OFFER_PT: u8 = 101;
/// telephone-event/48000 in our offers, only alongside opus.
pub const DTMF48_OFFER_PT: u8 = 110;
/// fmtp we attach to opus, both offering and answering.
pub const OPUS_FMTP: &str = "minptime=10;useinbandfec=1";
/// fmtp we attach to telephone-event when the peer did not give one.
pub const DTMF_FMTP: &str = "0-16";

const DEFAULT_PTIME: u32 = 20;

impl Codec {
    pub fn static_pt(self) -> Option<u8> {
        match self {
            Codec::Pcmu => Some(0),
            Codec::Pcma => Some(8),
            Codec::Opus => None,
        }
    }

    pub fn encoding_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::Opus => "opus",
        }
    }

    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma => 8000,
            Codec::Opus => 48000,
        }
    }

    /// Channel count as written in SDP; opus is always "2" there (RFC 7587
    /// §7) even for mono streams.
    pub fn channels(self) -> u8 {
        match self {
            Codec::Pcmu | Codec::Pcma => 1,
            Codec::Opus => 2,
        }
    }

    /// The codec an rtpmap describes, if it is one we handle. Channels are
    /// not checked: some endpoints write `opus/48000` and mean the same.
    pub fn from_rtpmap(map: &RtpMap) -> Option<Codec> {
        [Codec::Pcmu, Codec::Pcma, Codec::Opus]
            .into_iter()
            .find(|c| c.matches(map))
    }

    fn matches(self, map: &RtpMap) -> bool {
        map.encoding.eq_ignore_ascii_case(self.encoding_name())
            && map.clock_rate == self.clock_rate()
    }

    fn offer_pt(self) -> u8 {
        self.static_pt().unwrap_or(OPUS_OFFER_PT)
    }

    fn rtpmap_value(self, pt: u8) -> String {
        match self {
            Codec::Opus => format!("{pt} opus/48000/2"),
            other => format!("{pt} {}/{}", other.encoding_name(), other.clock_rate()),
        }
    }
}

/// One `a=rtpmap` entry (or the implied mapping of a static payload type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    pub pt: u8,
    pub encoding: String,
    pub clock_rate: u32,
    pub channels: Option<u8>,
}

impl RtpMap {
    fn parse(value: &str) -> Option<RtpMap> {
        let (pt, rest) = value.trim().split_once(char::is_whitespace)?;
        let pt = pt.parse().ok()?;
        let mut parts = rest.trim().split('/');
        let encoding = parts.next()?.trim();
        if encoding.is_empty() {
            return None;
        }
        let clock_rate = parts.next()?.trim().parse().ok()?;
        let channels = match parts.next() {
            Some(c) => Some(c.trim().parse().ok()?),
            None => None,
        };
        Some(RtpMap {
            pt,
            encoding: encoding.to_string(),
            clock_rate,
            channels,
        })
    }

    fn is_telephone_event(&self) -> bool {
        self.encoding.eq_ignore_ascii_case("telephone-event")
    }
}

/// RFC 3551 static audio payload types, used when an m= line lists one
/// without an rtpmap (legal, and common from older trunks).
fn static_rtpmap(pt: u8) -> Option<RtpMap> {
    let (encoding, clock_rate, channels) = match pt {
        0 => ("PCMU", 8000, None),
        3 => ("GSM", 8000, None),
        4 => ("G723", 8000, None),
        5 => ("DVI4", 8000, None),
        6 => ("DVI4", 16000, None),
        7 => ("LPC", 8000, None),
        8 => ("PCMA", 8000, None),
        9 => ("G722", 8000, None),
        10 => ("L16", 44100, Some(2)),
        11 => ("L16", 44100, None),
        12 => ("QCELP", 8000, None),
        13 => ("CN", 8000, None),
        14 => ("MPA", 90000, None),
        15 => ("G728", 8000, None),
        16 => ("DVI4", 11025, None),
        17 => ("DVI4", 22050, None),
        18 => ("G729", 8000, None),
        _ => return None,
    };
    Some(RtpMap {
        pt,
        encoding: encoding.to_string(),
        clock_rate,
        channels,
    })
}

/// One m= section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    pub media: String,
    pub port: u16,
    pub port_count: Option<u16>,
    pub protocol: String,
    pub formats: Vec<String>,
    /// Address part of a media-level `c=` (may carry `/ttl` for multicast).
    pub connection: Option<String>,
    pub bandwidth: Vec<String>,
    /// Every `a=` line, in order, split at the first colon.
    pub attributes: Vec<(String, Option<String>)>,
}

impl MediaDescription {
    /// Payload mappings in m= format order, with RFC 3551 static mappings
    /// filled in where no rtpmap was given. Malformed rtpmaps are skipped
    /// rather than failing the whole SDP.
    pub fn rtpmaps(&self) -> Vec<RtpMap> {
        let explicit: Vec<RtpMap> = self
            .attributes
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("rtpmap"))
            .filter_map(|(_, value)| value.as_deref().and_then(RtpMap::parse))
            .collect();
        self.formats
            .iter()
            .filter_map(|f| f.parse::<u8>().ok())
            .filter_map(|pt| {
                explicit
                    .iter()
                    .find(|m| m.pt == pt)
                    .cloned()
                    .or_else(|| static_rtpmap(pt))
            })
            .collect()
    }

    pub fn fmtp(&self, pt: u8) -> Option<&str> {
        self.attributes
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("fmtp"))
            .filter_map(|(_, value)| value.as_deref())
            .find_map(|value| {
                let (p, params) = value.trim_start().split_once(char::is_whitespace)?;
                (p.parse::<u8>().ok()? == pt).then_some(params.trim())
            })
    }

    /// Packet time in ms. Fractional values ("20.0", seen in the wild) are
    /// truncated; zero is treated as absent since it cannot be honoured.
    pub fn ptime(&self) -> Option<u32> {
        let value = self.attribute("ptime")??.trim();
        let whole = value.split('.').next().unwrap_or(value);
        whole.parse().ok().filter(|&p| p > 0)
    }

    /// The media-level direction attribute; the last one wins if a broken
    /// peer sends several.
    pub fn direction(&self) -> Option<Direction> {
        direction_in(&self.attributes)
    }

    /// `Some(value)` of the first attribute called `name` (value is `None`
    /// for property attributes like `a=rtcp-mux`).
    pub fn attribute(&self, name: &str) -> Option<Option<&str>> {
        find_attribute(&self.attributes, name)
    }

    fn is_audio(&self) -> bool {
        self.media.eq_ignore_ascii_case("audio")
    }

    /// The plain RTP profiles.
    fn is_plain_rtp(&self) -> bool {
        self.protocol.eq_ignore_ascii_case("RTP/AVP")
            || self.protocol.eq_ignore_ascii_case("RTP/AVPF")
    }

    /// SRTP keyed in the SDP (RFC 4568). DTLS-SRTP (`UDP/TLS/RTP/SAVP*`) is not this: it is
    /// the browsers' side, never a trunk's.
    fn is_sdes_srtp(&self) -> bool {
        self.protocol.eq_ignore_ascii_case("RTP/SAVP")
            || self.protocol.eq_ignore_ascii_case("RTP/SAVPF")
    }

    /// The `a=crypto` lines callgate can honour, in the writer's order of preference.
    pub fn cryptos(&self) -> Vec<CryptoAttribute> {
        self.attributes
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("crypto"))
            .filter_map(|(_, value)| value.as_deref().and_then(CryptoAttribute::parse))
            .collect()
    }

    fn rejected_copy(&self) -> MediaDescription {
        MediaDescription {
            media: self.media.clone(),
            port: 0,
            port_count: None,
            protocol: self.protocol.clone(),
            formats: self.formats.clone(),
            connection: None,
            bandwidth: Vec::new(),
            attributes: Vec::new(),
        }
    }
}

fn direction_in(attributes: &[(String, Option<String>)]) -> Option<Direction> {
    attributes
        .iter()
        .rev()
        .filter(|(_, value)| value.is_none())
        .find_map(|(name, _)| Direction::from_attribute(name))
}

fn find_attribute<'a>(
    attributes: &'a [(String, Option<String>)],
    name: &str,
) -> Option<Option<&'a str>> {
    attributes
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_deref())
}

/// `o=` line. Network type is always IN; address type is derived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub username: String,
    pub session_id: u64,
    pub session_version: u64,
    pub address: String,
}

/// A whole SDP body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    pub origin: Origin,
    pub session_name: String,
    /// Address part of the session-level `c=`.
    pub connection: Option<String>,
    pub bandwidth: Vec<String>,
    /// Values of the `t=` lines ("0 0" is printed if empty).
    pub times: Vec<String>,
    pub attributes: Vec<(String, Option<String>)>,
    pub media: Vec<MediaDescription>,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SdpError {
    #[error("SDP does not start with a v= line")]
    MissingVersion,
    #[error("line {line}: unsupported SDP version")]
    BadVersion { line: usize },
    #[error("SDP has no o= line")]
    MissingOrigin,
    #[error("line {line}: malformed o= line")]
    BadOrigin { line: usize },
    #[error("line {line}: malformed c= line")]
    BadConnection { line: usize },
    #[error("line {line}: malformed m= line")]
    BadMediaLine { line: usize },
    #[error("line {line}: {reason}")]
    BadLine { line: usize, reason: &'static str },
    #[error("SDP has no m= line")]
    MissingMedia,
    #[error("no usable audio stream in SDP")]
    NoAudio,
    #[error("audio stream uses unsupported transport {0}")]
    UnsupportedProtocol(String),
    #[error("no codec in common")]
    NoCommonCodec,
    #[error("audio stream rejected (port 0)")]
    Rejected,
    #[error("audio stream has no connection address")]
    MissingConnection,
    #[error("connection address {0} is not an IP literal")]
    UnsupportedAddress(String),
    #[error("SRTP stream without an a=crypto line callgate can use")]
    NoUsableCrypto,
    #[error("SRTP is required with this trunk and the SDP offers plain RTP")]
    SrtpRequired,
}

fn parse_origin(value: &str, line: usize) -> Result<Origin, SdpError> {
    let bad = SdpError::BadOrigin { line };
    let tokens: Vec<&str> = value.split_whitespace().collect();
    let [username, id, version, _nettype, _addrtype, address] = tokens.as_slice() else {
        return Err(bad);
    };
    Ok(Origin {
        username: username.to_string(),
        session_id: id.parse().map_err(|_| bad.clone())?,
        session_version: version.parse().map_err(|_| bad)?,
        address: address.to_string(),
    })
}

fn parse_connection(value: &str, line: usize) -> Result<String, SdpError> {
    let tokens: Vec<&str> = value.split_whitespace().collect();
    match tokens.as_slice() {
        [nettype, addrtype, address]
            if nettype.eq_ignore_ascii_case("IN")
                && (addrtype.eq_ignore_ascii_case("IP4")
                    || addrtype.eq_ignore_ascii_case("IP6")) =>
        {
            Ok(address.to_string())
        }
        _ => Err(SdpError::BadConnection { line }),
    }
}

fn parse_media(value: &str, line: usize) -> Result<MediaDescription, SdpError> {
    let bad = SdpError::BadMediaLine { line };
    let mut tokens = value.split_whitespace();
    let (Some(media), Some(port), Some(protocol)) = (tokens.next(), tokens.next(), tokens.next())
    else {
        return Err(bad);
    };
    let (port, port_count) = match port.split_once('/') {
        Some((p, n)) => (
            p.parse().map_err(|_| bad.clone())?,
            Some(n.parse().map_err(|_| bad.clone())?),
        ),
        None => (port.parse().map_err(|_| bad.clone())?, None),
    };
    Ok(MediaDescription {
        media: media.to_string(),
        port,
        port_count,
        protocol: protocol.to_string(),
        formats: tokens.map(str::to_string).collect(),
        connection: None,
        bandwidth: Vec::new(),
        attributes: Vec::new(),
    })
}

fn parse_attribute(value: &str) -> Option<(String, Option<String>)> {
    let (name, value) = match value.split_once(':') {
        Some((n, v)) => (n, Some(v.to_string())),
        None => (value, None),
    };
    let name = name.trim();
    (!name.is_empty()).then(|| (name.to_string(), value))
}

/// `0.0.0.0` / `::` is the RFC 2543 way of putting a call on hold.
fn is_hold_address(address: &str) -> bool {
    strip_ttl(address)
        .parse::<IpAddr>()
        .map(|ip| ip.is_unspecified())
        .unwrap_or(false)
}

fn strip_ttl(address: &str) -> &str {
    address.split('/').next().unwrap_or(address)
}

fn addrtype(address: &str) -> &'static str {
    if address.contains(':') {
        "IP6"
    } else {
        "IP4"
    }
}

impl SessionDescription {
    /// Parses an SDP body. Accepts CRLF or bare LF and ignores blank lines
    /// and line types callgate has no use for; rejects anything that would
    /// make the structure ambiguous (missing v=/o=/m=, malformed o=/c=/m=,
    /// session-level lines after the first m=).
    pub fn parse(text: &str) -> Result<SessionDescription, SdpError> {
        let mut version_seen = false;
        let mut origin = None;
        let mut session_name = None;
        let mut connection = None;
        let mut bandwidth = Vec::new();
        let mut times = Vec::new();
        let mut attributes = Vec::new();
        let mut media: Vec<MediaDescription> = Vec::new();

        for (index, raw) in text.split('\n').enumerate() {
            let line = index + 1;
            let content = raw.strip_suffix('\r').unwrap_or(raw);
            if content.trim().is_empty() {
                continue;
            }
            let bytes = content.as_bytes();
            if bytes.len() < 2 || bytes[1] != b'=' || !bytes[0].is_ascii_alphabetic() {
                return Err(SdpError::BadLine {
                    line,
                    reason: "expected <type>=<value>",
                });
            }
            let kind = bytes[0];
            // Byte 0 is ASCII and byte 1 is '=', so 2 is a char boundary.
            let value = &content[2..];

            if !version_seen {
                if kind != b'v' {
                    return Err(SdpError::MissingVersion);
                }
                if value.trim() != "0" {
                    return Err(SdpError::BadVersion { line });
                }
                version_seen = true;
                continue;
            }

            let dup = |reason| Err(SdpError::BadLine { line, reason });
            match (kind, media.last_mut()) {
                (b'v', _) => return dup("duplicate v= line"),
                (b'm', _) => media.push(parse_media(value, line)?),
                (b'c', Some(m)) => {
                    let address = parse_connection(value, line)?;
                    // Further c= lines only add multicast layers we don't use.
                    m.connection.get_or_insert(address);
                }
                (b'b', Some(m)) => m.bandwidth.push(value.trim().to_string()),
                (b'a', Some(m)) => m.attributes.extend(parse_attribute(value)),
                (b'o' | b's' | b't' | b'r' | b'z' | b'u' | b'e' | b'p', Some(_)) => {
                    return dup("session-level line after m=")
                }
                (b'o', None) => {
                    if origin.is_some() {
                        return dup("duplicate o= line");
                    }
                    origin = Some(parse_origin(value, line)?);
                }
                (b's', None) => {
                    if session_name.is_some() {
                        return dup("duplicate s= line");
                    }
                    session_name = Some(value.to_string());
                }
                (b'c', None) => {
                    if connection.is_some() {
                        return dup("duplicate session-level c= line");
                    }
                    connection = Some(parse_connection(value, line)?);
                }
                (b'b', None) => bandwidth.push(value.trim().to_string()),
                (b't', None) => times.push(value.trim().to_string()),
                (b'a', None) => attributes.extend(parse_attribute(value)),
                _ => {}
            }
        }

        if !version_seen {
            return Err(SdpError::MissingVersion);
        }
        let origin = origin.ok_or(SdpError::MissingOrigin)?;
        if media.is_empty() {
            return Err(SdpError::MissingMedia);
        }
        Ok(SessionDescription {
            origin,
            // s= is mandatory but some UAs omit it; nothing depends on it.
            session_name: session_name.unwrap_or_else(|| "-".to_string()),
            connection,
            bandwidth,
            times,
            attributes,
            media,
        })
    }

    /// Direction of media `media_index` as declared by the SDP's author:
    /// media-level attribute, else session-level, else sendrecv.
    ///
    /// A `c=0.0.0.0` (RFC 2543 hold) removes the "receives" half: the author
    /// must not be sent to, but may still send (music on hold), so
    /// sendrecv becomes sendonly and recvonly becomes inactive (not when
    /// ICE is in use, where 0.0.0.0 is a placeholder). A port of 0
    /// or an out-of-range index reads as inactive.
    pub fn direction_of(&self, media_index: usize) -> Direction {
        let Some(m) = self.media.get(media_index) else {
            return Direction::Inactive;
        };
        if m.port == 0 {
            return Direction::Inactive;
        }
        let declared = m
            .direction()
            .or_else(|| direction_in(&self.attributes))
            .unwrap_or(Direction::SendRecv);
        // With ICE (RFC 8839) 0.0.0.0 is just a placeholder until candidates
        // arrive, so only treat it as hold when ICE is absent.
        let ice = m.attribute("ice-ufrag").is_some() || self.attribute("ice-ufrag").is_some();
        if !ice && self.connection_of(media_index).is_some_and(is_hold_address) {
            declared.intersect(Direction::SendOnly)
        } else {
            declared
        }
    }

    /// Media-level c= address else session-level, if it is an IP literal.
    pub fn audio_connection(&self, media_index: usize) -> Option<IpAddr> {
        strip_ttl(self.connection_of(media_index)?).parse().ok()
    }

    fn connection_of(&self, media_index: usize) -> Option<&str> {
        let m = self.media.get(media_index)?;
        m.connection.as_deref().or(self.connection.as_deref())
    }

    /// Index of the first audio m= line.
    pub fn first_audio(&self) -> Option<usize> {
        self.media.iter().position(MediaDescription::is_audio)
    }

    /// Session-level attribute lookup, like [`MediaDescription::attribute`].
    pub fn attribute(&self, name: &str) -> Option<Option<&str>> {
        find_attribute(&self.attributes, name)
    }
}

impl FromStr for SessionDescription {
    type Err = SdpError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SessionDescription::parse(s)
    }
}

fn write_attributes(
    f: &mut fmt::Formatter<'_>,
    attributes: &[(String, Option<String>)],
) -> fmt::Result {
    for (name, value) in attributes {
        match value {
            Some(v) => write!(f, "a={name}:{v}\r\n")?,
            None => write!(f, "a={name}\r\n")?,
        }
    }
    Ok(())
}

impl fmt::Display for SessionDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.origin;
        write!(f, "v=0\r\n")?;
        write!(
            f,
            "o={} {} {} IN {} {}\r\n",
            o.username,
            o.session_id,
            o.session_version,
            addrtype(&o.address),
            o.address
        )?;
        // RFC 4566 requires s= to be non-empty.
        let name = if self.session_name.is_empty() {
            "-"
        } else {
            &self.session_name
        };
        write!(f, "s={name}\r\n")?;
        if let Some(c) = &self.connection {
            write!(f, "c=IN {} {c}\r\n", addrtype(c))?;
        }
        for b in &self.bandwidth {
            write!(f, "b={b}\r\n")?;
        }
        if self.times.is_empty() {
            write!(f, "t=0 0\r\n")?;
        }
        for t in &self.times {
            write!(f, "t={t}\r\n")?;
        }
        write_attributes(f, &self.attributes)?;
        for m in &self.media {
            write!(f, "m={} {}", m.media, m.port)?;
            if let Some(n) = m.port_count {
                write!(f, "/{n}")?;
            }
            write!(f, " {}", m.protocol)?;
            for fmt_ in &m.formats {
                write!(f, " {fmt_}")?;
            }
            write!(f, "\r\n")?;
            if let Some(c) = &m.connection {
                write!(f, "c=IN {} {c}\r\n", addrtype(c))?;
            }
            for b in &m.bandwidth {
                write!(f, "b={b}\r\n")?;
            }
            write_attributes(f, &m.attributes)?;
        }
        Ok(())
    }
}

/// What offer/answer agreed for the one audio stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioSession {
    pub codec: Codec,
    /// Payload type to put on RTP we send (the peer's number for the codec).
    pub pt: u8,
    pub clock_rate: u32,
    /// Milliseconds; 20 when nobody said.
    pub ptime: u32,
    /// telephone-event PT at the codec's clock rate (for opus the 48000 one
    /// if present, else the 8000 one).
    pub dtmf_pt: Option<u8>,
    /// Where to send RTP; `None` when the port is 0 or c= is a hold address.
    pub remote: Option<SocketAddr>,
    /// `a=rtcp` if present, else RTP port + 1.
    pub remote_rtcp: Option<SocketAddr>,
    /// What callgate does on this stream.
    pub local_direction: Direction,
    /// What the peer declared (after [`SessionDescription::direction_of`]'s
    /// hold interpretation).
    pub remote_direction: Direction,
    /// Peer asked for in-band FEC (`useinbandfec=1`), so encode with it.
    pub opus_fec: bool,
    /// Peer prefers to receive stereo (`stereo=1`).
    pub opus_stereo: bool,
    /// The SDES keys when the stream is SRTP; `None` for plain RTP.
    pub srtp: Option<SrtpKeys>,
}

/// What SDES agreed: the suite, our master key (what we send) and the peer's (what it
/// sends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SrtpKeys {
    pub suite: SrtpSuite,
    pub ours: MasterKey,
    pub theirs: MasterKey,
}

/// Whether and how our side speaks SRTP on a leg: set by the b2bua from the trunk's `srtp`
/// and the leg's SIP transport, `None` where keys must not be offered or accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalCrypto {
    /// Plain RTP is refused (offers are RTP/SAVP); otherwise SRTP is used when the peer
    /// offers or accepts it (offers are RTP/AVP with `a=crypto`).
    pub required: bool,
    /// Our master key for this leg, kept over re-offers.
    pub key: MasterKey,
}

/// Our side of the SDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalMedia {
    pub address: IpAddr,
    pub port: u16,
    pub session_id: u64,
    pub session_version: u64,
    /// Goes in o=; "callgate" normally.
    pub username: String,
    pub crypto: Option<LocalCrypto>,
}

fn local_session(
    local: &LocalMedia,
    session_version: u64,
    media: Vec<MediaDescription>,
) -> SessionDescription {
    let address = local.address.to_string();
    SessionDescription {
        origin: Origin {
            username: if local.username.is_empty() {
                "-".to_string()
            } else {
                local.username.clone()
            },
            session_id: local.session_id,
            session_version,
            address: address.clone(),
        },
        session_name: "callgate".to_string(),
        connection: Some(address),
        bandwidth: Vec::new(),
        times: vec!["0 0".to_string()],
        attributes: Vec::new(),
        media,
    }
}

fn attr(name: &str, value: impl Into<String>) -> (String, Option<String>) {
    (name.to_string(), Some(value.into()))
}

fn fmtp_flag(fmtp: Option<&str>, key: &str) -> bool {
    fmtp.unwrap_or("").split(';').any(|param| {
        param
            .split_once('=')
            .is_some_and(|(k, v)| k.trim().eq_ignore_ascii_case(key) && v.trim() == "1")
    })
}

/// telephone-event PT that goes with `codec`, from `maps`.
fn pick_dtmf(maps: &[RtpMap], codec: Codec) -> Option<&RtpMap> {
    let at = |rate: u32| {
        maps.iter()
            .find(|m| m.is_telephone_event() && m.clock_rate == rate)
    };
    match codec {
        Codec::Opus => at(48000).or_else(|| at(8000)),
        other => at(other.clock_rate()),
    }
}

/// Where RTP and RTCP for `m` go, per the SDP's author. A missing or
/// non-literal address is an error only when the stream is live, because
/// then we would otherwise be silently sending nowhere.
fn remote_addresses(
    sdp: &SessionDescription,
    index: usize,
) -> Result<(Option<SocketAddr>, Option<SocketAddr>), SdpError> {
    let Some(m) = sdp.media.get(index) else {
        return Ok((None, None));
    };
    if m.port == 0 {
        return Ok((None, None));
    }
    let raw = sdp
        .connection_of(index)
        .ok_or(SdpError::MissingConnection)?;
    let ip: IpAddr = strip_ttl(raw)
        .parse()
        .map_err(|_| SdpError::UnsupportedAddress(raw.to_string()))?;
    if ip.is_unspecified() {
        return Ok((None, None));
    }
    let rtp = SocketAddr::new(ip, m.port);
    // RFC 3605: "a=rtcp:port [IN IP4 addr]"; fall back to port+1 if it is
    // unusable rather than failing a call over RTCP.
    let explicit = m.attribute("rtcp").flatten().and_then(|v| {
        let mut tokens = v.split_whitespace();
        let port: u16 = tokens.next()?.parse().ok()?;
        let addr = match (tokens.next(), tokens.next(), tokens.next()) {
            (Some(_), Some(_), Some(a)) => strip_ttl(a).parse().ok()?,
            _ => ip,
        };
        Some(SocketAddr::new(addr, port))
    });
    let rtcp = explicit.or_else(|| m.port.checked_add(1).map(|p| SocketAddr::new(ip, p)));
    Ok((Some(rtp), rtcp))
}

/// First audio m= that callgate could use: live, and plain RTP or (when our side may key
/// SRTP) SDES SRTP.
fn usable_audio(offer: &SessionDescription, local: &LocalMedia) -> Result<usize, SdpError> {
    let mut unsupported = None;
    for (i, m) in offer.media.iter().enumerate() {
        if !m.is_audio() || m.port == 0 {
            continue;
        }
        if m.is_plain_rtp() || (m.is_sdes_srtp() && local.crypto.is_some()) {
            return Ok(i);
        }
        unsupported.get_or_insert_with(|| m.protocol.clone());
    }
    Err(unsupported.map_or(SdpError::NoAudio, SdpError::UnsupportedProtocol))
}

/// Answer an offer (RFC 3264 §6).
///
/// Picks the first codec in our preference order `prefs` that the offer
/// contains, keeping the offerer's payload type number, plus the matching
/// telephone-event if offered. The answer direction is the offer's
/// direction reversed, restricted by `want` (so sendonly → recvonly,
/// recvonly → sendonly, inactive → inactive, sendrecv → `want`). Only the
/// first usable audio m= is accepted; every other m= is refused with port 0.
pub fn answer(
    offer: &SessionDescription,
    prefs: &[Codec],
    local: &LocalMedia,
    want: Direction,
) -> Result<(SessionDescription, AudioSession), SdpError> {
    answer_with_version(offer, prefs, local, want, local.session_version)
}

fn answer_with_version(
    offer: &SessionDescription,
    prefs: &[Codec],
    local: &LocalMedia,
    want: Direction,
    session_version: u64,
) -> Result<(SessionDescription, AudioSession), SdpError> {
    let index = usable_audio(offer, local)?;
    let offered = offer.media.get(index).ok_or(SdpError::NoAudio)?;
    let maps = offered.rtpmaps();
    let crypto = answer_crypto(offered, local)?;

    let (codec, chosen) = prefs
        .iter()
        .find_map(|&c| maps.iter().find(|m| c.matches(m)).map(|m| (c, m)))
        .ok_or(SdpError::NoCommonCodec)?;
    let dtmf = pick_dtmf(&maps, codec);
    let ptime = offered.ptime().unwrap_or(DEFAULT_PTIME);
    let remote_direction = offer.direction_of(index);
    let local_direction = remote_direction.reversed().intersect(want);
    let (remote, remote_rtcp) = remote_addresses(offer, index)?;

    let mut formats = vec![chosen.pt.to_string()];
    let mut attributes = vec![attr("rtpmap", codec.rtpmap_value(chosen.pt))];
    if codec == Codec::Opus {
        attributes.push(attr("fmtp", format!("{} {OPUS_FMTP}", chosen.pt)));
    }
    if let Some(d) = dtmf {
        formats.push(d.pt.to_string());
        attributes.push(attr(
            "rtpmap",
            format!("{} telephone-event/{}", d.pt, d.clock_rate),
        ));
        let events = offered.fmtp(d.pt).unwrap_or(DTMF_FMTP);
        attributes.push(attr("fmtp", format!("{} {events}", d.pt)));
    }
    attributes.push(attr("ptime", ptime.to_string()));
    attributes.push((local_direction.as_str().to_string(), None));
    if let Some((line, _)) = &crypto {
        attributes.push(attr("crypto", line.value()));
    }

    let media = offer
        .media
        .iter()
        .enumerate()
        .map(|(i, m)| {
            if i != index {
                return m.rejected_copy();
            }
            MediaDescription {
                media: m.media.clone(),
                port: local.port,
                port_count: None,
                protocol: m.protocol.clone(),
                formats: formats.clone(),
                connection: None,
                bandwidth: Vec::new(),
                attributes: attributes.clone(),
            }
        })
        .collect();

    let remote_fmtp = offered.fmtp(chosen.pt);
    let session = AudioSession {
        codec,
        pt: chosen.pt,
        clock_rate: codec.clock_rate(),
        ptime,
        dtmf_pt: dtmf.map(|d| d.pt),
        remote,
        remote_rtcp,
        local_direction,
        remote_direction,
        opus_fec: codec == Codec::Opus && fmtp_flag(remote_fmtp, "useinbandfec"),
        opus_stereo: codec == Codec::Opus && fmtp_flag(remote_fmtp, "stereo"),
        srtp: crypto.map(|(_, keys)| keys),
    };
    Ok((local_session(local, session_version, media), session))
}

/// SDES for an offered stream (RFC 4568 §7.1.2): the first `a=crypto` line we can honour,
/// answered with the same tag and suite and our key. An RTP/AVP offer with keys is the
/// "best effort" SRTP many trunks send; an RTP/SAVP offer without a usable line, or a
/// plain one where SRTP is required, is refused.
fn answer_crypto(
    offered: &MediaDescription,
    local: &LocalMedia,
) -> Result<Option<(CryptoAttribute, SrtpKeys)>, SdpError> {
    let Some(ours) = local.crypto else {
        return Ok(None);
    };
    match offered.cryptos().into_iter().next() {
        Some(theirs) => {
            let line = CryptoAttribute {
                tag: theirs.tag,
                suite: theirs.suite,
                key: ours.key,
            };
            let keys = SrtpKeys {
                suite: theirs.suite,
                ours: ours.key,
                theirs: theirs.key,
            };
            Ok(Some((line, keys)))
        }
        None if offered.is_sdes_srtp() => Err(SdpError::NoUsableCrypto),
        None if ours.required => Err(SdpError::SrtpRequired),
        None => Ok(None),
    }
}

/// Build an offer with `prefs` in order (duplicates dropped), plus
/// telephone-event/8000 and, when opus is present, telephone-event/48000.
/// An empty `prefs` yields an offer no peer can accept; that is the
/// caller's choice to make.
pub fn offer(prefs: &[Codec], local: &LocalMedia, direction: Direction) -> SessionDescription {
    let mut codecs: Vec<Codec> = Vec::new();
    for &c in prefs {
        if !codecs.contains(&c) {
            codecs.push(c);
        }
    }
    let mut formats = Vec::new();
    let mut attributes = Vec::new();
    for &c in &codecs {
        let pt = c.offer_pt();
        formats.push(pt.to_string());
        attributes.push(attr("rtpmap", c.rtpmap_value(pt)));
        if c == Codec::Opus {
            attributes.push(attr("fmtp", format!("{pt} {OPUS_FMTP}")));
        }
    }
    let mut dtmf = vec![(DTMF_OFFER_PT, 8000)];
    if codecs.contains(&Codec::Opus) {
        dtmf.push((DTMF48_OFFER_PT, 48000));
    }
    for (pt, rate) in dtmf {
        formats.push(pt.to_string());
        attributes.push(attr("rtpmap", format!("{pt} telephone-event/{rate}")));
        attributes.push(attr("fmtp", format!("{pt} {DTMF_FMTP}")));
    }
    attributes.push(attr("ptime", DEFAULT_PTIME.to_string()));
    attributes.push((direction.as_str().to_string(), None));
    // One line, the suite every SDES peer implements (RFC 4568 §6.2.1 makes it the default).
    if let Some(crypto) = &local.crypto {
        let line = CryptoAttribute {
            tag: 1,
            suite: SrtpSuite::AesCm128HmacSha1_80,
            key: crypto.key,
        };
        attributes.push(attr("crypto", line.value()));
    }
    let required = local.crypto.is_some_and(|c| c.required);

    let audio = MediaDescription {
        media: "audio".to_string(),
        port: local.port,
        port_count: None,
        protocol: if required { "RTP/SAVP" } else { "RTP/AVP" }.to_string(),
        formats,
        connection: None,
        bandwidth: Vec::new(),
        attributes,
    };
    local_session(local, local.session_version, vec![audio])
}

/// Read the peer's answer to our offer.
///
/// The answer's audio m= is the one at the position of our first audio m=
/// (RFC 3264 §6 keeps positions), falling back to its first audio m= for
/// peers that reorder. The codec is the first answer format that maps to a
/// codec we offered; its payload type is the answer's, since that is the
/// number the peer expects to receive.
pub fn accept_answer(
    our_offer: &SessionDescription,
    answer: &SessionDescription,
) -> Result<AudioSession, SdpError> {
    let ours_index = our_offer.first_audio().ok_or(SdpError::NoAudio)?;
    let ours = our_offer.media.get(ours_index).ok_or(SdpError::NoAudio)?;
    let index = answer
        .media
        .get(ours_index)
        .filter(|m| m.is_audio())
        .map(|_| ours_index)
        .or_else(|| answer.first_audio())
        .ok_or(SdpError::NoAudio)?;
    let theirs = answer.media.get(index).ok_or(SdpError::NoAudio)?;
    if theirs.port == 0 {
        return Err(SdpError::Rejected);
    }

    let offered: Vec<Codec> = ours
        .rtpmaps()
        .iter()
        .filter_map(Codec::from_rtpmap)
        .collect();
    let maps = theirs.rtpmaps();
    let (codec, chosen) = maps
        .iter()
        .find_map(|m| {
            Codec::from_rtpmap(m)
                .filter(|c| offered.contains(c))
                .map(|c| (c, m))
        })
        .ok_or(SdpError::NoCommonCodec)?;
    let dtmf = pick_dtmf(&maps, codec).map(|d| d.pt);
    let ptime = theirs
        .ptime()
        .or_else(|| ours.ptime())
        .unwrap_or(DEFAULT_PTIME);
    let remote_direction = answer.direction_of(index);
    let local_direction = our_offer
        .direction_of(ours_index)
        .intersect(remote_direction.reversed());
    let (remote, remote_rtcp) = remote_addresses(answer, index)?;
    let remote_fmtp = theirs.fmtp(chosen.pt);
    let srtp = accepted_crypto(ours, theirs)?;

    Ok(AudioSession {
        codec,
        pt: chosen.pt,
        clock_rate: codec.clock_rate(),
        ptime,
        dtmf_pt: dtmf,
        remote,
        remote_rtcp,
        local_direction,
        remote_direction,
        opus_fec: codec == Codec::Opus && fmtp_flag(remote_fmtp, "useinbandfec"),
        opus_stereo: codec == Codec::Opus && fmtp_flag(remote_fmtp, "stereo"),
        srtp,
    })
}

/// The SDES keys of an answer to our offer: its line must name a tag we offered, with that
/// line's suite. An answer without one is plain RTP, which only an RTP/AVP offer allows.
fn accepted_crypto(
    ours: &MediaDescription,
    theirs: &MediaDescription,
) -> Result<Option<SrtpKeys>, SdpError> {
    let offered = ours.cryptos();
    if offered.is_empty() {
        return Ok(None);
    }
    let agreed = theirs.cryptos().into_iter().find_map(|answered| {
        offered
            .iter()
            .find(|o| o.tag == answered.tag && o.suite == answered.suite)
            .map(|o| SrtpKeys {
                suite: o.suite,
                ours: o.key,
                theirs: answered.key,
            })
    });
    match agreed {
        Some(keys) => Ok(Some(keys)),
        None if ours.is_sdes_srtp() || theirs.is_sdes_srtp() => Err(SdpError::NoUsableCrypto),
        None => Ok(None),
    }
}

/// Answer a re-INVITE/UPDATE offer on an established session.
///
/// Like [`answer`], but the current codec wins if it is still offered, so
/// a hold/resume or address change does not force a transcoder swap. The
/// answer's o= version is `local.session_version + 1` (RFC 3264 §8 wants it
/// bumped on every new answer); `local` is borrowed, so the caller must
/// store the returned `origin.session_version` for the next round.
pub fn reanswer(
    offer: &SessionDescription,
    current: &AudioSession,
    prefs: &[Codec],
    local: &LocalMedia,
    want: Direction,
) -> Result<(SessionDescription, AudioSession), SdpError> {
    let mut order = vec![current.codec];
    order.extend(prefs.iter().copied().filter(|&c| c != current.codec));
    let (answer, session) = answer_with_version(
        offer,
        &order,
        local,
        want,
        local.session_version.wrapping_add(1),
    )?;
    // Once SRTP, always SRTP: a re-offer may change the keys, never drop them.
    if current.srtp.is_some() && session.srtp.is_none() {
        return Err(SdpError::SrtpRequired);
    }
    Ok((answer, session))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const CARRIER: &str = "v=0\r\n\
o=Sonus_UAC 225689 395476 IN IP4 203.0.113.10\r\n\
s=SIP Media Capabilities\r\n\
c=IN IP4 203.0.113.20\r\n\
t=0 0\r\n\
m=audio 34562 RTP/AVP 18 0 8 100\r\n\
a=rtpmap:18 G729/8000\r\n\
a=fmtp:18 annexb=no\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:100 telephone-event/8000\r\n\
a=fmtp:100 0-15\r\n\
a=sendrecv\r\n\
a=ptime:20\r\n\
a=maxptime:30\r\n";

    const SIPP: &str = "v=0\r\n\
o=user1 53655765 2353687637 IN IP4 127.0.0.1\r\n\
s=-\r\n\
c=IN IP4 127.0.0.1\r\n\
t=0 0\r\n\
m=audio 6000 RTP/AVP 0\r\n\
a=rtpmap:0 PCMU/8000\r\n";

    const BARESIP: &str = "v=0\r\n\
o=- 1419452806 3412318546 IN IP4 192.168.1.50\r\n\
s=-\r\n\
c=IN IP4 192.168.1.50\r\n\
t=0 0\r\n\
a=tool:baresip 3.10.1\r\n\
m=audio 10316 RTP/AVP 96 97 9 0 8 101\r\n\
b=AS:128\r\n\
a=rtpmap:96 opus/48000/2\r\n\
a=fmtp:96 stereo=1;sprop-stereo=1\r\n\
a=rtpmap:97 L16/48000/2\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=rtcp-mux\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n\
a=label:1\r\n\
a=ssrc:1460531893 cname:6ab0de9c-c9f7-4a53-b8cd-3b1b6c3e2d5f\r\n";

    const RFC2543_HOLD: &str = "v=0\r\n\
o=alice 2890844526 2890844527 IN IP4 198.51.100.7\r\n\
s=-\r\n\
c=IN IP4 0.0.0.0\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 0 8\r\n";

    const ASTERISK_LF: &str = "v=0\n\
o=- 1719223466 1719223466 IN IP4 10.0.0.5\n\
s=Asterisk\n\
c=IN IP4 10.0.0.5\n\
t=0 0\n\
m=audio 15280 RTP/AVP 8 0 3 101\n\
a=rtpmap:8 PCMA/8000\n\
a=rtpmap:0 PCMU/8000\n\
a=rtpmap:3 GSM/8000\n\
a=rtpmap:101 telephone-event/8000\n\
a=fmtp:101 0-16\n\
a=ptime:30\n\
a=maxptime:150\n\
a=sendrecv\n";

    const G729_ONLY: &str = "v=0\r\n\
o=- 1 1 IN IP4 203.0.113.5\r\n\
s=-\r\n\
c=IN IP4 203.0.113.5\r\n\
t=0 0\r\n\
m=audio 20000 RTP/AVP 18 101\r\n\
a=rtpmap:18 G729/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n";

    const IPV6: &str = "v=0\r\n\
o=bob 7 7 IN IP6 2001:db8::7\r\n\
s=-\r\n\
c=IN IP6 2001:db8::7\r\n\
t=0 0\r\n\
m=audio 40000 RTP/AVP 0 101\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=rtcp:40001 IN IP6 2001:db8::8\r\n";

    const WITH_VIDEO: &str = "v=0\r\n\
o=- 55 55 IN IP4 192.0.2.9\r\n\
s=-\r\n\
c=IN IP4 192.0.2.9\r\n\
t=0 0\r\n\
m=video 51372 RTP/AVP 96 97\r\n\
a=rtpmap:96 H264/90000\r\n\
a=rtpmap:97 VP8/90000\r\n\
m=audio 49170 RTP/AVP 8 0\r\n\
a=sendrecv\r\n";

    const CHROME: &str = "v=0\r\n\
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0\r\n\
a=extmap-allow-mixed\r\n\
a=msid-semantic: WMS 7b1a0c3e-1d2f-4d5e-9a6b-3c2d1e0f9a8b\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\n\
c=IN IP4 0.0.0.0\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=ice-ufrag:q7Zs\r\n\
a=ice-pwd:tKUfkV0bQ3L7mqwEydvQzR1k\r\n\
a=ice-options:trickle\r\n\
a=fingerprint:sha-256 6B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\n\
a=setup:actpass\r\n\
a=mid:0\r\n\
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n\
a=sendrecv\r\n\
a=msid:7b1a0c3e-1d2f-4d5e-9a6b-3c2d1e0f9a8b 2f3e4d5c-6b7a-4899-a0b1-c2d3e4f5a6b7\r\n\
a=rtcp-mux\r\n\
a=rtcp-rsize\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=rtcp-fb:111 transport-cc\r\n\
a=fmtp:111 minptime=10;useinbandfec=1\r\n\
a=rtpmap:63 red/48000/2\r\n\
a=fmtp:63 111/111\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:13 CN/8000\r\n\
a=rtpmap:110 telephone-event/48000\r\n\
a=rtpmap:126 telephone-event/8000\r\n\
a=ssrc:3735928559 cname:5XJdCsSvTh7V8Qp1\r\n\
a=ssrc:3735928559 msid:7b1a0c3e-1d2f-4d5e-9a6b-3c2d1e0f9a8b 2f3e4d5c-6b7a-4899-a0b1-c2d3e4f5a6b7\r\n";

    fn local() -> LocalMedia {
        LocalMedia {
            address: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)),
            port: 30000,
            session_id: 4242,
            session_version: 1,
            username: "callgate".to_string(),
            crypto: None,
        }
    }

    fn parse(text: &str) -> SessionDescription {
        SessionDescription::parse(text).expect("parses")
    }

    fn with_crypto(required: bool) -> LocalMedia {
        LocalMedia {
            crypto: Some(LocalCrypto {
                required,
                key: MasterKey::random(),
            }),
            ..local()
        }
    }

    /// A trunk's offer: `protocol` on the audio line, then `crypto` lines.
    fn trunk_offer(protocol: &str, crypto: &[&str]) -> SessionDescription {
        let mut text = format!(
            "v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\nm=audio 6000 {protocol} 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
        );
        for line in crypto {
            text.push_str(&format!("a=crypto:{line}\r\n"));
        }
        parse(&text)
    }

    const KEY_A: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";

    #[test]
    fn sdes_offers_follow_the_trunks_mode() {
        let plain = offer(&[Codec::Pcmu], &local(), Direction::SendRecv);
        assert_eq!(plain.media[0].protocol, "RTP/AVP");
        assert!(plain.media[0].cryptos().is_empty());
        for (required, protocol) in [(true, "RTP/SAVP"), (false, "RTP/AVP")] {
            let ours = with_crypto(required);
            let sdp = parse(&offer(&[Codec::Pcmu], &ours, Direction::SendRecv).to_string());
            assert_eq!(sdp.media[0].protocol, protocol);
            let lines = sdp.media[0].cryptos();
            assert_eq!(lines.len(), 1);
            assert_eq!(lines[0].suite, SrtpSuite::AesCm128HmacSha1_80);
            assert_eq!(Some(lines[0].key), ours.crypto.map(|c| c.key));
        }
    }

    #[test]
    fn an_sdes_offer_is_answered_with_our_key_under_its_tag_and_suite() {
        let ours = with_crypto(false);
        let offered = trunk_offer(
            "RTP/SAVP",
            &[
                &format!("1 AES_256_CM_HMAC_SHA1_80 inline:{KEY_A}"),
                &format!("2 AES_CM_128_HMAC_SHA1_32 inline:{KEY_A}|2^31"),
                &format!("3 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}"),
            ],
        );
        let (answer, session) =
            super::answer(&offered, &[Codec::Pcmu], &ours, Direction::SendRecv).unwrap();
        let answer = parse(&answer.to_string());
        assert_eq!(answer.media[0].protocol, "RTP/SAVP");
        let lines = answer.media[0].cryptos();
        assert_eq!(lines.len(), 1, "one line in an answer");
        assert_eq!(
            (lines[0].tag, lines[0].suite),
            (2, SrtpSuite::AesCm128HmacSha1_32)
        );
        let keys = session.srtp.expect("SRTP agreed");
        assert_eq!(keys.ours, ours.crypto.unwrap().key);
        assert_eq!(lines[0].key, keys.ours);
        assert_eq!(
            keys.theirs,
            CryptoAttribute::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}"))
                .unwrap()
                .key
        );
        // Best effort: keys in an RTP/AVP offer are taken too.
        let best_effort = trunk_offer(
            "RTP/AVP",
            &[&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}")],
        );
        let (answer, session) =
            super::answer(&best_effort, &[Codec::Pcmu], &ours, Direction::SendRecv).unwrap();
        assert_eq!(answer.media[0].protocol, "RTP/AVP");
        assert!(session.srtp.is_some());
    }

    #[test]
    fn sdes_offers_callgate_cannot_or_may_not_take_are_refused() {
        let savp = trunk_offer(
            "RTP/SAVP",
            &[&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}")],
        );
        // Keys not allowed on this leg (SRTP off, or plain SIP): SRTP is not spoken at all.
        assert_eq!(
            super::answer(&savp, &[Codec::Pcmu], &local(), Direction::SendRecv).unwrap_err(),
            SdpError::UnsupportedProtocol("RTP/SAVP".into())
        );
        let best_effort = trunk_offer(
            "RTP/AVP",
            &[&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}")],
        );
        let (answer, session) =
            super::answer(&best_effort, &[Codec::Pcmu], &local(), Direction::SendRecv).unwrap();
        assert!(session.srtp.is_none());
        assert!(
            answer.media[0].cryptos().is_empty(),
            "no key of ours in the clear"
        );
        // RTP/SAVP with no line we can use.
        let unusable = trunk_offer(
            "RTP/SAVP",
            &[&format!("1 AES_256_CM_HMAC_SHA1_80 inline:{KEY_A}")],
        );
        assert_eq!(
            super::answer(
                &unusable,
                &[Codec::Pcmu],
                &with_crypto(false),
                Direction::SendRecv
            )
            .unwrap_err(),
            SdpError::NoUsableCrypto
        );
        // Plain RTP where SRTP is required; accepted where it is optional.
        let plain = trunk_offer("RTP/AVP", &[]);
        assert_eq!(
            super::answer(
                &plain,
                &[Codec::Pcmu],
                &with_crypto(true),
                Direction::SendRecv
            )
            .unwrap_err(),
            SdpError::SrtpRequired
        );
        let (_, session) = super::answer(
            &plain,
            &[Codec::Pcmu],
            &with_crypto(false),
            Direction::SendRecv,
        )
        .unwrap();
        assert!(session.srtp.is_none());
    }

    #[test]
    fn an_answer_to_our_sdes_offer_must_name_our_tag_and_suite() {
        let required = with_crypto(true);
        let ours = parse(&offer(&[Codec::Pcmu], &required, Direction::SendRecv).to_string());
        let their_line = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}");
        let keys = accept_answer(&ours, &trunk_offer("RTP/SAVP", &[&their_line]))
            .unwrap()
            .srtp
            .expect("keys");
        assert_eq!(keys.ours, required.crypto.unwrap().key);
        for wrong in [
            format!("2 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}"),
            format!("1 AES_CM_128_HMAC_SHA1_32 inline:{KEY_A}"),
        ] {
            assert_eq!(
                accept_answer(&ours, &trunk_offer("RTP/SAVP", &[&wrong])).unwrap_err(),
                SdpError::NoUsableCrypto,
                "{wrong}"
            );
        }
        assert_eq!(
            accept_answer(&ours, &trunk_offer("RTP/AVP", &[])).unwrap_err(),
            SdpError::NoUsableCrypto
        );
        // Optional: a plain answer is plain RTP.
        let optional =
            parse(&offer(&[Codec::Pcmu], &with_crypto(false), Direction::SendRecv).to_string());
        let session = accept_answer(&optional, &trunk_offer("RTP/AVP", &[])).unwrap();
        assert!(session.srtp.is_none());
    }

    #[test]
    fn a_reoffer_may_change_the_trunks_key_but_never_drop_srtp() {
        let ours = with_crypto(false);
        let first = trunk_offer(
            "RTP/SAVP",
            &[&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}")],
        );
        let (_, current) =
            super::answer(&first, &[Codec::Pcmu], &ours, Direction::SendRecv).unwrap();
        let new_key = MasterKey::random();
        let rekeyed = trunk_offer(
            "RTP/SAVP",
            &[&CryptoAttribute {
                tag: 1,
                suite: SrtpSuite::AesCm128HmacSha1_80,
                key: new_key,
            }
            .value()],
        );
        let (answer, session) = reanswer(
            &rekeyed,
            &current,
            &[Codec::Pcmu],
            &ours,
            Direction::SendRecv,
        )
        .unwrap();
        let keys = session.srtp.expect("still SRTP");
        assert_eq!(keys.theirs, new_key);
        assert_eq!(keys.ours, current.srtp.unwrap().ours, "our key stays");
        assert_eq!(answer.media[0].cryptos()[0].key, keys.ours);
        let plain = trunk_offer("RTP/AVP", &[]);
        assert_eq!(
            reanswer(&plain, &current, &[Codec::Pcmu], &ours, Direction::SendRecv).unwrap_err(),
            SdpError::SrtpRequired
        );
    }

    fn roundtrip(text: &str) -> SessionDescription {
        let sdp = parse(text);
        let printed = sdp.to_string();
        assert!(printed.ends_with("\r\n"));
        assert!(!printed.replace("\r\n", "").contains('\n'));
        assert_eq!(parse(&printed), sdp, "round trip of:\n{printed}");
        sdp
    }

    fn with_media_attr(text: &str, from: &str, to: &str) -> SessionDescription {
        parse(&text.replace(from, to))
    }

    #[test]
    fn carrier_offer_parses_and_round_trips_byte_exact() {
        let sdp = roundtrip(CARRIER);
        assert_eq!(sdp.to_string(), CARRIER);
        assert_eq!(sdp.origin.username, "Sonus_UAC");
        assert_eq!(sdp.origin.session_version, 395476);
        assert_eq!(sdp.session_name, "SIP Media Capabilities");
        let m = &sdp.media[0];
        assert_eq!(m.formats, ["18", "0", "8", "100"]);
        assert_eq!(m.ptime(), Some(20));
        assert_eq!(m.fmtp(100), Some("0-15"));
        assert_eq!(m.fmtp(18), Some("annexb=no"));
        assert_eq!(m.fmtp(8), None);
        assert_eq!(m.direction(), Some(Direction::SendRecv));
        assert_eq!(m.attribute("maxptime"), Some(Some("30")));
        assert_eq!(m.attribute("sendrecv"), Some(None));
        assert_eq!(m.attribute("rtcp"), None);
        let encodings: Vec<_> = m.rtpmaps().into_iter().map(|r| r.encoding).collect();
        assert_eq!(encodings, ["G729", "PCMU", "PCMA", "telephone-event"]);
        assert_eq!(
            sdp.audio_connection(0),
            Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 20)))
        );
    }

    #[test]
    fn carrier_answer_keeps_offerer_pts_and_dtmf() {
        let offer = parse(CARRIER);
        let (ans, session) = answer(
            &offer,
            &[Codec::Pcma, Codec::Pcmu],
            &local(),
            Direction::SendRecv,
        )
        .unwrap();
        assert_eq!(session.codec, Codec::Pcma);
        assert_eq!(session.pt, 8);
        assert_eq!(session.clock_rate, 8000);
        assert_eq!(session.dtmf_pt, Some(100));
        assert_eq!(session.ptime, 20);
        assert_eq!(session.remote, Some("203.0.113.20:34562".parse().unwrap()));
        assert_eq!(
            session.remote_rtcp,
            Some("203.0.113.20:34563".parse().unwrap())
        );
        assert_eq!(session.local_direction, Direction::SendRecv);
        assert_eq!(session.remote_direction, Direction::SendRecv);
        assert!(!session.opus_fec && !session.opus_stereo);

        let text = ans.to_string();
        assert!(text.contains("m=audio 30000 RTP/AVP 8 100\r\n"), "{text}");
        assert!(text.contains("a=rtpmap:100 telephone-event/8000\r\na=fmtp:100 0-15\r\n"));
        assert!(text.contains("a=ptime:20\r\na=sendrecv\r\n"));
        assert!(text.contains("o=callgate 4242 1 IN IP4 198.51.100.1\r\n"));
        assert!(text.contains("c=IN IP4 198.51.100.1\r\n"));
        let reparsed = roundtrip(&text);
        assert_eq!(reparsed.media.len(), 1);
    }

    #[test]
    fn sipp_default_sdp() {
        let sdp = roundtrip(SIPP);
        assert_eq!(sdp.origin.session_id, 53655765);
        assert_eq!(sdp.origin.session_version, 2353687637);
        let (ans, session) = answer(
            &sdp,
            &[Codec::Opus, Codec::Pcma, Codec::Pcmu],
            &local(),
            Direction::SendRecv,
        )
        .unwrap();
        assert_eq!(
            (session.codec, session.pt, session.dtmf_pt),
            (Codec::Pcmu, 0, None)
        );
        assert_eq!(session.remote, Some("127.0.0.1:6000".parse().unwrap()));
        assert_eq!(ans.media[0].formats, ["0"]);
    }

    #[test]
    fn static_pt_without_rtpmap_is_matched() {
        let sdp = parse(RFC2543_HOLD);
        let maps = sdp.media[0].rtpmaps();
        assert_eq!(maps.len(), 2);
        assert_eq!(
            maps[1],
            RtpMap {
                pt: 8,
                encoding: "PCMA".into(),
                clock_rate: 8000,
                channels: None
            }
        );
        let (_, s) = answer(&sdp, &[Codec::Pcma], &local(), Direction::SendRecv).unwrap();
        assert_eq!((s.codec, s.pt), (Codec::Pcma, 8));
    }

    #[test]
    fn baresip_offer_picks_opus_with_its_pt() {
        let sdp = roundtrip(BARESIP);
        assert_eq!(sdp.attribute("tool"), Some(Some("baresip 3.10.1")));
        assert_eq!(sdp.media[0].bandwidth, ["AS:128"]);
        assert_eq!(sdp.media[0].attribute("rtcp-mux"), Some(None));
        let (ans, s) = answer(
            &sdp,
            &[Codec::Opus, Codec::Pcmu],
            &local(),
            Direction::SendRecv,
        )
        .unwrap();
        assert_eq!((s.codec, s.pt, s.clock_rate), (Codec::Opus, 96, 48000));
        // No telephone-event/48000 offered, so the 8000 one is used.
        assert_eq!(s.dtmf_pt, Some(101));
        assert!(s.opus_stereo);
        assert!(!s.opus_fec);
        // rtcp-mux is not echoed, so RTCP goes to port+1.
        assert_eq!(s.remote_rtcp, Some("192.168.1.50:10317".parse().unwrap()));
        let m = &ans.media[0];
        assert_eq!(m.formats, ["96", "101"]);
        assert_eq!(m.fmtp(96), Some(OPUS_FMTP));
        assert_eq!(m.attribute("rtcp-mux"), None);
        assert_eq!(m.rtpmaps()[0].channels, Some(2));

        let (_, g711) = answer(
            &sdp,
            &[Codec::Pcma, Codec::Opus],
            &local(),
            Direction::SendRecv,
        )
        .unwrap();
        assert_eq!((g711.codec, g711.pt), (Codec::Pcma, 8));
    }

    #[test]
    fn rfc2543_hold_is_sendonly_and_not_sent_to() {
        let sdp = roundtrip(RFC2543_HOLD);
        assert_eq!(sdp.direction_of(0), Direction::SendOnly);
        assert_eq!(
            sdp.audio_connection(0),
            Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
        );
        let (ans, s) = answer(&sdp, &[Codec::Pcmu], &local(), Direction::SendRecv).unwrap();
        assert_eq!(s.remote, None);
        assert_eq!(s.remote_rtcp, None);
        assert_eq!(s.local_direction, Direction::RecvOnly);
        assert_eq!(ans.media[0].direction(), Some(Direction::RecvOnly));

        let recvonly_hold = parse(&format!("{RFC2543_HOLD}a=recvonly\r\n"));
        assert_eq!(recvonly_hold.direction_of(0), Direction::Inactive);
    }

    #[test]
    fn asterisk_lf_only() {
        let sdp = parse(ASTERISK_LF);
        assert_eq!(sdp.session_name, "Asterisk");
        assert_eq!(sdp.media[0].ptime(), Some(30));
        assert_eq!(sdp.to_string(), ASTERISK_LF.replace('\n', "\r\n"));
        let (ans, s) = answer(
            &sdp,
            &[Codec::Pcmu, Codec::Pcma],
            &local(),
            Direction::SendRecv,
        )
        .unwrap();
        assert_eq!(
            (s.codec, s.pt, s.ptime, s.dtmf_pt),
            (Codec::Pcmu, 0, 30, Some(101))
        );
        assert_eq!(ans.media[0].ptime(), Some(30));
        assert_eq!(ans.media[0].fmtp(101), Some("0-16"));
    }

    #[test]
    fn g729_only_has_no_common_codec() {
        let sdp = roundtrip(G729_ONLY);
        let err = answer(
            &sdp,
            &[Codec::Pcmu, Codec::Pcma, Codec::Opus],
            &local(),
            Direction::SendRecv,
        )
        .unwrap_err();
        assert_eq!(err, SdpError::NoCommonCodec);
        assert_eq!(
            answer(&parse(SIPP), &[], &local(), Direction::SendRecv).unwrap_err(),
            SdpError::NoCommonCodec
        );
    }

    #[test]
    fn answer_direction_rules() {
        let cases = [
            (None, Direction::SendRecv, Direction::SendRecv),
            (Some("sendrecv"), Direction::SendRecv, Direction::SendRecv),
            (Some("sendonly"), Direction::SendRecv, Direction::RecvOnly),
            (Some("recvonly"), Direction::SendRecv, Direction::SendOnly),
            (Some("inactive"), Direction::SendRecv, Direction::Inactive),
            (Some("sendrecv"), Direction::SendOnly, Direction::SendOnly),
            (Some("sendrecv"), Direction::Inactive, Direction::Inactive),
            (Some("sendonly"), Direction::SendOnly, Direction::Inactive),
            (Some("recvonly"), Direction::RecvOnly, Direction::Inactive),
        ];
        for (attr, want, expected) in cases {
            let text = match attr {
                Some(a) => format!("{SIPP}a={a}\r\n"),
                None => SIPP.to_string(),
            };
            let offer = parse(&text);
            let (ans, s) = answer(&offer, &[Codec::Pcmu], &local(), want).unwrap();
            assert_eq!(s.local_direction, expected, "{attr:?} {want:?}");
            assert_eq!(ans.direction_of(0), expected);
            assert_eq!(ans.media[0].direction(), Some(expected));
        }
    }

    #[test]
    fn session_level_direction_applies_unless_media_overrides() {
        let text = SIPP.replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n");
        assert_eq!(parse(&text).direction_of(0), Direction::SendOnly);
        let text = format!("{text}a=inactive\r\n");
        assert_eq!(parse(&text).direction_of(0), Direction::Inactive);
        assert_eq!(parse(&text).direction_of(5), Direction::Inactive);
    }

    #[test]
    fn ipv6_connection() {
        let sdp = roundtrip(IPV6);
        assert_eq!(sdp.to_string(), IPV6);
        let ip: IpAddr = "2001:db8::7".parse().unwrap();
        assert_eq!(sdp.audio_connection(0), Some(ip));
        let (_, s) = answer(&sdp, &[Codec::Pcmu], &local(), Direction::SendRecv).unwrap();
        assert_eq!(s.remote, Some(SocketAddr::new(ip, 40000)));
        assert_eq!(s.remote_rtcp, Some("[2001:db8::8]:40001".parse().unwrap()));

        let v6 = LocalMedia {
            address: IpAddr::V6(Ipv6Addr::LOCALHOST),
            ..local()
        };
        let text = offer(&[Codec::Pcmu], &v6, Direction::SendRecv).to_string();
        assert!(text.contains("o=callgate 4242 1 IN IP6 ::1\r\n"));
        assert!(text.contains("c=IN IP6 ::1\r\n"));
    }

    #[test]
    fn video_is_rejected_with_port_zero() {
        let sdp = roundtrip(WITH_VIDEO);
        let (ans, s) = answer(
            &sdp,
            &[Codec::Pcmu, Codec::Pcma],
            &local(),
            Direction::SendRecv,
        )
        .unwrap();
        // Our preference beats the offerer's order (it listed 8 first).
        assert_eq!((s.codec, s.pt), (Codec::Pcmu, 0));
        assert_eq!(ans.media.len(), 2);
        let video = &ans.media[0];
        assert_eq!((video.media.as_str(), video.port), ("video", 0));
        assert_eq!(video.formats, ["96", "97"]);
        assert!(video.attributes.is_empty());
        assert_eq!(ans.media[1].port, 30000);
        assert!(ans
            .to_string()
            .contains("m=video 0 RTP/AVP 96 97\r\nm=audio 30000 RTP/AVP 0\r\n"));
    }

    #[test]
    fn second_audio_stream_is_rejected() {
        let text = format!("{SIPP}m=audio 6002 RTP/AVP 8\r\n");
        let (ans, _) = answer(
            &parse(&text),
            &[Codec::Pcma, Codec::Pcmu],
            &local(),
            Direction::SendRecv,
        )
        .unwrap();
        assert_eq!(ans.media[0].port, 30000);
        assert_eq!(ans.media[1].port, 0);
    }

    #[test]
    fn chrome_sdp_parses() {
        let sdp = roundtrip(CHROME);
        assert_eq!(sdp.origin.session_id, 4611731400430051336);
        assert_eq!(sdp.connection, None);
        assert_eq!(sdp.attribute("group"), Some(Some("BUNDLE 0")));
        assert_eq!(
            sdp.attribute("msid-semantic"),
            Some(Some(" WMS 7b1a0c3e-1d2f-4d5e-9a6b-3c2d1e0f9a8b"))
        );
        let m = &sdp.media[0];
        assert_eq!(m.connection.as_deref(), Some("0.0.0.0"));
        assert_eq!(m.rtpmaps().len(), 8);
        assert_eq!(sdp.direction_of(0), Direction::SendRecv);
        assert_eq!(m.fmtp(111), Some("minptime=10;useinbandfec=1"));
        assert_eq!(
            m.attribute("fingerprint")
                .flatten()
                .map(|f| f.starts_with("sha-256 6B:8B")),
            Some(true)
        );
        // DTLS-SRTP is the WebRTC leg's business, not this gateway's SIP side.
        assert_eq!(
            answer(&sdp, &[Codec::Opus], &local(), Direction::SendRecv).unwrap_err(),
            SdpError::UnsupportedProtocol("UDP/TLS/RTP/SAVPF".into())
        );
    }

    #[test]
    fn offer_contents() {
        let sdp = offer(
            &[Codec::Opus, Codec::Pcmu, Codec::Pcma, Codec::Pcmu],
            &local(),
            Direction::SendRecv,
        );
        let m = &sdp.media[0];
        assert_eq!(m.protocol, "RTP/AVP");
        assert_eq!(m.formats, ["111", "0", "8", "101", "110"]);
        assert_eq!(m.fmtp(111), Some(OPUS_FMTP));
        assert_eq!(m.fmtp(101), Some("0-16"));
        assert_eq!(m.fmtp(110), Some("0-16"));
        assert_eq!(m.ptime(), Some(20));
        assert_eq!(m.direction(), Some(Direction::SendRecv));
        let maps = m.rtpmaps();
        assert_eq!(
            maps[0],
            RtpMap {
                pt: 111,
                encoding: "opus".into(),
                clock_rate: 48000,
                channels: Some(2)
            }
        );
        assert_eq!(maps[4].clock_rate, 48000);
        roundtrip(&sdp.to_string());

        let g711 = offer(&[Codec::Pcma], &local(), Direction::SendOnly);
        assert_eq!(g711.media[0].formats, ["8", "101"]);
        assert_eq!(g711.direction_of(0), Direction::SendOnly);
    }

    #[test]
    fn offer_answer_accept_loop() {
        let ours = offer(&[Codec::Opus, Codec::Pcmu], &local(), Direction::SendRecv);
        let peer = LocalMedia {
            address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 77)),
            port: 41000,
            session_id: 9,
            session_version: 9,
            username: "peer".into(),
            crypto: None,
        };
        let (their_answer, their_view) =
            answer(&ours, &[Codec::Opus], &peer, Direction::SendRecv).unwrap();
        assert_eq!(
            (their_view.codec, their_view.pt, their_view.dtmf_pt),
            (Codec::Opus, 111, Some(110))
        );
        assert!(their_view.opus_fec);
        let s = accept_answer(&ours, &parse(&their_answer.to_string())).unwrap();
        assert_eq!(
            (s.codec, s.pt, s.dtmf_pt, s.ptime),
            (Codec::Opus, 111, Some(110), 20)
        );
        assert_eq!(s.remote, Some("192.0.2.77:41000".parse().unwrap()));
        assert_eq!(s.local_direction, Direction::SendRecv);
        assert!(s.opus_fec);
    }

    #[test]
    fn accept_answer_cases() {
        let ours = offer(&[Codec::Pcmu, Codec::Pcma], &local(), Direction::SendRecv);
        // The answerer may renumber; we send with its number.
        let ans = parse(
            "v=0\r\no=- 1 1 IN IP4 192.0.2.3\r\ns=-\r\nc=IN IP4 192.0.2.3\r\nt=0 0\r\n\
m=audio 5004 RTP/AVP 18 8 96\r\na=rtpmap:96 telephone-event/8000\r\na=ptime:30\r\na=recvonly\r\n\
a=rtcp:6000\r\n",
        );
        let s = accept_answer(&ours, &ans).unwrap();
        assert_eq!(
            (s.codec, s.pt, s.dtmf_pt, s.ptime),
            (Codec::Pcma, 8, Some(96), 30)
        );
        assert_eq!(s.remote_direction, Direction::RecvOnly);
        assert_eq!(s.local_direction, Direction::SendOnly);
        assert_eq!(s.remote_rtcp, Some("192.0.2.3:6000".parse().unwrap()));

        let rejected = parse(&SIPP.replace("m=audio 6000", "m=audio 0"));
        assert_eq!(
            accept_answer(&ours, &rejected).unwrap_err(),
            SdpError::Rejected
        );
        let wrong = parse(&G729_ONLY.replace("18 101", "18"));
        assert_eq!(
            accept_answer(&ours, &wrong).unwrap_err(),
            SdpError::NoCommonCodec
        );
        let opus_only = offer(&[Codec::Opus], &local(), Direction::SendRecv);
        assert_eq!(
            accept_answer(&opus_only, &parse(SIPP)).unwrap_err(),
            SdpError::NoCommonCodec
        );
        let video_only =
            parse(&WITH_VIDEO.replace("m=audio 49170 RTP/AVP 8 0\r\na=sendrecv\r\n", ""));
        assert_eq!(
            accept_answer(&ours, &video_only).unwrap_err(),
            SdpError::NoAudio
        );
    }

    #[test]
    fn reanswer_keeps_codec_and_bumps_version() {
        let first = parse(ASTERISK_LF);
        let (ans1, current) = answer(
            &first,
            &[Codec::Pcma, Codec::Pcmu],
            &local(),
            Direction::SendRecv,
        )
        .unwrap();
        assert_eq!(current.codec, Codec::Pcma);
        assert_eq!(ans1.origin.session_version, 1);

        // Re-offer now prefers PCMU and our prefs do too; PCMA stays.
        let re = with_media_attr(ASTERISK_LF, "RTP/AVP 8 0 3 101", "RTP/AVP 0 8 101");
        let (ans2, again) = reanswer(
            &re,
            &current,
            &[Codec::Pcmu, Codec::Pcma],
            &local(),
            Direction::SendRecv,
        )
        .unwrap();
        assert_eq!((again.codec, again.pt), (Codec::Pcma, 8));
        assert_eq!(ans2.origin.session_version, 2);
        assert_eq!(ans2.origin.session_id, 4242);

        // sendonly hold re-offer with a new address.
        let hold = parse(
            &ASTERISK_LF
                .replace("a=sendrecv", "a=sendonly")
                .replace("c=IN IP4 10.0.0.5", "c=IN IP4 10.0.0.6"),
        );
        let (_, held) =
            reanswer(&hold, &again, &[Codec::Pcmu], &local(), Direction::SendRecv).unwrap();
        assert_eq!(held.local_direction, Direction::RecvOnly);
        assert_eq!(held.remote_direction, Direction::SendOnly);
        assert_eq!(held.remote, Some("10.0.0.6:15280".parse().unwrap()));
        assert_eq!(held.codec, Codec::Pcma);

        let inactive = parse(&ASTERISK_LF.replace("a=sendrecv", "a=inactive"));
        let (ans3, idle) = reanswer(
            &inactive,
            &held,
            &[Codec::Pcmu],
            &local(),
            Direction::SendRecv,
        )
        .unwrap();
        assert_eq!(idle.local_direction, Direction::Inactive);
        assert_eq!(ans3.media[0].direction(), Some(Direction::Inactive));

        // Current codec gone: fall back to prefs.
        let pcmu_only = with_media_attr(ASTERISK_LF, "RTP/AVP 8 0 3 101", "RTP/AVP 0 101");
        let (_, switched) = reanswer(
            &pcmu_only,
            &current,
            &[Codec::Pcma, Codec::Pcmu],
            &local(),
            Direction::SendRecv,
        )
        .unwrap();
        assert_eq!(switched.codec, Codec::Pcmu);
    }

    #[test]
    fn opus_dtmf_prefers_48k() {
        let text = BARESIP.replace("96 97 9 0 8 101", "96 101 102").replace(
            "a=fmtp:101 0-15\r\n",
            "a=fmtp:101 0-15\r\na=rtpmap:102 telephone-event/48000\r\na=fmtp:96 useinbandfec=1\r\n",
        );
        let (_, s) = answer(&parse(&text), &[Codec::Opus], &local(), Direction::SendRecv).unwrap();
        assert_eq!(s.dtmf_pt, Some(102));
        // The first fmtp for the PT wins.
        assert!(s.opus_stereo && !s.opus_fec);
    }

    #[test]
    fn structural_errors_are_precise() {
        use SdpError::*;
        let err = |t: &str| SessionDescription::parse(t).unwrap_err();
        assert_eq!(err(""), MissingVersion);
        assert_eq!(err("o=- 1 1 IN IP4 1.2.3.4\r\n"), MissingVersion);
        assert_eq!(err("v=1\r\n"), BadVersion { line: 1 });
        assert_eq!(err("v=0\r\ns=-\r\nm=audio 1 RTP/AVP 0\r\n"), MissingOrigin);
        assert_eq!(
            err("v=0\r\no=- x 1 IN IP4 1.2.3.4\r\n"),
            BadOrigin { line: 2 }
        );
        assert_eq!(err("v=0\r\no=- 1 1 IN IP4\r\n"), BadOrigin { line: 2 });
        assert_eq!(
            err("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\n"),
            MissingMedia
        );
        assert_eq!(
            err("v=0\no=- 1 1 IN IP4 1.2.3.4\nc=IN IP4\nm=audio 1 RTP/AVP 0\n"),
            BadConnection { line: 3 }
        );
        assert_eq!(
            err("v=0\no=- 1 1 IN IP4 1.2.3.4\nc=ATM NSAP 1\nm=audio 1 RTP/AVP 0\n"),
            BadConnection { line: 3 }
        );
        assert_eq!(
            err("v=0\no=- 1 1 IN IP4 1.2.3.4\nm=audio 70000 RTP/AVP 0\n"),
            BadMediaLine { line: 3 }
        );
        assert_eq!(
            err("v=0\no=- 1 1 IN IP4 1.2.3.4\nm=audio\n"),
            BadMediaLine { line: 3 }
        );
        assert_eq!(
            err("v=0\no=- 1 1 IN IP4 1.2.3.4\nm=audio 5/x RTP/AVP 0\n"),
            BadMediaLine { line: 3 }
        );
        assert_eq!(
            err("v=0\no=- 1 1 IN IP4 1.2.3.4\nm=audio 1 RTP/AVP 0\nt=0 0\n"),
            BadLine {
                line: 4,
                reason: "session-level line after m="
            }
        );
        assert_eq!(
            err("v=0\no=- 1 1 IN IP4 1.2.3.4\ngarbage\nm=audio 1 RTP/AVP 0\n"),
            BadLine {
                line: 3,
                reason: "expected <type>=<value>"
            }
        );
        assert_eq!(
            err("v=0\no=- 1 1 IN IP4 1.2.3.4\no=- 1 1 IN IP4 1.2.3.4\n"),
            BadLine {
                line: 3,
                reason: "duplicate o= line"
            }
        );
        // Unknown and informational lines are tolerated.
        let ok = parse("v=0\no=- 1 1 IN IP4 1.2.3.4\ni=info\nx=whatever\n\nm=audio 1/2 RTP/AVP 0\ni=media\nk=prompt\n");
        assert_eq!(ok.session_name, "-");
        assert_eq!(ok.media[0].port_count, Some(2));
        assert!(ok.to_string().contains("m=audio 1/2 RTP/AVP 0\r\n"));
    }

    #[test]
    fn answer_errors() {
        let no_conn = parse("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nm=audio 5000 RTP/AVP 0\r\n");
        assert_eq!(
            answer(&no_conn, &[Codec::Pcmu], &local(), Direction::SendRecv).unwrap_err(),
            SdpError::MissingConnection
        );
        let fqdn = parse(&SIPP.replace("c=IN IP4 127.0.0.1", "c=IN IP4 media.example.com"));
        assert_eq!(
            answer(&fqdn, &[Codec::Pcmu], &local(), Direction::SendRecv).unwrap_err(),
            SdpError::UnsupportedAddress("media.example.com".into())
        );
        let dead = parse(&SIPP.replace("m=audio 6000", "m=audio 0"));
        assert_eq!(
            answer(&dead, &[Codec::Pcmu], &local(), Direction::SendRecv).unwrap_err(),
            SdpError::NoAudio
        );
    }

    #[test]
    fn never_panics_on_mangled_input() {
        let samples = [
            CARRIER,
            SIPP,
            BARESIP,
            RFC2543_HOLD,
            ASTERISK_LF,
            IPV6,
            WITH_VIDEO,
            CHROME,
        ];
        let prefs = [Codec::Opus, Codec::Pcma, Codec::Pcmu];
        let ours = offer(&prefs, &local(), Direction::SendRecv);
        let current = answer(&parse(SIPP), &prefs, &local(), Direction::SendRecv)
            .unwrap()
            .1;
        let exercise = |text: &str| {
            if let Ok(sdp) = SessionDescription::parse(text) {
                let _ = sdp.to_string();
                for i in 0..sdp.media.len() + 1 {
                    let _ = (sdp.direction_of(i), sdp.audio_connection(i));
                }
                let _ = answer(&sdp, &prefs, &local(), Direction::SendRecv);
                let _ = reanswer(&sdp, &current, &prefs, &local(), Direction::SendRecv);
                let _ = accept_answer(&ours, &sdp);
                let _ = accept_answer(&sdp, &sdp);
            }
        };
        for s in samples {
            for (i, _) in s.char_indices() {
                exercise(&s[..i]);
                exercise(&s[i..]);
            }
            exercise(&s.replace(' ', ""));
            exercise(&s.replace(':', " "));
            exercise(&s.replace('/', "//"));
            exercise(&s.replace("=", "=\u{e9}"));
            exercise(&s.replace(" 0", " 65535"));
        }
        exercise("v=0\no=- 1 1 IN IP4 1.2.3.4\nm=audio 65535 RTP/AVP 0\nc=IN IP4 1.2.3.4\na=rtpmap:0\na=fmtp:\na=ptime:\na=rtcp:\n");
        exercise("\u{e9}=0");
        exercise("v=0\n\u{e9}\n");
    }
}
