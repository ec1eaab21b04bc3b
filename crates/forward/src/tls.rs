//! TLS for the targets that speak it themselves (mqtts, Kafka): the
//! system's roots plus the target's `ca_file`, rustls with ring.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls;

pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(f) = ca_file {
        let pem = std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| format!("{}: {e}", f.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", f.display()))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}
