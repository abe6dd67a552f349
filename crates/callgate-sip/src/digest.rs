//! HTTP digest authentication as SIP uses it (RFC 3261 §22, RFC 2617, RFC 7616): parsing and
//! printing challenges and credentials, answering a challenge (client side), checking
//! credentials and issuing stateless nonces (server side).
//!
//! Owns only the header values and the hashing. It must not touch SIP messages, sockets, the
//! clock or randomness: callers pass the time, the cnonce and the nonce secret, and decide
//! which header (WWW-/Proxy-Authenticate, Authorization/Proxy-Authorization) carries a value.
//! Nonce counts are not tracked here (nonces are stateless), so replay within a nonce's
//! lifetime is bounded only by the caller's `max_age_secs`.

use md5::Md5;
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DigestError {
    #[error("not a Digest header")]
    NotDigest,
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("unsupported algorithm {0}")]
    Algorithm(String),
    #[error("unterminated quoted value")]
    Unterminated,
    #[error("nonce count {0:?} is not 8 hex digits")]
    BadNonceCount(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Md5Sess,
    Sha256,
    Sha256Sess,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
        }
    }

    /// Case-insensitive, as RFC 7616 §3.3 asks of algorithm names.
    pub fn parse(s: &str) -> Result<Algorithm, DigestError> {
        match s.to_ascii_uppercase().as_str() {
            "MD5" => Ok(Algorithm::Md5),
            "MD5-SESS" => Ok(Algorithm::Md5Sess),
            "SHA-256" => Ok(Algorithm::Sha256),
            "SHA-256-SESS" => Ok(Algorithm::Sha256Sess),
            _ => Err(DigestError::Algorithm(s.to_string())),
        }
    }

    fn hash(self, data: &str) -> String {
        let bytes: Vec<u8> = match self {
            Algorithm::Md5 | Algorithm::Md5Sess => Md5::digest(data.as_bytes()).to_vec(),
            Algorithm::Sha256 | Algorithm::Sha256Sess => Sha256::digest(data.as_bytes()).to_vec(),
        };
        hex(&bytes)
    }

    fn hash_bytes(self, data: &[u8]) -> String {
        let bytes: Vec<u8> = match self {
            Algorithm::Md5 | Algorithm::Md5Sess => Md5::digest(data).to_vec(),
            Algorithm::Sha256 | Algorithm::Sha256Sess => Sha256::digest(data).to_vec(),
        };
        hex(&bytes)
    }

    fn is_session(self) -> bool {
        matches!(self, Algorithm::Md5Sess | Algorithm::Sha256Sess)
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `name=value` and `name="quoted, value"` pairs after the scheme, names lowercased. A name
/// without `=` gets an empty value; the first of repeated names wins in `find`.
fn params(value: &str) -> Result<Vec<(String, String)>, DigestError> {
    let rest = value.trim_start();
    let (scheme, rest) = rest.split_at(rest.find(char::is_whitespace).unwrap_or(rest.len()));
    if !scheme.eq_ignore_ascii_case("Digest") {
        return Err(DigestError::NotDigest);
    }
    let mut out = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' || c.is_whitespace() {
                break;
            }
            name.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut val = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            if chars.peek() == Some(&'"') {
                chars.next();
                let mut closed = false;
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                val.push(n);
                            }
                        }
                        '"' => {
                            closed = true;
                            break;
                        }
                        c => val.push(c),
                    }
                }
                if !closed {
                    return Err(DigestError::Unterminated);
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' || c.is_whitespace() {
                        break;
                    }
                    val.push(c);
                    chars.next();
                }
            }
        }
        out.push((name.to_ascii_lowercase(), val));
    }
    Ok(out)
}

