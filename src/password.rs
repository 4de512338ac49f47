//! The Windows administrator password: EC2 returns it encrypted with the key pair's public
//! key (RSA, PKCS#1 v1.5, base64). Secrets are kept in [`Secret`], whose Debug and Display
//! never show the value.

use base64::Engine;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::{Pkcs1v15Encrypt, RsaPrivateKey};

/// A string that must not reach logs or output by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The value, for the few places that must send or show it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PasswordError {
    #[error("the key pair's private key is not an RSA key in PEM (PKCS#1 or PKCS#8)")]
    BadKey,
    #[error("the password data is not base64")]
    BadBase64,
    #[error("the password data does not decrypt with the key pair's private key")]
    Decrypt,
    #[error("the decrypted password is not text")]
    NotText,
}

pub fn decrypt_password(
    private_key_pem: &Secret,
    password_data: &str,
) -> Result<Secret, PasswordError> {
    let pem = private_key_pem.expose();
    let key = RsaPrivateKey::from_pkcs1_pem(pem)
        .or_else(|_| RsaPrivateKey::from_pkcs8_pem(pem))
        .map_err(|_| PasswordError::BadKey)?;
    let compact: String = password_data
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let encrypted = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|_| PasswordError::BadBase64)?;
    let plain = key
        .decrypt(Pkcs1v15Encrypt, &encrypted)
        .map_err(|_| PasswordError::Decrypt)?;
    String::from_utf8(plain)
        .map(Secret)
        .map_err(|_| PasswordError::NotText)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::RsaPublicKey;
    use rsa::pkcs1::{EncodeRsaPrivateKey, LineEnding};

    #[test]
    fn decrypts_what_windows_encrypts() {
        let mut rng = rand::thread_rng();
        let key = RsaPrivateKey::new(&mut rng, 1024).unwrap();
        let pem = Secret::new(key.to_pkcs1_pem(LineEnding::LF).unwrap().to_string());
        let public = RsaPublicKey::from(&key);
        let encrypted = public
            .encrypt(&mut rng, Pkcs1v15Encrypt, b"Pa$$w0rd!")
            .unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(encrypted);
        // EC2 wraps the base64 text over several lines.
        let wrapped = format!("\r\n{}\r\n{}\r\n", &b64[..40], &b64[40..]);
        assert_eq!(
            decrypt_password(&pem, &wrapped).unwrap().expose(),
            "Pa$$w0rd!"
        );
        assert_eq!(
            decrypt_password(&pem, "not base64!"),
            Err(PasswordError::BadBase64)
        );
        assert_eq!(decrypt_password(&pem, "AAAA"), Err(PasswordError::Decrypt));
        assert_eq!(
            decrypt_password(&Secret::new("nope"), &b64),
            Err(PasswordError::BadKey)
        );
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
