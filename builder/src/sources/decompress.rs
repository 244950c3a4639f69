//! Reading compressed streams by their file-name suffix: kernel modules
//! (`.ko.xz`, `.ko.zst`) and the members of a `.deb` (`data.tar.xz`, ...).

use std::io::Read;

use anyhow::{bail, Result};

/// `r` decompressed as `name`'s suffix says (`.xz`, `.zst`, `.gz`); other
/// names are read as they are.
pub fn reader<'a>(name: &str, r: impl Read + 'a) -> Result<Box<dyn Read + 'a>> {
    let ext = name.rsplit_once('.').map_or("", |(_, e)| e);
    Ok(match ext {
        "xz" => Box::new(liblzma::read::XzDecoder::new(r)),
        "zst" => Box::new(zstd::stream::read::Decoder::new(r)?),
        "gz" => Box::new(flate2::read::GzDecoder::new(r)),
        "bz2" | "lzma" => bail!("{name}: {ext} compression is not supported (Debian uses xz, zstd or gzip)"),
        _ => Box::new(r),
    })
}

/// All of `raw`, decompressed as `name` says.
pub fn all(name: &str, raw: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    reader(name, raw)?.read_to_end(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn each_suffix_round_trips() {
        let text = b"the same bytes, three ways".repeat(50);
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 6);
        xz.write_all(&text).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&text).unwrap();
        for (name, raw) in [
            ("a.ko.xz", xz.finish().unwrap()),
            ("data.tar.zst", zstd::encode_all(&text[..], 3).unwrap()),
            ("data.tar.gz", gz.finish().unwrap()),
            ("plain.ko", text.clone()),
        ] {
            assert_eq!(all(name, &raw).unwrap(), text, "{name}");
        }
        assert!(all("data.tar.bz2", b"BZh").is_err());
        assert!(all("a.ko.xz", b"not xz").is_err());
    }
}
