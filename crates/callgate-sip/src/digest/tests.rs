use super::*;

const RFC7616_NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
const RFC7616_CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
const RFC7616_OPAQUE: &str = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS";

#[test]
fn rfc2617_example() {
    let ch = Challenge::parse(
        r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
    )
    .expect("parses");
    assert_eq!(ch.qop, vec!["auth", "auth-int"]);
    assert_eq!(ch.algorithm, Algorithm::Md5, "absent means MD5");
    let auth = respond(
        &ch,
        "GET",
        "/dir/index.html",
        "Mufasa",
        "Circle Of Life",
        "0a4f113b",
        1,
        b"",
    );
    assert_eq!(auth.response, "6629fae49393a05397450978507c4ef1");
    assert_eq!(auth.nc.as_deref(), Some("00000001"));
    assert_eq!(auth.qop.as_deref(), Some("auth"));
    assert_eq!(
        auth.opaque.as_deref(),
        Some("5ccc069c403ebaf9f0171e9517f40e41")
    );
    assert!(verify(&auth, "GET", "Circle Of Life", b""));
    assert!(!verify(&auth, "GET", "circle of life", b""));
    assert!(!verify(&auth, "POST", "Circle Of Life", b""));
}

#[test]
fn rfc2617_authorization_header_verifies() {
    // The RFC's header, folded onto one line, in its own parameter order.
    let auth = Authorization::parse(
        "Digest username=\"Mufasa\",\r\n realm=\"testrealm@host.com\", \
         nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", uri=\"/dir/index.html\", qop=auth, \
         nc=00000001, cnonce=\"0a4f113b\", response=\"6629fae49393a05397450978507c4ef1\", \
         opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
    )
    .expect("parses");
    assert_eq!(auth.username, "Mufasa");
    assert_eq!(auth.cnonce.as_deref(), Some("0a4f113b"));
    assert!(verify(&auth, "GET", "Circle Of Life", b""));
    let mut upper = auth.clone();
    upper.response = upper.response.to_ascii_uppercase();
    assert!(
        verify(&upper, "GET", "Circle Of Life", b""),
        "hex case does not matter"
    );
    let mut tampered = auth.clone();
    tampered.uri = "/dir/other.html".into();
    assert!(!verify(&tampered, "GET", "Circle Of Life", b""));
    let mut truncated = auth.clone();
    truncated.response.pop();
    assert!(!verify(&truncated, "GET", "Circle Of Life", b""));
    let mut odd_qop = auth;
    odd_qop.qop = Some("auth-conf".into());
    assert!(!verify(&odd_qop, "GET", "Circle Of Life", b""));
}

#[test]
fn rfc7616_md5_and_sha256_examples() {
    for (algorithm, expected) in [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        (
            "SHA-256",
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
        ),
    ] {
        let ch = Challenge::parse(&format!(
            "Digest\r\n realm=\"http-auth@example.org\",\r\n qop=\"auth, auth-int\",\r\n \
             algorithm={algorithm},\r\n nonce=\"{RFC7616_NONCE}\",\r\n opaque=\"{RFC7616_OPAQUE}\""
        ))
        .expect("parses");
        let auth = respond(
            &ch,
            "GET",
            "/dir/index.html",
            "Mufasa",
            "Circle of Life",
            RFC7616_CNONCE,
            1,
            b"",
        );
        assert_eq!(auth.response, expected, "{algorithm}");
        let reparsed = Authorization::parse(&auth.to_string()).expect("round trip");
        assert_eq!(reparsed, auth);
        assert!(verify(&reparsed, "GET", "Circle of Life", b""));
        assert!(!verify(&reparsed, "GET", "Circle of life", b""));
    }
    // And the RFC's own SHA-256 Authorization header.
    let header = format!(
        "Digest username=\"Mufasa\", realm=\"http-auth@example.org\", \
         uri=\"/dir/index.html\", algorithm=SHA-256, nonce=\"{RFC7616_NONCE}\", \
         nc=00000001, cnonce=\"{RFC7616_CNONCE}\", qop=auth, \
         response=\"753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1\", \
         opaque=\"{RFC7616_OPAQUE}\""
    );
    let auth = Authorization::parse(&header).expect("parses");
    assert_eq!(auth.algorithm, Algorithm::Sha256);
    assert!(verify(&auth, "GET", "Circle of Life", b""));
}

