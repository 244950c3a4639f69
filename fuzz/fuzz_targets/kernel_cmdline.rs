//! The kernel command line as the agent reads it for config sources.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    let none = Path::new("/nonexistent/imgbuild-fuzz");
    for source in node_agent::config::providers::sources(&line, none, none) {
        let _ = source.to_string();
    }
});
