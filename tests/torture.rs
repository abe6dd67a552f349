//! Runs our torture messages in tests/torture/{valid,invalid} through the datagram and stream
//! parsers: messages written after the RFC 4475 / RFC 5118 cases (same file names, same defect
//! or feature each) and additional malformed cases of ours (`cg-*`). The outcome each must have
//! is the table in tests/torture/EXPECTED.md, so the expectations live in one place.

use std::path::{Path, PathBuf};

use callgate::sip::message::{Headers, Message, ParseError};

struct Expected {
    file: String,
    accept: bool,
    status: Option<u16>,
    problem: Option<String>,
}

fn torture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/torture")
}

fn table() -> Vec<Expected> {
    let text = std::fs::read_to_string(torture_dir().join("EXPECTED.md")).expect("EXPECTED.md");
    text.lines()
        .filter(|l| l.starts_with("| valid/") || l.starts_with("| invalid/"))
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            let cell = |i: usize| cells.get(i).copied().unwrap_or("-");
            let accept = match cell(1) {
                "accept" => true,
                "reject" => false,
                other => panic!("{line}: outcome {other:?}"),
            };
            Expected {
                file: cell(0).to_string(),
                accept,
                status: cell(2).parse().ok(),
                problem: Some(cell(3)).filter(|p| *p != "-").map(str::to_string),
            }
        })
        .collect()
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(torture_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn all_fixtures() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for dir in ["valid", "invalid"] {
        let mut names: Vec<String> = std::fs::read_dir(torture_dir().join(dir))
            .expect("fixture directory")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sip"))
            .collect();
        names.sort();
        for name in names {
            let path = format!("{dir}/{name}");
            let bytes = fixture(&path);
            out.push((path, bytes));
        }
    }
    out
}

/// Header lists compared without Content-Length, which printing always rewrites.
fn without_length(headers: &Headers) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|h| h.name != "Content-Length")
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect()
}

fn same_message(a: &Message, b: &Message) -> bool {
    match (a, b) {
        (Message::Request(a), Message::Request(b)) => {
            a.method == b.method
                && a.uri == b.uri
                && without_length(&a.headers) == without_length(&b.headers)
                && a.body == b.body
        }
        (Message::Response(a), Message::Response(b)) => {
            a.status == b.status
                && a.reason == b.reason
                && without_length(&a.headers) == without_length(&b.headers)
                && a.body == b.body
        }
        _ => false,
    }
}

fn header_block_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The fixture as it would arrive on TCP: closed by an empty line, and with a Content-Length
/// (the one it carries, else the length of what follows the header block).
fn stream_form(bytes: &[u8], message: &Message) -> Vec<u8> {
    let mut bytes = bytes.to_vec();
    if header_block_end(&bytes).is_none() {
        bytes.extend_from_slice(b"\r\n");
    }
    let headers = match message {
        Message::Request(r) => &r.headers,
        Message::Response(r) => &r.headers,
    };
    if headers.get("Content-Length").is_none() {
        let end = header_block_end(&bytes).unwrap_or(bytes.len());
        let body_len = bytes.len() - end;
        let first_line = bytes
            .iter()
            .position(|b| *b == b'\n')
            .map_or(bytes.len(), |i| i + 1);
        let header = format!("Content-Length: {body_len}\r\n");
        bytes.splice(first_line..first_line, header.bytes());
    }
    bytes
}

#[test]
fn every_fixture_has_exactly_one_row() {
    let rows = table();
    let fixtures = all_fixtures();
    for (name, _) in &fixtures {
        let n = rows.iter().filter(|r| &r.file == name).count();
        assert_eq!(n, 1, "{name} has {n} rows in EXPECTED.md");
    }
    for row in &rows {
        assert!(
            fixtures.iter().any(|(name, _)| *name == row.file),
            "{}: no such fixture",
            row.file
        );
        assert_eq!(
            row.accept,
            row.file.starts_with("valid/"),
            "{}: directory and outcome disagree",
            row.file
        );
    }
    let valid = fixtures
        .iter()
        .filter(|(n, _)| n.starts_with("valid/"))
        .count();
    let invalid = fixtures.len() - valid;
    assert!(
        valid >= 30 && invalid >= 40,
        "{valid} valid, {invalid} invalid"
    );
}

