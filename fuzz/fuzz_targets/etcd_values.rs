//! What other writers may have put into etcd: lease keys and values, and the
//! network config. Input: key, a NUL byte, value.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (key, value) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b"/coreos.com/network/subnets/10.1.2.0-24"[..], data),
    };
    let lease = node_agent::flannel::manager::parse_kv(key, value, 0);
    let _ = node_agent::flannel::lease::LeaseAttrs::parse(value);
    // What the agent checks before the kernel sees a value.
    let net = node_agent::flannel::Network::parse(value)
        .or_else(|_| node_agent::flannel::Network::parse(br#"{"Network":"10.1.0.0/16","Backend":{"Type":"vxlan"}}"#));
    if let Ok(net) = net {
        let view = node_agent::flannel::guard::NodeView {
            node_net: "172.17.8.103/24".parse().unwrap(),
            routes: vec![("192.168.0.0/16".parse().unwrap(), "eth1".into())],
            etcd: vec!["172.17.8.101".parse().unwrap()],
        };
        let _ = node_agent::flannel::guard::check_network(&net, &view);
        let local = node_agent::flannel::guard::Local {
            address: "172.17.8.103/24".parse().unwrap(),
            vtep_mac: Some(node_agent::types::MacAddr([0x52, 0x54, 0, 0, 0, 3])),
        };
        if let Some(l) = lease {
            let _ = node_agent::flannel::guard::lease_problem(&net, &local, &l);
        }
    }
});
