//! `GET /v1/calls/{call_id}/recording`: a call's WAV, whole or a byte range (RFC 9110 §14),
//! streamed from disk in chunks so an hour-long file never sits in memory. While the call is
//! still recorded the file grows; a request gets it as long as it was when the request came.
//! Who may fetch it is who may see the call.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::calls::{database_error, time, viewer, Viewer};
use super::ApiError;
use crate::app::AppHandle;
use crate::store::{self, CallRecord, RecordingSegment};

const CHUNK: usize = 64 * 1024;
const WAV_HEADER: u64 = 44;

/// What a `Range` header asks of a file of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Wanted {
    Whole,
    /// Inclusive byte positions.
    Part(u64, u64),
    Unsatisfiable,
}

/// One `bytes=` range; several ranges, other units or a malformed header get the whole file
/// (a server may ignore a Range it does not serve, RFC 9110 §14.2).
pub fn wanted(range: Option<&str>, len: u64) -> Wanted {
    let Some(spec) = range.and_then(|r| r.trim().strip_prefix("bytes=")) else {
        return Wanted::Whole;
    };
    if spec.contains(',') {
        return Wanted::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Wanted::Whole;
    };
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.trim().is_empty(), number(first), number(last)) {
        // bytes=-N: the last N bytes.
        (true, _, Some(n)) => {
            if n == 0 || len == 0 {
                Wanted::Unsatisfiable
            } else {
                Wanted::Part(len.saturating_sub(n), len - 1)
            }
        }
        (false, Some(start), end) if last.trim().is_empty() || end.is_some() => {
            if start >= len {
                return Wanted::Unsatisfiable;
            }
            let end = end.map_or(len - 1, |e| e.min(len - 1));
            if end < start {
                Wanted::Whole // first-pos after last-pos: invalid, ignored
            } else {
                Wanted::Part(start, end)
            }
        }
        _ => Wanted::Whole,
    }
}

fn not_found(message: &str) -> Response {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", message).into_response()
}

/// The call, if this viewer may see it.
async fn visible_call(
    handle: &AppHandle,
    headers: &HeaderMap,
    call_id: &str,
) -> Result<CallRecord, Response> {
    let viewer = viewer(handle, headers).map_err(IntoResponse::into_response)?;
    let call_log = std::sync::Arc::clone(&handle.call_log);
    let id = call_id.to_string();
    let found = tokio::task::spawn_blocking(move || call_log.read(|db| store::call(db, &id))).await;
    let call = match found {
        Ok(Ok(Some(call))) => call,
        Ok(Ok(None)) => return Err(not_found(&format!("no call {call_id}"))),
        Ok(Err(e)) => return Err(database_error(e).into_response()),
        Err(e) => return Err(database_error(e).into_response()),
    };
    if let Viewer::Agent(me) = &viewer {
        if call.agent_id.as_deref() != Some(me.as_str()) {
            return Err(
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", "another agent's call")
                    .into_response(),
            );
        }
    }
    Ok(call)
}

