//! The agent's node config (embedded, or written by an Ignition config).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = node_agent::config::NodeConfig::parse(data);
});