fn find<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A quoted-string. CR and LF are dropped: no value may split the header it is printed into.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars().filter(|c| *c != '\r' && *c != '\n') {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn parse_algorithm(p: &[(String, String)]) -> Result<Algorithm, DigestError> {
    // Absent means MD5 (RFC 2617 §3.2.1).
    find(p, "algorithm")
        .map(Algorithm::parse)
        .transpose()
        .map(|a| a.unwrap_or(Algorithm::Md5))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: Algorithm,
    pub qop: Vec<String>,
    pub stale: bool,
    pub domain: Option<String>,
}

impl Challenge {
    /// Parses a WWW-Authenticate / Proxy-Authenticate value: `Digest` then parameters in any
    /// order, quoted or not, names case-insensitive, unknown ones ignored.
    pub fn parse(value: &str) -> Result<Challenge, DigestError> {
        let p = params(value)?;
        Ok(Challenge {
            realm: find(&p, "realm")
                .ok_or(DigestError::Missing("realm"))?
                .to_string(),
            nonce: find(&p, "nonce")
                .ok_or(DigestError::Missing("nonce"))?
                .to_string(),
            opaque: find(&p, "opaque").map(str::to_string),
            algorithm: parse_algorithm(&p)?,
            qop: find(&p, "qop")
                .map(|q| {
                    q.split(',')
                        .map(|t| t.trim().to_ascii_lowercase())
                        .filter(|t| !t.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            stale: find(&p, "stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
            domain: find(&p, "domain").map(str::to_string),
        })
    }
}

/// The header value for WWW-Authenticate / Proxy-Authenticate.
impl std::fmt::Display for Challenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Digest realm={}, nonce={}",
            quote(&self.realm),
            quote(&self.nonce)
        )?;
        if let Some(o) = &self.opaque {
            write!(f, ", opaque={}", quote(o))?;
        }
        if let Some(d) = &self.domain {
            write!(f, ", domain={}", quote(d))?;
        }
        write!(f, ", algorithm={}", self.algorithm.as_str())?;
        if !self.qop.is_empty() {
            write!(f, ", qop={}", quote(&self.qop.join(",")))?;
        }
        if self.stale {
            write!(f, ", stale=true")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Algorithm,
    pub cnonce: Option<String>,
    pub nc: Option<String>,
    pub qop: Option<String>,
    pub opaque: Option<String>,
}

impl Authorization {
    /// Parses an Authorization / Proxy-Authorization value. With `qop`, `cnonce` and `nc` are
    /// required (RFC 2617 §3.2.2) and `nc` must be 8 hex digits.
    pub fn parse(value: &str) -> Result<Authorization, DigestError> {
        let p = params(value)?;
        let get = |n: &'static str| {
            find(&p, n)
                .map(str::to_string)
                .ok_or(DigestError::Missing(n))
        };
        let username = get("username")?;
        let realm = get("realm")?;
        let nonce = get("nonce")?;
        let uri = get("uri")?;
        let response = get("response")?;
        let qop = find(&p, "qop").map(str::to_string);
        let (cnonce, nc) = if qop.is_some() {
            (Some(get("cnonce")?), Some(get("nc")?))
        } else {
            (
                find(&p, "cnonce").map(str::to_string),
                find(&p, "nc").map(str::to_string),
            )
        };
        if let Some(nc) = &nc {
            if nc.len() != 8 || !nc.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(DigestError::BadNonceCount(nc.clone()));
            }
        }
        Ok(Authorization {
            username,
            realm,
            nonce,
            uri,
            response,
            algorithm: parse_algorithm(&p)?,
            cnonce,
            nc,
            qop,
            opaque: find(&p, "opaque").map(str::to_string),
        })
    }
}

/// The header value for Authorization / Proxy-Authorization. `qop` and `nc` are tokens and go
/// unquoted, as RFC 2617 and RFC 3261 §25.1 write them.
impl std::fmt::Display for Authorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Digest username={}, realm={}, nonce={}, uri={}, response={}, algorithm={}",
            quote(&self.username),
            quote(&self.realm),
            quote(&self.nonce),
            quote(&self.uri),
            quote(&self.response),
            self.algorithm.as_str()
        )?;
        if let Some(o) = &self.opaque {
            write!(f, ", opaque={}", quote(o))?;
        }
        if let Some(qop) = &self.qop {
            write!(f, ", qop={}", token(qop))?;
        }
        if let Some(cnonce) = &self.cnonce {
            write!(f, ", cnonce={}", quote(cnonce))?;
        }
        if let Some(nc) = &self.nc {
            write!(f, ", nc={}", token(nc))?;
        }
        Ok(())
    }
}

