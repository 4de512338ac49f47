//! The adapter `tc-ami pin` downloads through: one GET, redirects followed, the body streamed
//! into SHA-256 and never kept.

use std::time::Duration;

use sha2::{Digest, Sha256};
use thiserror::Error;

/// How many redirects a download may follow (GitHub release assets take one or two).
pub const MAX_REDIRECTS: usize = 10;

#[derive(Debug, Clone, PartialEq)]
pub struct Downloaded {
    /// Lower-case hex.
    pub sha256: String,
    pub bytes: u64,
    /// Where the body came from after redirects.
    pub final_url: String,
    pub content_type: Option<String>,
}

#[derive(Debug, Error, PartialEq)]
pub enum DownloadError {
    #[error("HTTP {status}{}", redirected(.final_url))]
    Status {
        status: String,
        final_url: Option<String>,
    },
    #[error("{0}")]
    Transport(String),
    #[error("the server sent 0 bytes{}", redirected(.final_url))]
    Empty { final_url: Option<String> },
}

fn redirected(final_url: &Option<String>) -> String {
    final_url
        .as_ref()
        .map(|u| format!(" (redirected to {u})"))
        .unwrap_or_default()
}

pub fn client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!("tc-ami/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| anyhow::anyhow!("cannot set up the HTTP client: {}", innermost(&e)))
}

/// Downloads `url` and returns the SHA-256 of its body. `progress(total, done)` is called as
/// bytes arrive (`total` from Content-Length, when the server sends one).
pub async fn sha256_of(
    client: &reqwest::Client,
    url: &str,
    mut progress: impl FnMut(Option<u64>, u64),
) -> Result<Downloaded, DownloadError> {
    let mut response = client
        .get(url)
        .send()
        .await
        .map_err(|e| DownloadError::Transport(innermost(&e)))?;
    let final_url = response.url().to_string();
    let moved = (final_url != url).then(|| final_url.clone());
    let status = response.status();
    if !status.is_success() {
        return Err(DownloadError::Status {
            status: status.to_string(),
            final_url: moved,
        });
    }
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let total = response.content_length();
    let mut hasher = Sha256::new();
    let mut done = 0u64;
    progress(total, 0);
    while let Some(chunk) = response.chunk().await.map_err(|e| {
        DownloadError::Transport(format!("while reading the body: {}", innermost(&e)))
    })? {
        hasher.update(&chunk);
        done += chunk.len() as u64;
        progress(total, done);
    }
    if done == 0 {
        return Err(DownloadError::Empty { final_url: moved });
    }
    Ok(Downloaded {
        sha256: hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        bytes: done,
        final_url,
        content_type,
    })
}

/// The most specific message of an error chain ("Connection refused (os error 111)" rather
/// than "error sending request"), with the outer one when it says more (timeouts, redirects).
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last: &dyn std::error::Error = e;
    while let Some(next) = last.source() {
        last = next;
    }
    let inner = last.to_string();
    if let Some(r) = e.downcast_ref::<reqwest::Error>() {
        if r.is_timeout() {
            return format!("timed out ({inner})");
        }
        if r.is_redirect() {
            return format!("too many redirects (more than {MAX_REDIRECTS})");
        }
    }
    inner
}
