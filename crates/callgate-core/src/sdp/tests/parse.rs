//! Reading and printing SDP text from real peers.

use std::net::{IpAddr, Ipv4Addr};

use super::super::model::*;
use super::*;

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
fn session_level_direction_applies_unless_media_overrides() {
    let text = SIPP.replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n");
    assert_eq!(parse(&text).direction_of(0), Direction::SendOnly);
    let text = format!("{text}a=inactive\r\n");
    assert_eq!(parse(&text).direction_of(0), Direction::Inactive);
    assert_eq!(parse(&text).direction_of(5), Direction::Inactive);
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
