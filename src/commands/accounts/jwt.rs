//! The service account's key and the JWT (RS256) signed with it that Google's token endpoint
//! trades for an access token: the only credential `accounts sync` uses, so no user's
//! password is ever needed. Signing uses `ring`, which the HTTPS client already brings.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use serde::Deserialize;

use super::AccountsError;

/// Read-only access to users and groups; the two scopes granted in domain-wide delegation.
pub const SCOPES: &str = "https://www.googleapis.com/auth/admin.directory.user.readonly \
                          https://www.googleapis.com/auth/admin.directory.group.readonly";

/// The token endpoint when the key file names none.
pub const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// How long an assertion is valid: Google's maximum, one hour.
const LIFETIME_SECS: u64 = 3600;

/// The fields of a service account's JSON key file that signing needs.
#[derive(Deserialize)]
struct KeyFile {
    client_email: String,
    private_key_id: String,
    private_key: String,
    token_uri: Option<String>,
}

/// A loaded service account key. Its `Debug` shows no key material.
pub struct ServiceKey {
    pub path: PathBuf,
    pub client_email: String,
    pub token_uri: String,
    key_id: String,
    pair: RsaKeyPair,
}

impl std::fmt::Debug for ServiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServiceKey({}, kid {})", self.client_email, self.key_id)
    }
}

impl ServiceKey {
    /// Loads the key, refusing a file that others may read: it grants read access to the
    /// whole directory.
    pub fn load(path: &Path) -> Result<ServiceKey, AccountsError> {
        let bad = |reason: String| AccountsError::Key { path: path.to_path_buf(), reason };
        let mut file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
        let mode = file.metadata().map_err(|e| bad(e.to_string()))?.permissions().mode() & 0o7777;
        if mode & 0o004 != 0 {
            return Err(AccountsError::KeyExposed { path: path.to_path_buf(), mode });
        }
        let mut text = String::new();
        file.by_ref().take(1 << 16).read_to_string(&mut text).map_err(|e| bad(e.to_string()))?;
        let key: KeyFile =
            serde_json::from_str(&text).map_err(|e| bad(format!("not a service account JSON key: {e}")))?;
        let der = pkcs8_der(&key.private_key).ok_or_else(|| bad("private_key is not a PEM PKCS#8 key".into()))?;
        let pair =
            RsaKeyPair::from_pkcs8(&der).map_err(|e| bad(format!("private_key is not a usable RSA key: {e}")))?;
        Ok(ServiceKey {
            path: path.to_path_buf(),
            client_email: key.client_email,
            token_uri: key.token_uri.unwrap_or_else(|| GOOGLE_TOKEN_URI.to_string()),
            key_id: key.private_key_id,
            pair,
        })
    }

    /// The signed JWT bearer assertion (RFC 7523) acting for `subject`, addressed to `audience`
    /// (the token endpoint), issued at `now` (Unix seconds).
    pub fn assertion(&self, subject: &str, audience: &str, now: u64) -> Result<String, AccountsError> {
        let header = serde_json::json!({ "alg": "RS256", "typ": "JWT", "kid": self.key_id });
        let claims = serde_json::json!({
            "iss": self.client_email,
            "sub": subject,
            "scope": SCOPES,
            "aud": audience,
            "iat": now,
            "exp": now + LIFETIME_SECS,
        });
        let input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let mut signature = vec![0; self.pair.public().modulus_len()];
        self.pair
            .sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), input.as_bytes(), &mut signature)
            .map_err(|_| AccountsError::Key { path: self.path.clone(), reason: "signing failed".into() })?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

/// The DER bytes of a `-----BEGIN PRIVATE KEY-----` PEM block (what Google's key files hold).
fn pkcs8_der(pem: &str) -> Option<Vec<u8>> {
    let body = pem.trim().strip_prefix("-----BEGIN PRIVATE KEY-----")?.strip_suffix("-----END PRIVATE KEY-----")?;
    let b64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    STANDARD.decode(b64).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_the_two_read_only_directory_scopes() {
        let scopes: Vec<&str> = SCOPES.split(' ').collect();
        assert_eq!(
            scopes,
            [
                "https://www.googleapis.com/auth/admin.directory.user.readonly",
                "https://www.googleapis.com/auth/admin.directory.group.readonly"
            ]
        );
    }

    #[test]
    fn pem_body_is_decoded_across_lines() {
        let pem = "-----BEGIN PRIVATE KEY-----\nAAEC\nAwQ=\n-----END PRIVATE KEY-----\n";
        assert_eq!(pkcs8_der(pem), Some(vec![0, 1, 2, 3, 4]));
        assert_eq!(pkcs8_der("-----BEGIN RSA PRIVATE KEY-----\nAAEC\n-----END RSA PRIVATE KEY-----"), None);
    }
}
