//! The label sets of the metrics: an app's name, and what each family is counted by.

use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};

/// An app's name as a label value: shared, so that labelling a sample copies no text.
#[derive(Clone, Debug, Hash, PartialEq, Eq, Default)]
pub struct AppName(pub Arc<str>);

impl AppName {
    /// The label of requests refused before an app was chosen.
    pub fn none() -> Self {
        Self(Arc::from(""))
    }
}

impl EncodeLabelValue for AppName {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, &self.0)
    }
}

/// A single `app` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabels {
    /// The app's name.
    pub app: AppName,
}

/// Labels of `amity_proxy_upstream_handshake_failures_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppReason {
    /// The app's name.
    pub app: AppName,
    /// Why.
    pub reason: &'static str,
}

/// Labels of `amity_proxy_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The app's name; empty for a request refused before an app was chosen.
    pub app: AppName,
    /// Route class: auth_token, admin, extra, denied.
    pub route: &'static str,
    /// HTTP status sent to the backend.
    pub status: u16,
}

/// A single `reason` label from a fixed set, hashed without an allocation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FixedReason {
    /// Why.
    pub reason: &'static str,
}

/// A single `result` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// ok or failed.
    pub result: String,
}

/// Labels of per-certificate gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertLabels {
    /// The app's name.
    pub app: AppName,
    /// Console name.
    pub name: String,
    /// Serial, upper-case hex.
    pub serial: String,
}