#[test]
fn datagrams_get_the_expected_outcome_and_valid_ones_round_trip() {
    let mut failures = Vec::new();
    for row in table() {
        let bytes = fixture(&row.file);
        let outcome = Message::parse_datagram(&bytes);
        match (row.accept, outcome) {
            (true, Ok(message)) => {
                let printed = message.to_bytes();
                match Message::parse_datagram(&printed) {
                    Ok(again) if same_message(&message, &again) => {}
                    other => failures.push(format!("{}: round trip gave {other:?}", row.file)),
                }
                match Message::parse_stream(&printed) {
                    Ok((again, used))
                        if used == printed.len() && same_message(&message, &again) => {}
                    other => failures.push(format!(
                        "{}: printed form on a stream gave {other:?}",
                        row.file
                    )),
                }
            }
            (false, Err(ParseError::Invalid { problem, .. })) => {
                if Some(problem.status()) != row.status || Some(problem.to_string()) != row.problem
                {
                    failures.push(format!(
                        "{}: got {} {problem}, expected {:?} {:?}",
                        row.file,
                        problem.status(),
                        row.status,
                        row.problem
                    ));
                }
            }
            (accept, other) => failures.push(format!(
                "{}: expected {}, got {other:?}",
                row.file,
                if accept { "accept" } else { "reject" }
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn invalid_requests_that_frame_are_answerable() {
    // Whatever framed far enough to name a request carries it, so the caller can answer with
    // problem.status(); the RFC asks for a 400/505 to each of these.
    for name in [
        "invalid/badinv01.sip",
        "invalid/clerr.sip",
        "invalid/ncl.sip",
        "invalid/scalar02.sip",
        "invalid/quotbal.sip",
        "invalid/ltgtruri.sip",
        "invalid/lwsruri.sip",
        "invalid/lwsstart.sip",
        "invalid/trws.sip",
        "invalid/escruri.sip",
        "invalid/regbadct.sip",
        "invalid/badaspec.sip",
        "invalid/baddn.sip",
        "invalid/badvers.sip",
        "invalid/mismatch01.sip",
        "invalid/mismatch02.sip",
        "invalid/multi01.sip",
        "invalid/mcl01.sip",
    ] {
        match Message::parse_datagram(&fixture(name)) {
            Err(ParseError::Invalid {
                request: Some(request),
                ..
            }) => {
                assert!(
                    request.headers.get("Via").is_some(),
                    "{name}: request kept without its Via"
                );
            }
            other => panic!("{name}: expected an answerable invalid request, got {other:?}"),
        }
    }
}

#[test]
fn streams_frame_valid_fixtures_and_never_accept_invalid_ones() {
    let mut failures = Vec::new();
    for row in table() {
        let bytes = fixture(&row.file);
        if row.accept {
            let Ok(datagram) = Message::parse_datagram(&bytes) else {
                failures.push(format!("{}: not a valid datagram", row.file));
                continue;
            };
            let framed = stream_form(&bytes, &datagram);
            match Message::parse_stream(&framed) {
                Ok((message, used))
                    if used <= framed.len() && same_message(&message, &datagram) =>
                {
                    // RFC 4475 "dblreq": what follows the first message is the next one, and
                    // reading it must not go wrong either.
                    let _ = Message::parse_stream(&framed[used..]);
                }
                other => failures.push(format!("{}: stream gave {other:?}", row.file)),
            }
        } else if let Ok((_, used)) = Message::parse_stream(&bytes) {
            failures.push(format!("{}: accepted on a stream ({used} bytes)", row.file));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every byte-prefix must be Incomplete or Invalid, or a whole earlier message that fits.
fn check_prefixes(name: &str, bytes: &[u8]) -> Result<(), String> {
    for cut in 0..=bytes.len() {
        let prefix = &bytes[..cut];
        match Message::parse_stream(prefix) {
            Ok((_, used)) if used > cut || used == 0 => {
                return Err(format!("{name}: prefix {cut} consumed {used}"));
            }
            Ok(_) | Err(ParseError::Incomplete) | Err(ParseError::Invalid { .. }) => {}
        }
        // Datagram parsing of a truncated datagram must not panic either.
        let _ = Message::parse_datagram(prefix);
    }
    Ok(())
}

#[test]
fn every_prefix_is_incomplete_invalid_or_a_whole_message() {
    let mut failures = Vec::new();
    for (name, bytes) in all_fixtures() {
        if let Err(e) = check_prefixes(&name, &bytes) {
            failures.push(e);
        }
        if let Ok(message) = Message::parse_datagram(&bytes) {
            let framed = stream_form(&bytes, &message);
            if let Err(e) = check_prefixes(&format!("{name} (stream form)"), &framed) {
                failures.push(e);
            }
            // No proper prefix of a single framed message may already parse as that message.
            let single = message.to_bytes();
            for cut in 0..single.len() {
                if let Ok((_, used)) = Message::parse_stream(&single[..cut]) {
                    failures.push(format!(
                        "{name}: printed prefix {cut} parsed ({used} bytes)"
                    ));
                    break;
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn framing_specifics() {
    let dblreq = fixture("valid/dblreq.sip");
    let (first, used) = Message::parse_stream(&dblreq).expect("first message");
    assert!(matches!(first, Message::Request(ref r) if r.method.as_str() == "REGISTER"));
    assert!(used < dblreq.len());
    let clerr = fixture("invalid/clerr.sip");
    assert_eq!(
        Message::parse_stream(&clerr).err(),
        Some(ParseError::Incomplete)
    );
    let truncated = fixture("invalid/cg-truncated-body.sip");
    assert_eq!(
        Message::parse_stream(&truncated).err(),
        Some(ParseError::Incomplete)
    );
    let huge = fixture("invalid/cg-huge-content-length.sip");
    assert!(matches!(
        Message::parse_stream(&huge),
        Err(ParseError::Invalid { request: Some(_), ref problem }) if problem.status() == 513
    ));
    let inv2543 = fixture("valid/inv2543.sip");
    assert!(matches!(
        Message::parse_stream(&inv2543),
        Err(ParseError::Invalid { ref problem, .. }) if problem.to_string() == "Missing Content-Length"
    ));
    let mut keepalive = b"\r\n\r\n\r\n".to_vec();
    keepalive.extend_from_slice(&fixture("valid/zeromf.sip"));
    let (_, used) = Message::parse_stream(&keepalive).expect("after keepalives");
    assert_eq!(used, keepalive.len());
}
