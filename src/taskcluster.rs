//! The thin Taskcluster adapter (the official `taskcluster` crate): configuration from the
//! standard environment variables, and errors that say which variable or scope is wrong.

use anyhow::Result;
use serde_json::Value;
use taskcluster::{ClientBuilder, Credentials, Secrets, WorkerManager};

use crate::password::Secret;
use crate::text::one_line;

/// Where and as whom tc-ami talks to Taskcluster.
#[derive(Clone)]
pub struct TcEnv {
    /// Without a trailing slash, for messages.
    pub root_url: String,
    pub client_id: Option<String>,
    access_token: Option<Secret>,
    certificate: Option<String>,
}

impl std::fmt::Debug for TcEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcEnv")
            .field("root_url", &self.root_url)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TcConfigError {
    #[error(
        "TASKCLUSTER_ROOT_URL is not set: set it to your deployment's root URL, e.g. https://community-tc.services.mozilla.com"
    )]
    NoRootUrl,
    #[error("TASKCLUSTER_ROOT_URL `{0}` is not an http(s) URL")]
    BadRootUrl(String),
    #[error(
        "{0} is not set: Taskcluster credentials need TASKCLUSTER_CLIENT_ID and TASKCLUSTER_ACCESS_TOKEN (and TASKCLUSTER_CERTIFICATE for temporary credentials)"
    )]
    MissingCredential(&'static str),
}

impl TcEnv {
    /// Reads `TASKCLUSTER_ROOT_URL`, `TASKCLUSTER_CLIENT_ID`, `TASKCLUSTER_ACCESS_TOKEN` and
    /// `TASKCLUSTER_CERTIFICATE` through `get` (the environment, or a map in tests).
    pub fn from_vars(
        get: impl Fn(&str) -> Option<String>,
        need_credentials: bool,
    ) -> Result<TcEnv, TcConfigError> {
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let root_url = get("TASKCLUSTER_ROOT_URL").ok_or(TcConfigError::NoRootUrl)?;
        let root_url = root_url.trim().trim_end_matches('/').to_string();
        if !(root_url.starts_with("http://") || root_url.starts_with("https://"))
            || root_url.contains(' ')
        {
            return Err(TcConfigError::BadRootUrl(root_url));
        }
        let client_id = get("TASKCLUSTER_CLIENT_ID");
        let access_token = get("TASKCLUSTER_ACCESS_TOKEN").map(Secret::new);
        if need_credentials || client_id.is_some() || access_token.is_some() {
            if client_id.is_none() {
                return Err(TcConfigError::MissingCredential("TASKCLUSTER_CLIENT_ID"));
            }
            if access_token.is_none() {
                return Err(TcConfigError::MissingCredential("TASKCLUSTER_ACCESS_TOKEN"));
            }
        }
        Ok(TcEnv {
            root_url,
            client_id,
            access_token,
            certificate: get("TASKCLUSTER_CERTIFICATE"),
        })
    }

    pub fn from_env(need_credentials: bool) -> Result<TcEnv, TcConfigError> {
        Self::from_vars(|k| std::env::var(k).ok(), need_credentials)
    }

    fn builder(&self) -> ClientBuilder {
        // The crate joins service paths onto the root URL: it must end in `/`.
        let mut b = ClientBuilder::new(format!("{}/", self.root_url));
        if let (Some(id), Some(token)) = (&self.client_id, &self.access_token) {
            b = b.credentials(match &self.certificate {
                Some(cert) => {
                    Credentials::new_with_certificate(id.as_str(), token.expose(), cert.as_str())
                }
                None => Credentials::new(id.as_str(), token.expose()),
            });
        }
        b
    }

    fn who(&self) -> String {
        self.client_id
            .as_deref()
            .unwrap_or("(no credentials)")
            .to_string()
    }

    /// The client's id, for messages (`(no credentials)` without one).
    pub fn client(&self) -> String {
        self.who()
    }

    /// Turns a client error into one line that names the root URL and what to fix. The result
    /// is a [`CallError`], which keeps the status and, on a 403, the scopes the service says
    /// are missing.
    pub fn explain(&self, what: &str, err: anyhow::Error) -> anyhow::Error {
        let status = taskcluster::err_status_code(&err).map(|s| s.as_u16());
        // The crate puts the service's message as context on 4xx errors.
        let service_message = err
            .chain()
            .next()
            .map(|e| e.to_string())
            .unwrap_or_default();
        let missing_scopes = if status == Some(403) {
            missing_scopes(&service_message)
        } else {
            vec![]
        };
        anyhow::Error::new(CallError {
            status,
            missing_scopes,
            message: self.explain_text(what, status, &service_message, &err),
        })
    }

