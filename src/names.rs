//! Who a number is: the contacts directory (in the call log's database) and the operator's
//! CRM lookup (`[lookup] url`), with a cache. An inbound call asks before its agent is
//! told of it, and never waits longer than the lookup's timeout: the CRM's name wins over
//! the directory's, which wins over the SIP display name the call came with.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::LookupConfig;
use crate::controller::Prospect;
use crate::store::contacts::{self, Contact};

/// Numbers the lookup cache holds at most; past it, expired answers go first, then all.
const CACHE_CAPACITY: usize = 10_000;
/// Largest lookup answer read.
const MAX_LOOKUP_BODY: usize = 16 * 1024;

pub struct Names {
    country_code: Option<String>,
    lookup: Option<LookupConfig>,
    /// Read connections to the directory (the call log's).
    readers: Arc<crate::store::Readers>,
    /// The CRM's answers by number, with when they expire (`None`: it knows no name).
    cache: Mutex<HashMap<String, (Option<Prospect>, Instant)>>,
    /// Whether the directory may hold an entry: while it is empty and no lookup is
    /// configured, calls are not held up for names at all (no task, no read).
    directory_used: std::sync::atomic::AtomicBool,
}

impl Names {
    /// Blocking (it asks the directory whether it holds anything): call from a blocking
    /// thread.
    pub fn new(
        readers: Arc<crate::store::Readers>,
        country_code: Option<String>,
        lookup: Option<LookupConfig>,
    ) -> Names {
        let names = Names {
            country_code,
            lookup,
            readers,
            cache: Mutex::new(HashMap::new()),
            directory_used: std::sync::atomic::AtomicBool::new(true),
        };
        let any = names.read(|db| {
            Ok(db
                .query_one("SELECT 1 FROM contacts LIMIT 1", &[], |r| r.get::<i64>(0))?
                .is_some())
        });
        if any == Some(false) {
            names
                .directory_used
                .store(false, std::sync::atomic::Ordering::Relaxed);
        }
        names
    }

    /// Whether an inbound call can get a name beyond its SIP display name.
    pub fn in_use(&self) -> bool {
        self.lookup.is_some()
            || self
                .directory_used
                .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// An entry was written to the directory.
    pub fn directory_written(&self) {
        self.directory_used
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The number in the directory's form, if it is a number at all.
    pub fn normalise(&self, number: &str) -> Option<String> {
        contacts::normalise(number, self.country_code.as_deref()).ok()
    }

    pub fn country_code(&self) -> Option<&str> {
        self.country_code.as_deref()
    }

    /// The directory's entry for a number (any form `normalise` takes).
    pub async fn directory(self: &Arc<Self>, number: &str) -> Option<Contact> {
        let number = self.normalise(number)?;
        let names = Arc::clone(self);
        tokio::task::spawn_blocking(move || names.read(|conn| contacts::get(conn, &number)))
            .await
            .ok()
            .flatten()
            .flatten()
    }

    /// Run `f` on a pooled read connection; `None` when the database cannot be read.
    pub fn read<T>(
        &self,
        f: impl FnOnce(&mut crate::store::db::Db) -> Result<T, crate::store::StoreError>,
    ) -> Option<T> {
        match self.readers.read(f) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(error = %e, "contacts directory unreadable");
                None
            }
        }
    }

    /// The prospect behind an inbound call's number: the CRM's answer if it gives one in
    /// time, else the directory's, else nothing (the call keeps its SIP display name).
    /// Returns within the lookup's timeout whatever the CRM does.
    pub async fn inbound(self: &Arc<Self>, number: &str) -> Prospect {
        // Anonymous and malformed callers are nobody's contact, and the CRM is not asked.
        if self.normalise(number).is_none() {
            return Prospect::default();
        }
        let from_directory = async {
            self.directory(number).await.map(|c| Prospect {
                name: Some(c.name),
                id: c.prospect_id,
            })
        };
        let Some(lookup) = &self.lookup else {
            return from_directory.await.unwrap_or_default();
        };
        let budget = Duration::from_millis(lookup.timeout_ms);
        let crm = tokio::time::timeout(budget, self.crm(lookup, number));
        let (directory, crm) = tokio::join!(tokio::time::timeout(budget, from_directory), crm);
        match crm {
            Ok(Some(p)) => p,
            Ok(None) => directory.ok().flatten().unwrap_or_default(),
            Err(_) => {
                tracing::warn!(%number, timeout_ms = lookup.timeout_ms, "CRM lookup timed out");
                directory.ok().flatten().unwrap_or_default()
            }
        }
    }

