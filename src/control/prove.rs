//! Before a reload publishes a new or changed client certificate, one live handshake proves
//! that the upstream accepts it (a renewal written half, a leaf without its intermediate, is
//! refused here rather than on every call). A refusal keeps the serving generation; an upstream
//! that cannot be reached does not block the reload (rotation must work during an outage).

use crate::data::proxy::Generation;
use crate::data::upstream::{probe, Proof};
use crate::model::config::{LoadedApp, LoadedCert, Validated};

/// What the proofs of one reload found.
#[derive(Debug, Default)]
pub struct Proofs {
    /// Certificates the upstream refused: the reload must not publish.
    pub refused: Vec<String>,
    /// Certificates that could not be proved, and why: said, not blocking.
    pub unproven: Vec<String>,
    /// How many were accepted.
    pub accepted: usize,
}

/// Whether `cert` of `app` is already presented, unchanged, by `serving` to the same upstream.
fn serving_unchanged(serving: &Generation, app: &LoadedApp, cert: &LoadedCert) -> bool {
    serving.app(app.name()).is_some_and(|a| {
        a.upstream_base() == app.upstream.base
            && a.identities
                .iter()
                .any(|i| i.name == cert.name && i.chain_sha256 == cert.chain_sha256())
    })
}

/// Proves each certificate of `v` that `serving` does not present unchanged, in apps that keep
/// `upstream.prove_certs_on_reload`; all at once, each within the connect, handshake and
/// response bounds. Blocks the calling (non-async) thread.
pub fn prove_changed(v: &Validated, serving: &Generation) -> Proofs {
    let todo: Vec<(&LoadedApp, &LoadedCert)> = v
        .apps
        .iter()
        .filter(|a| a.upstream_config.prove_certs_on_reload)
        .flat_map(|a| a.certs.iter().map(move |c| (a, c)))
        .filter(|(a, c)| !serving_unchanged(serving, a, c))
        .collect();
    let mut proofs = Proofs::default();
    if todo.is_empty() {
        return proofs;
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            proofs
                .unproven
                .push(format!("no runtime to prove certificates on: {e}"));
            return proofs;
        }
    };
    let timeouts = &v.config.timeouts;
    let results = rt.block_on(futures_util::future::join_all(
        todo.iter().map(|(a, c)| probe(a, c, timeouts)),
    ));
    for ((app, cert), proof) in todo.iter().zip(results) {
        let who = match v.config.has_apps() {
            true => format!("{}: {}", app.name(), cert.name),
            false => cert.name.clone(),
        };
        match proof {
            Proof::Accepted(_) => proofs.accepted += 1,
            Proof::Refused(_) => proofs.refused.push(format!("{who} {proof}")),
            Proof::Unproven(_) => proofs.unproven.push(format!("{who} {proof}")),
        }
    }
    proofs
}
