//! An EFI disk image per node: a GPT disk with an EFI system partition that
//! boots the node's kernel and initramfs through systemd-boot (Debian's
//! signed-off build, one loader entry, no menu), and an empty data partition
//! that the etcd role formats on first boot. Built in memory, byte-for-byte
//! reproducible (fixed GUIDs from the node name, fixed FAT timestamps).

use std::io::{Cursor, Write};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

const SECTOR: u64 = 512;
const MIB: u64 = 1 << 20;
const ENTRIES: u64 = 128;
const ENTRY_SIZE: u64 = 128;
/// Sectors the partition entry array takes (128 × 128 bytes).
const ENTRY_SECTORS: u64 = ENTRIES * ENTRY_SIZE / SECTOR;

const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
const LINUX_DATA_TYPE: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

/// What goes on the disk.
pub struct DiskSpec<'a> {
    pub node: &'a str,
    pub vmlinuz: &'a [u8],
    pub initrd: &'a [u8],
    pub cmdline: &'a str,
    /// `systemd-bootx64.efi`.
    pub bootloader: &'a [u8],
    pub data_mib: u64,
}

/// The whole raw disk.
pub fn efi_disk(spec: &DiskSpec) -> Result<Vec<u8>> {
    let content = (spec.vmlinuz.len() + spec.initrd.len() + spec.bootloader.len()) as u64;
    // Room for FAT32's own structures and slack; FAT32 wants at least ~33 MiB.
    let esp_mib = (content * 5 / 4 / MIB + 8).max(64);
    let esp = esp_image(spec, esp_mib * MIB)?;
    let esp_start = MIB / SECTOR;
    let esp_end = esp_start + esp_mib * MIB / SECTOR - 1;
    let data_start = esp_end + 1;
    let data_end = data_start + spec.data_mib * MIB / SECTOR - 1;
    let total = data_end + 1 + MIB / SECTOR; // 1 MiB tail for the backup GPT
    let mut disk = vec![0u8; (total * SECTOR) as usize];
    let parts = [
        (guid(ESP_TYPE), node_guid(spec.node, "esp"), esp_start, esp_end, "EFI System"),
        (guid(LINUX_DATA_TYPE), node_guid(spec.node, "data"), data_start, data_end, "etcd-data"),
    ];
    let entries = entry_array(&parts);
    protective_mbr(&mut disk, total);
    let last = total - 1;
    let first_usable = 2 + ENTRY_SECTORS;
    let last_usable = last - ENTRY_SECTORS - 1;
    let disk_guid = node_guid(spec.node, "disk");
    let primary = header(1, last, first_usable, last_usable, &disk_guid, 2, &entries);
    let backup = header(last, 1, first_usable, last_usable, &disk_guid, last - ENTRY_SECTORS, &entries);
    put(&mut disk, SECTOR, &primary);
    put(&mut disk, 2 * SECTOR, &entries);
    put(&mut disk, (last - ENTRY_SECTORS) * SECTOR, &entries);
    put(&mut disk, last * SECTOR, &backup);
    put(&mut disk, esp_start * SECTOR, &esp);
    Ok(disk)
}

