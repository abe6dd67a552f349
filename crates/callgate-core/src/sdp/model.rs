//! The SDP model: sessions, media sections, codecs and directions.

use std::fmt;
use std::net::IpAddr;

use crate::sdes::CryptoAttribute;

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

pub(super) const DEFAULT_PTIME: u32 = 20;

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

    pub(super) fn matches(self, map: &RtpMap) -> bool {
        map.encoding.eq_ignore_ascii_case(self.encoding_name())
            && map.clock_rate == self.clock_rate()
    }

    pub(super) fn offer_pt(self) -> u8 {
        self.static_pt().unwrap_or(OPUS_OFFER_PT)
    }

    pub(super) fn rtpmap_value(self, pt: u8) -> String {
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

    pub(super) fn is_telephone_event(&self) -> bool {
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

    pub(super) fn is_audio(&self) -> bool {
        self.media.eq_ignore_ascii_case("audio")
    }

    /// The plain RTP profiles.
    pub(super) fn is_plain_rtp(&self) -> bool {
        self.protocol.eq_ignore_ascii_case("RTP/AVP")
            || self.protocol.eq_ignore_ascii_case("RTP/AVPF")
    }

    /// SRTP keyed in the SDP (RFC 4568). DTLS-SRTP (`UDP/TLS/RTP/SAVP*`) is not this: it is
    /// the browsers' side, never a trunk's.
    pub(super) fn is_sdes_srtp(&self) -> bool {
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

    pub(super) fn rejected_copy(&self) -> MediaDescription {
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

impl SessionDescription {
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

    pub(super) fn connection_of(&self, media_index: usize) -> Option<&str> {
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

/// `0.0.0.0` / `::` is the RFC 2543 way of putting a call on hold.
pub(super) fn is_hold_address(address: &str) -> bool {
    strip_ttl(address)
        .parse::<IpAddr>()
        .map(|ip| ip.is_unspecified())
        .unwrap_or(false)
}

pub(super) fn strip_ttl(address: &str) -> &str {
    address.split('/').next().unwrap_or(address)
}

pub(super) fn addrtype(address: &str) -> &'static str {
    if address.contains(':') {
        "IP6"
    } else {
        "IP4"
    }
}
