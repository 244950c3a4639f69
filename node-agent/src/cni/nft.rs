//! flannel's forward and masquerade rules as a native nftables table, as
//! flanneld makes them when the network config says `EnableNFTables`:
//! table `ip flannel-ipv4`, chains `postrtg` (nat, postrouting) and
//! `forward` (filter, forward). Sent to the kernel as one nfnetlink batch —
//! one transaction that replaces the whole table — so no program runs and
//! no half-built table is ever seen. No crate of the netlink family speaks
//! nf_tables, so the few messages are encoded here.

use std::net::Ipv4Addr;

use anyhow::{bail, Context, Result};
use ipnet::Ipv4Net;

use super::Rules;

pub const TABLE: &str = "flannel-ipv4";

// linux/netfilter/nfnetlink.h and nf_tables.h.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// nf_tables messages' types: the subsystem in the high byte.
const NFT_SUBSYS: u16 = NFNL_SUBSYS_NFTABLES << 8;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFPROTO_IPV4: u8 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;
const NLMSG_ERROR: u16 = 0x2;

const NF_INET_FORWARD: u32 = 2;
const NF_INET_POST_ROUTING: u32 = 4;
/// `srcnat` and `filter` in nft's priority names.
const PRIORITY_SRCNAT: i32 = 100;
const PRIORITY_FILTER: i32 = 0;

const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NFT_META_MARK: u32 = 3;
const NF_ACCEPT: i32 = 1;
const NFT_RETURN: i32 = -5;
const NF_NAT_RANGE_PROTO_RANDOM_FULLY: u32 = 0x10;
/// libnftnl's rule comment, in the rule's user data.
const NFTNL_UDATA_RULE_COMMENT: u8 = 0;

/// Kubernetes' "masquerade this" mark bit, which flannel leaves to kube-proxy.
const KUBE_MARK_MASQ: u32 = 0x4000;

/// One netlink attribute, possibly holding others.
enum Attr {
    Bytes(u16, Vec<u8>),
    Nested(u16, Vec<Attr>),
}

fn be32(kind: u16, v: u32) -> Attr {
    Attr::Bytes(kind, v.to_be_bytes().to_vec())
}

fn string(kind: u16, s: &str) -> Attr {
    let mut b = s.as_bytes().to_vec();
    b.push(0);
    Attr::Bytes(kind, b)
}

