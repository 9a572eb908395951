//! The client profile download: `vpn-client generate` / `show-url` return a time-limited signed URL, and
//! the daemon serves the package there over HTTPS, on the gateway's address, with the gateway's server
//! certificate (where clients reach the gateway anyway).
//!
//! The URL is `https://<public address>:<port>/vpnclient/<expiry>/<signature>/<gateway>.zip`: the
//! expiry is Unix seconds (one hour ahead, like Azure's SAS URL) and the signature an HMAC-SHA256 over
//! the gateway name and the expiry with a key the daemon draws at start (so URLs die with the daemon).
//! The package is built when it is downloaded, from the live configuration, so profiles always match
//! the gateway's current proposals, routes and roots. Decision: the listener binds the wildcard address
//! on the port (default 8443), because the public address may change with the desired state; the TLS
//! certificate names the public address.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::controller::Controller;

/// How long a URL stays valid.
pub const URL_LIFETIME: Duration = Duration::from_secs(3600);

/// Signs and checks download URLs; knows where the server credentials are.
pub struct Downloads {
    key: aws_lc_rs::hmac::Key,
    /// The HTTPS port.
    pub port: u16,
    /// The point-to-site credentials directory.
    pub dir: PathBuf,
}

impl Downloads {
    /// A signer with a fresh random key.
    pub fn new(port: u16, dir: PathBuf) -> Self {
        let mut secret = [0u8; 32];
        let _ = aws_lc_rs::rand::fill(&mut secret);
        Self {
            key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret),
            port,
            dir,
        }
    }

    fn signature(&self, gateway: &str, expiry: u64) -> String {
        let tag = aws_lc_rs::hmac::sign(&self.key, format!("{gateway}\n{expiry}").as_bytes());
        tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A URL for `gateway` at `host`, valid for [`URL_LIFETIME`].
    pub fn url(&self, gateway: &str, host: &str) -> (String, u64) {
        let expiry = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            + URL_LIFETIME.as_secs();
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        (
            format!(
                "https://{host}:{}/vpnclient/{expiry}/{}/{gateway}.zip",
                self.port,
                self.signature(gateway, expiry)
            ),
            expiry,
        )
    }

    /// Whether a presented expiry and signature are valid now (constant-time comparison).
    pub fn verify(&self, gateway: &str, expiry: u64, signature: &str) -> bool {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(u64::MAX);
        let expected = self.signature(gateway, expiry);
        expiry >= now
            && expected.len() == signature.len()
            && expected
                .bytes()
                .zip(signature.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

#[derive(Clone)]
struct DownloadState {
    controller: Arc<Controller>,
    downloads: Arc<Downloads>,
}

async fn download(
    State(st): State<DownloadState>,
    Path((expiry, signature, file)): Path<(u64, String, String)>,
) -> Response {
    let Some(gateway) = file.strip_suffix(".zip") else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    if !st.downloads.verify(gateway, expiry, &signature) {
        return (
            StatusCode::FORBIDDEN,
            "this link is invalid or has expired; ask for a new one with 'vgw vnet-gateway vpn-client show-url'",
        )
            .into_response();
    }
    let (state, _) = st.controller.snapshot().await;
    let package =
        crate::plan::p2s::profile_input(&state, &st.downloads.dir, st.controller.instance())
            .and_then(|input| vgw_pki::profiles::build_profile(&input).map_err(|e| e.to_string()));
    match package {
        Ok(p) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/zip".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{gateway}.zip\""),
                ),
            ],
            p.zip,
        )
            .into_response(),
        Err(e) => (StatusCode::CONFLICT, e).into_response(),
    }
}

fn tls_config(dir: &std::path::Path) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .map_err(|e| format!("cannot read {}: {e}", dir.join(name).display()))
    };
    let chain: Vec<CertificateDer<'static>> =
        crate::plan::p2s::pem_blocks(&read("server.crt.pem")?, "CERTIFICATE")
            .into_iter()
            .map(CertificateDer::from)
            .collect();
    let key = crate::plan::p2s::pem_blocks(&read("server.key.pem")?, "PRIVATE KEY")
        .pop()
        .ok_or("server.key.pem holds no PKCS#8 key")?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(chain, PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)))
    .map_err(|e| e.to_string())?;
    Ok(Arc::new(config))
}

/// Serves the packages on `0.0.0.0:<port>` over TLS until the task is dropped.
pub async fn serve(controller: Arc<Controller>, downloads: Arc<Downloads>) -> Result<(), String> {
    let addr = SocketAddr::from(([0, 0, 0, 0], downloads.port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen for profile downloads on {addr}: {e}"))?;
    let app = Router::new()
        .route("/vpnclient/{expiry}/{signature}/{file}", get(download))
        .with_state(DownloadState {
            controller,
            downloads: downloads.clone(),
        });
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        // The credentials are read per connection: they appear when point-to-site is configured.
        let Ok(config) = tls_config(&downloads.dir) else {
            continue;
        };
        let app = app.clone();
        tokio::spawn(async move {
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await
            else {
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_urls_verify_and_tampering_fails() {
        let d = Downloads::new(8443, PathBuf::from("/nonexistent"));
        let (url, expiry) = d.url("hub-gw", "198.18.0.2");
        assert!(url.starts_with("https://198.18.0.2:8443/vpnclient/"));
        let sig = url.split('/').nth(5).unwrap().to_string();
        assert!(d.verify("hub-gw", expiry, &sig));
        assert!(!d.verify("other-gw", expiry, &sig));
        assert!(!d.verify("hub-gw", expiry + 1, &sig));
        assert!(!d.verify("hub-gw", 1, &d.signature("hub-gw", 1)), "expired");
    }
}
