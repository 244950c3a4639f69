//! Per-node tokens for `imgbuild serve`: HMAC-SHA256 of the node's name under
//! a secret the user keeps (`--token-secret FILE`). The build puts a node's
//! token into that node's boot URLs only (its iPXE script, its merge stub);
//! `serve` recomputes it, so a MAC alone never gets a config.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::InputError;

#[derive(Clone)]
pub struct TokenSecret(Vec<u8>);

impl std::fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSecret(..)")
    }
}

impl TokenSecret {
    /// Reads the secret: at least 16 bytes, readable by its owner only.
    pub fn load(path: &Path) -> Result<Self, InputError> {
        let origin = path.display().to_string();
        let err = |reason: String| InputError::new(origin.clone(), "", reason);
        let meta = std::fs::metadata(path).map_err(|e| err(format!("cannot read the token secret: {e}")))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(err(format!(
                "the token secret is readable by others (mode {:o}); chmod 600 it",
                meta.permissions().mode() & 0o777
            )));
        }
        let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read the token secret: {e}")))?;
        let secret = bytes.trim_ascii().to_vec();
        if secret.len() < 16 {
            return Err(err(format!("the token secret has {} bytes; it needs at least 16", secret.len())));
        }
        Ok(TokenSecret(secret))
    }

    pub fn from_bytes(bytes: &[u8]) -> Self {
        TokenSecret(bytes.to_vec())
    }

    fn mac(&self, node: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(b"imgbuild serve token\0");
        mac.update(node.as_bytes());
        mac
    }

    /// The node's token: 32 hex digits (the HMAC's first 16 bytes).
    pub fn token(&self, node: &str) -> String {
        hex::encode(&self.mac(node).finalize().into_bytes()[..16])
    }

    /// Whether `given` is `node`'s token, compared in constant time by the
    /// MAC crate itself.
    pub fn accepts(&self, node: &str, given: &str) -> bool {
        // Lower-case hex only, as `token` writes it: one spelling per token.
        let canonical = given.len() == 32 && given.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let Some(bytes) = hex::decode(given).ok().filter(|_| canonical) else { return false };
        self.mac(node).verify_truncated_left(&bytes).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_differ_per_node_and_secret_and_check_exactly() {
        let (a, b) = (TokenSecret::from_bytes(b"0123456789abcdef"), TokenSecret::from_bytes(b"0123456789abcdeF"));
        let t = a.token("worker-1");
        assert_eq!(t.len(), 32);
        assert_ne!(t, a.token("worker-2"));
        assert_ne!(t, b.token("worker-1"));
        assert!(a.accepts("worker-1", &t));
        assert!(!a.accepts("worker-2", &t) && !a.accepts("worker-1", &t[..31]) && !a.accepts("worker-1", ""));
    }

    #[test]
    fn a_loose_or_short_secret_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, "0123456789abcdef\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(TokenSecret::load(&p).unwrap_err().to_string().contains("readable by others"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(TokenSecret::load(&p).is_ok());
        std::fs::write(&p, "short").unwrap();
        assert!(TokenSecret::load(&p).unwrap_err().to_string().contains("at least 16"));
    }
}