fn put(disk: &mut [u8], at: u64, bytes: &[u8]) {
    disk[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
}

/// The FAT32 ESP with systemd-boot and one entry.
fn esp_image(spec: &DiskSpec, size: u64) -> Result<Vec<u8>> {
    let mut img = Cursor::new(vec![0u8; size as usize]);
    let label = *b"IMGBUILD   ";
    let id = u32::from_le_bytes(node_guid(spec.node, "fat")[..4].try_into().expect("4 bytes"));
    fatfs::format_volume(&mut img, fatfs::FormatVolumeOptions::new().volume_id(id).volume_label(label))
        .context("formatting the ESP")?;
    img.set_position(0);
    {
        let fs = fatfs::FileSystem::new(&mut img, fatfs::FsOptions::new().time_provider(&FIXED_TIME))
            .context("opening the ESP")?;
        let root = fs.root_dir();
        for d in ["EFI", "EFI/BOOT", "loader", "loader/entries"] {
            root.create_dir(d)?;
        }
        let entry = format!(
            "title imgbuild {node}\nlinux /vmlinuz\ninitrd /initrd.img\noptions {}\n",
            spec.cmdline.trim(),
            node = spec.node
        );
        let files: [(&str, &[u8]); 5] = [
            ("EFI/BOOT/BOOTX64.EFI", spec.bootloader),
            ("loader/loader.conf", b"default imgbuild.conf\ntimeout 0\nconsole-mode keep\n"),
            ("loader/entries/imgbuild.conf", entry.as_bytes()),
            ("vmlinuz", spec.vmlinuz),
            ("initrd.img", spec.initrd),
        ];
        for (path, bytes) in files {
            root.create_file(path)?.write_all(bytes).with_context(|| format!("writing {path} to the ESP"))?;
        }
        drop(root);
        fs.unmount()?;
    }
    Ok(img.into_inner())
}

/// FAT timestamps fixed at the epoch of FAT (1980-01-01) for reproducibility.
#[derive(Debug)]
struct FixedTime;
static FIXED_TIME: FixedTime = FixedTime;

impl fatfs::TimeProvider for FixedTime {
    fn get_current_date(&self) -> fatfs::Date {
        fatfs::Date { year: 1980, month: 1, day: 1 }
    }
    fn get_current_date_time(&self) -> fatfs::DateTime {
        fatfs::DateTime { date: self.get_current_date(), time: fatfs::Time { hour: 0, min: 0, sec: 0, millis: 0 } }
    }
}

fn protective_mbr(disk: &mut [u8], total: u64) {
    let size = (total - 1).min(u64::from(u32::MAX)) as u32;
    let mut e = [0u8; 16];
    e[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
    e[4] = 0xee;
    e[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
    e[8..12].copy_from_slice(&1u32.to_le_bytes());
    e[12..16].copy_from_slice(&size.to_le_bytes());
    disk[446..462].copy_from_slice(&e);
    disk[510] = 0x55;
    disk[511] = 0xaa;
}

type Part<'a> = ([u8; 16], [u8; 16], u64, u64, &'a str);

fn entry_array(parts: &[Part]) -> Vec<u8> {
    let mut out = vec![0u8; (ENTRIES * ENTRY_SIZE) as usize];
    for (i, (kind, id, first, last, name)) in parts.iter().enumerate() {
        let e = &mut out[i * ENTRY_SIZE as usize..(i + 1) * ENTRY_SIZE as usize];
        e[0..16].copy_from_slice(kind);
        e[16..32].copy_from_slice(id);
        e[32..40].copy_from_slice(&first.to_le_bytes());
        e[40..48].copy_from_slice(&last.to_le_bytes());
        for (j, u) in name.encode_utf16().take(36).enumerate() {
            e[56 + 2 * j..58 + 2 * j].copy_from_slice(&u.to_le_bytes());
        }
    }
    out
}

fn header(
    current: u64,
    backup: u64,
    first: u64,
    last: u64,
    disk_guid: &[u8; 16],
    entries_lba: u64,
    entries: &[u8],
) -> Vec<u8> {
    let mut h = vec![0u8; 92];
    h[0..8].copy_from_slice(b"EFI PART");
    h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
    h[12..16].copy_from_slice(&92u32.to_le_bytes());
    h[24..32].copy_from_slice(&current.to_le_bytes());
    h[32..40].copy_from_slice(&backup.to_le_bytes());
    h[40..48].copy_from_slice(&first.to_le_bytes());
    h[48..56].copy_from_slice(&last.to_le_bytes());
    h[56..72].copy_from_slice(disk_guid);
    h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
    h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
    h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
    h[88..92].copy_from_slice(&crc32fast::hash(entries).to_le_bytes());
    let crc = crc32fast::hash(&h);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

/// A GUID string in GPT's mixed-endian byte order.
fn guid(s: &str) -> [u8; 16] {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    let b = hex::decode(hex).expect("valid GUID literal");
    let mut g = [0u8; 16];
    g[0..4].copy_from_slice(&[b[3], b[2], b[1], b[0]]);
    g[4..6].copy_from_slice(&[b[5], b[4]]);
    g[6..8].copy_from_slice(&[b[7], b[6]]);
    g[8..16].copy_from_slice(&b[8..16]);
    g
}

/// A stable random-looking (version 4 style) GUID for `node` and `what`.
fn node_guid(node: &str, what: &str) -> [u8; 16] {
    let h = Sha256::digest(format!("imgbuild/{node}/{what}").as_bytes());
    let mut g: [u8; 16] = h[..16].try_into().expect("16 bytes");
    g[7] = (g[7] & 0x0f) | 0x40;
    g[8] = (g[8] & 0x3f) | 0x80;
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt_is_consistent_and_reproducible() {
        let spec = DiskSpec {
            node: "n",
            vmlinuz: b"kernel",
            initrd: b"initrd",
            cmdline: "quiet",
            bootloader: b"MZ",
            data_mib: 8,
        };
        let a = efi_disk(&spec).unwrap();
        assert_eq!(a, efi_disk(&spec).unwrap());
        assert_eq!(&a[512..520], b"EFI PART");
        assert_eq!(&a[510..512], &[0x55, 0xaa]);
        let last = a.len() - 512;
        assert_eq!(&a[last..last + 8], b"EFI PART");
        // Header CRC over the header with its CRC field zeroed.
        let mut h = a[512..604].to_vec();
        let crc = u32::from_le_bytes(h[16..20].try_into().unwrap());
        h[16..20].fill(0);
        assert_eq!(crc32fast::hash(&h), crc);
        assert_eq!(guid(ESP_TYPE)[..4], [0x28, 0x73, 0x2a, 0xc1]);
    }
}