pub async fn serve(
    State(handle): State<AppHandle>,
    headers: HeaderMap,
    Path(call_id): Path<String>,
) -> Response {
    let call = match visible_call(&handle, &headers, &call_id).await {
        Ok(c) => c,
        Err(response) => return response,
    };
    let Some(path) = call.recording_path else {
        return not_found("this call has no recording");
    };
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(call = %call_id, %path, error = %e, "recording file missing");
            return not_found("the recording file is missing");
        }
    };
    let len = match file.metadata().await {
        Ok(m) => m.len(),
        Err(e) => return database_error(e).into_response(),
    };
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, end) = match wanted(range, len) {
        Wanted::Whole => (StatusCode::OK, 0, len),
        Wanted::Part(first, last) => (StatusCode::PARTIAL_CONTENT, first, last + 1),
        Wanted::Unsatisfiable => {
            let mut response = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                &format!("the recording has {len} bytes"),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return response;
        }
    };
    if start > 0 && file.seek(std::io::SeekFrom::Start(start)).await.is_err() {
        return not_found("the recording file is unreadable");
    }
    let body = Body::from_stream(futures_util::stream::unfold(
        (file, end - start),
        |(mut file, left)| async move {
            if left == 0 {
                return None;
            }
            let mut chunk = vec![0u8; (left as usize).min(CHUNK)];
            match file.read(&mut chunk).await {
                Ok(0) => None,
                Ok(n) => {
                    chunk.truncate(n);
                    Some((Ok::<_, std::io::Error>(chunk), (file, left - n as u64)))
                }
                Err(e) => Some((Err(e), (file, 0))),
            }
        },
    ));
    let mut response = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "audio/wav")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_LENGTH, end - start)
        .header(header::CACHE_CONTROL, "no-store")
        .header(
            header::CONTENT_DISPOSITION,
            format!("inline; filename=\"{}.wav\"", call.id.replace('"', "")),
        );
    if status == StatusCode::PARTIAL_CONTENT {
        response = response.header(
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{len}", start, end - 1),
        );
    }
    response
        .body(body)
        .unwrap_or_else(|e| database_error(e).into_response())
}

/// `recording_info` of `GET /v1/calls/{id}`: where to fetch it, its format and length as
/// the file says, and each recorded segment with its place in the file.
pub async fn info(call: &CallRecord, segments: &[RecordingSegment]) -> Value {
    let Some(path) = &call.recording_path else {
        return Value::Null;
    };
    let mut format = Value::Null;
    if let Ok(mut file) = tokio::fs::File::open(path).await {
        let mut h = [0u8; WAV_HEADER as usize];
        let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
        if file.read_exact(&mut h).await.is_ok() && &h[0..4] == b"RIFF" {
            let channels = u16::from_le_bytes([h[22], h[23]]).max(1);
            let rate = u32::from_le_bytes([h[24], h[25], h[26], h[27]]).max(1);
            let bytes_per_second = u64::from(channels) * 2 * u64::from(rate);
            format = json!({
                "channels": channels,
                "sample_rate": rate,
                "bytes": len,
                "duration_ms": len.saturating_sub(WAV_HEADER) * 1000 / bytes_per_second,
            });
        }
    }
    json!({
        "url": format!("/v1/calls/{}/recording", call.id),
        "file": format,
        "segments": segments.iter().map(|s| json!({
            "from": time(Some(s.started_at)),
            "to": time(s.ended_at),
            "offset_ms": s.offset_ms,
            "duration_ms": s.duration_ms,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_as_rfc_9110_reads_them() {
        assert_eq!(wanted(None, 100), Wanted::Whole);
        assert_eq!(wanted(Some("bytes=0-9"), 100), Wanted::Part(0, 9));
        assert_eq!(wanted(Some("bytes=90-"), 100), Wanted::Part(90, 99));
        assert_eq!(wanted(Some("bytes=90-500"), 100), Wanted::Part(90, 99));
        assert_eq!(wanted(Some("bytes=-10"), 100), Wanted::Part(90, 99));
        assert_eq!(wanted(Some("bytes=-500"), 100), Wanted::Part(0, 99));
        assert_eq!(wanted(Some("bytes=100-"), 100), Wanted::Unsatisfiable);
        assert_eq!(wanted(Some("bytes=-0"), 100), Wanted::Unsatisfiable);
        assert_eq!(wanted(Some("bytes=0-1,5-6"), 100), Wanted::Whole);
        assert_eq!(wanted(Some("bytes=9-3"), 100), Wanted::Whole);
        assert_eq!(wanted(Some("items=0-3"), 100), Wanted::Whole);
        assert_eq!(wanted(Some("bytes=x-3"), 100), Wanted::Whole);
        assert_eq!(wanted(Some("bytes=+1-3"), 100), Wanted::Whole);
        assert_eq!(wanted(Some("bytes="), 100), Wanted::Whole);
        assert_eq!(wanted(Some("bytes=0-"), 0), Wanted::Unsatisfiable);
    }
}
