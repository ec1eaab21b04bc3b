//! TLS for the targets that speak it themselves (mqtts, Kafka): the
//! system's roots plus the target's `ca_file`, rustls with ring.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;
use tokio_rustls::rustls;

#[derive(Debug, Error)]
pub enum TlsError {
    /// Unreadable, or not PEM.
    #[error("{}: {source}", path.display())]
    CaFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Certificate {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("{0}")]
    Config(rustls::Error),
}

impl base::HasKind for TlsError {
    fn kind(&self) -> base::ErrorKind {
        // The files are the box's, set in the config file: not a caller's.
        base::ErrorKind::Internal
    }
}

pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(f) = ca_file {
        add_ca_file(&mut roots, f)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(TlsError::Config)?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

fn add_ca_file(roots: &mut rustls::RootCertStore, f: &Path) -> Result<(), TlsError> {
    let ca_file = |source| TlsError::CaFile {
        path: f.to_path_buf(),
        source,
    };
    let pem = std::fs::read(f).map_err(ca_file)?;
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots
            .add(cert.map_err(ca_file)?)
            .map_err(|source| TlsError::Certificate {
                path: f.to_path_buf(),
                source,
            })?;
    }
    Ok(())
}
