use super::*;

const INVITE: &str = "INVITE sip:bob@biloxi.com SIP/2.0\r\n\
    Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds\r\n\
    Max-Forwards: 70\r\n\
    To: Bob <sip:bob@biloxi.com>\r\n\
    From: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n\
    Call-ID: a84b4c76e66710@pc33.atlanta.com\r\n\
    CSeq: 314159 INVITE\r\n\
    Contact: <sip:alice@pc33.atlanta.com>\r\n\
    Content-Type: application/sdp\r\n\
    Content-Length: 4\r\n\
    \r\n\
    v=0\r\n";

fn request(text: &str) -> Request {
    match Message::parse_datagram(text.as_bytes()) {
        Ok(Message::Request(r)) => r,
        other => panic!("request expected, got {other:?}"),
    }
}

fn problem(text: &[u8]) -> Problem {
    match Message::parse_datagram(text) {
        Err(ParseError::Invalid { problem, .. }) => problem,
        other => panic!("invalid expected, got {other:?}"),
    }
}

#[test]
fn parses_a_basic_invite() {
    let r = request(INVITE);
    assert_eq!(r.method, Method::Invite);
    assert_eq!(r.uri.host, "biloxi.com");
    assert_eq!(r.body, b"v=0\r");
    assert_eq!(
        r.headers.cseq(),
        Some(CSeq {
            seq: 314159,
            method: Method::Invite
        })
    );
    assert_eq!(
        r.headers.from().as_ref().and_then(NameAddr::tag),
        Some("1928301774")
    );
    assert_eq!(
        r.headers.to().and_then(|t| t.display).as_deref(),
        Some("Bob")
    );
    assert_eq!(
        r.headers.top_via().as_ref().and_then(Via::branch),
        Some("z9hG4bK776asdhds")
    );
    assert_eq!(r.headers.max_forwards(), Some(70));
    assert_eq!(r.headers.content_type(), Some("application/sdp"));
    assert_eq!(r.headers.content_length(), Some(4));
    let again = Message::parse_datagram(&Message::Request(r.clone()).to_bytes());
    assert_eq!(again, Ok(Message::Request(r)));
}

#[test]
fn compact_forms_folding_and_lists() {
    let text = "OPTIONS sip:x@y SIP/2.0\r\n\
        v: SIP/2.0/UDP a.b;branch=z9hG4bK1, SIP/2.0/TCP [::1]:5070;branch=z9hG4bK2\r\n\
        f: \"A, B\" <sip:a@b>;tag=1\r\n\
        t: sip:x@y\r\n\
        i: abc\r\n\
        CSeq: 1\r\n \t OPTIONS\r\n\
        m: \"x,y\" <sip:c,d@e>, <sip:e@f>\r\n\
        k: 100rel, \r\n timer\r\n\
        WWW-Authenticate: Digest realm=\"a\", nonce=\"b\"\r\n\
        l: 0\r\n\r\n";
    let r = request(text);
    let vias = r.headers.vias();
    assert_eq!(vias.len(), 2);
    assert_eq!((vias[1].host.as_str(), vias[1].port), ("::1", Some(5070)));
    assert_eq!(vias[1].transport, "TCP");
    assert_eq!(
        r.headers.all("Contact").collect::<Vec<_>>(),
        ["\"x,y\" <sip:c,d@e>", "<sip:e@f>"]
    );
    assert_eq!(
        r.headers.from().and_then(|f| f.display).as_deref(),
        Some("A, B")
    );
    assert_eq!(r.headers.call_id(), Some("abc"));
    assert_eq!(r.headers.get("i"), Some("abc"));
    assert_eq!(r.headers.get("CALL-id"), Some("abc"));
    assert_eq!(r.headers.get("CSeq"), Some("1 OPTIONS"));
    assert_eq!(
        r.headers.all("Supported").collect::<Vec<_>>(),
        ["100rel", "timer"]
    );
    assert!(r.headers.has_token("k", "TIMER"));
    assert_eq!(r.headers.all("WWW-Authenticate").count(), 1);
    let names: Vec<&str> = r.headers.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "Via",
            "Via",
            "From",
            "To",
            "Call-ID",
            "CSeq",
            "Contact",
            "Contact",
            "Supported",
            "Supported",
            "WWW-Authenticate",
            "Content-Length"
        ]
    );
}

#[test]
fn bare_lf_and_unknown_names_kept_as_written() {
    let text = INVITE
        .replace("\r\n", "\n")
        .replace("Content-Type", "X-Custom-thing: 1\nContent-Type");
    let r = request(&text);
    assert_eq!(r.body, b"v=0\n");
    assert!(r.headers.iter().any(|h| h.name == "X-Custom-thing"));
    assert_eq!(r.headers.get("x-custom-THING"), Some("1"));
}