impl Attr {
    fn write(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        let kind = match self {
            Attr::Bytes(kind, b) => {
                out.extend_from_slice(b);
                *kind
            }
            Attr::Nested(kind, attrs) => {
                attrs.iter().for_each(|a| a.write(out));
                kind | NLA_F_NESTED
            }
        };
        let len = (out.len() - start) as u16;
        out[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        out[start + 2..start + 4].copy_from_slice(&kind.to_ne_bytes());
        out.resize(out.len().next_multiple_of(4), 0);
    }
}

// Attribute numbers below are each message's or expression's NFTA_* enum
// from nf_tables.h, in order; the comment before each use names them.

/// One expression of a rule: its name and its attributes.
/// NFTA_LIST_ELEM { NFTA_EXPR_NAME, NFTA_EXPR_DATA }.
fn expr(name: &str, data: Vec<Attr>) -> Attr {
    const NFTA_LIST_ELEM: u16 = 1;
    Attr::Nested(NFTA_LIST_ELEM, vec![string(1, name), Attr::Nested(2, data)])
}

/// `data` in a cmp or bitwise expression: NFTA_DATA_VALUE.
fn value(kind: u16, bytes: &[u8]) -> Attr {
    Attr::Nested(kind, vec![Attr::Bytes(1, bytes.to_vec())])
}

/// `ip saddr` (or `daddr`) `[!=] net`: load the address, mask it, compare.
fn match_net(source: bool, net: Ipv4Net, equal: bool) -> Vec<Attr> {
    let offset = if source { 12 } else { 16 };
    // payload: DREG, BASE, OFFSET, LEN; bitwise: SREG, DREG, LEN, MASK,
    // XOR; cmp: SREG, OP, DATA.
    vec![
        expr("payload", vec![be32(1, NFT_REG_1), be32(2, NFT_PAYLOAD_NETWORK_HEADER), be32(3, offset), be32(4, 4)]),
        expr(
            "bitwise",
            vec![
                be32(1, NFT_REG_1),
                be32(2, NFT_REG_1),
                be32(3, 4),
                value(4, &net.netmask().octets()),
                value(5, &[0; 4]),
            ],
        ),
        expr(
            "cmp",
            vec![
                be32(1, NFT_REG_1),
                be32(2, if equal { NFT_CMP_EQ } else { NFT_CMP_NEQ }),
                value(3, &net.network().octets()),
            ],
        ),
    ]
}

/// `meta mark & 0x4000 == 0x4000` (the mark is in host byte order).
fn match_kube_masq_mark() -> Vec<Attr> {
    let bit = KUBE_MARK_MASQ.to_ne_bytes();
    // meta: DREG, KEY.
    vec![
        expr("meta", vec![be32(1, NFT_REG_1), be32(2, NFT_META_MARK)]),
        expr("bitwise", vec![be32(1, NFT_REG_1), be32(2, NFT_REG_1), be32(3, 4), value(4, &bit), value(5, &[0; 4])]),
        expr("cmp", vec![be32(1, NFT_REG_1), be32(2, NFT_CMP_EQ), value(3, &bit)]),
    ]
}

fn verdict(code: i32) -> Attr {
    const NFTA_DATA_VERDICT: u16 = 2;
    // immediate: DREG, DATA { VERDICT { NFTA_VERDICT_CODE } }.
    let data = Attr::Nested(2, vec![Attr::Nested(NFTA_DATA_VERDICT, vec![be32(1, code as u32)])]);
    expr("immediate", vec![be32(1, NFT_REG_VERDICT), data])
}

fn masquerade_fully_random() -> Attr {
    // masq: FLAGS.
    expr("masq", vec![be32(1, NF_NAT_RANGE_PROTO_RANDOM_FULLY)])
}

/// A rule's matches followed by its action.
struct Rule {
    chain: &'static str,
    exprs: Vec<Attr>,
    comment: &'static str,
}

fn rule(chain: &'static str, comment: &'static str, matches: Vec<Vec<Attr>>, action: Attr) -> Rule {
    let mut exprs: Vec<Attr> = matches.into_iter().flatten().collect();
    exprs.push(action);
    Rule { chain, exprs, comment }
}

const POSTRTG: &str = "postrtg";
const FORWARD: &str = "forward";
const MASQ: &str = "flanneld masq";
const FWD: &str = "flanneld forward";

/// The same rules as the iptables chains, in the same order.
fn rules(r: &Rules) -> Vec<Rule> {
    let (n, s) = (r.network, r.subnet);
    let multicast: Ipv4Net = Ipv4Net::new(Ipv4Addr::new(224, 0, 0, 0), 4).expect("valid");
    let src = |net, eq| match_net(true, net, eq);
    let dst = |net, eq| match_net(false, net, eq);
    vec![
        rule(POSTRTG, MASQ, vec![match_kube_masq_mark()], verdict(NFT_RETURN)),
        rule(POSTRTG, MASQ, vec![src(s, true), dst(n, true)], verdict(NFT_RETURN)),
        rule(POSTRTG, MASQ, vec![src(n, true), dst(s, true)], verdict(NFT_RETURN)),
        rule(POSTRTG, MASQ, vec![src(n, false), dst(s, true)], verdict(NFT_RETURN)),
        rule(POSTRTG, MASQ, vec![src(n, true), dst(multicast, false)], masquerade_fully_random()),
        rule(POSTRTG, MASQ, vec![src(n, false), dst(n, true)], masquerade_fully_random()),
        rule(FORWARD, FWD, vec![src(n, true)], verdict(NF_ACCEPT)),
        rule(FORWARD, FWD, vec![dst(n, true)], verdict(NF_ACCEPT)),
    ]
}

/// A netlink message: header, nfgenmsg, attributes.
fn message(out: &mut Vec<u8>, kind: u16, flags: u16, seq: u32, family: u8, res_id: u16, attrs: &[Attr]) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&[family, 0]);
    out.extend_from_slice(&res_id.to_be_bytes());
    attrs.iter().for_each(|a| a.write(out));
    let len = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

