//! Bounded reads of certificates and keys, and writes that never leave half a file.

use std::io::Write as _;
use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::{CertInfo, PkiError};

/// Largest file the proxy reads (config, certificates, keys, secrets).
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Reads a regular file of at most [`MAX_FILE_BYTES`]; a device, FIFO or huge
/// file named by mistake is an error, never a hang or an unbounded read.
pub fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_FILE_BYTES} bytes"
        )));
    }
    Ok(bytes)
}

pub(super) fn read(path: &Path) -> Result<Vec<u8>, PkiError> {
    read_bounded(path).map_err(|source| PkiError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a PEM certificate chain (leaf first); errors when there is none or one does not parse.
pub fn read_cert_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let bytes = read(path)?;
    parse_cert_chain(path, &bytes)
}

pub(super) fn parse_cert_chain(
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let bad = |reason: String| PkiError::BadFile {
        path: path.to_path_buf(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM certificate: {e}")))?;
    if chain.is_empty() {
        return Err(bad(
            "not a PEM certificate: no '-----BEGIN CERTIFICATE-----' block found".into(),
        ));
    }
    for (i, c) in chain.iter().enumerate() {
        CertInfo::from_der(c).map_err(|e| bad(format!("certificate #{} {e}", i + 1)))?;
    }
    Ok(chain)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PkiError> {
    let bytes = read(path)?;
    let key = PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| PkiError::BadFile {
        path: path.to_path_buf(),
        reason: match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "not a PEM private key: no 'PRIVATE KEY' block found".to_string()
            }
            e => format!("not a PEM private key: {e}"),
        },
    })?;
    rustls::crypto::aws_lc_rs::sign::any_supported_type(&key).map_err(|e| PkiError::BadFile {
        path: path.to_path_buf(),
        reason: format!("unsupported private key: {e}"),
    })?;
    Ok(key)
}

/// Whether the private key is the one the certificate was issued for.
pub fn key_matches(key: &PrivateKeyDer<'_>, cert: &CertInfo) -> Result<(), String> {
    let signer = rustls::crypto::aws_lc_rs::sign::any_supported_type(key)
        .map_err(|e| format!("unsupported private key: {e}"))?;
    let spki = signer
        .public_key()
        .ok_or_else(|| "cannot derive the public key of this private key".to_string())?;
    if spki.as_ref() == cert.spki.as_slice() {
        Ok(())
    } else {
        Err("does not match the public key of the certificate".to_string())
    }
}

/// Writes a file through a temporary name and a rename, so a failure never leaves half a file.
/// `mode` is applied before any content is written; `overwrite: false` refuses an existing file.
pub fn write_file(
    path: &Path,
    contents: &[u8],
    mode: u32,
    overwrite: bool,
) -> Result<(), PkiError> {
    use std::os::unix::fs::OpenOptionsExt;
    let werr = |source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    };
    if !overwrite && path.exists() {
        return Err(PkiError::Refused(format!(
            "{} already exists; not overwritten (use --force to replace it)",
            path.display()
        )));
    }
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(werr)?;
        }
    }
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(werr)
}
