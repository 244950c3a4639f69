//! QEMU's qcow2 (version 2) from raw bytes, written here rather than by
//! `qemu-img` so a build needs no QEMU tools and stays byte-reproducible.
//! Only clusters holding data are stored: a mostly empty disk stays small.
//!
//! Layout: header | L1 table | refcount table | refcount blocks | L2 tables | data.

use anyhow::{ensure, Result};

const CLUSTER_BITS: u32 = 16;
const CLUSTER: u64 = 1 << CLUSTER_BITS;
/// L2 entries per table; refcount entries (16-bit) per block.
const L2_ENTRIES: u64 = CLUSTER / 8;
const REFS_PER_BLOCK: u64 = CLUSTER / 2;
/// "Refcount is exactly one": set on every L1 and L2 entry we write.
const COPIED: u64 = 1 << 63;

/// A qcow2 image of `virtual_size` bytes whose first bytes are `raw`.
pub fn from_raw(raw: &[u8], virtual_size: u64) -> Result<Vec<u8>> {
    ensure!(raw.len() as u64 <= virtual_size, "disk contents larger than the disk");
    let guest_clusters = virtual_size.div_ceil(CLUSTER);
    let l1_size = guest_clusters.div_ceil(L2_ENTRIES);
    ensure!(l1_size * 8 <= CLUSTER, "disk too large for a one-cluster L1 table");
    let data: Vec<u64> = (0..(raw.len() as u64).div_ceil(CLUSTER)).filter(|&c| !is_zero(chunk(raw, c))).collect();
    let mut l2_of: Vec<u64> = data.iter().map(|c| c / L2_ENTRIES).collect();
    l2_of.dedup();
    // Clusters before the refcount blocks, and the blocks themselves, depend
    // on each other only through the total: iterate to a fixed point.
    let fixed = 3 + l2_of.len() as u64 + data.len() as u64;
    let mut blocks = 1;
    while (fixed + blocks).div_ceil(REFS_PER_BLOCK) > blocks {
        blocks += 1;
    }
    ensure!(blocks * 8 <= CLUSTER, "disk too large for a one-cluster refcount table");
    let total = fixed + blocks;
    let (l1_at, rt_at, rb_at) = (1, 2, 3);
    let l2_at = rb_at + blocks;
    let data_at = l2_at + l2_of.len() as u64;

    let mut img = vec![0u8; (total * CLUSTER) as usize];
    header(&mut img[..72], virtual_size, l1_size as u32, l1_at * CLUSTER, rt_at * CLUSTER);
    for b in 0..blocks {
        put_u64(&mut img, rt_at * CLUSTER + b * 8, (rb_at + b) * CLUSTER);
    }
    for c in 0..total {
        let at = rb_at * CLUSTER + c * 2;
        img[at as usize..at as usize + 2].copy_from_slice(&1u16.to_be_bytes());
    }
    for (i, l1_index) in l2_of.iter().enumerate() {
        put_u64(&mut img, l1_at * CLUSTER + l1_index * 8, ((l2_at + i as u64) * CLUSTER) | COPIED);
    }
    for (i, &guest) in data.iter().enumerate() {
        let host = data_at + i as u64;
        let table = l2_at + l2_of.binary_search(&(guest / L2_ENTRIES)).expect("listed") as u64;
        put_u64(&mut img, table * CLUSTER + (guest % L2_ENTRIES) * 8, (host * CLUSTER) | COPIED);
        let bytes = chunk(raw, guest);
        let at = (host * CLUSTER) as usize;
        img[at..at + bytes.len()].copy_from_slice(bytes);
    }
    Ok(img)
}

fn chunk(raw: &[u8], cluster: u64) -> &[u8] {
    let start = (cluster * CLUSTER) as usize;
    &raw[start..(start + CLUSTER as usize).min(raw.len())]
}

fn is_zero(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

fn put_u64(img: &mut [u8], at: u64, v: u64) {
    img[at as usize..at as usize + 8].copy_from_slice(&v.to_be_bytes());
}

/// The 72-byte version 2 header.
fn header(h: &mut [u8], size: u64, l1_size: u32, l1_offset: u64, refcount_table_offset: u64) {
    h[0..4].copy_from_slice(b"QFI\xfb");
    h[4..8].copy_from_slice(&2u32.to_be_bytes());
    // 8..20: no backing file.
    h[20..24].copy_from_slice(&CLUSTER_BITS.to_be_bytes());
    h[24..32].copy_from_slice(&size.to_be_bytes());
    // 32..36: no encryption.
    h[36..40].copy_from_slice(&l1_size.to_be_bytes());
    h[40..48].copy_from_slice(&l1_offset.to_be_bytes());
    h[48..56].copy_from_slice(&refcount_table_offset.to_be_bytes());
    h[56..60].copy_from_slice(&1u32.to_be_bytes()); // refcount table clusters
                                                    // 60..72: no snapshots.
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_back(img: &[u8], size: u64) -> Vec<u8> {
        let be = |at: u64| u64::from_be_bytes(img[at as usize..at as usize + 8].try_into().unwrap());
        let l1 = be(40);
        let mut out = vec![0u8; size as usize];
        for c in 0..size.div_ceil(CLUSTER) {
            let l2 = be(l1 + (c / L2_ENTRIES) * 8) & !COPIED;
            if l2 == 0 {
                continue;
            }
            let host = be(l2 + (c % L2_ENTRIES) * 8) & !COPIED;
            if host != 0 {
                let n = CLUSTER.min(size - c * CLUSTER) as usize;
                let at = (c * CLUSTER) as usize;
                out[at..at + n].copy_from_slice(&img[host as usize..host as usize + n]);
            }
        }
        out
    }

    #[test]
    fn blank_disk_is_four_clusters() {
        let img = from_raw(&[], 2 << 30).unwrap();
        assert_eq!(img.len() as u64, 4 * CLUSTER);
        assert_eq!(&img[..4], b"QFI\xfb");
    }

    #[test]
    fn data_reads_back_and_zero_clusters_are_not_stored() {
        let mut raw = vec![0u8; (CLUSTER * 20000) as usize];
        raw[5] = 1;
        raw[(CLUSTER * 9000 + 7) as usize] = 2; // in the second L2 table
        raw[(CLUSTER * 20000 - 1) as usize] = 3;
        let size = CLUSTER * 30000;
        let img = from_raw(&raw, size).unwrap();
        assert_eq!(img.len() as u64, (3 + 1 + 3 + 3) * CLUSTER);
        let back = read_back(&img, size);
        assert_eq!(&back[..raw.len()], &raw[..]);
        assert!(back[raw.len()..].iter().all(|&b| b == 0));
    }
}
