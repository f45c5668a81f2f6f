//! The hyper service: policy (deny by default), header rewrite, forwarding, and Amity-shaped
//! errors for everything the proxy itself refuses. One job per file:
//!
//! - `phases.rs`: [`handle`] and the request's phases, in order; `select.rs`: which app;
//! - `user_id.rs`: a token call's userId, read as Amity reads it; `audit.rs`: its record;
//! - `policy.rs`: the allow-list; `caller.rs`: who calls, and admission;
//! - `headers.rs`: hop-by-hop headers and request ids; `secrets.rs`: the secrets added;
//! - `identity.rs`, `failover.rs`, `send.rs`: the certificates, which one is presented, and
//!   the exchange with the upstream; `body.rs`: response bodies;
//! - `generation.rs`: the state one configuration serves with, `app.rs` one app's part;
//!   `reject.rs`: the proxy's own error responses.

mod app;
mod audit;
mod body;
mod call;
mod caller;
mod client_cert;
mod failover;
mod failure;
mod generation;
mod headers;
mod phases;
mod policy;
mod rate;
mod reject;
mod secrets;
mod select;
mod send;
mod user_id;

use std::sync::Arc;

use arc_swap::ArcSwap;

pub use self::app::{App, CertRole, CertRow};
pub use self::audit::Audit;
pub use self::body::{FromUpstream, ProxyBody};
pub use self::caller::ConnInfo;
pub use self::client_cert::{ClientCert, HandshakeResult};
pub use self::generation::{AppReadiness, BuildError, Generation, Readiness};
pub use self::headers::{strip_hop_by_hop, REQUEST_ID};
pub use self::phases::handle;
pub use self::policy::Policy;
pub use self::reject::Reject;
pub use crate::model::config::RouteClass;

use crate::model::config::Validated;
use crate::telemetry::metrics::Metrics;

/// The proxy's shared state: the current generation and the metrics.
pub struct ProxyState {
    /// The generation new requests use; replaced through [`ProxyState::publish`].
    pub current: ArcSwap<Generation>,
    /// Metrics, shared by every generation.
    pub metrics: Arc<Metrics>,
}

impl ProxyState {
    /// State serving `v`.
    pub fn new(v: &Validated) -> Result<Arc<Self>, BuildError> {
        let metrics = Arc::new(Metrics::new());
        let generation = Arc::new(Generation::build(v, metrics.clone(), None)?);
        generation.publish_metrics(None);
        metrics.reload(true);
        Ok(Arc::new(Self {
            current: ArcSwap::new(generation),
            metrics,
        }))
    }

    /// Swaps `generation` in for new requests and makes the metrics describe its
    /// certificates. In-flight requests keep the generation they started with.
    pub fn publish(&self, generation: Generation) {
        let generation = Arc::new(generation);
        let _series = self.metrics.cert_series.lock();
        let previous = self.current.swap(generation.clone());
        generation.publish_metrics(Some(&previous));
    }
}