    fn explain_text(
        &self,
        what: &str,
        status: Option<u16>,
        service_message: &str,
        err: &anyhow::Error,
    ) -> String {
        let message = summarize_service_message(service_message);
        let root = &self.root_url;
        match status {
            Some(401) => format!(
                "{what}: {root} refused the credentials of client `{}` (401: {message}); check TASKCLUSTER_CLIENT_ID and TASKCLUSTER_ACCESS_TOKEN",
                self.who()
            ),
            Some(403) => format!(
                "{what}: client `{}` lacks scopes at {root} (403: {message})",
                self.who()
            ),
            Some(code) => format!("{what}: {root} answered {code}: {message}"),
            None => {
                let text = one_line(&format!("{err:#}"));
                if text.contains("decoding response body") {
                    format!(
                        "{what}: {root} answered something that is not the JSON the API promises ({text}); is TASKCLUSTER_ROOT_URL the root URL of a Taskcluster deployment?"
                    )
                } else {
                    format!("{what}: cannot reach Taskcluster at {root}: {text}")
                }
            }
        }
    }

    /// A refusal (403) as one line naming the client and the scopes it lacks, what they are
    /// `needed_for`, and what was therefore not done (`then`); `scopes` names them when the
    /// caller knows better than the service (a probe's name stands for a whole prefix). Any
    /// other error keeps its message, followed by `then`.
    pub fn refusal(
        &self,
        err: anyhow::Error,
        scopes: Option<&[String]>,
        needed_for: &str,
        then: &str,
    ) -> anyhow::Error {
        match err.downcast_ref::<CallError>() {
            Some(e) if e.status == Some(403) => {
                let named = match scopes {
                    Some(s) => s.to_vec(),
                    None => e.missing_scopes.clone(),
                };
                let list = match named.as_slice() {
                    [] => "the scopes".to_string(),
                    [one] => format!("the scope {one}"),
                    many => format!("the scopes {}", many.join(" and ")),
                };
                anyhow::anyhow!(
                    "client `{}` lacks {list} needed to {needed_for} (403 at {}); {then}",
                    self.who(),
                    self.root_url
                )
            }
            _ => anyhow::anyhow!("{err:#}; {then}"),
        }
    }
}

/// A Taskcluster call that failed, explained in one line ([`TcEnv::explain`]).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CallError {
    /// The HTTP status, when the service answered.
    pub status: Option<u16>,
    /// On a 403: the scopes the service says are missing.
    pub missing_scopes: Vec<String>,
    message: String,
}

/// The status of a failed call, when it was a [`CallError`] with an answer.
pub fn status_of(err: &anyhow::Error) -> Option<u16> {
    err.downcast_ref::<CallError>().and_then(|e| e.status)
}

/// The scopes an `InsufficientScopes` message says the client is missing: the strings of the
/// scope expression in its first code block (the service writes an expression as JSON, and a
/// single scope as it is).
pub fn missing_scopes(message: &str) -> Vec<String> {
    fn strings(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) if !out.contains(s) => out.push(s.clone()),
            Value::Array(items) => items.iter().for_each(|i| strings(i, out)),
            Value::Object(map) => map.values().for_each(|i| strings(i, out)),
            _ => {}
        }
    }
    let Some(block) = message
        .split_once("missing the following scopes:")
        .and_then(|(_, rest)| rest.split("```").nth(1))
    else {
        return vec![];
    };
    let block = block.trim();
    let mut out = Vec::new();
    match serde_json::from_str::<Value>(block) {
        Ok(v) => strings(&v, &mut out),
        Err(_) if !block.is_empty() && !block.contains(char::is_whitespace) => {
            out.push(block.to_string())
        }
        Err(_) => {}
    }
    out
}

/// The service's messages run over several lines and end with a `---` block of request
/// details; keep the part a person needs, on one line.
pub fn summarize_service_message(message: &str) -> String {
    let head = message.split("\n---").next().unwrap_or(message);
    one_line(&head.replace("```", ""))
}

/// Sends one Taskcluster request: logs it (debug, `-v`) with its service, method, target and
/// duration; never a secret's value or a credential.
async fn call<T>(
    service: &'static str,
    method: &'static str,
    target: &str,
    request: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let started = std::time::Instant::now();
    let result = request.await;
    let ms = started.elapsed().as_millis() as u64;
    let outcome = match &result {
        Ok(_) => "ok".to_string(),
        Err(e) => match taskcluster::err_status_code(e) {
            Some(status) => status.as_u16().to_string(),
            None => "no answer".to_string(),
        },
    };
    tracing::debug!("Taskcluster {service}.{method}({target}): {ms} ms: {outcome}");
    result
}

pub struct SecretsApi {
    env: TcEnv,
    client: Secrets,
}