/// A value printed unquoted; anything that could end the parameter or the header is dropped.
fn token(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic() && !matches!(c, ',' | '"' | '\\' | ';'))
        .collect()
}

/// The response hash (RFC 7616 §3.4.1, which for MD5 is RFC 2617 §3.2.2.1).
#[allow(clippy::too_many_arguments)]
fn compute(
    algorithm: Algorithm,
    username: &str,
    realm: &str,
    password: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    qop: Option<&str>,
    cnonce: &str,
    nc: &str,
    body: &[u8],
) -> String {
    let mut ha1 = algorithm.hash(&format!("{username}:{realm}:{password}"));
    if algorithm.is_session() {
        ha1 = algorithm.hash(&format!("{ha1}:{nonce}:{cnonce}"));
    }
    let ha2 = match qop {
        Some("auth-int") => {
            algorithm.hash(&format!("{method}:{uri}:{}", algorithm.hash_bytes(body)))
        }
        _ => algorithm.hash(&format!("{method}:{uri}")),
    };
    match qop {
        Some(q) => algorithm.hash(&format!("{ha1}:{nonce}:{nc}:{cnonce}:{q}:{ha2}")),
        None => algorithm.hash(&format!("{ha1}:{nonce}:{ha2}")),
    }
}

/// Client side: answer a challenge. Uses qop=auth when offered, auth-int (hashing `body`)
/// only when it is the sole choice, and the RFC 2069 form without qop when neither is
/// offered. `nc` is printed as 8 hex digits; `cnonce` should be fresh and random.
#[allow(clippy::too_many_arguments)]
pub fn respond(
    challenge: &Challenge,
    method: &str,
    uri: &str,
    username: &str,
    password: &str,
    cnonce: &str,
    nc: u32,
    body: &[u8],
) -> Authorization {
    let qop = if challenge.qop.iter().any(|q| q == "auth") {
        Some("auth".to_string())
    } else if challenge.qop.iter().any(|q| q == "auth-int") {
        Some("auth-int".to_string())
    } else {
        None
    };
    let nc = format!("{nc:08x}");
    let response = compute(
        challenge.algorithm,
        username,
        &challenge.realm,
        password,
        method,
        uri,
        &challenge.nonce,
        qop.as_deref(),
        cnonce,
        &nc,
        body,
    );
    Authorization {
        username: username.to_string(),
        realm: challenge.realm.clone(),
        nonce: challenge.nonce.clone(),
        uri: uri.to_string(),
        response,
        algorithm: challenge.algorithm,
        cnonce: qop.as_ref().map(|_| cnonce.to_string()),
        nc: qop.as_ref().map(|_| nc),
        qop,
        opaque: challenge.opaque.clone(),
    }
}

/// Server side: are these credentials right for `password`? The comparison of the hex is
/// constant-time. Checks only the response: the caller checks the nonce (`NonceIssuer`), the
/// realm and the username. An unknown qop, or qop without cnonce and nc, is rejected.
pub fn verify(auth: &Authorization, method: &str, password: &str, body: &[u8]) -> bool {
    match auth.qop.as_deref() {
        None => {}
        Some("auth" | "auth-int") if auth.cnonce.is_some() && auth.nc.is_some() => {}
        Some(_) => return false,
    }
    let expected = compute(
        auth.algorithm,
        &auth.username,
        &auth.realm,
        password,
        method,
        &auth.uri,
        &auth.nonce,
        auth.qop.as_deref(),
        auth.cnonce.as_deref().unwrap_or(""),
        auth.nc.as_deref().unwrap_or(""),
        body,
    );
    constant_time_eq(
        expected.as_bytes(),
        auth.response.to_ascii_lowercase().as_bytes(),
    )
}

