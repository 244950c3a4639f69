//! The cluster-file parser and validator: any text gives a cluster or an
//! input error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = imgbuild::cluster::parse(text, "fuzz.toml");
    }
});
