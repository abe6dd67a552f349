//! The protocol's text and its types agree: every example in `docs/agent-protocol.md` is read
//! by the types, and every type either side sends has an example. Bad messages are refused
//! with an error that names the field.

use serde_json::Value;

use super::*;

const DOC: &str = include_str!("../../../docs/agent-protocol.md");

/// The document's fenced blocks with this info string (`json client`, `json server`).
fn examples(info: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut current: Option<String> = None;
    for line in DOC.lines() {
        let fence = line.trim_start();
        match &mut current {
            None if fence.strip_prefix("```") == Some(info) => current = Some(String::new()),
            Some(block) if fence == "```" => {
                found.push(std::mem::take(block));
                current = None;
            }
            Some(block) => {
                block.push_str(fence);
                block.push('\n');
            }
            None => {}
        }
    }
    assert!(current.is_none(), "an unclosed {info} block");
    found
}

fn type_of(text: &str) -> String {
    let value: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
    value["type"].as_str().unwrap_or_default().to_string()
}

#[test]
fn every_client_example_parses_and_every_client_type_has_one() {
    let blocks = examples("json client");
    for block in &blocks {
        if let Err(e) = parse(block) {
            panic!("the documented message {block} is refused: {e:?}");
        }
    }
    let documented: Vec<String> = blocks.iter().map(|b| type_of(b)).collect();
    for kind in ClientMessage::TYPES {
        assert!(
            documented.iter().any(|d| d == kind),
            "{kind} has no example in docs/agent-protocol.md"
        );
    }
}

#[test]
fn every_server_example_reads_back_as_written_and_every_server_type_has_one() {
    let blocks = examples("json server");
    for block in &blocks {
        let message: ServerMessage = serde_json::from_str(block)
            .unwrap_or_else(|e| panic!("the documented event {block} does not read: {e}"));
        let again: Value = serde_json::from_str(&message.to_json()).expect("JSON");
        let written: Value = serde_json::from_str(block).expect("JSON");
        assert_eq!(again, written, "written back differently");
    }
    let documented: Vec<String> = blocks.iter().map(|b| type_of(b)).collect();
    for kind in ServerMessage::TYPES {
        assert!(
            documented.iter().any(|d| d == kind),
            "{kind} has no example in docs/agent-protocol.md"
        );
    }
}

/// The refusal's message, for a message that must be refused.
fn refusal(text: &str) -> (Req, String) {
    match parse(text) {
        Err(refusal) => {
            match refusal.clone().into_error() {
                ServerMessage::Error { code, .. } => assert_eq!(code, "bad_request", "{text}"),
                other => panic!("{other:?}"),
            }
            (refusal.req, refusal.message)
        }
        Ok(other) => panic!("{text} was not refused: {other:?}"),
    }
}

#[test]
fn a_bad_field_is_refused_by_name() {
    let cases = [
        (r#"{"type":"call.answer"}"#, "call_id: missing"),
        (
            r#"{"type":"call.answer","call_id":""}"#,
            "call_id: must be a non-empty string",
        ),
        (
            r#"{"type":"call.answer","call_id":7}"#,
            "call_id: invalid type",
        ),
        (r#"{"type":"call.accept","call_id":"c1"}"#, "mode: missing"),
        (
            r#"{"type":"call.accept","call_id":"c1","mode":"both"}"#,
            "mode: unknown variant",
        ),
        (
            r#"{"type":"call.monitor","call_id":"c1","mode":"spy"}"#,
            "mode: unknown variant",
        ),
        (
            r#"{"type":"call.record","call_id":"c1","action":"erase"}"#,
            "action: unknown variant",
        ),
        (r#"{"type":"call.dtmf","call_id":"c1"}"#, "digits: missing"),
        (r#"{"type":"call.dial"}"#, "to: missing"),
        (
            r#"{"type":"call.dial","to":"+15551230001","name":5}"#,
            "name: invalid type",
        ),
        (r#"{"type":"call.transfer","call_id":"c1"}"#, "to: either"),
        (
            r#"{"type":"call.transfer","call_id":"c1","to":"agent:b","attended_call_id":"c2"}"#,
            "to: either",
        ),
        (r#"{"type":"webrtc.offer"}"#, "sdp: missing"),
        (r#"{"type":"webrtc.candidate"}"#, "candidate: missing"),
        (
            r#"{"type":"call_log.dismiss","number":""}"#,
            "number: must be",
        ),
        (r#"{"type":"call.teleport"}"#, "type: unknown message type"),
        (r#"{"type":9}"#, "type: must be a string"),
        (r#"{"req":"x"}"#, "type: missing"),
        (r#"[1,2]"#, "a message is one JSON object"),
        (r#"{"type":"#, "malformed JSON"),
    ];
    for (text, expected) in cases {
        let (_, message) = refusal(text);
        assert!(
            message.starts_with(expected),
            "{text}: {message:?} does not start with {expected:?}"
        );
    }
    let long = "n".repeat(crate::store::contacts::MAX_FIELD + 1);
    let (_, message) = refusal(&format!(
        r#"{{"type":"call.dial","to":"+15551230001","name":"{long}"}}"#
    ));
    assert!(message.starts_with("name: at most"), "{message}");
}

#[test]
fn a_refusal_answers_the_request_it_refuses() {
    let (req, _) = refusal(r#"{"type":"call.hold","req":{"n":3}}"#);
    assert_eq!(req, Some(serde_json::json!({"n": 3})));
    let wire: Value = serde_json::from_str(
        &ServerMessage::error(Some("r1".into()), "not_found", "no such call").to_json(),
    )
    .expect("JSON");
    assert_eq!(
        wire,
        serde_json::json!({"type":"error","req":"r1","code":"not_found","message":"no such call"})
    );
}

#[test]
fn requests_read_into_what_the_gateway_does() {
    let read = |text: &str| parse(text).expect("parses").message;
    assert_eq!(
        read(r#"{"type":"call.accept","call_id":"c1","mode":"end"}"#),
        ClientMessage::Call(AgentCall::Act(CallAction::Accept {
            call: "c1".into(),
            hold_active: false
        }))
    );
    assert_eq!(
        read(r#"{"type":"call.monitor","call_id":"c1","mode":"stop"}"#),
        ClientMessage::Call(AgentCall::Act(CallAction::Monitor {
            call: "c1".into(),
            mode: None
        }))
    );
    assert_eq!(
        read(r#"{"type":"call.transfer","call_id":"c1","to":"  +15551230001 "}"#),
        ClientMessage::Call(AgentCall::Transfer {
            call: "c1".into(),
            to: Some("+15551230001".into()),
            attended: None
        })
    );
    // A blank name is none, and control characters are cleaned out.
    match read(r#"{"type":"call.dial","to":"+15551230001","name":"  ","prospect_id":null}"#) {
        ClientMessage::Call(AgentCall::Dial { prospect, .. }) => {
            assert_eq!(prospect, Prospect::default())
        }
        other => panic!("{other:?}"),
    }
    // Fields a newer client adds are let be.
    assert_eq!(
        read(r#"{"type":"ping","client":"v2"}"#),
        ClientMessage::Ping
    );
}