/// NFTA_TABLE_NAME.
fn table_msg(out: &mut Vec<u8>, kind: u16, flags: u16, seq: u32) {
    message(out, NFT_SUBSYS | kind, NLM_F_REQUEST | NLM_F_ACK | flags, seq, NFPROTO_IPV4, 0, &[string(1, TABLE)]);
}

/// A base chain: `type KIND hook HOOK priority PRIO; policy accept;`.
/// NFTA_CHAIN_TABLE, NAME, HOOK { HOOKNUM, PRIORITY }, POLICY, TYPE.
fn chain_msg(out: &mut Vec<u8>, seq: u32, name: &str, kind: &str, hook: u32, priority: i32) {
    let attrs = [
        string(1, TABLE),
        string(3, name),
        Attr::Nested(4, vec![be32(1, hook), be32(2, priority as u32)]),
        be32(5, NF_ACCEPT as u32),
        string(7, kind),
    ];
    let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE;
    message(out, NFT_SUBSYS | NFT_MSG_NEWCHAIN, flags, seq, NFPROTO_IPV4, 0, &attrs);
}

/// NFTA_RULE_TABLE, CHAIN, EXPRESSIONS, USERDATA (the comment, as nft
/// stores it: type, length, text with its NUL).
fn rule_msg(out: &mut Vec<u8>, seq: u32, r: Rule) {
    let mut comment = vec![NFTNL_UDATA_RULE_COMMENT, r.comment.len() as u8 + 1];
    comment.extend_from_slice(r.comment.as_bytes());
    comment.push(0);
    let attrs = [string(1, TABLE), string(2, r.chain), Attr::Nested(4, r.exprs), Attr::Bytes(7, comment)];
    let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND;
    message(out, NFT_SUBSYS | NFT_MSG_NEWRULE, flags, seq, NFPROTO_IPV4, 0, &attrs);
}

/// The whole transaction, as bytes, and what each acked message does.
pub struct Batch {
    pub bytes: Vec<u8>,
    /// Message `first_seq + i` does `acked[i]`.
    pub acked: Vec<String>,
    pub first_seq: u32,
}

/// Makes sure the table exists, deletes it (with whatever an earlier run
/// put in it), and builds it again, in one transaction. Messages are
/// numbered from `seq`; the batch's begin and end are not acked.
pub fn batch(r: &Rules, seq: u32) -> Batch {
    let mut bytes = Vec::new();
    let mut acked = Vec::new();
    let subsys = NFNL_SUBSYS_NFTABLES;
    message(&mut bytes, NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, 0, subsys, &[]);
    let first_seq = seq + 1;
    let mut next = |what: String| {
        acked.push(what);
        first_seq + acked.len() as u32 - 1
    };
    table_msg(&mut bytes, NFT_MSG_NEWTABLE, NLM_F_CREATE, next(format!("add table ip {TABLE}")));
    table_msg(&mut bytes, NFT_MSG_DELTABLE, 0, next(format!("delete table ip {TABLE}")));
    table_msg(&mut bytes, NFT_MSG_NEWTABLE, NLM_F_CREATE, next(format!("add table ip {TABLE}")));
    chain_msg(&mut bytes, next(format!("add chain {POSTRTG}")), POSTRTG, "nat", NF_INET_POST_ROUTING, PRIORITY_SRCNAT);
    chain_msg(&mut bytes, next(format!("add chain {FORWARD}")), FORWARD, "filter", NF_INET_FORWARD, PRIORITY_FILTER);
    let mut in_chain = std::collections::BTreeMap::new();
    for rule in rules(r) {
        let n: &mut u32 = in_chain.entry(rule.chain).or_default();
        *n += 1;
        rule_msg(&mut bytes, next(format!("add rule {} #{n}", rule.chain)), rule);
    }
    let end = first_seq + acked.len() as u32;
    message(&mut bytes, NFNL_MSG_BATCH_END, NLM_F_REQUEST, end, 0, subsys, &[]);
    Batch { bytes, acked, first_seq }
}