#[test]
fn challenge_prints_and_parses_back() {
    let ch = Challenge {
        realm: "callgate".into(),
        nonce: "abc".into(),
        opaque: Some("o\"q\\x".into()),
        algorithm: Algorithm::Sha256Sess,
        qop: vec!["auth".into(), "auth-int".into()],
        stale: true,
        domain: Some("sip:callgate.example".into()),
    };
    let printed = ch.to_string();
    assert!(
        printed.starts_with("Digest realm=\"callgate\""),
        "{printed}"
    );
    assert!(printed.contains("algorithm=SHA-256-sess"), "{printed}");
    assert!(printed.contains("qop=\"auth,auth-int\""), "{printed}");
    assert_eq!(Challenge::parse(&printed), Ok(ch.clone()));
    let plain = Challenge {
        opaque: None,
        algorithm: Algorithm::Md5,
        qop: Vec::new(),
        stale: false,
        domain: None,
        ..ch
    };
    assert_eq!(Challenge::parse(&plain.to_string()), Ok(plain));
}

#[test]
fn challenge_parsing_is_liberal_in_form() {
    let ch = Challenge::parse(
        "digest NONCE=abc,REALM = \"r, with comma\" ,Algorithm=sha-256-SESS,qop=auth,\
         stale=TRUE,foo=\"bar\",flag",
    )
    .expect("parses");
    assert_eq!(ch.realm, "r, with comma");
    assert_eq!(ch.nonce, "abc");
    assert_eq!(ch.algorithm, Algorithm::Sha256Sess);
    assert_eq!(ch.qop, vec!["auth"]);
    assert!(ch.stale);
    assert_eq!(
        Challenge::parse("Basic realm=x"),
        Err(DigestError::NotDigest)
    );
    assert_eq!(Challenge::parse(""), Err(DigestError::NotDigest));
    assert_eq!(
        Challenge::parse("Digest nonce=1"),
        Err(DigestError::Missing("realm"))
    );
    assert_eq!(
        Challenge::parse("Digest realm=1"),
        Err(DigestError::Missing("nonce"))
    );
    assert_eq!(
        Challenge::parse("Digest realm=\"x"),
        Err(DigestError::Unterminated)
    );
    assert_eq!(
        Challenge::parse("Digest realm=x, nonce=y, algorithm=AKAv1-MD5"),
        Err(DigestError::Algorithm("AKAv1-MD5".into()))
    );
}

#[test]
fn authorization_errors_are_precise() {
    let base = "Digest username=\"u\", realm=\"r\", nonce=\"n\", uri=\"sip:a\", response=\"00\"";
    assert!(Authorization::parse(base).is_ok());
    assert_eq!(
        Authorization::parse("Digest realm=\"r\", nonce=\"n\", uri=\"sip:a\", response=\"0\""),
        Err(DigestError::Missing("username"))
    );
    assert_eq!(
        Authorization::parse(&format!("{base}, qop=auth, nc=00000001")),
        Err(DigestError::Missing("cnonce"))
    );
    assert_eq!(
        Authorization::parse(&format!("{base}, qop=auth, cnonce=\"c\"")),
        Err(DigestError::Missing("nc"))
    );
    assert_eq!(
        Authorization::parse(&format!("{base}, qop=auth, cnonce=\"c\", nc=1")),
        Err(DigestError::BadNonceCount("1".into()))
    );
    assert_eq!(
        Authorization::parse(&format!("{base}, nc=0000000g")),
        Err(DigestError::BadNonceCount("0000000g".into()))
    );
    // Junk never panics.
    for value in [
        "Digest",
        "Digest ,,,",
        "Digest =",
        "Digest a=\"\\",
        "Digest \u{e9}=\"\u{e9}\"",
    ] {
        let _ = Authorization::parse(value);
        let _ = Challenge::parse(value);
    }
}

#[test]
fn printed_values_cannot_split_the_header() {
    let auth = Authorization {
        username: "evil\r\nVia: x".into(),
        realm: "r".into(),
        nonce: "n".into(),
        uri: "sip:a".into(),
        response: "00".into(),
        algorithm: Algorithm::Md5,
        cnonce: Some("c".into()),
        nc: Some("00000001".into()),
        qop: Some("auth, stale=\"x\"\r\n".into()),
        opaque: None,
    };
    let printed = auth.to_string();
    assert!(
        !printed.contains('\r') && !printed.contains('\n'),
        "{printed}"
    );
    let reparsed = Authorization::parse(&printed).expect("still parses");
    assert_eq!(reparsed.username, "evilVia: x");
    assert_eq!(reparsed.qop.as_deref(), Some("authstale=x"));
}

