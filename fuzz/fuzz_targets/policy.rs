//! The request policy: any method, path and headers are allowed or refused, never a panic.
//! Input: method, path and `name: value` header lines, separated by newlines.
#![no_main]

use amity_mtls_proxy::model::config::RoutesConfig;
use amity_mtls_proxy::data::proxy::{strip_hop_by_hop, Policy};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|b| *b == b'\n');
    let Some(Ok(method)) = lines.next().map(Method::from_bytes) else {
        return;
    };
    let Some(Ok(uri)) = lines.next().map(Uri::try_from) else {
        return;
    };
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) {
            headers.append(n, v);
        }
    }
    for injected in [false, true] {
        let _ = Policy::new(&RoutesConfig::default(), injected).classify(&method, &uri, &headers);
    }
    strip_hop_by_hop(&mut headers);
});
