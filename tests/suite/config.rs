//! What a user sees of `config.yaml` mistakes that serde catches (a route class or a
//! method misspelt), and what a reload says about settings only a restart applies.

use crate::common;

use std::path::Path;

use amity_mtls_proxy::model::config::{self, ConfigError};
use common::{call, json, proxied};
use http::{Method, StatusCode};

const BASE: &str = "listen: 127.0.0.1:1\nupstream: {region: sg}\n";

/// The error for `yaml` as `check` prints it, and as `POST /reload` answers it.
fn parse_error(yaml: &str) -> (String, String) {
    let e = config::parse(Path::new("config.yaml"), yaml).unwrap_err();
    assert!(matches!(e, ConfigError::Parse { .. }), "{e:?}");
    (e.to_string(), e.without_snippet())
}

#[test]
fn a_misspelt_route_class_is_named_with_its_field_and_the_classes_allowed() {
    let yaml = format!("{BASE}callers:\n  - identity: a\n    routes: [auth_token, auth_tokn]\n");
    let (shown, answered) = parse_error(&yaml);
    for message in [&shown, &answered] {
        assert!(message.contains("callers[].routes"), "{message}");
        assert!(
            message.contains("\"auth_tokn\" is not a route class"),
            "{message}"
        );
        assert!(
            message.contains("use auth_token, admin, extra"),
            "{message}"
        );
        assert!(message.contains("line 5"), "{message}");
    }
    // `check` also shows the line itself.
    assert!(shown.contains("routes: [auth_token, auth_tokn]"), "{shown}");
}

#[test]
fn a_misspelt_method_is_named_with_its_field() {
    let yaml = format!("{BASE}routes:\n  extra:\n    - {{method: 'G ET', path: /api/v3/x}}\n");
    let (_, answered) = parse_error(&yaml);
    assert!(answered.contains("routes.extra[].method"), "{answered}");
    assert!(
        answered.contains("\"G ET\" is not an HTTP method"),
        "{answered}"
    );
    assert!(answered.contains("line 5"), "{answered}");
    let yaml = format!("{BASE}routes:\n  extra:\n    - {{method: PATCH, path: /api/v3/x}}\n");
    let c = config::parse(Path::new("config.yaml"), &yaml).unwrap();
    let method = c.single.unwrap().routes.extra[0]
        .method
        .as_ref()
        .map(|m| m.to_string());
    assert_eq!(method.as_deref(), Some("PATCH"));
}

#[tokio::test]
async fn a_reload_names_every_setting_that_needs_a_restart() {
    let (env, _mock, proxy) = proxied("").await;
    let path = env.dir.path().join("config.yaml");
    let changed = std::fs::read_to_string(&path).unwrap()
        + "workers: 3\nlimits:\n  max_connections: 77\n  max_header_bytes: 9000\n  max_in_flight: 5\ntimeouts:\n  idle_ms: 1234\n  send_ms: 6789\n  header_read_ms: 2345\n  inbound_handshake_ms: 3456\n  shutdown_grace_ms: 4567\n  response_ms: 5678\n";
    std::fs::write(&path, changed).unwrap();
    let (status, _, body) = call(proxy.admin_addr, Method::POST, "/reload", &[], "")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let message = json(&body)["message"].as_str().unwrap().to_string();
    assert!(
        message.ends_with(
            "; restart to apply workers, limits.max_connections, limits.max_header_bytes, \
             timeouts.header_read_ms, timeouts.idle_ms, timeouts.send_ms, \
             timeouts.inbound_handshake_ms, timeouts.shutdown_grace_ms"
        ),
        "{message}"
    );
    // What reloads is not listed.
    assert!(!message.contains("max_in_flight"), "{message}");
    assert!(!message.contains("response_ms"), "{message}");
}
