//! The Ed25519 keys of signed seals: a private key to sign with, in the PKCS#8 file that
//! `openssl genpkey -algorithm ed25519` writes, and the public key alone to verify with.
//!
//! openssl writes PKCS#8 v1 (no public key in it), PEM-armoured; ring's
//! `from_pkcs8_maybe_unchecked` takes v1 and v2 and derives the public key, so no key tool
//! of our own is needed. A public key is read as openssl's `pkey -pubout` PEM (or its
//! DER), or as the raw 32 bytes, or as their 64 hex digits.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

use super::SealError;

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): the key's 32 bytes follow.
const SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
/// Key files are small; anything larger is not one.
const KEY_MAX: u64 = 16 * 1024;

fn key_error(path: &std::path::Path, what: impl Into<String>) -> SealError {
    SealError::Key { path: path.display().to_string(), what: what.into() }
}

/// The key file at `path` (the admin's: a symlink to it is followed, a FIFO refused).
fn read_key_file(path: &std::path::Path) -> Result<Vec<u8>, SealError> {
    crate::fsutil::read_config_file(path, KEY_MAX).map_err(|e| key_error(path, format!("cannot read: {e}")))
}

/// The DER inside a PEM block labelled `label`, or the bytes themselves when not PEM.
fn der_of(bytes: &[u8], label: &str) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(bytes).ok().filter(|t| t.contains("-----BEGIN "));
    let Some(text) = text else { return Some(bytes.to_vec()) };
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let body = text.split_once(&begin)?.1.split_once(&end)?.0;
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD.decode(b64).ok()
}

/// A signing key.
pub struct SigningKey(Ed25519KeyPair);

impl SigningKey {
    /// Reads the PKCS#8 private key at `path` (PEM or DER), refusing a file that others
    /// may read: whoever holds it can sign a rewritten chain.
    /// A file that is no private key (the public one, given by mistake) is said to be so
    /// before its mode is looked at.
    pub fn load(path: &std::path::Path) -> Result<SigningKey, SealError> {
        use std::os::unix::fs::PermissionsExt;
        let bytes = read_key_file(path)?;
        let der = der_of(&bytes, "PRIVATE KEY")
            .ok_or_else(|| key_error(path, "not a private key (no PEM block PRIVATE KEY in it; the public key?)"))?;
        let key = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
            .map_err(|e| key_error(path, format!("not an Ed25519 PKCS#8 private key ({e})")))?;
        let mode =
            std::fs::metadata(path).map_err(|e| key_error(path, format!("cannot read: {e}")))?.permissions().mode();
        if mode & 0o004 != 0 {
            return Err(key_error(path, format!("others may read it (mode {:04o}): chmod o-r it", mode & 0o7777)));
        }
        Ok(SigningKey(key))
    }

    /// The signature of `bytes`, in base64 with a newline: the content of a .sig file.
    pub fn sign(&self, bytes: &[u8]) -> Vec<u8> {
        let mut out = STANDARD.encode(self.0.sign(bytes).as_ref()).into_bytes();
        out.push(b'\n');
        out
    }

    /// The public key's 32 bytes in hex, for the admin to keep.
    pub fn public_hex(&self) -> String {
        super::hex(self.0.public_key().as_ref())
    }
}

/// A public key to verify with.
pub struct VerifyKey([u8; 32]);

impl VerifyKey {
    /// Reads the public key at `path`: openssl's PEM (or DER) SubjectPublicKeyInfo, the raw
    /// 32 bytes, or 64 hex digits.
    pub fn load(path: &std::path::Path) -> Result<VerifyKey, SealError> {
        let bytes = read_key_file(path)?;
        VerifyKey::parse(&bytes).ok_or_else(|| {
            key_error(path, "not an Ed25519 public key (openssl pkey -pubout PEM, 32 raw bytes, or 64 hex digits)")
        })
    }

    fn parse(bytes: &[u8]) -> Option<VerifyKey> {
        let text = std::str::from_utf8(bytes).ok().map(str::trim);
        if let Some(hex) = text.filter(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit())) {
            let raw: Vec<u8> = (0..32).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex")).collect();
            return raw.try_into().ok().map(VerifyKey);
        }
        let der = der_of(bytes, "PUBLIC KEY")?;
        let raw = match der.strip_prefix(&SPKI_PREFIX[..]) {
            Some(raw) => raw,
            None => &der[..],
        };
        raw.try_into().ok().map(VerifyKey)
    }

    /// Whether `sig` (a .sig file's content) is a good signature of `bytes`.
    pub fn verify(&self, bytes: &[u8], sig: &[u8]) -> bool {
        let Ok(text) = std::str::from_utf8(sig) else { return false };
        let Ok(raw) = STANDARD.decode(text.trim()) else { return false };
        UnparsedPublicKey::new(&ED25519, &self.0).verify(bytes, &raw).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `openssl genpkey -algorithm ed25519` and `openssl pkey -pubout` wrote.
    const OPENSSL_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIP6fkTcRBixV2ujYEh2PCUN3iSpnt/MKPC8gcgWgS5Av\n-----END PRIVATE KEY-----\n";
    const OPENSSL_PUB: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEArPwYQtPZBBzECKxLbg5VEVV2c2z5O0a4yGciv/LYJZc=\n-----END PUBLIC KEY-----\n";

    #[test]
    fn an_openssl_key_signs_and_its_public_key_verifies_in_every_form() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.pem");
        std::fs::write(&key, OPENSSL_KEY).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let exposed = SigningKey::load(&key).err().unwrap().to_string();
        assert!(exposed.ends_with("others may read it (mode 0644): chmod o-r it"), "{exposed}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let signer = SigningKey::load(&key).unwrap();
        let sig = signer.sign(b"seal bytes");
        let pem = VerifyKey::parse(OPENSSL_PUB.as_bytes()).unwrap();
        assert_eq!(hex_of(&pem), signer.public_hex());
        let from_hex = VerifyKey::parse(signer.public_hex().as_bytes()).unwrap();
        for k in [&pem, &from_hex] {
            assert!(k.verify(b"seal bytes", &sig));
            assert!(!k.verify(b"seal bytez", &sig));
        }
        let mut bad = sig.clone();
        bad[3] = if bad[3] == b'A' { b'B' } else { b'A' };
        assert!(!pem.verify(b"seal bytes", &bad));
    }

    fn hex_of(k: &VerifyKey) -> String {
        super::super::hex(&k.0)
    }

    #[test]
    fn a_file_that_is_no_key_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.pem");
        std::fs::write(&key, "hello").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = SigningKey::load(&key).err().unwrap().to_string();
        assert!(err.starts_with(&format!("key {}: not an Ed25519", key.display())), "{err}");
        assert!(VerifyKey::load(&key).is_err());
    }
}
