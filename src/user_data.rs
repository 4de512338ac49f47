//! The instance's user data: the first-boot script wrapped for EC2Launch.

use sha2::{Digest, Sha256};

/// EC2 refuses user data over 16 KB (before base64 encoding).
pub const MAX_USER_DATA_BYTES: usize = 16 * 1024;

/// Wraps a PowerShell script the way EC2Config/EC2Launch expect it on Windows: the script
/// byte for byte between the tags, nothing added.
pub fn wrap_powershell(script: &str) -> String {
    format!("<powershell>{script}</powershell>")
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error(
    "user data is {size} bytes, over EC2's limit of {MAX_USER_DATA_BYTES} bytes (16 KB): shorten {script} or have it download the rest"
)]
pub struct TooLarge {
    pub size: usize,
    pub script: String,
}

/// The user data for `script` (its text) read from `path` (for the message), or an error
/// when it would be over EC2's limit.
pub fn user_data_for(script: &str, path: &str) -> Result<String, TooLarge> {
    let data = wrap_powershell(script);
    if data.len() > MAX_USER_DATA_BYTES {
        return Err(TooLarge {
            size: data.len(),
            script: path.to_string(),
        });
    }
    Ok(data)
}

/// What a build tags its images with as `tc-ami:user-data-sha256`, and what `auto` compares
/// that tag with: the SHA-256 of the whole user data ([`user_data_for`]: the script wrapped,
/// nothing per build in it), lower-case hex.
pub fn user_data_sha256(user_data: &str) -> String {
    sha256_hex(user_data.as_bytes())
}

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps() {
        assert_eq!(
            wrap_powershell("shutdown /s\r\n"),
            "<powershell>shutdown /s\r\n</powershell>"
        );
    }

    #[test]
    fn size_limit_is_on_the_wrapped_bytes() {
        let overhead = wrap_powershell("").len();
        let fits = "x".repeat(MAX_USER_DATA_BYTES - overhead);
        assert!(user_data_for(&fits, "s.ps1").is_ok());
        let over = "x".repeat(MAX_USER_DATA_BYTES - overhead + 1);
        let err = user_data_for(&over, "scripts/first-boot.ps1").unwrap_err();
        assert_eq!(err.size, MAX_USER_DATA_BYTES + 1);
        assert!(err.to_string().contains("scripts/first-boot.ps1"));
        // Multi-byte characters count as bytes.
        let wide = "é".repeat((MAX_USER_DATA_BYTES - overhead) / 2 + 1);
        assert!(user_data_for(&wide, "s.ps1").is_err());
    }

    #[test]
    fn sha256() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
