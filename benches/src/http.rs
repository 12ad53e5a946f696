//! A small plain-HTTP/1.1 client over hyper-util's pooled connector (no TLS).

use std::error::Error as StdError;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// What went wrong talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL could not be parsed or uses an unsupported scheme.
    #[error("invalid URL `{url}`: {reason}")]
    InvalidUrl {
        /// The offending URL.
        url: String,
        /// Why it was rejected.
        reason: String,
    },
    /// Connecting or sending failed.
    #[error("cannot reach {url}: {reason} (is the server running and is --base-url right?)")]
    Connect {
        /// Target URL.
        url: String,
        /// Error chain.
        reason: String,
    },
    /// Reading the response body failed.
    #[error("reading the response from {url} failed: {reason}")]
    Body {
        /// Target URL.
        url: String,
        /// Error chain.
        reason: String,
    },
}

impl HttpError {
    /// Short class used to count failure reasons.
    pub fn kind(&self) -> &'static str {
        match self {
            HttpError::InvalidUrl { .. } => "invalid url",
            HttpError::Connect { .. } => "connection error",
            HttpError::Body { .. } => "stream read error",
        }
    }
}

/// Full error chain of `e`, joined with `: `.
pub fn chain(e: &dyn StdError) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// Cheap to clone: the connection pool is shared.
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
    auth: Option<HeaderValue>,
}

impl HttpClient {
    /// A client that sends `Authorization: Bearer <api_key>` when a key is given.
    pub fn new(api_key: Option<&str>) -> Result<Self, HttpError> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(30)));
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        let auth = match api_key {
            Some(k) if !k.is_empty() => {
                Some(HeaderValue::from_str(&format!("Bearer {k}")).map_err(|_| {
                    HttpError::InvalidUrl {
                        url: "--api-key".into(),
                        reason: "the API key holds characters not allowed in an HTTP header".into(),
                    }
                })?)
            }
            _ => None,
        };
        Ok(Self { inner, auth })
    }

    fn uri(url: &str) -> Result<Uri, HttpError> {
        let uri: Uri =
            url.parse()
                .map_err(|e: hyper::http::uri::InvalidUri| HttpError::InvalidUrl {
                    url: url.to_string(),
                    reason: e.to_string(),
                })?;
        match uri.scheme_str() {
            Some("http") => Ok(uri),
            Some("https") => Err(HttpError::InvalidUrl {
                url: url.to_string(),
                reason: "https is not supported by this build (plain HTTP only); put a local \
                         http:// address in --base-url"
                    .into(),
            }),
            _ => Err(HttpError::InvalidUrl {
                url: url.to_string(),
                reason: "expected an http:// URL such as http://127.0.0.1:8000".into(),
            }),
        }
    }

    fn request(
        &self,
        method: Method,
        url: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Request<Full<Bytes>>, HttpError> {
        let uri = Self::uri(url)?;
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(auth) = &self.auth {
            builder = builder.header(AUTHORIZATION, auth.clone());
        }
        if body.is_some() {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| HttpError::InvalidUrl {
                url: url.to_string(),
                reason: e.to_string(),
            })
    }

    /// Send a request and return the response with its body still streaming.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        json: Option<&serde_json::Value>,
    ) -> Result<Response<Incoming>, HttpError> {
        let body = match json {
            Some(v) => Some(serde_json::to_vec(v).map_err(|e| HttpError::InvalidUrl {
                url: url.to_string(),
                reason: format!("request body is not serializable: {e}"),
            })?),
            None => None,
        };
        let req = self.request(method, url, body)?;
        self.inner
            .request(req)
            .await
            .map_err(|e| HttpError::Connect {
                url: url.to_string(),
                reason: chain(&e),
            })
    }

    /// Send a request and read the whole body.
    pub async fn send_full(
        &self,
        method: Method,
        url: &str,
        json: Option<&serde_json::Value>,
    ) -> Result<(StatusCode, Bytes), HttpError> {
        let resp = self.send(method, url, json).await?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| HttpError::Body {
                url: url.to_string(),
                reason: chain(&e),
            })?
            .to_bytes();
        Ok((status, body))
    }

    /// `GET url`, whole body.
    pub async fn get(&self, url: &str) -> Result<(StatusCode, Bytes), HttpError> {
        self.send_full(Method::GET, url, None).await
    }

    /// `POST url` with a JSON body, whole response body.
    pub async fn post_json(
        &self,
        url: &str,
        json: &serde_json::Value,
    ) -> Result<(StatusCode, Bytes), HttpError> {
        self.send_full(Method::POST, url, Some(json)).await
    }
}

/// Joins a base URL and a path without doubling or dropping the `/`.
pub fn join_url(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// First 300 characters of a body, for error messages.
pub fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let s = s.trim();
    match s.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn joins_urls() {
        assert_eq!(join_url("http://h:1/", "/v1/x"), "http://h:1/v1/x");
        assert_eq!(join_url("http://h:1", "v1/x"), "http://h:1/v1/x");
    }

    #[test]
    fn rejects_https_and_garbage() {
        assert!(HttpClient::uri("https://x").is_err());
        assert!(HttpClient::uri("localhost:8000").is_err());
        assert!(HttpClient::uri("http://127.0.0.1:8000/v1/completions").is_ok());
    }
}
