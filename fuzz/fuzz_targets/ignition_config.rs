//! The agent's Ignition parser (configs from fw_cfg, a URL or IMDS).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = imgbuild_ignition::apply::parse(data);
});