#[test]
fn name_addr_forms() {
    let plain = NameAddr::parse("sip:alice@a.com;tag=9;lr").expect("addr-spec");
    assert_eq!(plain.uri.params, vec![]);
    assert_eq!(plain.tag(), Some("9"));
    assert_eq!(plain.param("LR"), Some(None));
    let quoted =
        NameAddr::parse(r#""J Rosenberg \\\"" <sip:j@example.com> ; tag = 98"#).expect("quoted");
    assert_eq!(quoted.display.as_deref(), Some(r#"J Rosenberg \""#));
    assert_eq!(quoted.tag(), Some("98"));
    assert_eq!(
        quoted.to_string(),
        r#""J Rosenberg \\\"" <sip:j@example.com>;tag=98"#
    );
    let tight = NameAddr::parse("caller<sip:caller@example.com>;tag=323").expect("lwsdisp");
    assert_eq!(tight.display.as_deref(), Some("caller"));
    let utf8 = NameAddr::parse("Jürgen Groß <sip:j@example.com>").expect("unquoted UTF-8");
    assert_eq!(utf8.display.as_deref(), Some("Jürgen Groß"));
    let v6 = NameAddr::parse("<sip:[2001:db8::1]:5060;transport=tcp>").expect("v6");
    assert_eq!(v6.uri.host, "2001:db8::1");
    assert_eq!(v6.to_string(), "<sip:[2001:db8::1]:5060;transport=tcp>");
    let mut built = NameAddr::new(Uri::sip(Some("a"), "b", None));
    built.set_param("tag", Some("x"));
    built.set_param("TAG", Some("y"));
    built.display = Some("Nul\0 \"q\"".into());
    assert_eq!(built.to_string(), "\"Nul\\\0 \\\"q\\\"\" <sip:a@b>;tag=y");
    assert_eq!(NameAddr::parse(&built.to_string()), Ok(built));
    for (bad, why) in [
        ("", AddressError::Empty),
        (
            "\"Mr. J. User <sip:j.user@example.com>",
            AddressError::UnterminatedQuote,
        ),
        (
            "Bell, Alexander <sip:a.g.bell@example.com>",
            AddressError::BadDisplayName,
        ),
        ("\"x\" sip:a@b", AddressError::MissingLeftAngle),
        ("<sip:a@b", AddressError::MissingRightAngle),
        (
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            AddressError::NeedsAngleBrackets,
        ),
        (
            "< sip:t.watson@example.org >",
            AddressError::Uri(UriError::Whitespace),
        ),
        ("<sip:a@b>;;", AddressError::Params),
        ("<sip:a@b> junk", AddressError::Params),
    ] {
        assert_eq!(NameAddr::parse(bad), Err(why), "{bad:?}");
    }
}

#[test]
fn via_forms() {
    let via = Via::parse(
        "SIP  /   2.0 /udp 192.0.2.2:5060 ;rport;branch=z9hG4bK1;received=[2001:db8::9:255]",
    )
    .expect("via");
    assert_eq!(via.transport, "UDP");
    assert_eq!((via.host.as_str(), via.port), ("192.0.2.2", Some(5060)));
    assert_eq!(via.rport(), Some(None));
    assert_eq!(via.received(), Some("[2001:db8::9:255]"));
    let mut v6 = Via::parse("SIP/2.0/TCP [2001:db8::9:1];branch=z9hG4bKx").expect("v6");
    v6.set_param("rport", Some("5070"));
    assert_eq!(v6.rport(), Some(Some(5070)));
    assert_eq!(
        v6.to_string(),
        "SIP/2.0/TCP [2001:db8::9:1];branch=z9hG4bKx;rport=5070"
    );
    assert_eq!(Via::parse(&v6.to_string()), Ok(v6));
    for bad in [
        "SIP/2.0/UDP",
        "SIP/2.0 UDP host",
        "SIP/3.0/UDP host",
        "SIP/2.0/UDP host:0",
        "SIP/2.0/UDP host;;",
        "SIP/2.0/UDP user@host",
        "SIP/2.0/UDP 192.0.2.15;;",
    ] {
        assert_eq!(Via::parse(bad), Err(Problem::MalformedVia), "{bad:?}");
    }
}

#[test]
fn stream_framing() {
    let bytes = INVITE.as_bytes();
    for cut in 0..bytes.len() - 1 {
        assert_eq!(
            Message::parse_stream(&bytes[..cut]).err(),
            Some(ParseError::Incomplete),
            "prefix {cut}"
        );
    }
    let mut two = b"\r\n\r\n".to_vec();
    two.extend_from_slice(bytes);
    two.extend_from_slice(bytes);
    let (_, used) = Message::parse_stream(&two).expect("first");
    // The sample's body line ends one byte past its Content-Length.
    assert_eq!(used, 4 + bytes.len() - 1);
    let (_, used2) = Message::parse_stream(&two[used..]).expect("second");
    assert_eq!(used2, bytes.len());
    let no_length = INVITE.replace("Content-Length: 4\r\n", "");
    assert!(matches!(
        Message::parse_stream(no_length.as_bytes()),
        Err(ParseError::Invalid {
            problem: Problem::MissingContentLength,
            request: Some(_)
        })
    ));
    let huge = INVITE.replace(
        "Content-Length: 4",
        "Content-Length: 99999999999999999999999",
    );
    assert!(matches!(
        Message::parse_stream(huge.as_bytes()),
        Err(ParseError::Invalid {
            problem: Problem::TooLarge,
            request: Some(_)
        })
    ));
    assert_eq!(problem(huge.as_bytes()), Problem::BodyTooShort);
    assert_eq!(
        Message::parse_stream(b"GARBAGE\r\n").err(),
        Some(invalid(Problem::BadStartLine))
    );
    assert_eq!(
        Message::parse_stream(b"\r\n\r\n").err(),
        Some(ParseError::Incomplete)
    );
}

#[test]
fn precise_problems() {
    let cases = [
        (
            INVITE.replace("CSeq: 314159 INVITE", "CSeq: 314159 ACK"),
            Problem::CSeqMethodMismatch,
        ),
        (
            INVITE.replace("CSeq: 314159", "CSeq: 99999999999"),
            Problem::MalformedCSeq,
        ),
        (
            INVITE.replace("CSeq: 314159", "CSeq: 2147483648"),
            Problem::MalformedCSeq,
        ),
        (
            INVITE.replace("Max-Forwards: 70", "Max-Forwards: abc"),
            Problem::MalformedMaxForwards,
        ),
        (
            INVITE.replace("Max-Forwards: 70", "Max-Forwards: 256"),
            Problem::MalformedMaxForwards,
        ),
        (
            INVITE.replace("Call-ID: a84b4c76e66710@pc33.atlanta.com\r\n", ""),
            Problem::MissingHeader("Call-ID"),
        ),
        (
            INVITE.replace("Call-ID: a84b4c76e66710@pc33.atlanta.com", "Call-ID: a b"),
            Problem::MalformedCallId,
        ),
        (
            INVITE.replace("Call-ID: a84b", "i: x\r\nCall-ID: a84b"),
            Problem::MultipleHeader("Call-ID"),
        ),
        (
            INVITE.replace("Content-Length: 4", "Content-Length: 400"),
            Problem::BodyTooShort,
        ),
        (
            INVITE.replace("Content-Length: 4", "Content-Length: -4"),
            Problem::BadContentLength,
        ),
        (
            INVITE.replace("Content-Length: 4", "Content-Length: 4\r\nl: 5"),
            Problem::MultipleContentLength,
        ),
        (
            INVITE.replace("SIP/2.0\r\nVia", "SIP/7.0\r\nVia"),
            Problem::UnsupportedVersion,
        ),
        (
            INVITE.replace("SIP/2.0\r\nVia", "HTTP/1.1\r\nVia"),
            Problem::BadStartLine,
        ),
        (
            INVITE.replace("To: Bob <", "To: \"Bob <"),
            Problem::MalformedAddress("To"),
        ),
        (
            INVITE.replace(
                "Contact: <sip:alice@pc33.atlanta.com>",
                "Contact: <sip:alice@pc33.atlanta.com",
            ),
            Problem::MalformedAddress("Contact"),
        ),
        (
            INVITE.replace(
                "Via: SIP/2.0/UDP",
                "Via: SIP/2.0/UDP host, junk\r\nVia: SIP/2.0/UDP",
            ),
            Problem::MalformedVia,
        ),
        (
            INVITE.replace("INVITE sip:bob@biloxi.com", "INVITE  sip:bob@biloxi.com"),
            Problem::BadStartLine,
        ),
        (
            INVITE.replace("SIP/2.0\r\nVia", "SIP/2.0 \r\nVia"),
            Problem::BadStartLine,
        ),
        (
            INVITE.replace("sip:bob@biloxi.com SIP", "<sip:bob@biloxi.com> SIP"),
            Problem::MalformedRequestUri,
        ),
        (
            INVITE.replace("sip:bob@biloxi.com SIP", "sip:bob@biloxi.com; lr SIP"),
            Problem::MalformedRequestUri,
        ),
        (
            INVITE.replace("sip:bob@biloxi.com SIP", "sip:bob@biloxi.com?Subject=x SIP"),
            Problem::MalformedRequestUri,
        ),
        (
            INVITE.replace("INVITE sip", "INV\"ITE sip"),
            Problem::BadMethod,
        ),
        (
            INVITE.replace("Max-Forwards: 70", "Max-Forwards 70"),
            Problem::MalformedHeaderLine,
        ),
        (
            INVITE.replace("SIP/2.0\r\nVia", "SIP/2.0\r\n Via"),
            Problem::MalformedHeaderLine,
        ),
        (
            INVITE.replace("Max-Forwards: 70", "Max-Forwards: 7\x000"),
            Problem::InvalidBytes("Header Field"),
        ),
        (
            INVITE.replace("INVITE sip:bob", "INVITE sip:b\0ob"),
            Problem::InvalidBytes("Start Line"),
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(problem(text.as_bytes()), expected, "{text}");
    }
    assert_eq!(problem(&vec![b'a'; 70_000]), Problem::TooLarge);
    assert_eq!(problem(b""), Problem::Empty);
    assert_eq!(problem(b"\r\n\r\n"), Problem::Empty);
    assert_eq!(
        problem(b"\x00\x01\x02"),
        Problem::InvalidBytes("Start Line")
    );
    assert_eq!(
        problem(b"SIP/2.0 4294967301 x\r\n\r\n"),
        Problem::BadStatusCode
    );
    assert_eq!(problem(b"SIP/2.0 099 x\r\n\r\n"), Problem::BadStatusCode);
    assert_eq!(Problem::UnsupportedVersion.status(), 505);
    assert_eq!(Problem::TooLarge.status(), 513);
    assert_eq!(
        Problem::MissingHeader("Call-ID").to_string(),
        "Missing Call-ID"
    );
    assert_eq!(
        Problem::MalformedAddress("From").to_string(),
        "Malformed From"
    );
}

#[test]
fn invalid_requests_keep_what_was_parsed() {
    let text = INVITE.replace("CSeq: 314159 INVITE", "CSeq: one INVITE");
    let Err(ParseError::Invalid {
        problem,
        request: Some(r),
    }) = Message::parse_datagram(text.as_bytes())
    else {
        panic!("invalid request expected");
    };
    assert_eq!(problem, Problem::MalformedCSeq);
    assert_eq!(r.headers.call_id(), Some("a84b4c76e66710@pc33.atlanta.com"));
    assert_eq!(r.body, b"v=0\r");
    let response = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nl: 0\r\n\r\n";
    assert!(matches!(
        Message::parse_datagram(response.as_bytes()),
        Err(ParseError::Invalid { request: None, .. })
    ));
}

#[test]
fn responses_and_printing() {
    let text = "SIP/2.0 100 \r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nTo: <sip:a@b>\r\nFrom: <sip:c@d>;tag=1\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
    let Ok(Message::Response(r)) = Message::parse_datagram(text.as_bytes()) else {
        panic!("response expected");
    };
    assert_eq!((r.status, r.reason.as_str()), (100, ""));
    assert_eq!(r.to_bytes(), text.as_bytes());
    let mut r = r;
    r.status = 180;
    r.reason = Response::reason_for(180).to_string();
    r.headers.push("Content-Length", "77");
    r.headers.set("content-length", "99");
    r.body = b"abc".to_vec();
    let printed = String::from_utf8(r.to_bytes()).expect("utf8");
    assert!(printed.starts_with("SIP/2.0 180 Ringing\r\n"));
    assert!(printed.ends_with("CSeq: 1 INVITE\r\nContent-Length: 3\r\n\r\nabc"));
    assert_eq!(Response::reason_for(499), "Request Failure");
}

#[test]
fn header_editing() {
    let mut h = Headers::new();
    h.push("via", "a");
    h.push("Call-ID", "x");
    h.push("Via", "b");
    h.push_front("v", "c");
    assert_eq!(h.all("Via").collect::<Vec<_>>(), ["c", "a", "b"]);
    h.set("VIA", "d");
    assert_eq!(h.all("Via").collect::<Vec<_>>(), ["d"]);
    assert_eq!(h.iter().next().map(|x| x.value.as_str()), Some("d"));
    h.push("Require", "100rel, timer");
    assert!(h.has_token("require", "TIMER"));
    assert!(!h.has_token("require", "path"));
    assert_eq!(h.remove_first("via").as_deref(), Some("d"));
    assert!(h.get("Via").is_none());
    h.remove("i");
    assert_eq!(h.len(), 1);
    assert!(!h.is_empty());
    assert_eq!(
        Method::from_token("invite"),
        Some(Method::Extension("invite".into()))
    );
    assert_eq!(Method::from_token("INVITE"), Some(Method::Invite));
    assert_eq!(Method::from_token("IN VITE"), None);
    assert_eq!(Method::Extension("FOO".into()).to_string(), "FOO");
}
