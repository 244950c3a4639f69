//! The rules a value must pass wherever it is written: the cluster file,
//! a node config, or etcd's network config. Each returns the reason a value
//! is refused; the caller names the field.

use std::ops::RangeInclusive;

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::types::MacAddr;

/// The VXLAN network identifiers a device can have.
pub const VNI_RANGE: RangeInclusive<u32> = 1..=0x00ff_ffff;

/// The longest pod subnet a node may lease: a /31 has no room for a
/// gateway and a pod.
pub const MAX_SUBNET_LEN: u8 = 30;

pub fn check_vni(vni: u32) -> Result<(), String> {
    if VNI_RANGE.contains(&vni) {
        Ok(())
    } else {
        Err(format!("{vni} is not a VXLAN network identifier (1 to 16777215)"))
    }
}

/// A port a socket can be bound to; `what` is "UDP" or "TCP".
pub fn check_port(port: u16, what: &str) -> Result<(), String> {
    if port == 0 {
        Err(format!("0 is not a {what} port"))
    } else {
        Ok(())
    }
}

/// Node subnets of `len` bits must split the pod network in more than one.
pub fn check_subnet_len(len: u8, pods: Ipv4Net) -> Result<(), String> {
    if len <= pods.prefix_len() || len > MAX_SUBNET_LEN {
        return Err(format!(
            "{len} does not fit the pod network {pods} (must be longer than /{} and at most /{MAX_SUBNET_LEN})",
            pods.prefix_len()
        ));
    }
    Ok(())
}

/// An http(s) URL with a host, and nothing that could break out of a
/// command line or unit file (no spaces, no control bytes): what an etcd
/// endpoint must be, in the cluster file and in a node config.
pub fn is_http_url(url: &str) -> bool {
    url.bytes().all(|b| b.is_ascii_graphic())
        && url::Url::parse(url).is_ok_and(|u| {
            // No user:password@: it would travel in the clear and show in logs.
            matches!(u.scheme(), "http" | "https")
                && u.host().is_some()
                && u.username().is_empty()
                && u.password().is_none()
        })
}

pub fn check_http_url(url: &str) -> Result<(), String> {
    if is_http_url(url) {
        Ok(())
    } else {
        Err(format!("{url:?} is not an http(s) URL with a host"))
    }
}

/// Ranges no pod network may overlap, with what they are.
const SPECIAL: [(&str, &str); 6] = [
    ("0.0.0.0/8", "\"this network\" (0.0.0.0/8)"),
    ("127.0.0.0/8", "loopback (127.0.0.0/8)"),
    ("169.254.0.0/16", "link-local (169.254.0.0/16)"),
    ("224.0.0.0/4", "multicast (224.0.0.0/4)"),
    ("240.0.0.0/4", "reserved (240.0.0.0/4)"),
    ("255.255.255.255/32", "broadcast"),
];

/// Whether two networks share any address.
pub fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// What special range `net` overlaps, if any.
pub fn special_range(net: Ipv4Net) -> Option<&'static str> {
    SPECIAL
        .iter()
        .map(|(s, what)| (s.parse::<Ipv4Net>().expect("a CIDR"), *what))
        .find(|(s, _)| overlaps(*s, net))
        .map(|(_, what)| what)
}

/// A pod network must be ordinary unicast space and apart from the node
/// network (else its routes would capture the nodes' own traffic).
pub fn check_pod_network(network: Ipv4Net, node_net: Ipv4Net) -> Result<(), String> {
    if let Some(what) = special_range(network) {
        return Err(format!("pod network {network} overlaps {what}"));
    }
    if overlaps(network, node_net) {
        return Err(format!("pod network {network} overlaps the node network {}", node_net.trunc()));
    }
    Ok(())
}

/// A network as a cluster file or node config names one: no host bits, and
/// room for more than a point-to-point pair.
pub fn check_network(net: Ipv4Net) -> Result<(), String> {
    if net.trunc() != net {
        return Err(format!("{net} has host bits set; did you mean {}?", net.trunc()));
    }
    if net.prefix_len() > MAX_SUBNET_LEN {
        return Err(format!("{net} is too small for a network (at most /{MAX_SUBNET_LEN})"));
    }
    Ok(())
}

/// flannel's `SubnetMin`/`SubnetMax`: the first address of a `len`-bit
/// subnet inside the pod network.
pub fn check_subnet_bound(ip: Ipv4Addr, pods: Ipv4Net, len: u8) -> Result<(), String> {
    if !pods.contains(&ip) {
        return Err(format!("{ip} is outside the pod network {pods}"));
    }
    let subnet = Ipv4Net::new(ip, len).map_err(|_| format!("/{len} is not a prefix length"))?.trunc();
    if subnet.addr() != ip {
        return Err(format!("{ip} is not the start of a /{len} subnet; did you mean {}?", subnet.addr()));
    }
    Ok(())
}

