//! A small HTTP/1.1 client for the daemon's API, over the Unix socket or TCP with a bearer token.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// Where the API is.
#[derive(Clone, Debug)]
pub enum Endpoint {
    /// The local Unix socket (the default).
    Unix(PathBuf),
    /// `http://host:port`, with the token read from a file.
    Tcp {
        /// host:port
        authority: String,
        /// Bearer token.
        token: String,
    },
}

/// An API error in Azure's shape, as the daemon sent it.
#[derive(Debug)]
pub struct ApiFailure {
    /// HTTP status.
    pub status: u16,
    /// Azure error code.
    pub code: String,
    /// What was wrong and the fix.
    pub message: String,
    /// The field or resource concerned.
    pub target: Option<String>,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "({}) {}", self.code, self.message)?;
        if let Some(t) = &self.target {
            write!(f, "\nTarget: {t}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiFailure {}

/// The API client.
pub struct Client {
    endpoint: Endpoint,
    debug: bool,
}

/// Replaces secrets (shared keys, a `sharedkey` answer's `value`, private keys, passwords, tokens) in
/// a JSON body before `--debug` prints it.
fn mask_secrets(v: &mut Value, in_shared_key: bool) {
    match v {
        Value::Object(map) => {
            for (k, x) in map.iter_mut() {
                let lower = k.to_ascii_lowercase();
                let secret = lower.contains("sharedkey")
                    || lower.contains("privatekey")
                    || lower.contains("password")
                    || lower.contains("secret")
                    || lower.contains("token")
                    || (in_shared_key && lower == "value");
                if secret && !x.is_null() {
                    *x = Value::String("***".into());
                } else {
                    mask_secrets(x, in_shared_key);
                }
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|i| mask_secrets(i, in_shared_key)),
        _ => {}
    }
}

/// A body as `--debug` prints it: JSON with secrets masked, or its length when it is not JSON.
fn debug_body(path: &str, bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "(empty)".into();
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(mut v) => {
            mask_secrets(&mut v, path.to_ascii_lowercase().contains("sharedkey"));
            v.to_string()
        }
        Err(_) => format!("({} bytes, not JSON)", bytes.len()),
    }
}

impl Client {
    /// A client for `endpoint`.
    pub fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            debug: false,
        }
    }

    /// With `--debug`: print each request and response on standard error, secrets masked.
    pub fn with_debug(mut self, debug: bool) -> Self {
        self.debug = debug;
        self
    }

    /// Sends a request; a 4xx/5xx answer becomes an [`ApiFailure`] error. Returns the status and JSON body
    /// (`Value::Null` when the body is empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<(u16, Value)> {
        let (status, bytes) = self.call_raw(method, path, body, if_match).await?;
        let value: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Ok((status, value))
    }

    /// GET returning the raw body (a packet-capture file).
    pub async fn get_bytes(&self, path: &str) -> Result<Bytes> {
        Ok(self.call_raw(Method::GET, path, None, None).await?.1)
    }

    /// Sends a request and returns the status and raw body; 4xx/5xx become an [`ApiFailure`].
    async fn call_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<(u16, Bytes)> {
        let payload = match body {
            Some(v) => Bytes::from(serde_json::to_vec(v)?),
            None => Bytes::new(),
        };
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header("content-type", "application/json");
        if let Some(etag) = if_match {
            req = req.header("if-match", etag);
        }
        let (mut sender, host) = match &self.endpoint {
            Endpoint::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path).await.with_context(|| {
                    format!(
                        "cannot reach the vgw daemon at {}; is 'vgw serve' running? (set --api-socket or VGW_API_SOCKET)",
                        path.display()
                    )
                })?;
                (handshake(stream).await?, "localhost".to_string())
            }
            Endpoint::Tcp { authority, token } => {
                let stream = tokio::net::TcpStream::connect(authority.as_str())
                    .await
                    .with_context(|| format!("cannot reach the vgw API at {authority}"))?;
                req = req.header("authorization", format!("Bearer {token}"));
                (handshake(stream).await?, authority.clone())
            }
        };
        if self.debug {
            eprintln!("DEBUG: Request URL: '{path}'");
            eprintln!("DEBUG: Request method: '{method}'");
            if matches!(self.endpoint, Endpoint::Tcp { .. }) {
                eprintln!("DEBUG:     'Authorization': 'Bearer ***'");
            }
            eprintln!("DEBUG: Request body: {}", debug_body(path, &payload));
        }
        let req = req.header("host", host).body(Full::new(payload))?;
        let resp = sender
            .send_request(req)
            .await
            .context("the vgw daemon closed the connection")?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        if self.debug {
            eprintln!("DEBUG: Response status: {status}");
            eprintln!("DEBUG: Response content: {}", debug_body(path, &bytes));
        }
        if status >= 400 {
            let value: Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
            let err = &value["error"];
            return Err(anyhow!(ApiFailure {
                status,
                code: err["code"].as_str().unwrap_or("Error").to_string(),
                message: err["message"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| value.to_string()),
                target: err["target"].as_str().map(str::to_string),
            }));
        }
        Ok((status, bytes))
    }

    /// GET returning the body.
    pub async fn get(&self, path: &str) -> Result<Value> {
        Ok(self.call(Method::GET, path, None, None).await?.1)
    }

    /// PUT returning the body.
    pub async fn put(&self, path: &str, body: &Value, if_match: Option<&str>) -> Result<Value> {
        Ok(self.call(Method::PUT, path, Some(body), if_match).await?.1)
    }

    /// POST returning the body.
    pub async fn post(&self, path: &str, body: Option<&Value>) -> Result<Value> {
        Ok(self.call(Method::POST, path, body, None).await?.1)
    }

    /// DELETE.
    pub async fn delete(&self, path: &str) -> Result<()> {
        self.call(Method::DELETE, path, None, None).await?;
        Ok(())
    }
}

async fn handshake<S>(stream: S) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}