impl SecretsApi {
    pub fn new(env: &TcEnv) -> Result<SecretsApi> {
        let client = Secrets::new(env.builder())?;
        Ok(SecretsApi {
            env: env.clone(),
            client,
        })
    }

    /// The secret's value, or None when there is no such secret (or it expired).
    pub async fn get(&self, name: &str) -> Result<Option<Value>> {
        Ok(self.get_stored(name).await?.map(|s| s.value))
    }

    /// The secret's value and expiry, or None when there is no such secret (or it expired).
    pub async fn get_stored(&self, name: &str) -> Result<Option<StoredSecret>> {
        match call("secrets", "get", name, self.client.get(name)).await {
            Ok(v) => Ok(Some(StoredSecret {
                value: v.get("secret").cloned().unwrap_or(Value::Null),
                expires: v
                    .get("expires")
                    .and_then(Value::as_str)
                    .and_then(|e| chrono::DateTime::parse_from_rfc3339(e).ok())
                    .map(|e| e.with_timezone(&chrono::Utc)),
            })),
            // 410: expired recently (the API reference); 404: no such secret.
            Err(e) if matches!(status(&e), Some(404 | 410)) => Ok(None),
            Err(e) => Err(self.env.explain(&format!("reading secret `{name}`"), e)),
        }
    }

    /// Deletes the secret `name` (it succeeds whether or not the secret exists).
    pub async fn remove(&self, name: &str) -> Result<()> {
        call("secrets", "remove", name, self.client.remove(name))
            .await
            .map_err(|e| self.env.explain(&format!("removing secret `{name}`"), e))
    }

    /// Writes `value` to the secret `name`, expiring at `expires`.
    pub async fn set(
        &self,
        name: &str,
        value: Value,
        expires: chrono::DateTime<chrono::Utc>,
    ) -> Result<()> {
        let payload = serde_json::json!({
            "secret": value,
            "expires": expires.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        });
        call("secrets", "set", name, self.client.set(name, &payload))
            .await
            .map_err(|e| self.env.explain(&format!("storing secret `{name}`"), e))
    }
}

/// A secret as the service returns it.
#[derive(Debug, Clone)]
pub struct StoredSecret {
    pub value: Value,
    pub expires: Option<chrono::DateTime<chrono::Utc>>,
}

fn status(e: &anyhow::Error) -> Option<u16> {
    taskcluster::err_status_code(e).map(|s| s.as_u16())
}

/// The worker-manager service: get and update worker pools.
pub struct WorkerManagerApi {
    env: TcEnv,
    client: WorkerManager,
}

impl WorkerManagerApi {
    pub fn new(env: &TcEnv) -> Result<WorkerManagerApi> {
        let client = WorkerManager::new(env.builder())?;
        Ok(WorkerManagerApi {
            env: env.clone(),
            client,
        })
    }

    pub fn root_url(&self) -> &str {
        &self.env.root_url
    }

    /// The pool as the service returns it.
    pub async fn get_pool(&self, pool_id: &str) -> Result<Value> {
        match call(
            "worker-manager",
            "workerPool",
            pool_id,
            self.client.workerPool(pool_id),
        )
        .await
        {
            Ok(v) if v.is_object() => Ok(v),
            Ok(v) => anyhow::bail!(
                "fetching worker pool {pool_id}: {} answered with a JSON {} instead of a worker pool",
                self.env.root_url,
                json_kind(&v)
            ),
            Err(e) if status(&e) == Some(404) => {
                anyhow::bail!(
                    "worker pool {pool_id} does not exist at {} (404); check worker_pool_id, or create the pool first",
                    self.env.root_url
                )
            }
            Err(e) => Err(self
                .env
                .explain(&format!("fetching worker pool {pool_id}"), e)),
        }
    }