/// A node's own address: a usable host of its network, ordinary unicast.
pub fn check_node_address(ip: Ipv4Addr, net: Ipv4Net) -> Result<(), String> {
    if let Some(what) = special_range(Ipv4Net::from(ip)) {
        return Err(format!("{ip} is {what}"));
    }
    if net.prefix_len() > MAX_SUBNET_LEN {
        return Err(format!("/{} leaves no room for a node network", net.prefix_len()));
    }
    if ip == net.network() || ip == net.broadcast() {
        return Err(format!("{ip} is the network's own or broadcast address"));
    }
    Ok(())
}

/// A MAC a node's interface can have: unicast and not all zeros.
pub fn check_mac(mac: MacAddr) -> Result<(), String> {
    if !mac.is_unicast() {
        return Err(format!("{mac} is a multicast address"));
    }
    if mac.0 == [0; 6] {
        return Err(format!("{mac} is all zeros"));
    }
    Ok(())
}

/// A machine's SMBIOS UUID as firmware and iPXE's `${uuid}` print it
/// (8-4-4-4-12 hex digits), lowercased; all zeros or all ones is what
/// firmware reports when it has none, so no machine is found by it.
pub fn parse_uuid(text: &str) -> Result<String, String> {
    let groups: Vec<&str> = text.split('-').collect();
    let shape = groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12]);
    if !shape || !groups.iter().all(|g| g.bytes().all(|b| b.is_ascii_hexdigit())) {
        return Err(format!("{text:?} is not a UUID (8-4-4-4-12 hex digits)"));
    }
    let uuid = text.to_ascii_lowercase();
    if uuid.bytes().filter(|b| *b != b'-').all(|b| b == b'0') || uuid.bytes().filter(|b| *b != b'-').all(|b| b == b'f')
    {
        return Err(format!("{uuid} is the UUID firmware reports when a machine has none"));
    }
    Ok(uuid)
}

/// A DNS label: what node names are (hostnames, etcd member names, file names).
pub fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// etcd's lease TTLs, in seconds (its own maximum is 9,000,000,000).
pub const LEASE_TTL_RANGE: std::ops::RangeInclusive<u64> = 10..=9_000_000_000;

/// An absolute path with no `..`, or (with `command`) a bare program name
/// looked up on PATH.
pub fn check_path(path: &std::path::Path, command: bool) -> Result<(), String> {
    use std::path::Component;
    let text = path.to_string_lossy();
    if text.is_empty() || text.contains('\0') || text.chars().any(char::is_control) {
        return Err(format!("{text:?} is not a path"));
    }
    let bare =
        command && path.components().count() == 1 && matches!(path.components().next(), Some(Component::Normal(_)));
    if !bare && (!path.is_absolute() || path.components().any(|c| c == Component::ParentDir)) {
        return Err(format!("{text:?} is not an absolute path without '..'"));
    }
    Ok(())
}

/// A name that is safe as a file name and a log field.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && !name.starts_with(['.', '-'])
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// A node interface's addressing: the gateway inside the static network,
/// an MTU VXLAN can run over, an interface name the kernel accepts, and
/// with DHCP no gateway or DNS of our own (the lease gives them). Errors
/// name the field, as in the node config (`node.net.FIELD`).
pub fn check_node_net(net: &crate::NodeNet, address: Option<Ipv4Net>) -> Result<(), (String, String)> {
    let at = |f: &str, r: String| Err((format!("node.net.{f}"), r));
    if let Some(name) = &net.interface {
        if let Err(r) = check_interface_name(name) {
            return at("interface", r);
        }
    }
    if let Some(mtu) = net.mtu {
        if !MTU_RANGE.contains(&mtu) {
            return at("mtu", format!("{mtu} is not {} to {}", MTU_RANGE.start(), MTU_RANGE.end()));
        }
    }
    if net.dhcp && net.gateway.is_some() {
        return at("gateway", "a node addressed by DHCP takes its router from the lease".into());
    }
    if net.dhcp && !net.dns.is_empty() {
        return at("dns", "a node addressed by DHCP takes its DNS servers from the lease".into());
    }
    if let (Some(gw), Some(addr)) = (net.gateway, address) {
        if !addr.trunc().contains(&gw) || gw == addr.addr() || gw == addr.network() || gw == addr.broadcast() {
            return at("gateway", format!("{gw} is not another host of the node network {}", addr.trunc()));
        }
    }
    if net.dns.len() > 3 {
        return at("dns", "at most 3 servers (resolv.conf reads no more)".into());
    }
    if let Some(d) = net.dns.iter().find(|d| d.is_unspecified() || d.is_broadcast() || d.is_multicast()) {
        return at("dns", format!("{d} is not a server address"));
    }
    Ok(())
}

