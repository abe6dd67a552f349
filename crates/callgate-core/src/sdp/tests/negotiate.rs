//! Offer/answer: codecs, directions, addresses and SDES keys.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::super::model::*;
use super::super::*;
use super::*;
use crate::sdes::{CryptoAttribute, MasterKey, SrtpSuite};

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
    let (_, current) = super::answer(&first, &[Codec::Pcmu], &ours, Direction::SendRecv).unwrap();
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
    let video_only = parse(&WITH_VIDEO.replace("m=audio 49170 RTP/AVP 8 0\r\na=sendrecv\r\n", ""));
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
    let (_, held) = reanswer(&hold, &again, &[Codec::Pcmu], &local(), Direction::SendRecv).unwrap();
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