    /// Replaces the pool's definition with `payload`.
    pub async fn update_pool(&self, pool_id: &str, payload: &Value) -> Result<Value> {
        call(
            "worker-manager",
            "updateWorkerPool",
            pool_id,
            self.client.updateWorkerPool(pool_id, payload),
        )
        .await
        .map_err(|e| {
            self.env
                .explain(&format!("updating worker pool {pool_id}"), e)
        })
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)], need: bool) -> Result<TcEnv, TcConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        TcEnv::from_vars(|k| map.get(k).cloned(), need)
    }

    #[test]
    fn reads_and_checks_the_variables() {
        let e = env(
            &[
                ("TASKCLUSTER_ROOT_URL", "https://tc.example/"),
                ("TASKCLUSTER_CLIENT_ID", "me"),
                ("TASKCLUSTER_ACCESS_TOKEN", "t"),
            ],
            true,
        )
        .unwrap();
        assert_eq!(e.root_url, "https://tc.example");
        assert_eq!(env(&[], false).unwrap_err(), TcConfigError::NoRootUrl);
        assert_eq!(
            env(
                &[
                    ("TASKCLUSTER_ROOT_URL", "https://x"),
                    ("TASKCLUSTER_CLIENT_ID", "me")
                ],
                false
            )
            .unwrap_err(),
            TcConfigError::MissingCredential("TASKCLUSTER_ACCESS_TOKEN")
        );
        assert_eq!(
            env(&[("TASKCLUSTER_ROOT_URL", "https://x")], true).unwrap_err(),
            TcConfigError::MissingCredential("TASKCLUSTER_CLIENT_ID")
        );
        assert!(env(&[("TASKCLUSTER_ROOT_URL", "https://x")], false).is_ok());
        assert!(matches!(
            env(&[("TASKCLUSTER_ROOT_URL", "tc.example")], false),
            Err(TcConfigError::BadRootUrl(_))
        ));
    }

    #[test]
    fn debug_hides_the_token() {
        let e = env(
            &[
                ("TASKCLUSTER_ROOT_URL", "https://x"),
                ("TASKCLUSTER_CLIENT_ID", "me"),
                ("TASKCLUSTER_ACCESS_TOKEN", "s3cr3t-token"),
            ],
            true,
        )
        .unwrap();
        assert!(!format!("{e:?}").contains("s3cr3t"));
    }

    #[test]
    fn the_missing_scopes_are_read_from_the_403_message() {
        // As the real service words it (shared/taskcluster-api/real-service/exp4.txt).
        let m = "Client ID static/tester/limited does not have sufficient scopes and is missing the following scopes:\n\n```\n{\n  \"AllOf\": [\n    \"worker-manager:manage-worker-pool:proj-test/other\",\n    \"worker-manager:provider:aws\"\n  ]\n}\n```\n\nThis request requires the client to satisfy the following scope expression:\n\n```\n{\n  \"AllOf\": [\n    \"worker-manager:manage-worker-pool:proj-test/other\",\n    \"worker-manager:provider:aws\"\n  ]\n}\n```\n\n---\n\n* method:     createWorkerPool";
        assert_eq!(
            missing_scopes(m),
            vec![
                "worker-manager:manage-worker-pool:proj-test/other",
                "worker-manager:provider:aws"
            ]
        );
        // One scope is written as it is, not as JSON (lib-api's message templates).
        let one = "Client ID x does not have sufficient scopes and is missing the following scopes:\n\n```\nsecrets:set:a/b\n```\n\nThis request requires";
        assert_eq!(missing_scopes(one), vec!["secrets:set:a/b"]);
        assert!(missing_scopes("Unauthorized: Bad mac").is_empty());
    }

    #[test]
    fn a_refusal_names_the_client_and_the_scope() {
        let e = env(
            &[
                ("TASKCLUSTER_ROOT_URL", "https://tc.example"),
                ("TASKCLUSTER_CLIENT_ID", "me"),
                ("TASKCLUSTER_ACCESS_TOKEN", "t"),
            ],
            true,
        )
        .unwrap();
        let refused = anyhow::Error::new(CallError {
            status: Some(403),
            missing_scopes: vec!["secrets:set:p/x".into()],
            message: "storing secret: …".into(),
        });
        assert_eq!(
            e.refusal(refused, None, "store the password", "nothing was launched")
                .to_string(),
            "client `me` lacks the scope secrets:set:p/x needed to store the password (403 at https://tc.example); nothing was launched"
        );
        let refused = anyhow::Error::new(CallError {
            status: Some(403),
            missing_scopes: vec!["secrets:set:p/probe".into()],
            message: String::new(),
        });
        let named = ["secrets:set:p/*".to_string()];
        assert!(
            e.refusal(refused, Some(&named), "x", "y")
                .to_string()
                .contains("lacks the scope secrets:set:p/* needed to x")
        );
        let other = anyhow::Error::new(CallError {
            status: Some(503),
            missing_scopes: vec![],
            message: "updating worker pool p/w: https://tc.example answered 503: down".into(),
        });
        assert_eq!(
            e.refusal(other, None, "x", "nothing was pushed")
                .to_string(),
            "updating worker pool p/w: https://tc.example answered 503: down; nothing was pushed"
        );
    }

    #[test]
    fn service_messages_become_one_line() {
        let m = "Client ID me does not have sufficient scopes and is missing the following scopes:\n\n```\n{\n  \"AnyOf\": [\"secrets:set:x\"]\n}\n```\n\nThis request requires ...\n\n---\n\n* method:     set\n* errorCode:  InsufficientScopes";
        let s = summarize_service_message(m);
        assert!(!s.contains('\n'));
        assert!(s.contains("secrets:set:x"));
        assert!(!s.contains("errorCode"));
    }
}
