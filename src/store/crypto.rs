//! AES-256-GCM sealing of store records.
//!
//! A sealed record is `0x01 | nonce (12 bytes, random) | ciphertext+tag`; the record's name is the
//! associated data, so a value copied under another name does not open. The store can hold a
//! previous key: records it sealed still open, and are sealed again under the current key when they
//! are next written.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use rand::RngCore;

use crate::secret::StoreKey;

const VERSION: u8 = 1;

/// Parses a store key: 32 bytes, standard base64 (`authsidecar keygen` prints one).
pub fn parse_key(text: &str) -> Result<StoreKey, String> {
    StoreKey::from_base64(text)
}

/// A new random key, base64.
pub fn generate_key() -> String {
    let mut k = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut k);
    base64::engine::general_purpose::STANDARD.encode(k)
}

pub struct Crypto {
    current: Aes256Gcm,
    previous: Option<Aes256Gcm>,
}

/// How a record opened.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened {
    Current(Vec<u8>),
    /// Sealed under the previous key: write it again.
    Previous(Vec<u8>),
}

impl Crypto {
    pub fn new(current: &StoreKey, previous: Option<&StoreKey>) -> Crypto {
        Crypto {
            current: Aes256Gcm::new(&(*current.expose()).into()),
            previous: previous.map(|p| Aes256Gcm::new(&(*p.expose()).into())),
        }
    }

    pub fn seal(&self, name: &str, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let ct = self
            .current
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: name.as_bytes(),
                },
            )
            // Encryption only fails for messages over 64 GiB.
            .unwrap_or_default();
        let mut out = Vec::with_capacity(1 + 12 + ct.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    pub fn open(&self, name: &str, sealed: &[u8]) -> Result<Opened, String> {
        if sealed.len() < 1 + 12 + 16 || sealed[0] != VERSION {
            return Err("not a sealed record".into());
        }
        let nonce = Nonce::from_slice(&sealed[1..13]);
        let payload = |msg| Payload {
            msg,
            aad: name.as_bytes(),
        };
        if let Ok(p) = self.current.decrypt(nonce, payload(&sealed[13..])) {
            return Ok(Opened::Current(p));
        }
        if let Some(prev) = &self.previous {
            if let Ok(p) = prev.decrypt(nonce, payload(&sealed[13..])) {
                return Ok(Opened::Previous(p));
            }
        }
        Err("record does not open with the store key (wrong key, or tampered)".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_rotate_and_bind_to_the_name() {
        let k1 = parse_key(&generate_key()).unwrap();
        let k2 = parse_key(&generate_key()).unwrap();
        let old = Crypto::new(&k1, None);
        let sealed = old.seal("grant:a", b"hello");
        assert!(!sealed.windows(5).any(|w| w == b"hello"));
        assert_eq!(
            old.open("grant:a", &sealed).unwrap(),
            Opened::Current(b"hello".to_vec())
        );
        assert!(old.open("grant:b", &sealed).is_err(), "bound to its name");
        let rotated = Crypto::new(&k2, Some(&k1));
        assert_eq!(
            rotated.open("grant:a", &sealed).unwrap(),
            Opened::Previous(b"hello".to_vec())
        );
        assert!(Crypto::new(&k2, None).open("grant:a", &sealed).is_err());
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(old.open("grant:a", &tampered).is_err());
    }

    #[test]
    fn bad_keys_are_explained_without_the_value() {
        let e = parse_key("c2hvcnQ=").unwrap_err();
        assert_eq!(e, "5 bytes; expected 32");
        let e = parse_key("not base64 at all!").unwrap_err();
        assert!(!e.contains("at all"), "{e}");
    }
}
