//! The contacts directory over HTTP (`spec/http-api.md`): `PUT`, `GET` and `DELETE
//! /v1/contacts/{number}` and `POST /v1/contacts:import` (CSV), and the webhook outbox for
//! operators (`GET /v1/webhooks/deliveries`). Admin token only. Writes go through the call
//! log's writer; an import is written whole or not at all.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::calls::{database_error, time};
use super::{require_admin, ApiError};
use crate::app::AppHandle;
use crate::store::contacts::{Contact, MAX_FIELD};
use crate::store::{self, ContactChange, StoreOp};

/// Rows one import takes at most (a bigger directory goes in several).
pub const MAX_IMPORT_ROWS: usize = 100_000;

fn bad(message: String) -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        code: "bad_request".into(),
        message,
    }
}

fn no_contact(number: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("no contact {number}"),
    )
}

/// Run a read of the call-log database off the async workers.
async fn read<T: Send + 'static>(
    handle: &AppHandle,
    f: impl FnOnce(&mut store::db::Db) -> Result<T, store::StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let names = std::sync::Arc::clone(&handle.names);
    tokio::task::spawn_blocking(move || names.read(f))
        .await
        .map_err(database_error)?
        .ok_or_else(|| database_error("call log unreadable"))
}

fn contact_json(c: &Contact) -> Value {
    json!({"number": c.number, "name": c.name, "prospect_id": c.prospect_id,
           "updated_at": time(Some(c.updated_at))})
}

fn number_of(handle: &AppHandle, given: &str) -> Result<String, ApiError> {
    store::contacts::normalise(given, handle.names.country_code())
        .map_err(|why| bad(format!("number: {why}")))
}

/// A name or id as kept: no control characters, not blank, not too long.
fn text_field(field: &str, value: &str, required: bool) -> Result<Option<String>, String> {
    if value.chars().count() > MAX_FIELD {
        return Err(format!("{field}: at most {MAX_FIELD} characters"));
    }
    let clean = crate::names::clean(value);
    if clean.is_empty() {
        return if required {
            Err(format!("{field}: must not be empty"))
        } else {
            Ok(None)
        };
    }
    Ok(Some(clean))
}

