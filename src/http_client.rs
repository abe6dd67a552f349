//! A small HTTP/1.1 client for the gateway's own outbound requests (webhook deliveries, the
//! CRM lookup): one request per connection, a deadline over the whole exchange, a cap on the
//! response body, and https verified against the system's CA bundle. Knows nothing of
//! webhooks or contacts.

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::rustls;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("bad URL: {0}")]
    Url(&'static str),
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("tls: {0}")]
    Tls(std::io::Error),
    #[error("http: {0}")]
    Protocol(#[from] hyper::Error),
    #[error("request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("response body over {0} bytes")]
    TooLarge(usize),
    #[error("no response in {0:?}")]
    Timeout(Duration),
}

pub use callgate_core::url::Target;

/// Split an `http://` or `https://` URL (no user info).
pub fn parse_url(url: &str) -> Result<Target, HttpError> {
    callgate_core::url::parse(url).map_err(HttpError::Url)
}

/// A response: status and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Bytes,
}

/// One request. `headers` go as given; `Host`, `Content-Length` and `Connection: close` are
/// added. Everything (connect, TLS, request, response) must finish within `timeout`.
pub async fn request(
    method: &str,
    url: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
    timeout: Duration,
    max_body: usize,
) -> Result<Response, HttpError> {
    let target = parse_url(url)?;
    tokio::time::timeout(timeout, exchange(method, &target, headers, body, max_body))
        .await
        .map_err(|_| HttpError::Timeout(timeout))?
}

async fn exchange(
    method: &str,
    target: &Target,
    headers: &[(&str, String)],
    body: Vec<u8>,
    max_body: usize,
) -> Result<Response, HttpError> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(HttpError::Connect)?;
    let _ = tcp.set_nodelay(true);
    let host_header =
        if (target.https && target.port == 443) || (!target.https && target.port == 80) {
            target.host.clone()
        } else {
            format!("{}:{}", target.host, target.port)
        };
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(&target.path)
        .header("host", host_header)
        .header("connection", "close")
        .header(
            "user-agent",
            concat!("callgate/", env!("CARGO_PKG_VERSION")),
        );
    for (name, value) in headers {
        builder = builder.header(*name, value);
    }
    let request = builder.body(Full::new(Bytes::from(body)))?;
    if target.https {
        let name = rustls::pki_types::ServerName::try_from(target.host.clone())
            .map_err(|_| HttpError::Url("host is not a valid TLS server name"))?;
        let tls = tokio_rustls::TlsConnector::from(crate::tls_client::system())
            .connect(name, tcp)
            .await
            .map_err(HttpError::Tls)?;
        send(TokioIo::new(tls), request, max_body).await
    } else {
        send(TokioIo::new(tcp), request, max_body).await
    }
}

async fn send<I>(
    io: I,
    request: hyper::Request<Full<Bytes>>,
    max_body: usize,
) -> Result<Response, HttpError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    let driver = tokio::spawn(connection);
    let response = sender.send_request(request).await;
    let result = match response {
        Ok(response) => {
            let status = response.status().as_u16();
            match Limited::new(response.into_body(), max_body).collect().await {
                Ok(body) => Ok(Response {
                    status,
                    body: body.to_bytes(),
                }),
                Err(e) => match e.downcast::<hyper::Error>() {
                    Ok(e) => Err(HttpError::Protocol(*e)),
                    Err(_) => Err(HttpError::TooLarge(max_body)),
                },
            }
        }
        Err(e) => Err(HttpError::Protocol(e)),
    };
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_split_into_scheme_host_port_and_path() {
        let t = parse_url("http://127.0.0.1:9000/hooks?x=1").expect("url");
        assert_eq!(
            t,
            Target {
                https: false,
                host: "127.0.0.1".into(),
                port: 9000,
                path: "/hooks?x=1".into()
            }
        );
        let t = parse_url("https://crm.example").expect("url");
        assert_eq!((t.https, t.port, t.path.as_str()), (true, 443, "/"));
        let t = parse_url("http://[::1]:8080?number=1").expect("url");
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("::1", 8080, "/?number=1")
        );
        for bad in [
            "ftp://x",
            "http://",
            "http://u:p@host/",
            "http://host:port/",
            "http://[::1/",
        ] {
            assert!(parse_url(bad).is_err(), "{bad} accepted");
        }
    }

    /// A real exchange against a listener of the test's own: the request arrives with its
    /// headers and body, the response's status and body come back, and a server that never
    /// answers costs no more than the deadline.
    #[tokio::test]
    async fn a_request_is_sent_and_a_silent_server_times_out() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&got).contains("hello") {
                let n = s.read(&mut buf).await.expect("read");
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok")
                .await
                .expect("write");
            let (_silent, _) = listener.accept().await.expect("accept");
            tokio::time::sleep(Duration::from_secs(5)).await;
            String::from_utf8_lossy(&got).to_string()
        });
        let url = format!("http://{addr}/in");
        let r = request(
            "POST",
            &url,
            &[("x-test", "1".into())],
            b"hello".to_vec(),
            Duration::from_secs(5),
            1024,
        )
        .await
        .expect("response");
        assert_eq!((r.status, &r.body[..]), (201, &b"ok"[..]));
        let started = std::time::Instant::now();
        let silent = request(
            "GET",
            &url,
            &[],
            Vec::new(),
            Duration::from_millis(200),
            1024,
        )
        .await;
        assert!(matches!(silent, Err(HttpError::Timeout(_))), "{silent:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        server.abort();
    }
}
