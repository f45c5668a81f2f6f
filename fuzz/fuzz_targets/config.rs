//! The config parser and validator: any bytes give a config or a list of problems, never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    amity_mtls_proxy::install_crypto_provider();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/nonexistent/fuzz/config.yaml");
    if let Ok(config) = amity_mtls_proxy::model::config::parse(path, text) {
        // Relative paths resolve into a folder that does not exist, so validation
        // exercises every check without reading the machine's files.
        let _ = amity_mtls_proxy::model::config::validate(path, config, Path::new("/nonexistent/fuzz"));
    }
});
