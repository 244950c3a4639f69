//! What other writers may have put into etcd: lease keys and values, and the
//! network config. Input: key, a NUL byte, value.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (key, value) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b"/coreos.com/network/subnets/10.1.2.0-24"[..], data),
    };
    let _ = node_agent::flannel::manager::parse_kv(key, value, 0);
    let _ = node_agent::flannel::lease::LeaseAttrs::parse(value);
    let _ = node_agent::flannel::Network::parse(value);
});
