//! RFC 3264 offer/answer for the one audio stream of a leg, with SDES (RFC 4568) keys where
//! the leg may carry them.

use std::net::{IpAddr, SocketAddr};

use super::model::*;
use crate::sdes::{CryptoAttribute, MasterKey, SrtpSuite};

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
