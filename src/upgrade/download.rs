//! One HTTP(S) GET, for the upstream manifests: redirects followed, proxies taken from the
//! environment, timeouts enforced.
//!
//! Built on hyper, hyper-util and hyper-rustls, which kube-rs already links into every module: a
//! full HTTP client library beside them would add its own client, redirect, proxy and URL code
//! to a binary that Ansible copies to every host on every task. Only HTTP/1.1 is spoken; the
//! downloads are a handful of files, one request per connection.
//!
//! Retries and the messages users see are [`super::manifests::fetch`]'s; this module makes one
//! attempt.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use bytes::Bytes;
use http::header::{
    ACCEPT, AUTHORIZATION, HOST, HeaderValue, LOCATION, PROXY_AUTHORIZATION, USER_AGENT,
};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::proxy::matcher::{Intercept, Matcher};
use rustls::ClientConfig;
use rustls_platform_verifier::BuilderVerifierExt;
use tower::ServiceExt;

/// How long opening a connection may take: TCP, the proxy's tunnel and the TLS handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one download may take from the first connection to the last byte, redirects included.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// How many redirects are followed; GitHub release assets take one (to their object store).
pub const MAX_REDIRECTS: usize = 10;

/// The answer to a GET, after redirects.
#[derive(Debug)]
pub struct Fetched {
    /// The final status.
    pub status: StatusCode,
    /// The body, read only for a 2xx status (an error page is of no use to the caller).
    pub body: Vec<u8>,
}

/// Downloads over HTTP and HTTPS, the way the modules reach the internet.
pub struct Downloader {
    proxies: Matcher,
    tls: Arc<ClientConfig>,
}

impl Downloader {
    /// A downloader that trusts the platform's certificate roots and uses the proxies named by
    /// `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY` (or their lower-case forms).
    pub fn from_env() -> Result<Self> {
        crate::cluster::install_crypto_provider();
        // The platform verifier is what kube-rs uses for an API server without a CA in the
        // kubeconfig (and what the modules used before): on Linux the system's CA bundle
        // (honouring SSL_CERT_FILE/SSL_CERT_DIR), so a site's own CA installed on the controller
        // is trusted for its mirrors too.
        let tls = ClientConfig::builder()
            .with_platform_verifier()
            .context("loading the platform's certificate roots")?
            .with_no_client_auth();
        Ok(Self {
            proxies: Matcher::from_env(),
            tls: Arc::new(tls),
        })
    }

    /// The same downloader with other proxy settings; tests use it so as not to touch the
    /// process environment, which other tests share.
    pub fn with_proxies(self, proxies: Matcher) -> Self {
        Self { proxies, ..self }
    }

    /// GETs `url`, following up to [`MAX_REDIRECTS`] redirects, within [`TIMEOUT`].
    ///
    /// An error is a failure to get any answer (or too many redirects); an HTTP error status is
    /// an answer, for the caller to judge.
    pub async fn get(&self, url: &str) -> Result<Fetched> {
        tokio::time::timeout(TIMEOUT, self.follow(url))
            .await
            .map_err(|_| anyhow!("no complete answer within {} s", TIMEOUT.as_secs()))?
    }

    async fn follow(&self, url: &str) -> Result<Fetched> {
        let mut uri = parse_http_url(url)?;
        // Credentials in the URL (a private mirror) go to that origin only, as browsers and
        // curl do: a redirect elsewhere must not carry them.
        let mut auth = basic_auth_of(&uri)?;
        let mut redirects = 0;
        loop {
            let reply = self.once(&uri, auth.as_ref()).await?;
            let location = match reply.location {
                Some(l) if is_followed(reply.status) => l,
                // A 3xx without a Location (304, 300) is an answer like any other.
                _ => {
                    return Ok(Fetched {
                        status: reply.status,
                        body: reply.body,
                    });
                }
            };
            if redirects == MAX_REDIRECTS {
                bail!("more than {MAX_REDIRECTS} redirects, the last to {location}");
            }
            redirects += 1;
            let next = resolve(&uri, &location)?;
            if let Some(own) = basic_auth_of(&next)? {
                auth = Some(own);
            } else if origin(&next) != origin(&uri) {
                auth = None;
            }
            uri = next;
        }
    }

