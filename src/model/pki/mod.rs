//! Keys, CSRs, the local dev CA, and certificate inspection.
//!
//! Generation and signing use rcgen; reading PEM uses rustls' `PemObject`;
//! inspection uses x509-parser. One job per file: `x509` reads what a certificate says and
//! classifies its validity, `choice` which certificate is presented first, `clock` tells the time, `files` reads and writes bounded files,
//! `csr` makes keys and CSRs, `store` keeps the certs folder, `dev_ca` is the local CA.
//! Every public item is re-exported here, so callers name it `pki::Item`.

use std::path::PathBuf;

mod choice;
mod clock;
mod csr;
mod dev_ca;
mod files;
mod store;
mod x509;

pub use choice::{preferred, Candidate};
pub use clock::{now_unix, rfc3339};
pub use csr::{generate_csr, CertName, CsrRequest, KeyType, NewCsr};
pub use dev_ca::{default_server_sans, DevCa, Validity};
pub use files::{
    key_matches, read_bounded, read_cert_chain, read_private_key, write_file, MAX_FILE_BYTES,
};
pub use store::{CertEntry, CertStore, EntryState, ImportReport};
pub use x509::{identities, sha256_fingerprint, CertInfo, CertState};

/// Amity accepts at most this many client certificates per application.
pub const MAX_CERTS: usize = 2;
/// Longest certificate name the Amity console accepts.
pub const MAX_NAME_LEN: usize = 30;
/// Renew when fewer days than this remain.
pub const RENEW_DAYS: i64 = 30;
/// File stem of the dev CA in the certs folder.
pub const DEV_CA: &str = "dev-ca";
/// File stem of the dev server certificate (for the stand-in Amity).
pub const DEV_SERVER: &str = "dev-server";

/// Errors of the certificate workflow; each names the file or value at fault.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A certificate name breaks the console's rules.
    #[error("certificate name {name:?}: {reason}")]
    BadName {
        /// The name given.
        name: String,
        /// The rule it breaks.
        reason: String,
    },
    /// A file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("{}: cannot write: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file's content is wrong.
    #[error("{}: {reason}", path.display())]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The command was refused; the reason says why and what to do.
    #[error("{0}")]
    Refused(String),
    /// rcgen could not generate or sign.
    #[error("{context}: {source}")]
    Rcgen {
        /// What was being done.
        context: &'static str,
        /// rcgen's error.
        source: rcgen::Error,
    },
}

fn rcgen_err(context: &'static str) -> impl FnOnce(rcgen::Error) -> PkiError {
    move |source| PkiError::Rcgen { context, source }
}
