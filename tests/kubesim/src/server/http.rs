//! Response bodies (whole or streamed through a channel, so a watch ends when the client goes
//! away), request parsing helpers (query strings, Accept negotiation) and response builders.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use hyper::body::{Body, Frame, SizeHint};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::error::ApiError;

/// A response body: bytes known up front, or chunks from a channel (watches).
pub enum ResponseBody {
    /// The whole body.
    Full(Option<Bytes>),
    /// Chunks as they come; the stream ends when the sender is dropped.
    Stream(mpsc::Receiver<Bytes>),
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            ResponseBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ResponseBody::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, ResponseBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ResponseBody::Full(None) => SizeHint::with_exact(0),
            ResponseBody::Stream(_) => SizeHint::default(),
        }
    }
}

/// A response.
pub type Resp = Response<ResponseBody>;

/// A JSON response from bytes.
pub fn json_bytes(code: u16, body: Bytes, content_type: &str) -> Resp {
    let mut r = Response::new(ResponseBody::Full(Some(body)));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("application/json")),
    );
    r
}

/// A JSON response from a value.
pub fn json(code: u16, v: &Value) -> Resp {
    json_bytes(
        code,
        Bytes::from(serde_json::to_vec(v).unwrap_or_default()),
        "application/json",
    )
}

/// A plain-text response.
pub fn text(code: u16, s: impl Into<String>) -> Resp {
    json_bytes(code, Bytes::from(s.into()), "text/plain; charset=utf-8")
}

/// The `Status` response of an error, with `Retry-After` for 429 (and any code that has one).
pub fn error(e: &ApiError) -> Resp {
    let mut r = json(e.code, &e.to_status());
    if let Some(s) = e.retry_after
        && let Ok(v) = HeaderValue::from_str(&s.to_string())
    {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// Query parameters, percent-decoded; later duplicates win except for `dryRun` (any `All`).
#[derive(Debug, Default)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Query {
    /// Parses a raw query string.
    pub fn parse(q: Option<&str>) -> Self {
        let pairs = q
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (percent_decode(k), percent_decode(v)),
                None => (percent_decode(p), String::new()),
            })
            .collect();
        Self { pairs }
    }

    /// Every pair in order, as received.
    pub fn raw_pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// The last value of a parameter.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean parameter (`true`, `1`).
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true") | Some("1") | Some("True"))
    }

    /// `dryRun=All` (any occurrence); other values are 400 as on a real server.
    pub fn dry_run(&self) -> Result<bool, ApiError> {
        let mut dry = false;
        for (k, v) in &self.pairs {
            if k == "dryRun" {
                if v == "All" {
                    dry = true;
                } else if !v.is_empty() {
                    return Err(ApiError::bad_request(format!(
                        "Invalid dry run value: {v:?}: supported values: \"All\""
                    )));
                }
            }
        }
        Ok(dry)
    }
}

/// One entry of an Accept header: media type and parameters.
#[derive(Debug, Clone)]
pub struct MediaRange {
    /// `application/json`.
    pub mime: String,
    /// Parameters such as `as=Table`, `g=meta.k8s.io`, `v=v1`.
    pub params: Vec<(String, String)>,
}

impl MediaRange {
    /// A parameter value.
    pub fn param(&self, k: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses an Accept header into media ranges in the client's order.
pub fn parse_accept(h: Option<&str>) -> Vec<MediaRange> {
    h.unwrap_or("application/json")
        .split(',')
        .map(|part| {
            let mut it = part.split(';');
            let mime = it.next().unwrap_or_default().trim().to_ascii_lowercase();
            let params = it
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
                .collect();
            MediaRange { mime, params }
        })
        .collect()
}

/// How a client wants objects rendered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rendering {
    /// The objects themselves.
    Object,
    /// A `meta.k8s.io` Table (kubectl get).
    Table,
    /// `PartialObjectMetadata` / `PartialObjectMetadataList`.
    Metadata,
}

/// Picks the rendering from Accept, or 406 when only protobuf is acceptable.
pub fn negotiate(accept: &[MediaRange]) -> Result<Rendering, ApiError> {
    for m in accept {
        let json_like = m.mime == "application/json"
            || m.mime == "application/yaml"
            || m.mime == "*/*"
            || m.mime == "application/*";
        if !json_like {
            continue;
        }
        match m.param("as") {
            Some("Table") if m.param("g") == Some("meta.k8s.io") => return Ok(Rendering::Table),
            Some("PartialObjectMetadata") | Some("PartialObjectMetadataList")
                if m.param("g") == Some("meta.k8s.io") =>
            {
                return Ok(Rendering::Metadata);
            }
            Some(_) => continue,
            None => return Ok(Rendering::Object),
        }
    }
    Err(ApiError::not_acceptable())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_queries_and_accept() {
        let q = Query::parse(Some(
            "labelSelector=app%3Dweb%2Ctier+in+(a)&limit=5&dryRun=All",
        ));
        assert_eq!(q.get("labelSelector"), Some("app=web,tier in (a)"));
        assert_eq!(q.get("limit"), Some("5"));
        assert!(q.dry_run().unwrap());
        let a = parse_accept(Some(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json",
        ));
        assert_eq!(negotiate(&a).unwrap(), Rendering::Table);
        let p = parse_accept(Some("application/vnd.kubernetes.protobuf"));
        assert_eq!(negotiate(&p).unwrap_err().code, 406);
        assert_eq!(negotiate(&parse_accept(None)).unwrap(), Rendering::Object);
    }
}