/// Equality whose time depends on the length only, so an attacker cannot learn a correct
/// prefix from response times.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// HMAC-SHA-256 (RFC 2104) with a 32-byte key, which fits one block without hashing.
fn hmac_sha256(key: &[u8; 32], message: &[&[u8]]) -> [u8; 32] {
    let mut ipad = [0x36u8; 64];
    let mut opad = [0x5cu8; 64];
    for (i, k) in key.iter().enumerate() {
        ipad[i] ^= k;
        opad[i] ^= k;
    }
    let mut inner = Sha256::new();
    inner.update(ipad);
    for part in message {
        inner.update(part);
    }
    let mut outer = Sha256::new();
    outer.update(opad);
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// What a nonce presented back to us is worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceState {
    /// Ours, for this realm, and young enough.
    Fresh,
    /// Ours but older than the allowed age: challenge again with `stale=true`, so the client
    /// retries without asking its user for the password again.
    Stale,
    /// Not ours, altered, for another realm, or from the future.
    Invalid,
}

/// Stateless nonces: the issue time and a unique salt in hex, and an HMAC over them and the
/// realm, so the server keeps nothing per challenge and a forged or altered nonce is rejected.
/// The salt makes every challenge's nonce its own, so that a nonce-count seen with one
/// challenge never collides with another's.
pub struct NonceIssuer {
    secret: [u8; 32],
}

/// Hex digits of the issue time, of the salt, then of the truncated MAC.
const NONCE_TIME_HEX: usize = 16;
const NONCE_SALT_HEX: usize = 16;
const NONCE_MAC_BYTES: usize = 16;
/// Nonces dated up to this far ahead are accepted, so a clock stepped back a little does not
/// reject every client at once.
const FUTURE_SKEW_SECS: u64 = 60;

impl NonceIssuer {
    pub fn new(secret: [u8; 32]) -> NonceIssuer {
        NonceIssuer { secret }
    }

    /// A nonce for `realm` issued now; `salt` must differ between challenges (the caller's
    /// id generator gives it).
    pub fn issue(&self, now_unix_secs: u64, salt: u64, realm: &str) -> String {
        let mac = hmac_sha256(
            &self.secret,
            &[
                &now_unix_secs.to_be_bytes(),
                &salt.to_be_bytes(),
                realm.as_bytes(),
            ],
        );
        let mac = mac.get(..NONCE_MAC_BYTES).unwrap_or(&[]);
        format!("{now_unix_secs:016x}{salt:016x}{}", hex(mac))
    }

    pub fn check(
        &self,
        nonce: &str,
        realm: &str,
        now_unix_secs: u64,
        max_age_secs: u64,
    ) -> NonceState {
        let (Some(time_hex), Some(salt_hex)) = (
            nonce.get(..NONCE_TIME_HEX),
            nonce.get(NONCE_TIME_HEX..NONCE_TIME_HEX + NONCE_SALT_HEX),
        ) else {
            return NonceState::Invalid;
        };
        // from_str_radix alone would also take a sign; only our own lowercase form is valid.
        let lower_hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !lower_hex(time_hex) || !lower_hex(salt_hex) {
            return NonceState::Invalid;
        }
        let (Ok(issued), Ok(salt)) = (
            u64::from_str_radix(time_hex, 16),
            u64::from_str_radix(salt_hex, 16),
        ) else {
            return NonceState::Invalid;
        };
        // Recomputing the whole nonce also rejects any other spelling of the same time.
        if !constant_time_eq(self.issue(issued, salt, realm).as_bytes(), nonce.as_bytes()) {
            return NonceState::Invalid;
        }
        if issued > now_unix_secs.saturating_add(FUTURE_SKEW_SECS) {
            NonceState::Invalid
        } else if now_unix_secs.saturating_sub(issued) > max_age_secs {
            NonceState::Stale
        } else {
            NonceState::Fresh
        }
    }
}

#[cfg(test)]
mod tests;
