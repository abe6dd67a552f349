//! SDP fixtures from real peers, shared by the parsing and the negotiation tests.

mod negotiate;
mod parse;

use std::net::{IpAddr, Ipv4Addr};

use super::model::*;
use super::*;
use crate::sdes::MasterKey;

pub(super) const CARRIER: &str = "v=0\r\n\
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

pub(super) const SIPP: &str = "v=0\r\n\
o=user1 53655765 2353687637 IN IP4 127.0.0.1\r\n\
s=-\r\n\
c=IN IP4 127.0.0.1\r\n\
t=0 0\r\n\
m=audio 6000 RTP/AVP 0\r\n\
a=rtpmap:0 PCMU/8000\r\n";

pub(super) const BARESIP: &str = "v=0\r\n\
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

pub(super) const RFC2543_HOLD: &str = "v=0\r\n\
o=alice 2890844526 2890844527 IN IP4 198.51.100.7\r\n\
s=-\r\n\
c=IN IP4 0.0.0.0\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 0 8\r\n";

pub(super) const ASTERISK_LF: &str = "v=0\n\
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

pub(super) const G729_ONLY: &str = "v=0\r\n\
o=- 1 1 IN IP4 203.0.113.5\r\n\
s=-\r\n\
c=IN IP4 203.0.113.5\r\n\
t=0 0\r\n\
m=audio 20000 RTP/AVP 18 101\r\n\
a=rtpmap:18 G729/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n";

pub(super) const IPV6: &str = "v=0\r\n\
o=bob 7 7 IN IP6 2001:db8::7\r\n\
s=-\r\n\
c=IN IP6 2001:db8::7\r\n\
t=0 0\r\n\
m=audio 40000 RTP/AVP 0 101\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=rtcp:40001 IN IP6 2001:db8::8\r\n";

pub(super) const WITH_VIDEO: &str = "v=0\r\n\
o=- 55 55 IN IP4 192.0.2.9\r\n\
s=-\r\n\
c=IN IP4 192.0.2.9\r\n\
t=0 0\r\n\
m=video 51372 RTP/AVP 96 97\r\n\
a=rtpmap:96 H264/90000\r\n\
a=rtpmap:97 VP8/90000\r\n\
m=audio 49170 RTP/AVP 8 0\r\n\
a=sendrecv\r\n";

pub(super) const CHROME: &str = "v=0\r\n\
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

pub(super) fn local() -> LocalMedia {
    LocalMedia {
        address: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)),
        port: 30000,
        session_id: 4242,
        session_version: 1,
        username: "callgate".to_string(),
        crypto: None,
    }
}

pub(super) fn parse(text: &str) -> SessionDescription {
    SessionDescription::parse(text).expect("parses")
}

pub(super) fn with_crypto(required: bool) -> LocalMedia {
    LocalMedia {
        crypto: Some(LocalCrypto {
            required,
            key: MasterKey::random(),
        }),
        ..local()
    }
}

/// A trunk's offer: `protocol` on the audio line, then `crypto` lines.
pub(super) fn trunk_offer(protocol: &str, crypto: &[&str]) -> SessionDescription {
    let mut text = format!(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\nm=audio 6000 {protocol} 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    );
    for line in crypto {
        text.push_str(&format!("a=crypto:{line}\r\n"));
    }
    parse(&text)
}

pub(super) const KEY_A: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";

pub(super) fn roundtrip(text: &str) -> SessionDescription {
    let sdp = parse(text);
    let printed = sdp.to_string();
    assert!(printed.ends_with("\r\n"));
    assert!(!printed.replace("\r\n", "").contains('\n'));
    assert_eq!(parse(&printed), sdp, "round trip of:\n{printed}");
    sdp
}

pub(super) fn with_media_attr(text: &str, from: &str, to: &str) -> SessionDescription {
    parse(&text.replace(from, to))
}