    /// The CRM's answer, from the cache when it is fresh.
    async fn crm(&self, lookup: &LookupConfig, number: &str) -> Option<Prospect> {
        let key = self.normalise(number)?;
        if let Some(hit) = self.cached(&key) {
            return hit;
        }
        let url = lookup_url(&lookup.url, &key);
        let mut headers = vec![("accept", "application/json".to_string())];
        if let Some(token) = &lookup.bearer_token {
            headers.push(("authorization", format!("Bearer {token}")));
        }
        let answer = crate::http_client::request(
            "GET",
            &url,
            &headers,
            Vec::new(),
            Duration::from_millis(lookup.timeout_ms),
            MAX_LOOKUP_BODY,
        )
        .await;
        let found = match answer {
            Ok(r) if r.status == 200 => match parse_answer(&r.body) {
                Some(p) => Some(p),
                None => {
                    tracing::warn!(%number, "CRM lookup answered without a usable name");
                    return None;
                }
            },
            // The CRM does not know the number: remembered like a name.
            Ok(r) if r.status == 404 => None,
            Ok(r) => {
                tracing::warn!(%number, status = r.status, "CRM lookup failed");
                return None;
            }
            Err(e) => {
                tracing::warn!(%number, error = %e, "CRM lookup failed");
                return None;
            }
        };
        self.remember(
            key,
            found.clone(),
            Duration::from_secs(lookup.cache_seconds),
        );
        found
    }

    fn cached(&self, key: &str) -> Option<Option<Prospect>> {
        let cache = self.cache.lock().ok()?;
        let (answer, expires) = cache.get(key)?;
        (*expires > Instant::now()).then(|| answer.clone())
    }

    fn remember(&self, key: String, answer: Option<Prospect>, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        let now = Instant::now();
        if cache.len() >= CACHE_CAPACITY {
            cache.retain(|_, (_, expires)| *expires > now);
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
        }
        cache.insert(key, (answer, now + ttl));
    }
}

/// The lookup's address for a number: `{number}` in the URL is replaced by it (escaped);
/// without one, `number=` is added to the query.
fn lookup_url(template: &str, number: &str) -> String {
    let escaped: String = number
        .bytes()
        .map(|b| match b {
            b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    if template.contains("{number}") {
        template.replace("{number}", &escaped)
    } else if template.contains('?') {
        format!("{template}&number={escaped}")
    } else {
        format!("{template}?number={escaped}")
    }
}

/// `{"name": "...", "prospect_id": "..."}`; a missing or empty name is no answer.
fn parse_answer(body: &[u8]) -> Option<Prospect> {
    #[derive(serde::Deserialize)]
    struct Answer {
        name: Option<String>,
        prospect_id: Option<serde_json::Value>,
    }
    let a: Answer = serde_json::from_slice(body).ok()?;
    let name = a.name.map(|n| clean(&n)).filter(|n| !n.is_empty())?;
    let id = a.prospect_id.and_then(|v| match v {
        serde_json::Value::String(s) => Some(clean(&s)),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    });
    Some(Prospect {
        name: Some(name),
        id: id.filter(|s| !s.is_empty()),
    })
}

/// A name as the gateway keeps it: no control characters, at most `MAX_FIELD` characters.
pub fn clean(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(contacts::MAX_FIELD)
        .collect::<String>()
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_number_goes_into_the_lookup_url_escaped() {
        assert_eq!(
            lookup_url("http://crm/lookup", "+15551230001"),
            "http://crm/lookup?number=%2B15551230001"
        );
        assert_eq!(
            lookup_url("http://crm/l?key=1", "+1"),
            "http://crm/l?key=1&number=%2B1"
        );
        assert_eq!(
            lookup_url("http://crm/people/{number}", "+1"),
            "http://crm/people/%2B1"
        );
    }

    #[test]
    fn answers_without_a_name_are_none_and_names_are_cleaned() {
        assert_eq!(parse_answer(b"{}"), None);
        assert_eq!(parse_answer(b"{\"name\":\"  \"}"), None);
        assert_eq!(parse_answer(b"not json"), None);
        assert_eq!(
            parse_answer(b"{\"name\":\"Ann\\u0007 Lee\",\"prospect_id\":42}"),
            Some(Prospect {
                name: Some("Ann Lee".into()),
                id: Some("42".into())
            })
        );
    }
}