async fn change(handle: &AppHandle, change: ContactChange) -> Result<bool, ApiError> {
    if matches!(change, ContactChange::Put(_)) {
        // Before the write: a call arriving meanwhile looks the number up rather than not.
        handle.names.directory_written();
    }
    let Some(writer) = handle.store.upgrade() else {
        return Err(super::stopping());
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    if writer
        .send(StoreOp::Contacts { change, reply })
        .await
        .is_err()
    {
        return Err(super::stopping());
    }
    match answer.await {
        Ok(Ok(changed)) => Ok(changed),
        Ok(Err(e)) => Err(database_error(e)),
        Err(_) => Err(super::stopping()),
    }
}

pub async fn put(
    State(handle): State<AppHandle>,
    headers: HeaderMap,
    Path(number): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let result = async {
        require_admin(&handle, &headers)?;
        let number = number_of(&handle, &number)?;
        let body: Value =
            serde_json::from_slice(&body).map_err(|e| bad(format!("body: not JSON: {e}")))?;
        let Value::Object(map) = &body else {
            return Err(bad("body: must be a JSON object".into()));
        };
        if let Some(unknown) = map
            .keys()
            .find(|k| !["name", "prospect_id"].contains(&k.as_str()))
        {
            return Err(bad(format!("{unknown}: unknown field")));
        }
        let name = match map.get("name") {
            Some(Value::String(s)) => text_field("name", s, true).map_err(bad)?,
            Some(_) => return Err(bad("name: must be a string".into())),
            None => return Err(bad("name: required".into())),
        };
        let prospect_id = match map.get("prospect_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => text_field("prospect_id", s, false).map_err(bad)?,
            Some(_) => return Err(bad("prospect_id: must be a string".into())),
        };
        let contact = Contact {
            number,
            name: name.unwrap_or_default(),
            prospect_id,
            updated_at: store::millis(std::time::SystemTime::now()),
        };
        change(&handle, ContactChange::Put(vec![contact.clone()])).await?;
        Ok(Json(contact_json(&contact)).into_response())
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

pub async fn get(
    State(handle): State<AppHandle>,
    headers: HeaderMap,
    Path(number): Path<String>,
) -> Response {
    let result = async {
        require_admin(&handle, &headers)?;
        let number = number_of(&handle, &number)?;
        let wanted = number.clone();
        match read(&handle, move |c| store::contacts::get(c, &wanted)).await? {
            Some(c) => Ok(Json(contact_json(&c)).into_response()),
            None => Err(no_contact(&number)),
        }
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

pub async fn delete(
    State(handle): State<AppHandle>,
    headers: HeaderMap,
    Path(number): Path<String>,
) -> Response {
    let result = async {
        require_admin(&handle, &headers)?;
        let number = number_of(&handle, &number)?;
        if change(&handle, ContactChange::Delete(number.clone())).await? {
            Ok(StatusCode::NO_CONTENT.into_response())
        } else {
            Err(no_contact(&number))
        }
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

/// Split one CSV line (RFC 4180 quoting: `"Doe, Jane"`, `""` for a quote).
fn csv_fields(line: &str) -> Result<Vec<String>, &'static str> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (false, '"') if at_start => {
                quoted = true;
                at_start = false;
            }
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => {
                quoted = false;
                if !matches!(chars.peek(), None | Some(',')) {
                    return Err("text after a closing quote");
                }
            }
            (false, ',') => {
                fields.push(std::mem::take(&mut field));
                at_start = true;
            }
            (_, c) => {
                field.push(c);
                at_start = false;
            }
        }
    }
    if quoted {
        return Err("unclosed quote");
    }
    fields.push(field);
    Ok(fields)
}

/// The rows of an import, or the first bad one named by its line. Pure, and never panics on
/// any text (`fuzz/fuzz_targets/contacts_import.rs`).
pub fn parse_import(
    text: &str,
    country_code: Option<&str>,
    now: i64,
) -> Result<Vec<Contact>, String> {
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let fields = csv_fields(line).map_err(|e| format!("line {line_no}: {e}"))?;
        if i == 0 && fields[0].trim().eq_ignore_ascii_case("number") {
            continue;
        }
        if !(2..=3).contains(&fields.len()) {
            return Err(format!(
                "line {line_no}: expected number,name[,prospect_id], got {} fields",
                fields.len()
            ));
        }
        let number = store::contacts::normalise(&fields[0], country_code)
            .map_err(|why| format!("line {line_no}: number: {why}"))?;
        let name = text_field("name", &fields[1], true)
            .map_err(|e| format!("line {line_no}: {e}"))?
            .unwrap_or_default();
        let prospect_id = match fields.get(2) {
            Some(id) => {
                text_field("prospect_id", id, false).map_err(|e| format!("line {line_no}: {e}"))?
            }
            None => None,
        };
        rows.push(Contact {
            number,
            name,
            prospect_id,
            updated_at: now,
        });
        if rows.len() > MAX_IMPORT_ROWS {
            return Err(format!("body: at most {MAX_IMPORT_ROWS} rows per import"));
        }
    }
    if rows.is_empty() {
        return Err("body: no rows".into());
    }
    Ok(rows)
}

pub async fn import(
    State(handle): State<AppHandle>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let result = async {
        require_admin(&handle, &headers)?;
        let text = std::str::from_utf8(&body).map_err(|_| bad("body: not UTF-8 text".into()))?;
        let now = store::millis(std::time::SystemTime::now());
        let rows = parse_import(text, handle.names.country_code(), now).map_err(bad)?;
        let n = rows.len();
        change(&handle, ContactChange::Put(rows)).await?;
        Ok::<Response, ApiError>(Json(json!({"imported": n})).into_response())
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Debug, serde::Deserialize)]
pub struct DeliveryParams {
    status: Option<String>,
    limit: Option<String>,
    after: Option<String>,
}

/// `GET /v1/webhooks/deliveries?status=pending,failed&limit=100&after=<id>`.
pub async fn deliveries(
    State(handle): State<AppHandle>,
    headers: HeaderMap,
    Query(params): Query<DeliveryParams>,
) -> Response {
    let result = async {
        require_admin(&handle, &headers)?;
        let mut statuses = Vec::new();
        for s in params
            .status
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
        {
            match s {
                "" => {}
                "pending" | "failed" | "delivered" => statuses.push(s.to_string()),
                other => {
                    return Err(bad(format!(
                        "status: {other:?} is not pending, failed or delivered"
                    )))
                }
            }
        }
        let limit = match params.limit.as_deref() {
            None => 100,
            Some(l) => match l.parse::<usize>() {
                Ok(n) if (1..=1000).contains(&n) => n,
                _ => return Err(bad("limit: a number from 1 to 1000".into())),
            },
        };
        let after = match params.after.as_deref() {
            None => None,
            Some(a) => Some(
                a.parse::<i64>()
                    .map_err(|_| bad("after: a delivery id".into()))?,
            ),
        };
        let rows = read(&handle, move |c| {
            store::outbox::deliveries(c, &statuses, after, limit)
        })
        .await?;
        let next = (rows.len() == limit)
            .then(|| rows.last().map(|d| d.id))
            .flatten();
        let list: Vec<Value> = rows
            .iter()
            .map(|d| {
                json!({
                    "id": d.id,
                    "event_id": d.event_id,
                    "event": d.event_type,
                    "webhook": d.webhook,
                    "call_id": d.call_id,
                    "status": d.status,
                    "attempts": d.attempts,
                    "created_at": time(Some(d.created_at)),
                    "next_attempt_at": (d.status == "pending").then(|| time(Some(d.next_attempt_at))),
                    "last_error": d.last_error,
                    "delivered_at": time(d.delivered_at),
                })
            })
            .collect();
        Ok(Json(json!({"deliveries": list, "next": next})).into_response())
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_are_read_with_quotes_and_a_header() {
        let text = "number,name,prospect_id\r\n+15551230001,\"Doe, Jane\",crm-1\n\n0015551230002,\"Say \"\"Hi\"\"\"\n";
        let rows = parse_import(text, None, 7).expect("rows");
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].name.as_str(), rows[0].prospect_id.as_deref()),
            ("Doe, Jane", Some("crm-1"))
        );
        assert_eq!(
            (rows[1].number.as_str(), rows[1].name.as_str()),
            ("+15551230002", "Say \"Hi\"")
        );
    }

    #[test]
    fn a_bad_row_is_named_by_its_line() {
        for (text, want) in [
            ("+15551230001,Ann\nnot-a-number,Bob\n", "line 2: number"),
            ("+15551230001\n", "line 1: expected"),
            ("+15551230001,\n", "line 1: name: must not be empty"),
            ("+15551230001,\"Ann\n", "line 1: unclosed quote"),
            ("", "body: no rows"),
        ] {
            let e = parse_import(text, None, 0).expect_err(text);
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
    }
}
