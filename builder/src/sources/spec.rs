//! Where an artifact's bytes come from, as a user writes it.

use std::fmt;
use std::path::PathBuf;

/// A source of a kernel or a payload package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// A folder laid out like the package's files (`vmlinuz` + `lib/modules`
    /// for a kernel; `usr/bin/etcd` or the binaries themselves otherwise).
    Folder(PathBuf),
    /// A Debian package file.
    Deb(PathBuf),
    /// A Debian package by name, fetched with the system's package tool.
    Apt(String),
    /// A pinned download.
    Url { url: String, sha256: [u8; 32] },
}

impl SourceSpec {
    /// Parses the string spelling: `apt:NAME`, `*.deb`, or a folder.
    pub fn parse_str(s: &str) -> Result<Self, String> {
        if let Some(pkg) = s.strip_prefix("apt:") {
            return if is_package_name(pkg) {
                Ok(SourceSpec::Apt(pkg.to_owned()))
            } else {
                Err(format!("{pkg:?} is not a Debian package name"))
            };
        }
        if s.starts_with("https://") || s.starts_with("http://") {
            return Err(format!(
                "the URL {s:?} needs a pinned digest: write {{ url = \"{s}\", sha256 = \"<64 hex digits>\" }}"
            ));
        }
        if s.is_empty() {
            return Err("is empty".into());
        }
        if s.ends_with(".deb") {
            Ok(SourceSpec::Deb(s.into()))
        } else {
            Ok(SourceSpec::Folder(s.into()))
        }
    }

    /// For a folder or a .deb file: whether it is there, as what it should be.
    pub fn check_local(&self) -> Result<(), String> {
        match self {
            SourceSpec::Folder(p) if !p.is_dir() => Err(format!("{} is not a folder", p.display())),
            SourceSpec::Deb(p) if !p.is_file() => Err(format!("{} is not a file", p.display())),
            _ => Ok(()),
        }
    }

    /// Parses a command-line spelling: as `parse_str`, plus `URL#sha256=HEX`.
    pub fn parse_flag(s: &str) -> Result<Self, String> {
        match s.split_once("#sha256=") {
            Some((url, sha)) => Self::parse_url(url, sha),
            None => Self::parse_str(s),
        }
    }

    /// Parses a pinned URL.
    pub fn parse_url(url: &str, sha256: &str) -> Result<Self, String> {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(format!("{url:?} is not an http(s) URL"));
        }
        let digest = hex::decode(sha256)
            .ok()
            .and_then(|d| <[u8; 32]>::try_from(d).ok())
            .ok_or_else(|| format!("sha256 {sha256:?} is not 64 hex digits"))?;
        Ok(SourceSpec::Url { url: url.to_owned(), sha256: digest })
    }
}

impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceSpec::Folder(p) | SourceSpec::Deb(p) => write!(f, "{}", p.display()),
            SourceSpec::Apt(name) => write!(f, "apt:{name}"),
            SourceSpec::Url { url, sha256 } => write!(f, "{url} (sha256 {})", hex::encode(sha256)),
        }
    }
}

/// Debian policy: lower case letters, digits, `+`, `-`, `.`; at least two
/// characters, starting with an alphanumeric.
fn is_package_name(s: &str) -> bool {
    s.len() >= 2
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings() {
        assert_eq!(SourceSpec::parse_str("apt:etcd-server"), Ok(SourceSpec::Apt("etcd-server".into())));
        assert_eq!(SourceSpec::parse_str("k.deb"), Ok(SourceSpec::Deb("k.deb".into())));
        assert_eq!(SourceSpec::parse_str("/boot/k"), Ok(SourceSpec::Folder("/boot/k".into())));
        assert!(SourceSpec::parse_str("apt:Bad Name").is_err());
        assert!(SourceSpec::parse_str("https://x/y").unwrap_err().contains("pinned digest"));
        assert!(SourceSpec::parse_url("https://x/y", "ab").is_err());
        assert!(SourceSpec::parse_url("ftp://x/y", &"a".repeat(64)).is_err());
        assert!(SourceSpec::parse_url("https://x/y", &"a".repeat(64)).is_ok());
        let flag = format!("https://x/k.deb#sha256={}", "b".repeat(64));
        assert_eq!(SourceSpec::parse_flag(&flag), SourceSpec::parse_url("https://x/k.deb", &"b".repeat(64)));
    }
}
