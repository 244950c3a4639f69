//! The cpio writer's inverse: whatever archive the fuzzer describes, reading
//! what we wrote gives back exactly its entries; and reading arbitrary bytes
//! never panics.
#![no_main]
use imgbuild::image::cpio::{read, Archive, Node};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = read(data);
    let mut a = Archive::new();
    // Entries: kind, mode (2 bytes), path length, path, data length, data.
    let mut rest = data;
    while rest.len() >= 5 {
        let (kind, mode, plen) = (rest[0], u16::from_le_bytes([rest[1], rest[2]]) as u32, rest[3] as usize);
        let dlen = rest[4] as usize;
        rest = &rest[5..];
        if rest.len() < plen + dlen {
            break;
        }
        let path = String::from_utf8_lossy(&rest[..plen]).into_owned();
        let body = rest[plen..plen + dlen].to_vec();
        rest = &rest[plen + dlen..];
        let node = match kind % 4 {
            0 => Node::Dir,
            1 => Node::File(body),
            2 => Node::Symlink(String::from_utf8_lossy(&body).into_owned()),
            _ => Node::CharDev(u32::from(kind), dlen as u32),
        };
        let _ = a.add(&path, mode, node);
    }
    let bytes = a.write(1);
    assert_eq!(read(&bytes).expect("our own archive reads back"), a.entries());
});