#[test]
fn session_variants_auth_int_and_no_qop() {
    for algorithm in ["MD5-sess", "SHA-256-sess"] {
        let ch = Challenge::parse(&format!(
            r#"Digest realm="r", nonce="n", algorithm={algorithm}, qop="auth""#
        ))
        .expect("parses");
        let auth = respond(&ch, "INVITE", "sip:a@b", "u", "p", "c", 1, b"");
        assert!(verify(&auth, "INVITE", "p", b""));
        let mut other_cnonce = auth.clone();
        other_cnonce.cnonce = Some("d".into());
        assert!(
            !verify(&other_cnonce, "INVITE", "p", b""),
            "cnonce is in HA1"
        );
    }
    let int_only =
        Challenge::parse(r#"Digest realm="r", nonce="n", qop="auth-int""#).expect("parses");
    let auth = respond(&int_only, "INVITE", "sip:b", "u", "p", "c", 2, b"v=0\r\n");
    assert_eq!(auth.qop.as_deref(), Some("auth-int"));
    assert_eq!(auth.nc.as_deref(), Some("00000002"));
    assert!(verify(&auth, "INVITE", "p", b"v=0\r\n"));
    assert!(
        !verify(&auth, "INVITE", "p", b"v=1\r\n"),
        "the body is protected"
    );
    let plain = Challenge::parse(r#"Digest realm="r", nonce="n""#).expect("parses");
    let auth = respond(&plain, "REGISTER", "sip:b", "u", "p", "c", 1, b"");
    assert!(auth.qop.is_none() && auth.cnonce.is_none() && auth.nc.is_none());
    assert!(verify(&auth, "REGISTER", "p", b""));
    assert!(!auth.to_string().contains("qop"));
    // RFC 2069 form: MD5(HA1:nonce:HA2).
    let ha1 = Algorithm::Md5.hash("u:r:p");
    let ha2 = Algorithm::Md5.hash("REGISTER:sip:b");
    assert_eq!(
        auth.response,
        Algorithm::Md5.hash(&format!("{ha1}:n:{ha2}"))
    );
    let unknown_qop =
        Challenge::parse(r#"Digest realm="r", nonce="n", qop="auth-conf""#).expect("parses");
    assert!(respond(&unknown_qop, "BYE", "sip:b", "u", "p", "c", 1, b"")
        .qop
        .is_none());
}

#[test]
fn hmac_matches_rfc4231() {
    // Test case 2 and 1 of RFC 4231. HMAC zero-pads short keys, so a 20-byte key padded to
    // our 32 is the same key.
    let mut key = [0u8; 32];
    key[..4].copy_from_slice(b"Jefe");
    assert_eq!(
        hex(&hmac_sha256(&key, &[b"what do ya want ", b"for nothing?"])),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    key = [0; 32];
    key[..20].fill(0x0b);
    assert_eq!(
        hex(&hmac_sha256(&key, &[b"Hi There"])),
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
    );
}

#[test]
fn nonces_are_fresh_stale_or_invalid() {
    let issuer = NonceIssuer::new([7; 32]);
    let nonce = issuer.issue(1000, 42, "realm");
    assert_eq!(nonce.len(), 64);
    assert_ne!(
        nonce,
        issuer.issue(1000, 43, "realm"),
        "each challenge its own"
    );
    assert!(nonce.starts_with("00000000000003e8"));
    assert_eq!(issuer.check(&nonce, "realm", 1000, 300), NonceState::Fresh);
    assert_eq!(issuer.check(&nonce, "realm", 1300, 300), NonceState::Fresh);
    assert_eq!(issuer.check(&nonce, "realm", 1301, 300), NonceState::Stale);
    assert_eq!(
        issuer.check(&nonce, "realm", 990, 300),
        NonceState::Fresh,
        "small skew"
    );
    assert_eq!(
        issuer.check(&nonce, "realm", 900, 300),
        NonceState::Invalid,
        "from the future"
    );
    assert_eq!(
        issuer.check(&nonce, "other", 1100, 300),
        NonceState::Invalid
    );
    assert_eq!(
        NonceIssuer::new([8; 32]).check(&nonce, "realm", 1100, 300),
        NonceState::Invalid
    );
    // Moving the time forward to dodge staleness breaks the MAC.
    let mut tampered = nonce.clone();
    tampered.replace_range(13..14, "4");
    assert_eq!(
        issuer.check(&tampered, "realm", 1100, 300),
        NonceState::Invalid
    );
    let mut mac_flip = nonce.clone();
    let last = if nonce.ends_with('0') { "1" } else { "0" };
    mac_flip.replace_range(63..64, last);
    assert_eq!(
        issuer.check(&mac_flip, "realm", 1100, 300),
        NonceState::Invalid
    );
    assert_eq!(
        issuer.check(&nonce.to_ascii_uppercase(), "realm", 1100, 300),
        NonceState::Invalid
    );
    assert_eq!(
        issuer.check(&format!("{nonce}0"), "realm", 1100, 300),
        NonceState::Invalid
    );
    for junk in [
        "",
        "short",
        "+00000000000003e8",
        "\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}",
    ] {
        assert_eq!(issuer.check(junk, "realm", 1100, 300), NonceState::Invalid);
    }
    let far = issuer.issue(u64::MAX, 7, "realm");
    assert_eq!(issuer.check(&far, "realm", u64::MAX, 0), NonceState::Fresh);
    assert_eq!(
        issuer.check(&nonce, "realm", u64::MAX, u64::MAX),
        NonceState::Fresh
    );
}