    /// One request on a new connection.
    async fn once(&self, uri: &Uri, auth: Option<&HeaderValue>) -> Result<Reply> {
        let proxy = self.proxies.intercept(uri);
        let host_port = host_port(uri);
        let io = tokio::time::timeout(CONNECT_TIMEOUT, self.connect(uri, proxy.as_ref()))
            .await
            .map_err(|_| {
                anyhow!(
                    "connecting to {host_port}{} took over {} s",
                    via(proxy.as_ref()),
                    CONNECT_TIMEOUT.as_secs()
                )
            })?
            .map_err(|e| anyhow!(error_text(&*e)))
            .with_context(|| format!("cannot connect to {host_port}{}", via(proxy.as_ref())))?;

        // An http:// URL through a proxy is forwarded by the proxy, which is therefore sent the
        // whole URL (absolute form) and its credentials; through a tunnel (https://), or without
        // a proxy, the server itself is sent only the path.
        let forwarded_by = proxy.as_ref().filter(|_| uri.scheme_str() == Some("http"));
        let target = match forwarded_by {
            Some(_) => format!("http://{host_port}{}", path_and_query(uri)),
            None => path_and_query(uri).to_string(),
        };
        let mut req = Request::get(target)
            .header(HOST, host_port.as_str())
            .header(
                USER_AGENT,
                concat!("k8s-calico/", env!("CARGO_PKG_VERSION")),
            )
            .header(ACCEPT, "*/*");
        if let Some(auth) = auth {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        if let Some(proxy_auth) = forwarded_by.and_then(Intercept::basic_auth) {
            req = req.header(PROXY_AUTHORIZATION, proxy_auth.clone());
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .context("building the request")?;

        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| anyhow!(error_text(&e)))?;
        let exchange = async move {
            let resp = sender.send_request(req).await?;
            let status = resp.status();
            let location = resp
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .map(str::to_owned);
            let body = if status.is_success() {
                resp.into_body().collect().await?.to_bytes().to_vec()
            } else {
                Vec::new()
            };
            Ok::<_, hyper::Error>(Reply {
                status,
                location,
                body,
            })
        };
        // The connection is driven here rather than spawned, so that it ends with this call
        // (or with the timeout around it) instead of living on in the runtime.
        tokio::pin!(exchange);
        let reply = tokio::select! {
            reply = &mut exchange => reply,
            // The connection ends first only when it broke or the server closed it; the exchange
            // then ends too, with what was received or with the reason.
            closed = conn => match closed {
                Ok(()) => exchange.await,
                Err(e) => Err(e),
            },
        };
        reply.map_err(|e| anyhow!(error_text(&e)))
    }

    /// Opens a connection to the server, or to the proxy that `uri` goes through.
    async fn connect(&self, uri: &Uri, proxy: Option<&Intercept>) -> Result<Box<dyn Io>, BoxError> {
        let mut tcp = HttpConnector::new();
        // Needed to take https:// URIs: TLS is layered on top by HttpsConnector.
        tcp.enforce_http(false);
        // Split between a host's addresses, so a dead IPv6 address leaves time for IPv4.
        tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
        // http or https by the URI's scheme: the server's, or the proxy's (an https:// proxy is
        // reached over TLS).
        let direct = HttpsConnector::from((tcp, self.tls.clone()));
        let Some(proxy) = proxy else {
            return Ok(Box::new(direct.oneshot(uri.clone()).await?));
        };
        if !matches!(proxy.uri().scheme_str(), Some("http" | "https")) {
            return Err(format!(
                "proxy {} is not supported: only http:// and https:// proxies are",
                proxy.uri()
            )
            .into());
        }
        if uri.scheme_str() == Some("http") {
            return Ok(Box::new(direct.oneshot(proxy.uri().clone()).await?));
        }
        // https through a proxy: a CONNECT tunnel, with TLS to the server inside it, so the
        // proxy sees only the host name.
        let mut tunnel = Tunnel::new(proxy.uri().clone(), direct);
        if let Some(auth) = proxy.basic_auth() {
            tunnel = tunnel.with_auth(auth.clone());
        }
        let tls = HttpsConnector::from((tunnel, self.tls.clone()));
        Ok(Box::new(tls.oneshot(uri.clone()).await?))
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A connection of any of the three kinds (direct, to a proxy, through a tunnel), erased so that
/// hyper's HTTP/1 client code is compiled once rather than once per kind.
trait Io: hyper::rt::Read + hyper::rt::Write + Unpin + Send {}
impl<T: hyper::rt::Read + hyper::rt::Write + Unpin + Send> Io for T {}

/// What one request got back.
struct Reply {
    status: StatusCode,
    location: Option<String>,
    body: Vec<u8>,
}

/// The statuses that send the client elsewhere; the body of a GET is empty either way, so 303's
/// change to GET and 307/308's keeping of the method need no distinction.
fn is_followed(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

fn parse_http_url(url: &str) -> Result<Uri> {
    // A fragment never goes on the wire.
    let url = url.split('#').next().unwrap_or_default();
    let uri: Uri = url
        .parse()
        .with_context(|| format!("{url} is not a valid URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some() => Ok(uri),
        _ => bail!("{url} is not an http:// or https:// URL"),
    }
}

/// Resolves a Location against the URL it came from (RFC 3986, section 5.2): absolute,
/// scheme-relative (`//host/path`), absolute-path (`/path`), query-only (`?q`) or relative-path
/// (`file`, `../dir/file`).
fn resolve(base: &Uri, location: &str) -> Result<Uri> {
    let location = location.trim();
    let location = location.split('#').next().unwrap_or_default();
    let scheme = base.scheme_str().unwrap_or("http");
    let authority = base.authority().map(|a| a.as_str()).unwrap_or_default();
    let has_scheme = location.split_once(':').is_some_and(|(s, _)| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    });
    let absolute = if has_scheme {
        location.to_string()
    } else if location.starts_with("//") {
        format!("{scheme}:{location}")
    } else if location.starts_with('/') {
        format!("{scheme}://{authority}{}", remove_dot_segments_in(location))
    } else if location.is_empty() {
        base.to_string()
    } else if location.starts_with('?') {
        format!("{scheme}://{authority}{}{location}", base.path())
    } else {
        // Relative to the base's "directory": everything up to its last slash.
        let dir = &base.path()[..base.path().rfind('/').map_or(0, |i| i + 1)];
        let dir = if dir.is_empty() { "/" } else { dir };
        format!(
            "{scheme}://{authority}{}",
            remove_dot_segments_in(&format!("{dir}{location}"))
        )
    };
    parse_http_url(&absolute).with_context(|| format!("cannot follow the redirect to {location}"))
}

/// Removes `.` and `..` segments from the path part of a path-and-query.
fn remove_dot_segments_in(path_and_query: &str) -> String {
    let (path, query) = match path_and_query.find('?') {
        Some(i) => path_and_query.split_at(i),
        None => (path_and_query, ""),
    };
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *seg {
            "." | ".." => {
                if *seg == ".." {
                    out.pop();
                }
                // "a/b/.." names the folder a/, so the trailing slash stays.
                if last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("/{}{query}", out.join("/"))
}

/// `host[:port]` as the URL gives it, without credentials: the Host header and the messages.
fn host_port(uri: &Uri) -> String {
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
        .to_string()
}

fn path_and_query(uri: &Uri) -> &str {
    uri.path_and_query().map_or("/", |p| p.as_str())
}

/// Scheme, host and port: what decides whether credentials may follow a redirect.
fn origin(uri: &Uri) -> (Option<&str>, Option<&str>, Option<u16>) {
    let default_port = match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    };
    (
        uri.scheme_str(),
        uri.host(),
        Some(uri.port_u16().unwrap_or(default_port)),
    )
}

/// The `Authorization: Basic` value for `user:password@` in a URL, if there is one.
fn basic_auth_of(uri: &Uri) -> Result<Option<HeaderValue>> {
    let Some((userinfo, _)) = uri.authority().and_then(|a| a.as_str().rsplit_once('@')) else {
        return Ok(None);
    };
    // The URL carries them percent-encoded; the header carries them as typed, as `user:password`
    // even when no password was given (RFC 7617).
    let mut decoded: Vec<u8> = percent_encoding::percent_decode_str(userinfo).collect();
    if !userinfo.contains(':') {
        decoded.push(b':');
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(decoded);
    let mut value = HeaderValue::try_from(format!("Basic {encoded}"))
        .context("the credentials in the URL cannot be sent")?;
    value.set_sensitive(true);
    Ok(Some(value))
}

fn via(proxy: Option<&Intercept>) -> String {
    proxy
        .map(|p| format!(" through proxy {}", host_port(p.uri())))
        .unwrap_or_default()
}

/// An error and its causes on one line, each cause once (hyper's errors often repeat their
/// cause in their own text).
fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::Mutex;

    /// What a test server was sent: each request's head, in order.
    type Seen = Arc<Mutex<Vec<String>>>;

    /// Serves `count` connections, one request each, answering each request head with the
    /// response that `answer` makes of it.
    fn serve(count: usize, answer: impl Fn(&str) -> String + Send + 'static) -> (String, Seen) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let seen: Seen = Arc::default();
        let log = seen.clone();
        std::thread::spawn(move || {
            for _ in 0..count {
                let Ok((mut s, _)) = l.accept() else { return };
                let head = read_head(&mut s);
                let resp = answer(&head);
                log.lock().unwrap().push(head);
                let _ = s.write_all(resp.as_bytes());
            }
        });
        (addr, seen)
    }

    fn read_head(s: &mut TcpStream) -> String {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
            head.push(byte[0]);
        }
        String::from_utf8_lossy(&head).into_owned()
    }

    fn ok(body: &str) -> String {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    fn redirect(status: &str, location: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
    }

    fn no_proxies() -> Matcher {
        Matcher::builder().build()
    }

    fn downloader(proxies: Matcher) -> Downloader {
        Downloader::from_env().unwrap().with_proxies(proxies)
    }

    #[tokio::test]
    async fn relative_and_absolute_redirects_are_followed() {
        let (mirror, _) = serve(1, |_| ok("kind: List\n"));
        let (addr, seen) = serve(3, move |head| {
            if head.starts_with("GET /releases/v1/calico.yaml ") {
                // Relative to /releases/v1/: the asset folder next to it.
                redirect("302 Found", "../assets/calico.yaml?sig=1")
            } else if head.starts_with("GET /releases/assets/calico.yaml?sig=1 ") {
                redirect("307 Temporary Redirect", "/objects/calico.yaml")
            } else if head.starts_with("GET /objects/calico.yaml ") {
                redirect("301 Moved Permanently", &format!("http://{mirror}/final"))
            } else {
                "HTTP/1.1 500 Unexpected\r\nContent-Length: 0\r\n\r\n".into()
            }
        });
        let got = downloader(no_proxies())
            .get(&format!("http://{addr}/releases/v1/calico.yaml"))
            .await
            .unwrap();
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.body, b"kind: List\n");
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert!(seen[0].contains("user-agent: k8s-calico/"), "{}", seen[0]);
    }

    #[tokio::test]
    async fn endless_redirects_are_an_error() {
        let (addr, _) = serve(MAX_REDIRECTS + 1, |_| redirect("302 Found", "/again"));
        let e = downloader(no_proxies())
            .get(&format!("http://{addr}/again"))
            .await
            .unwrap_err();
        assert!(format!("{e:#}").contains("more than 10 redirects"), "{e:#}");
    }

    #[tokio::test]
    async fn an_http_proxy_is_sent_the_whole_url_and_its_credentials() {
        let (proxy, seen) = serve(1, |_| ok("via proxy"));
        let proxies = Matcher::builder()
            .http(format!("http://user:p%40ss@{proxy}"))
            .build();
        // The name need not resolve here: only the proxy looks it up.
        let got = downloader(proxies)
            .get("http://mirror.example.invalid/v3.28.5/calico.yaml")
            .await
            .unwrap();
        assert_eq!(got.body, b"via proxy");
        let head = &seen.lock().unwrap()[0];
        assert!(
            head.starts_with("GET http://mirror.example.invalid/v3.28.5/calico.yaml HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(head.contains("host: mirror.example.invalid\r\n"), "{head}");
        // base64("user:p@ss")
        assert!(
            head.contains("proxy-authorization: Basic dXNlcjpwQHNz\r\n"),
            "{head}"
        );
    }

    #[tokio::test]
    async fn https_goes_through_a_connect_tunnel() {
        // The proxy refuses the tunnel: what matters is what it was asked.
        let (proxy, seen) = serve(1, |_| {
            "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n".into()
        });
        let proxies = Matcher::builder()
            .https(format!("http://user:pw@{proxy}"))
            .build();
        let e = downloader(proxies)
            .get("https://mirror.example.invalid/calico.yaml")
            .await
            .unwrap_err();
        assert!(
            format!("{e:#}").contains(&format!("through proxy {proxy}")),
            "{e:#}"
        );
        let head = &seen.lock().unwrap()[0];
        assert!(
            head.starts_with("CONNECT mirror.example.invalid:443 HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(
            head.contains("Proxy-Authorization: Basic dXNlcjpwdw==\r\n"),
            "{head}"
        );
    }

    #[tokio::test]
    async fn no_proxy_hosts_are_reached_directly() {
        let (addr, _) = serve(1, |_| ok("direct"));
        // A proxy that cannot be reached: using it would fail the download.
        let proxies = Matcher::builder()
            .all("http://127.0.0.1:9")
            .no("localhost, 127.0.0.0/8")
            .build();
        let got = downloader(proxies)
            .get(&format!("http://{addr}/calico.yaml"))
            .await
            .unwrap();
        assert_eq!(got.body, b"direct");
    }

    #[tokio::test]
    async fn url_credentials_go_to_their_origin_only() {
        let (elsewhere, elsewhere_seen) = serve(1, |_| ok("asset"));
        let (addr, seen) = serve(2, move |head| {
            if head.starts_with("GET /a ") {
                redirect("302 Found", "/b")
            } else {
                redirect("302 Found", &format!("http://{elsewhere}/c"))
            }
        });
        let got = downloader(no_proxies())
            .get(&format!("http://me:secret@{addr}/a"))
            .await
            .unwrap();
        assert_eq!(got.body, b"asset");
        for head in seen.lock().unwrap().iter() {
            // base64("me:secret")
            assert!(
                head.contains("authorization: Basic bWU6c2VjcmV0\r\n"),
                "{head}"
            );
            assert!(head.contains(&format!("host: {addr}\r\n")), "{head}");
        }
        let head = &elsewhere_seen.lock().unwrap()[0];
        assert!(!head.contains("authorization"), "{head}");
    }

    #[test]
    fn locations_resolve_against_the_current_url() {
        let base: Uri = "https://h:8443/a/b/c.yaml?x=1".parse().unwrap();
        let cases = [
            ("d.yaml", "https://h:8443/a/b/d.yaml"),
            ("../d.yaml", "https://h:8443/a/d.yaml"),
            ("./", "https://h:8443/a/b/"),
            ("..", "https://h:8443/a/"),
            ("/d/./e/../f?y=2#top", "https://h:8443/d/f?y=2"),
            ("?y=2", "https://h:8443/a/b/c.yaml?y=2"),
            ("//mirror/x", "https://mirror/x"),
            ("http://other/x", "http://other/x"),
        ];
        for (location, want) in cases {
            assert_eq!(
                resolve(&base, location).unwrap().to_string(),
                want,
                "{location}"
            );
        }
        assert!(resolve(&base, "ftp://other/x").is_err());
    }
}