/// Sends the batch and reads one ack per message; the kernel applies all of
/// it or none.
pub fn apply(r: &Rules) -> Result<()> {
    use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
    let mut sock = Socket::new(NETLINK_NETFILTER).context("opening an nfnetlink socket")?;
    sock.bind_auto().context("binding an nfnetlink socket")?;
    sock.connect(&SocketAddr::new(0, 0)).context("connecting to the kernel's nfnetlink")?;
    let batch = batch(r, 0);
    sock.send(&batch.bytes, 0).context("sending nftables rules")?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut acks = batch.acked.len();
    while acks > 0 {
        // The kernel runs the batch inside send(): its answers are queued.
        let n = sock
            .recv(&mut &mut buf[..], libc::MSG_DONTWAIT)
            .context("reading the kernel's answer to the nftables batch")?;
        for (seq, errno) in errors(&buf[..n])? {
            if errno != 0 {
                let what = seq.checked_sub(batch.first_seq).and_then(|i| batch.acked.get(i as usize));
                let err = std::io::Error::from_raw_os_error(-errno);
                bail!("nftables: the kernel refused `{}`: {err}", what.map_or("the batch", |w| w.as_str()));
            }
            acks = acks.saturating_sub(1);
        }
    }
    Ok(())
}

/// The (sequence number, errno) of each NLMSG_ERROR (an ack when 0) in `buf`.
fn errors(buf: &[u8]) -> Result<Vec<(u32, i32)>> {
    let u32_at = |at: usize| u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 bytes"));
    let mut out = Vec::new();
    let mut at = 0;
    while at + 16 <= buf.len() {
        let len = u32_at(at) as usize;
        if len < 16 || at + len > buf.len() {
            bail!("nftables: a malformed answer from the kernel");
        }
        let kind = u16::from_ne_bytes(buf[at + 4..at + 6].try_into().expect("2 bytes"));
        if kind == NLMSG_ERROR && len >= 20 {
            out.push((u32_at(at + 8), u32_at(at + 16) as i32));
        }
        at += len.next_multiple_of(4);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules { network: "10.1.0.0/16".parse().unwrap(), subnet: "10.1.5.0/24".parse().unwrap() }
    }

    /// The batch byte for byte, as a hex dump: any change to what goes to
    /// the kernel shows here (the namespace tests show how the kernel and
    /// `nft` read it).
    #[test]
    fn golden() {
        let b = batch(&rules(), 0);
        let hex: String = b
            .bytes
            .chunks(16)
            .map(|c| c.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" ") + "\n")
            .collect();
        testkit::assert_golden!("golden/flannel.nft.hex", &hex);
        assert_eq!(b.acked.len(), 5 + 8);
        assert_eq!(b.acked[1], "delete table ip flannel-ipv4");
        assert_eq!(b.acked[5], "add rule postrtg #1");
        assert_eq!(b.acked[12], "add rule forward #2");
    }

    /// Every message's length adds up to the batch, and attributes are
    /// 4-byte aligned: the kernel drops a batch that does not parse.
    #[test]
    fn messages_tile_the_batch() {
        let b = batch(&rules(), 7);
        let mut at = 0;
        let mut seqs = Vec::new();
        while at < b.bytes.len() {
            let len = u32::from_ne_bytes(b.bytes[at..at + 4].try_into().unwrap()) as usize;
            assert_eq!(len % 4, 0);
            seqs.push(u32::from_ne_bytes(b.bytes[at + 8..at + 12].try_into().unwrap()));
            at += len;
        }
        assert_eq!(at, b.bytes.len());
        assert_eq!(seqs, (7..7 + 15).collect::<Vec<_>>());
        assert_eq!(b.first_seq, 8);
    }

    #[test]
    fn acks_and_errors_are_read_by_sequence() {
        let mut buf = Vec::new();
        for (seq, errno) in [(3u32, 0i32), (4, -17)] {
            buf.extend_from_slice(&36u32.to_ne_bytes());
            buf.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            buf.extend_from_slice(&0u16.to_ne_bytes());
            buf.extend_from_slice(&seq.to_ne_bytes());
            buf.extend_from_slice(&0u32.to_ne_bytes());
            buf.extend_from_slice(&errno.to_ne_bytes());
            buf.extend_from_slice(&[0; 16]);
        }
        assert_eq!(errors(&buf).unwrap(), [(3, 0), (4, -17)]);
        assert!(errors(&buf[..30]).is_err());
    }
}
