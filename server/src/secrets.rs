//! Task secrets, encrypted at rest with XChaCha20-Poly1305.
//!
//! The key comes from `STEPWISE_SECRET_KEY` (64 hex digits) or from the file
//! `secret.key` in the data directory, created with mode 0600 on first start.
//! Plaintext lives only in memory, only while a step that may read it runs.

use crate::store::SealedSecret;
use anyhow::{Context, bail};
use chacha20poly1305::aead::{Aead, KeyInit, OsRng};
use chacha20poly1305::{AeadCore, XChaCha20Poly1305, XNonce};
use std::collections::HashMap;
use std::path::Path;

/// Environment variable holding the key as 64 hex digits.
pub const KEY_ENV: &str = "STEPWISE_SECRET_KEY";

/// Encrypts and decrypts secret values. Debug output never shows the key.
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
    /// The completion hooks' signing key, derived from the secret key: every
    /// node sharing a database has the same secret key (or could not open
    /// the tasks' secrets), so every node signs alike, and nothing more has
    /// to be kept or shared.
    hook_key: [u8; 32],
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

impl SecretBox {
    pub fn from_key(key: &[u8; 32]) -> Self {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("any key length");
        mac.update(b"stepwise completion hooks v1");
        SecretBox {
            cipher: XChaCha20Poly1305::new(key.into()),
            hook_key: mac.finalize().into_bytes().into(),
        }
    }

    /// The key completion hooks are signed with (HMAC-SHA256), which a
    /// receiver needs to check them; an admin reads it at
    /// `GET /api/v1/hooks/signing-key`. Changing the secret key changes it.
    pub fn hook_key(&self) -> &[u8; 32] {
        &self.hook_key
    }

    /// The key from the environment, else from `<data_dir>/secret.key` (created if absent).
    pub fn load_or_create(data_dir: &Path) -> anyhow::Result<Self> {
        if let Ok(hex_key) = std::env::var(KEY_ENV) {
            return Self::from_hex(hex_key.trim()).with_context(|| format!("reading {KEY_ENV}"));
        }
        let path = data_dir.join("secret.key");
        if path.exists() {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            return Self::from_hex(text.trim())
                .with_context(|| format!("reading {}", path.display()));
        }
        let key = XChaCha20Poly1305::generate_key(&mut OsRng);
        crate::fsutil::write_private(&path, hex::encode(key).as_bytes())?;
        Ok(Self::from_key(&key.into()))
    }

    fn from_hex(text: &str) -> anyhow::Result<Self> {
        let bytes = hex::decode(text).context("the secret key must be 64 hex digits")?;
        let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice()) else {
            bail!(
                "the secret key must be 64 hex digits (32 bytes), got {} bytes",
                bytes.len()
            );
        };
        Ok(Self::from_key(&key))
    }

    pub fn seal(&self, name: &str, value: &str) -> SealedSecret {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        // The name is bound as associated data so ciphertexts cannot be swapped between names.
        let ciphertext = self
            .cipher
            .encrypt(
                &nonce,
                chacha20poly1305::aead::Payload {
                    msg: value.as_bytes(),
                    aad: name.as_bytes(),
                },
            )
            .expect("encryption with a valid key does not fail");
        SealedSecret {
            name: name.to_string(),
            nonce: nonce.to_vec(),
            ciphertext,
        }
    }

    pub fn open(&self, sealed: &SealedSecret) -> anyhow::Result<String> {
        if sealed.nonce.len() != 24 {
            bail!("secret `{}` has a damaged nonce", sealed.name);
        }
        let nonce = XNonce::from_slice(&sealed.nonce);
        let plain = self
            .cipher
            .decrypt(
                nonce,
                chacha20poly1305::aead::Payload {
                    msg: &sealed.ciphertext,
                    aad: sealed.name.as_bytes(),
                },
            )
            .map_err(|_| {
                anyhow::anyhow!(
                    "secret `{}` cannot be decrypted: was the key changed?",
                    sealed.name
                )
            })?;
        Ok(String::from_utf8(plain)?)
    }

    /// Open every secret of a run; ones that fail are left out (and reported).
    pub fn open_all(&self, sealed: &[SealedSecret]) -> (HashMap<String, String>, Vec<String>) {
        let mut open = HashMap::new();
        let mut errors = Vec::new();
        for secret in sealed {
            match self.open(secret) {
                Ok(value) => {
                    open.insert(secret.name.clone(), value);
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        (open, errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding_to_the_name() {
        let secrets = SecretBox::from_key(&[7; 32]);
        let sealed = secrets.seal("api_key", "hunter2");
        assert!(!sealed.ciphertext.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(secrets.open(&sealed).unwrap(), "hunter2");
        let swapped = SealedSecret {
            name: "other".into(),
            ..sealed.clone()
        };
        assert!(secrets.open(&swapped).is_err());
        assert!(SecretBox::from_key(&[8; 32]).open(&sealed).is_err());
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = SecretBox::load_or_create(dir.path()).unwrap();
        let sealed = first.seal("k", "v");
        let second = SecretBox::load_or_create(dir.path()).unwrap();
        assert_eq!(second.open(&sealed).unwrap(), "v");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("secret.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
