//! Reading certificates and keys from PEM, with errors that name the input.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsError;

/// PEM bytes, or a file to read them from (and reread on reload).
#[derive(Clone, Debug)]
pub(crate) enum PemSource {
    File(PathBuf),
    Bytes(Arc<[u8]>),
}

impl PemSource {
    pub(crate) fn read(&self) -> Result<(Vec<u8>, String), TlsError> {
        match self {
            PemSource::File(path) => std::fs::read(path)
                .map(|bytes| (bytes, path.display().to_string()))
                .map_err(|source| TlsError::Read {
                    path: path.clone(),
                    source,
                }),
            PemSource::Bytes(bytes) => Ok((bytes.to_vec(), "PEM input".to_owned())),
        }
    }

    pub(crate) fn path(&self) -> Option<&Path> {
        match self {
            PemSource::File(path) => Some(path),
            PemSource::Bytes(_) => None,
        }
    }
}

pub(crate) fn certificates(
    pem: &[u8],
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(what, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificates(what.to_owned()));
    }
    Ok(certs)
}

pub(crate) fn private_key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey(what.to_owned()),
        e => pem_error(what, e),
    })
}

pub(crate) fn root_store(pem: &[u8], what: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(pem, what)? {
        roots
            .add(cert)
            .map_err(|e| TlsError::Certificate(format!("{what}: unusable CA certificate: {e}")))?;
    }
    Ok(roots)
}

fn pem_error(what: &str, e: pem::Error) -> TlsError {
    TlsError::Pem {
        what: what.to_owned(),
        detail: e.to_string(),
    }
}
