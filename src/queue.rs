//! The Queue adapter for `tc-ami try` (createTask, listTaskGroup, cancelTask), and the paged
//! listings whose later pages the `taskcluster` crate cannot sign.
//!
//! The crate (114) signs the path without its query string; the real services check the MAC
//! over the path *with* it and refuse such a request (401 "Bad mac", verified against the real
//! service: shared/taskcluster-api/README.md), and so does the emulator. So the first page of a
//! listing goes through the crate, without a query, and every later page (`continuationToken`)
//! is signed here, over the path with its query. `crate::taskcluster` may gain the same signing
//! for worker listings (`tc-ami rollout`); the two can then share one function.

use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use taskcluster::{Queue, WorkerManager};

use crate::taskcluster::{HawkCredentials, TcEnv, call};

/// Retries of a request the service answered with a 5xx or not at all, as the crate's default
/// (5, from 100 ms doubling).
const RETRIES: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

pub struct QueueApi {
    env: TcEnv,
    queue: Queue,
    wm: WorkerManager,
    http: reqwest::Client,
}

fn status_of(e: &anyhow::Error) -> Option<u16> {
    taskcluster::err_status_code(e).map(|s| s.as_u16())
}

impl QueueApi {
    pub fn new(env: &TcEnv) -> Result<QueueApi> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(QueueApi {
            env: env.clone(),
            queue: Queue::new(env.builder())?,
            wm: WorkerManager::new(env.builder())?,
            http,
        })
    }

    pub fn root_url(&self) -> &str {
        &self.env.root_url
    }

    /// Creates the task `task_id` (a create-task-request body); returns its status.
    pub async fn create_task(&self, task_id: &str, task: &Value) -> Result<Value> {
        call(
            "queue",
            "createTask",
            task_id,
            self.queue.createTask(task_id, task),
        )
        .await
        .map(|v| v["status"].clone())
        .map_err(|e| self.env.explain(&format!("creating task {task_id}"), e))
    }

    /// Cancels the task; one already past its deadline (409: the Queue has resolved it) or
    /// unknown (404: its create call never arrived) is left as it is.
    pub async fn cancel_task(&self, task_id: &str) -> Result<()> {
        match call(
            "queue",
            "cancelTask",
            task_id,
            self.queue.cancelTask(task_id),
        )
        .await
        {
            Ok(_) => Ok(()),
            Err(e) if matches!(status_of(&e), Some(404 | 409)) => Ok(()),
            Err(e) => Err(self.env.explain(&format!("cancelling task {task_id}"), e)),
        }
    }

    /// Every task of the group (the `tasks` entries of all pages); none for a group that does
    /// not exist (yet).
    pub async fn list_task_group(&self, group: &str) -> Result<Vec<Value>> {
        let what = || format!("listing task group {group}");
        let first = call(
            "queue",
            "listTaskGroup",
            group,
            self.queue.listTaskGroup(group, None, None),
        )
        .await;
        let first = match first {
            Ok(page) => page,
            Err(e) if status_of(&e) == Some(404) => return Ok(vec![]),
            Err(e) => return Err(self.env.explain(&what(), e)),
        };
        let path = format!("api/queue/v1/task-group/{group}/list");
        self.all_pages(first, "tasks", &path, ("queue", "listTaskGroup"), group)
            .await
            .map_err(|e| self.env.explain(&what(), e))
    }

    /// Every worker pool of the deployment (worker-manager's `listWorkerPools`, all pages).
    pub async fn list_worker_pools(&self) -> Result<Vec<Value>> {
        let what = "listing worker pools";
        let first = call(
            "worker-manager",
            "listWorkerPools",
            "",
            self.wm.listWorkerPools(None, None),
        )
        .await
        .map_err(|e| self.env.explain(what, e))?;
        let path = "api/worker-manager/v1/worker-pools";
        self.all_pages(
            first,
            "workerPools",
            path,
            ("worker-manager", "listWorkerPools"),
            "",
        )
        .await
        .map_err(|e| self.env.explain(what, e))
    }

    /// The `key` entries of `first` and of every page after it.
    async fn all_pages(
        &self,
        first: Value,
        key: &str,
        path: &str,
        (service, method): (&'static str, &'static str),
        target: &str,
    ) -> Result<Vec<Value>> {
        let mut page = first;
        let mut out = Vec::new();
        loop {
            let entries = page[key]
                .as_array()
                .ok_or_else(|| anyhow!("{method}: the answer has no `{key}` list"))?;
            out.extend(entries.iter().cloned());
            let Some(token) = page["continuationToken"].as_str().map(str::to_string) else {
                return Ok(out);
            };
            let query = [("continuationToken", token.as_str())];
            page = call(service, method, target, self.signed_get(path, &query)).await?;
        }
    }

    /// GET `<root URL>/<path>?<query>`, signed over the path with its query; 5xx and lost
    /// answers retried as the crate retries them; a 4xx is an error carrying the service's
    /// message (as the crate's are, so [`TcEnv::explain`] reads them the same way).
    async fn signed_get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value> {
        let mut url = reqwest::Url::parse(&format!("{}/{path}", self.env.root_url))
            .with_context(|| format!("{}/{path} is not a URL", self.env.root_url))?;
        url.query_pairs_mut().extend_pairs(query);
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 0;
        loop {
            let mut request = self.http.get(url.clone());
            if let Some(creds) = self.env.hawk_credentials() {
                let header = hawk_header("GET", &url, &creds, SystemTime::now(), None)?;
                request = request.header("Authorization", header);
            }
            let retry_for: anyhow::Error = match request.send().await {
                Ok(resp) if resp.status().is_server_error() => {
                    resp.error_for_status().err().map_or_else(
                        || anyhow!("{} answered a server error", self.env.root_url),
                        Into::into,
                    )
                }
                Ok(resp) if resp.status().is_client_error() => {
                    let err = resp.error_for_status_ref().err();
                    let body: Value = resp.json().await.unwrap_or(Value::Null);
                    let message = body["message"].as_str().unwrap_or("").to_string();
                    return Err(match err {
                        Some(e) => anyhow::Error::from(e).context(message),
                        None => anyhow!("{message}"),
                    });
                }
                Ok(resp) => return Ok(resp.json().await?),
                Err(e) => e.into(),
            };
            if attempt == RETRIES {
                return Err(retry_for);
            }
            attempt += 1;
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
}

/// The `Authorization` header of a Hawk request: the MAC over the method, the path *with* its
/// query, host and port, and `ext` (the certificate of temporary credentials, as the crate
/// puts it there). `nonce` None: a random one.
fn hawk_header(
    method: &str,
    url: &reqwest::Url,
    creds: &HawkCredentials,
    ts: SystemTime,
    nonce: Option<&str>,
) -> Result<String> {
    let host = url.host_str().ok_or_else(|| anyhow!("{url} has no host"))?;
    let port = url
        .port_or_known_default()
        .ok_or_else(|| anyhow!("{url} has no port"))?;
    let resource = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let ext = match creds.certificate {
        Some(cert) => {
            let cert: Value = serde_json::from_str(cert)
                .context("TASKCLUSTER_CERTIFICATE is not JSON; copy it whole from where the temporary credentials were made")?;
            Some(STANDARD.encode(serde_json::json!({ "certificate": cert }).to_string()))
        }
        None => None,
    };
    let key = hawk::Key::new(creds.access_token, hawk::SHA256)
        .map_err(|e| anyhow!("cannot use the access token as a Hawk key: {e}"))?;
    let credentials = hawk::Credentials {
        id: creds.client_id.to_string(),
        key,
    };
    let request = hawk::RequestBuilder::new(method, host, port, &resource)
        .ext(ext.as_deref())
        .request();
    let header = match nonce {
        Some(n) => request.make_header_full(&credentials, ts, n),
        None => request.make_header(&credentials),
    }
    .map_err(|e| anyhow!("cannot sign the request to {url}: {e}"))?;
    Ok(format!("Hawk {header}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    /// HMAC-SHA256 (RFC 2104), written out so the test does not check hawk with itself.
    fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
        let mut k = [0u8; 64];
        if key.len() > 64 {
            k[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            k[..key.len()].copy_from_slice(key);
        }
        let pad = |b: u8| k.iter().map(move |x| x ^ b);
        let inner = Sha256::new()
            .chain_update(pad(0x36).collect::<Vec<_>>())
            .chain_update(message)
            .finalize();
        Sha256::new()
            .chain_update(pad(0x5c).collect::<Vec<_>>())
            .chain_update(inner)
            .finalize()
            .to_vec()
    }

    fn field<'a>(header: &'a str, name: &str) -> Option<&'a str> {
        let start = header.find(&format!("{name}=\""))? + name.len() + 2;
        let len = header[start..].find('"')?;
        Some(&header[start..start + len])
    }

    /// The MAC of shared/taskcluster-api/README.md ("Hawk authentication"), over the path with
    /// its query string.
    #[test]
    fn signs_the_path_with_its_query() {
        let url = reqwest::Url::parse(
            "http://127.0.0.1:8123/api/queue/v1/task-group/AAAAAAAAQACAAAAAAAAAAA/list?continuationToken=jGzmdv8vpK",
        )
        .unwrap();
        let creds = HawkCredentials {
            client_id: "tc-ami-admin",
            access_token: "test-admin-token",
            certificate: None,
        };
        let ts = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let header = hawk_header("GET", &url, &creds, ts, Some("n0nce")).unwrap();
        assert!(header.starts_with("Hawk id=\"tc-ami-admin\""), "{header}");
        assert_eq!(field(&header, "ts"), Some("1795000000"));
        assert_eq!(field(&header, "ext"), None);
        let normalized = "hawk.1.header\n1795000000\nn0nce\nGET\n/api/queue/v1/task-group/AAAAAAAAQACAAAAAAAAAAA/list?continuationToken=jGzmdv8vpK\n127.0.0.1\n8123\n\n\n";
        let mac = STANDARD.encode(hmac_sha256(b"test-admin-token", normalized.as_bytes()));
        assert_eq!(field(&header, "mac"), Some(mac.as_str()));
    }

    #[test]
    fn temporary_credentials_carry_their_certificate_in_ext() {
        let url = reqwest::Url::parse(
            "https://tc.example/api/worker-manager/v1/worker-pools?continuationToken=x",
        )
        .unwrap();
        let cert =
            r#"{"version":1,"scopes":["queue:*"],"start":1,"expiry":2,"seed":"s","signature":"g"}"#;
        let creds = HawkCredentials {
            client_id: "temp",
            access_token: "t",
            certificate: Some(cert),
        };
        let ts = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let header = hawk_header("GET", &url, &creds, ts, Some("n")).unwrap();
        let ext = field(&header, "ext").unwrap();
        let decoded: Value = serde_json::from_slice(&STANDARD.decode(ext).unwrap()).unwrap();
        assert_eq!(decoded["certificate"]["scopes"][0], "queue:*");
        let normalized = format!(
            "hawk.1.header\n1795000000\nn\nGET\n/api/worker-manager/v1/worker-pools?continuationToken=x\ntc.example\n443\n\n{ext}\n"
        );
        let mac = STANDARD.encode(hmac_sha256(b"t", normalized.as_bytes()));
        assert_eq!(field(&header, "mac"), Some(mac.as_str()));
        let bad = HawkCredentials {
            certificate: Some("{not json"),
            ..creds
        };
        let err = hawk_header("GET", &url, &bad, ts, None).unwrap_err();
        assert!(err.to_string().contains("TASKCLUSTER_CERTIFICATE"), "{err}");
    }
}
