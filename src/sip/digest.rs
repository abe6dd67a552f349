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
mod tests {
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
        let base =
            "Digest username=\"u\", realm=\"r\", nonce=\"n\", uri=\"sip:a\", response=\"00\"";
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
}