/// MTUs of a node link: at least IPv4's 576 plus VXLAN's 50, at most a jumbo frame.
pub const MTU_RANGE: std::ops::RangeInclusive<u16> = 626..=9216;

/// An interface name as the kernel and systemd-networkd's `Name=` take it
/// literally: 1 to 15 letters, digits, `_`, `.` and `-`, not starting with
/// `-` or `.` (networkd reads `*`, `?`, `[` and `!` as patterns, the kernel
/// `%` as a template).
pub fn check_interface_name(name: &str) -> Result<(), String> {
    let ok = (1..=15).contains(&name.len())
        && !name.starts_with(['-', '.'])
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    ok.then_some(())
        .ok_or_else(|| format!("{name:?} is not an interface name (1 to 15 letters, digits, '_', '.' and '-')"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_as_firmware_prints_them() {
        assert_eq!(parse_uuid("4C4C4544-0042-3510-8052-B2C04F4E4B31").unwrap(), "4c4c4544-0042-3510-8052-b2c04f4e4b31");
        for bad in [
            "",
            "4c4c4544",
            "4c4c4544-0042-3510-8052-b2c04f4e4b3",
            "4c4c4544-0042-3510-8052-b2c04f4e4b3g",
            "4c4c45440042-3510-8052-b2c04f4e4b31-",
        ] {
            assert!(parse_uuid(bad).unwrap_err().contains("is not a UUID"), "{bad}");
        }
        for none in ["00000000-0000-0000-0000-000000000000", "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF"] {
            assert!(parse_uuid(none).unwrap_err().contains("when a machine has none"), "{none}");
        }
    }

    #[test]
    fn vni_zero_and_25_bits_are_refused() {
        assert!(check_vni(0).is_err() && check_vni(1 << 24).is_err());
        assert!(check_vni(1).is_ok() && check_vni(0x00ff_ffff).is_ok());
    }

    #[test]
    fn subnet_lengths() {
        let pods: Ipv4Net = "10.244.0.0/16".parse().unwrap();
        assert!(check_subnet_len(24, pods).is_ok() && check_subnet_len(30, pods).is_ok());
        for bad in [0, 16, 31, 32] {
            assert!(check_subnet_len(bad, pods).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls() {
        assert!(is_http_url("https://10.0.0.1:2379"));
        for bad in
            ["", "10.0.0.1:2379", "unix:///run/etcd.sock", "http://", "http://a b", "http://a\nb", "http://u:p@a:2379"]
        {
            assert!(!is_http_url(bad), "{bad:?}");
        }
    }

    #[test]
    fn pod_networks() {
        let nodes: Ipv4Net = "172.17.8.0/24".parse().unwrap();
        assert!(check_pod_network("10.244.0.0/16".parse().unwrap(), nodes).is_ok());
        for bad in ["127.0.0.0/16", "172.17.0.0/16", "169.254.0.0/16", "224.0.0.0/8", "0.0.0.0/0"] {
            assert!(check_pod_network(bad.parse().unwrap(), nodes).is_err(), "{bad}");
        }
    }

    #[test]
    fn node_net_rules() {
        let addr: Ipv4Net = "172.17.8.103/24".parse().unwrap();
        let ok = crate::NodeNet { gateway: Some("172.17.8.1".parse().unwrap()), mtu: Some(1450), ..Default::default() };
        assert!(check_node_net(&ok, Some(addr)).is_ok());
        let outside = crate::NodeNet { gateway: Some("10.0.0.1".parse().unwrap()), ..Default::default() };
        assert_eq!(check_node_net(&outside, Some(addr)).unwrap_err().0, "node.net.gateway");
        let dhcp_gw = crate::NodeNet { dhcp: true, gateway: Some("172.17.8.1".parse().unwrap()), ..Default::default() };
        assert_eq!(check_node_net(&dhcp_gw, None).unwrap_err().0, "node.net.gateway");
        let tiny = crate::NodeNet { mtu: Some(500), ..Default::default() };
        assert_eq!(check_node_net(&tiny, Some(addr)).unwrap_err().0, "node.net.mtu");
        for bad in ["", "a/b", "eth0:1", "x234567890123456", "..", "e 1", "*", "!eno1", "eth%d", "en\\o1", "-x"] {
            assert!(check_interface_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_interface_name("enp1s0f1").is_ok());
    }
}
