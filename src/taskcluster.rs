//! The thin Taskcluster adapter (the official `taskcluster` crate): configuration from the
//! standard environment variables, and errors that say which variable or scope is wrong.

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use serde_json::Value;
use taskcluster::retry::{Backoff, Retry};
use taskcluster::{ClientBuilder, Credentials, Queue, Secrets, WorkerManager};

use crate::password::Secret;
use crate::rollout::{LaunchConfigRecord, QueueWorker, RunState, Worker};
use crate::text::one_line;

/// Where and as whom tc-ami talks to Taskcluster.
#[derive(Clone)]
pub struct TcEnv {
    /// The deployment's root URL, without a trailing slash: for messages and links.
    pub root_url: String,
    pub client_id: Option<String>,
    access_token: Option<Secret>,
    certificate: Option<String>,
    /// Inside a task without credentials of its own: every call goes, unsigned, to
    /// taskcluster-proxy at this URL (without a trailing slash), which signs it with the task's
    /// scopes.
    pub proxy_url: Option<String>,
    /// `TASK_ID` (workers set it in every task), for the identity recorded in the history.
    task_id: Option<String>,
}

impl std::fmt::Debug for TcEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcEnv")
            .field("root_url", &self.root_url)
            .field("client_id", &self.client_id)
            .field("proxy_url", &self.proxy_url)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TcConfigError {
    #[error(
        "TASKCLUSTER_ROOT_URL is not set: set it to your deployment's root URL, e.g. https://community-tc.services.mozilla.com"
    )]
    NoRootUrl,
    #[error(
        "TASKCLUSTER_ROOT_URL is not set: tc-ami would call Taskcluster through taskcluster-proxy at {0}, and needs the deployment's root URL as well, for its messages, links and records (Taskcluster workers set it in every task); set it to the deployment's root URL, e.g. https://community-tc.services.mozilla.com"
    )]
    NoRootUrlBehindProxy(String),
    #[error("TASKCLUSTER_ROOT_URL `{0}` is not an http(s) URL")]
    BadRootUrl(String),
    #[error(
        "TASKCLUSTER_PROXY_URL `{0}` is not an http(s) URL with a host (no query or fragment); inside a task with the taskcluster-proxy feature the worker sets it, elsewhere unset it"
    )]
    BadProxyUrl(String),
    #[error(
        "{0} is not set: Taskcluster credentials need TASKCLUSTER_CLIENT_ID and TASKCLUSTER_ACCESS_TOKEN (and TASKCLUSTER_CERTIFICATE for temporary credentials), or, inside a task, TASKCLUSTER_PROXY_URL (taskcluster-proxy)"
    )]
    MissingCredential(&'static str),
}

/// `url` without its trailing slashes when it is an http(s) URL with a host and neither query
/// nor fragment.
fn http_url(url: &str) -> Option<String> {
    let trimmed = url.trim().trim_end_matches('/');
    let parsed = reqwest::Url::parse(trimmed).ok()?;
    let ok = matches!(parsed.scheme(), "http" | "https")
        && parsed.host_str().is_some_and(|h| !h.is_empty())
        && parsed.query().is_none()
        && parsed.fragment().is_none()
        && !trimmed.contains(char::is_whitespace);
    ok.then(|| trimmed.to_string())
}

impl TcEnv {
    /// Reads `TASKCLUSTER_ROOT_URL`, `TASKCLUSTER_CLIENT_ID`, `TASKCLUSTER_ACCESS_TOKEN`,
    /// `TASKCLUSTER_CERTIFICATE`, `TASKCLUSTER_PROXY_URL` and `TASK_ID` through `get` (the
    /// environment, or a map in tests). With `TASKCLUSTER_PROXY_URL` and no client id, every
    /// call goes through the proxy, which counts as credentials; with both, the explicit
    /// credentials win.
    pub fn from_vars(
        get: impl Fn(&str) -> Option<String>,
        need_credentials: bool,
    ) -> Result<TcEnv, TcConfigError> {
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let client_id = get("TASKCLUSTER_CLIENT_ID");
        let proxy_url = match get("TASKCLUSTER_PROXY_URL") {
            Some(p) => Some(http_url(&p).ok_or(TcConfigError::BadProxyUrl(p.trim().into()))?),
            None => None,
        };
        let proxy_url = proxy_url.filter(|_| client_id.is_none());
        let root_url = match (get("TASKCLUSTER_ROOT_URL"), &proxy_url) {
            (Some(r), _) => r,
            (None, Some(p)) => return Err(TcConfigError::NoRootUrlBehindProxy(p.clone())),
            (None, None) => return Err(TcConfigError::NoRootUrl),
        };
        let root_url = root_url.trim().trim_end_matches('/').to_string();
        if !(root_url.starts_with("http://") || root_url.starts_with("https://"))
            || root_url.contains(' ')
        {
            return Err(TcConfigError::BadRootUrl(root_url));
        }
        let access_token = get("TASKCLUSTER_ACCESS_TOKEN").map(Secret::new);
        if proxy_url.is_none()
            && (need_credentials || client_id.is_some() || access_token.is_some())
        {
            if client_id.is_none() {
                return Err(TcConfigError::MissingCredential("TASKCLUSTER_CLIENT_ID"));
            }
            if access_token.is_none() {
                return Err(TcConfigError::MissingCredential("TASKCLUSTER_ACCESS_TOKEN"));
            }
        }
        let through_proxy = proxy_url.is_some();
        Ok(TcEnv {
            root_url,
            client_id,
            access_token: access_token.filter(|_| !through_proxy),
            certificate: get("TASKCLUSTER_CERTIFICATE").filter(|_| !through_proxy),
            proxy_url,
            task_id: get("TASK_ID").map(|t| t.trim().to_string()),
        })
    }

    pub fn from_env(need_credentials: bool) -> Result<TcEnv, TcConfigError> {
        let env = Self::from_vars(|k| std::env::var(k).ok(), need_credentials)?;
        let proxy = std::env::var("TASKCLUSTER_PROXY_URL").unwrap_or_default();
        match (&env.proxy_url, &env.client_id) {
            (Some(p), _) => tracing::debug!(
                "Taskcluster: every call goes through taskcluster-proxy at {p}, with the task's scopes (deployment {})",
                env.root_url
            ),
            (None, Some(id)) if !proxy.trim().is_empty() => tracing::debug!(
                "Taskcluster: TASKCLUSTER_CLIENT_ID is set, so tc-ami calls {} as client `{id}` with those credentials, not through taskcluster-proxy at {}",
                env.root_url,
                proxy.trim()
            ),
            _ => {}
        }
        Ok(env)
    }

    /// Where the calls go: the proxy, or the deployment itself.
    fn api_base(&self) -> &str {
        self.proxy_url.as_deref().unwrap_or(&self.root_url)
    }

    /// Who is refused, as the subject of "lack(s) …": the client, or the task's scopes.
    pub fn lacking(&self) -> String {
        match &self.proxy_url {
            Some(p) => format!("the task's scopes (through taskcluster-proxy at {p}) lack"),
            None => format!("client `{}` lacks", self.who()),
        }
    }

    /// Who acts, for the deployment history: the client id; through the proxy, `task <TASK_ID>`
    /// (or `taskcluster-proxy` when `TASK_ID` is not set).
    pub fn identity(&self) -> String {
        match (&self.proxy_url, &self.task_id, &self.client_id) {
            (Some(_), Some(task), _) => format!("task {task}"),
            (Some(_), None, _) => "taskcluster-proxy".to_string(),
            (None, _, id) => id.clone().unwrap_or_default(),
        }
    }

    /// The crate's client builder for this root URL and these credentials (also for the
    /// adapters of other services, [`crate::taskcluster_hooks`]).
    pub fn builder(&self) -> ClientBuilder {
        // The crate joins service paths onto the root URL: it must end in `/`.
        // Through the proxy: unsigned, to `<proxy>/api/<service>/<version>/…`, the routes
        // taskcluster-proxy serves (as the official clients do with TASKCLUSTER_PROXY_URL).
        let mut b = ClientBuilder::new(format!("{}/", self.api_base()));
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

    /// The signer for requests with a query string (see [`Signed`]).
    fn signed(&self) -> Result<Signed> {
        let credentials = match (&self.client_id, &self.access_token) {
            (Some(id), Some(token)) => Some(hawk::Credentials {
                id: id.clone(),
                key: hawk::Key::new(token.expose(), hawk::SHA256)
                    .context("TASKCLUSTER_ACCESS_TOKEN cannot be used as a Hawk key")?,
            }),
            _ => None,
        };
        let ext = match &self.certificate {
            Some(cert) => Some(certificate_ext(cert)?),
            None => None,
        };
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .context("cannot set up the HTTP client for Taskcluster")?;
        Ok(Signed {
            http,
            credentials,
            ext,
        })
    }

    /// As [`TcEnv::explain`], but a 403 names the scope the call needs (`scope`, the API
    /// reference's expression filled in) on one line.
    pub fn explain_scope(&self, what: &str, scope: &str, err: anyhow::Error) -> anyhow::Error {
        match status_of(&err) {
            Some(403) if err.downcast_ref::<CallError>().is_none() => {
                anyhow::Error::new(CallError {
                    status: Some(403),
                    missing_scopes: vec![scope.to_string()],
                    message: match &self.proxy_url {
                        Some(_) => format!(
                            "{what}: {} the scope `{scope}` at {} (403); add it to the task's scopes",
                            self.lacking(),
                            self.root_url
                        ),
                        None => format!(
                            "{what}: {} the scope `{scope}` at {} (403); add it to the client's scopes, or use a client that has it",
                            self.lacking(),
                            self.root_url
                        ),
                    },
                })
            }
            _ => self.explain(what, err),
        }
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
    /// are missing. An error that already is one is kept as it is.
    pub fn explain(&self, what: &str, err: anyhow::Error) -> anyhow::Error {
        if err.downcast_ref::<CallError>().is_some() {
            return err;
        }
        let status = status_of(&err);
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
        let lacking = self.lacking();
        match (status, &self.proxy_url) {
            (Some(401), None) => format!(
                "{what}: {root} refused the credentials of client `{}` (401: {message}); check TASKCLUSTER_CLIENT_ID and TASKCLUSTER_ACCESS_TOKEN",
                self.who()
            ),
            (Some(401), Some(proxy)) => format!(
                "{what}: {root} refused the credentials taskcluster-proxy at {proxy} signs with (401: {message}); check the task's credentials and the proxy"
            ),
            (Some(403), _) => format!("{what}: {lacking} scopes at {root} (403: {message})"),
            (Some(code), _) => format!("{what}: {root} answered {code}: {message}"),
            (None, proxy) => {
                let text = one_line(&format!("{err:#}"));
                let (place, variable, reach) = match proxy {
                    Some(p) => (
                        format!("taskcluster-proxy at {p}"),
                        "is TASKCLUSTER_PROXY_URL the address of taskcluster-proxy",
                        format!("taskcluster-proxy at {p}"),
                    ),
                    None => (
                        root.to_string(),
                        "is TASKCLUSTER_ROOT_URL the root URL of a Taskcluster deployment",
                        format!("Taskcluster at {root}"),
                    ),
                };
                if text.contains("decoding response body") {
                    format!(
                        "{what}: {place} answered something that is not the JSON the API promises ({text}); {variable}?"
                    )
                } else {
                    format!("{what}: cannot reach {reach}: {text}")
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
                    "{} {list} needed to {needed_for} (403 at {}); {then}",
                    self.lacking(),
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

/// The HTTP status of a failed Taskcluster call, when the service answered: from a
/// [`CallError`] (an explained error, as every method here returns) or from the crate's own
/// error (a request's error before [`TcEnv::explain`]), so that either may be asked.
pub fn status_of(err: &anyhow::Error) -> Option<u16> {
    match err.downcast_ref::<CallError>() {
        Some(e) => e.status,
        None => taskcluster::err_status_code(err).map(|s| s.as_u16()),
    }
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
pub async fn call<T>(
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
        Err(e) => match status_of(e) {
            Some(status) => status.to_string(),
            None => "no answer".to_string(),
        },
    };
    tracing::debug!("Taskcluster {service}.{method}({target}): {ms} ms: {outcome}");
    result
}

/// `ext` as the crate sends it for temporary credentials: base64 of `{"certificate": …}`, the
/// certificate parsed from `TASKCLUSTER_CERTIFICATE` (it must be JSON).
fn certificate_ext(certificate: &str) -> Result<String> {
    use base64::Engine;
    let cert: Value = serde_json::from_str(certificate)
        .context("TASKCLUSTER_CERTIFICATE is not JSON: set it to the certificate of your temporary credentials, as issued")?;
    let ext = serde_json::json!({ "certificate": cert }).to_string();
    Ok(base64::engine::general_purpose::STANDARD.encode(ext))
}

/// The `Authorization` header for `method` on `url`: Hawk with the MAC over the URL's path
/// *with* its query string (`hawk::RequestBuilder::from_url`), no payload hash, `ext` when
/// given, at `ts` with `nonce`.
pub fn hawk_header(
    credentials: &hawk::Credentials,
    ext: Option<&str>,
    method: &str,
    url: &reqwest::Url,
    ts: std::time::SystemTime,
    nonce: &str,
) -> Result<String> {
    let header = hawk::RequestBuilder::from_url(method, url)
        .context("cannot sign the request")?
        .ext(ext)
        .request()
        .make_header_full(credentials, ts, nonce)
        .context("cannot sign the request")?;
    Ok(format!("Hawk {header}"))
}

/// Requests that tc-ami signs itself. The `taskcluster` crate 114 signs the path *without* its
/// query string, and the service checks the MAC over the path with it (401 "Bad mac"), so every
/// call with a query (paging, `includeArchived`) goes through here: the crate builds the URL
/// (its `*_url` methods), this signs it with the `hawk` crate the crate itself uses, sends the
/// crate's `ext` (the certificate of temporary credentials), and retries as the crate does
/// (its [`Retry`] policy: 5xx and failed connections, five times with backoff).
struct Signed {
    http: reqwest::Client,
    credentials: Option<hawk::Credentials>,
    ext: Option<String>,
}

impl Signed {
    /// One attempt: a fresh timestamp and nonce each time.
    async fn attempt(&self, url: &reqwest::Url) -> Result<reqwest::Response, anyhow::Error> {
        let mut request = self.http.get(url.clone());
        if let Some(credentials) = &self.credentials {
            let nonce: String = {
                use rand::Rng;
                let mut rng = rand::thread_rng();
                (0..12)
                    .map(|_| rng.sample(rand::distributions::Alphanumeric) as char)
                    .collect()
            };
            let header = hawk_header(
                credentials,
                self.ext.as_deref(),
                "GET",
                url,
                std::time::SystemTime::now(),
                &nonce,
            )?;
            request = request.header(reqwest::header::AUTHORIZATION, header);
        }
        Ok(request.send().await?)
    }

    /// GETs `url` and parses its JSON; errors as the crate makes them (a 4xx carries the
    /// service's message as context, so [`TcEnv::explain`] and [`status_of`] work).
    async fn get_json(&self, url: &str) -> Result<Value> {
        let url = reqwest::Url::parse(url).with_context(|| format!("bad URL {url}"))?;
        let mut backoff = Backoff::new(&Retry::default());
        loop {
            let failure: anyhow::Error = match self.attempt(&url).await {
                Ok(resp) if resp.status().is_client_error() => {
                    let err = resp.error_for_status_ref().map(|_| ()).err();
                    let message =
                        resp.json::<Value>().await.ok().and_then(|v| {
                            v.get("message").and_then(Value::as_str).map(str::to_string)
                        });
                    return Err(match (err, message) {
                        (Some(e), Some(m)) => anyhow::Error::from(e).context(m),
                        (Some(e), None) => e.into(),
                        (None, _) => anyhow::anyhow!("unexpected answer from {url}"),
                    });
                }
                Ok(resp) if resp.status().is_server_error() => match resp.error_for_status() {
                    Err(e) => e.into(),
                    Ok(_) => anyhow::anyhow!("unexpected answer from {url}"),
                },
                Ok(resp) => return Ok(resp.json::<Value>().await?),
                Err(e) if e.downcast_ref::<reqwest::Error>().is_some() => e,
                Err(e) => return Err(e),
            };
            match backoff.next_backoff() {
                Some(delay) => tokio::time::sleep(delay).await,
                None => return Err(failure),
            }
        }
    }

    /// Every item under `key` of every page: `url_for(continuationToken)` gives each page's
    /// URL, until a page comes without a token (a page may be empty and still have one).
    async fn all_pages(
        &self,
        key: &str,
        url_for: impl Fn(Option<&str>) -> Result<String>,
    ) -> Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self.get_json(&url_for(token.as_deref())?).await?;
            if let Some(list) = page.get(key).and_then(Value::as_array) {
                items.extend(list.iter().cloned());
            } else {
                anyhow::bail!("the answer has no `{key}` list");
            }
            let next = page["continuationToken"].as_str().map(str::to_string);
            if next.is_some() && next == token {
                anyhow::bail!("the service returned the same continuationToken twice");
            }
            match next {
                Some(t) => token = Some(t),
                None => return Ok(items),
            }
        }
    }
}

/// One paged listing: the call (`service.method(target)` in the call log), the key of its
/// items in each page, what it is (for messages), and the scope a 403 names (None: the
/// service's message names the missing scopes).
struct Listing<'a> {
    service: &'static str,
    method: &'static str,
    target: &'a str,
    key: &'a str,
    what: String,
    scope: Option<String>,
}

impl<'a> Listing<'a> {
    fn new(
        service: &'static str,
        method: &'static str,
        target: &'a str,
        key: &'a str,
        what: impl Into<String>,
    ) -> Self {
        Listing {
            service,
            method,
            target,
            key,
            what: what.into(),
            scope: None,
        }
    }

    /// A 403 names `scope` (the API reference's expression, filled in).
    fn naming(self, scope: String) -> Self {
        Listing {
            scope: Some(scope),
            ..self
        }
    }
}

impl Signed {
    /// Every item of `listing`, each page from `url_for(continuationToken)` signed with its
    /// query, parsed into `T`. A failure is explained by `env` (a [`CallError`]: [`status_of`]
    /// gives its status, so a caller can still take a 404 or a 403 as an answer).
    async fn list<T: DeserializeOwned>(
        &self,
        env: &TcEnv,
        listing: Listing<'_>,
        url_for: impl Fn(Option<&str>) -> Result<String>,
    ) -> Result<Vec<T>> {
        let Listing {
            service,
            method,
            target,
            key,
            what,
            scope,
        } = listing;
        let items = call(service, method, target, self.all_pages(key, url_for))
            .await
            .map_err(|e| match &scope {
                Some(scope) => env.explain_scope(&what, scope, e),
                None => env.explain(&what, e),
            })?;
        parse_items(&what, items)
    }
}

/// Parses listed items into `T`, naming the listing when one does not fit.
fn parse_items<T: DeserializeOwned>(what: &str, items: Vec<Value>) -> Result<Vec<T>> {
    items
        .into_iter()
        .map(|v| {
            serde_json::from_value(v)
                .map_err(|e| anyhow::anyhow!("{what}: an entry is not what the API promises: {e}"))
        })
        .collect()
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

    /// Where and as whom it calls.
    pub fn env(&self) -> &TcEnv {
        &self.env
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
            Err(e) if matches!(status_of(&e), Some(404 | 410)) => Ok(None),
            Err(e) => Err(self.env.explain(&format!("reading secret `{name}`"), e)),
        }
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

    /// Removes the secret `name`. The service answers success whether or not it exists (a
    /// 404 from a proxy in between counts as gone too). Needs `secrets:set:<name>`; a 403 is a
    /// [`CallError`] with its status.
    pub async fn remove(&self, name: &str) -> Result<()> {
        match call("secrets", "remove", name, self.client.remove(name)).await {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(self.env.explain(&format!("removing secret `{name}`"), e)),
        }
    }
}

/// A secret as the service returns it.
#[derive(Debug, Clone)]
pub struct StoredSecret {
    pub value: Value,
    pub expires: Option<chrono::DateTime<chrono::Utc>>,
}

/// What listWorkerPools gave.
#[derive(Debug)]
pub enum PoolList {
    Pools(Vec<Value>),
    /// 403: the client lacks `worker-manager:list-worker-pools`; the one-line message.
    NotAllowed(String),
}

/// The worker-manager service: get and update worker pools, list and remove their workers.
pub struct WorkerManagerApi {
    env: TcEnv,
    client: WorkerManager,
    signed: Signed,
}

impl WorkerManagerApi {
    pub fn new(env: &TcEnv) -> Result<WorkerManagerApi> {
        let client = WorkerManager::new(env.builder())?;
        Ok(WorkerManagerApi {
            env: env.clone(),
            client,
            signed: env.signed()?,
        })
    }

    /// Every worker of the pool, stopped ones too (`listWorkersForWorkerPool`, every page).
    pub async fn list_workers(&self, pool_id: &str) -> Result<Vec<Worker>> {
        let listing = Listing::new(
            "worker-manager",
            "listWorkersForWorkerPool",
            pool_id,
            "workers",
            format!("listing the workers of worker pool {pool_id}"),
        )
        .naming(format!("worker-manager:list-workers:{pool_id}"));
        self.signed
            .list(&self.env, listing, |token| {
                self.client
                    .listWorkersForWorkerPool_url(pool_id, token, None, None, None)
            })
            .await
    }

    /// Every launch config the pool has had, archived ones too
    /// (`listWorkerPoolLaunchConfigs?includeArchived=true`, every page).
    pub async fn launch_configs(&self, pool_id: &str) -> Result<Vec<LaunchConfigRecord>> {
        let listing = Listing::new(
            "worker-manager",
            "listWorkerPoolLaunchConfigs",
            pool_id,
            "workerPoolLaunchConfigs",
            format!("listing the launch configs of worker pool {pool_id}"),
        )
        .naming(format!("worker-manager:get-worker-pool:{pool_id}"));
        self.signed
            .list(&self.env, listing, |token| {
                self.client
                    .listWorkerPoolLaunchConfigs_url(pool_id, token, None, Some("true"))
            })
            .await
    }

    /// Removes a worker (`removeWorker`: the provider terminates its instance). False when the
    /// service no longer has it (404).
    pub async fn remove_worker(&self, pool_id: &str, group: &str, id: &str) -> Result<bool> {
        let target = format!("{pool_id}/{group}/{id}");
        let request = self.client.removeWorker(pool_id, group, id);
        match call("worker-manager", "removeWorker", &target, request).await {
            Ok(()) => Ok(true),
            Err(e) if status_of(&e) == Some(404) => Ok(false),
            Err(e) => Err(self.env.explain_scope(
                &format!("removing worker {group}/{id} of worker pool {pool_id}"),
                &format!("worker-manager:remove-worker:{target}"),
                e,
            )),
        }
    }

    pub fn root_url(&self) -> &str {
        &self.env.root_url
    }

    /// Where and as whom it calls.
    pub fn env(&self) -> &TcEnv {
        &self.env
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
                crate::text::json_kind(&v)
            ),
            Err(e) if status_of(&e) == Some(404) => {
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
    /// Creates the pool `pool_id` with `payload` (a createWorkerPool body).
    pub async fn create_pool(&self, pool_id: &str, payload: &Value) -> Result<Value> {
        call(
            "worker-manager",
            "createWorkerPool",
            pool_id,
            self.client.createWorkerPool(pool_id, payload),
        )
        .await
        .map_err(|e| {
            self.env
                .explain(&format!("creating worker pool {pool_id}"), e)
        })
    }

    /// The pool, or None when it does not exist.
    pub async fn find_pool(&self, pool_id: &str) -> Result<Option<Value>> {
        match call(
            "worker-manager",
            "workerPool",
            pool_id,
            self.client.workerPool(pool_id),
        )
        .await
        {
            Ok(v) => Ok(Some(v)),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(self
                .env
                .explain(&format!("fetching worker pool {pool_id}"), e)),
        }
    }

    /// Deletes the pool (worker-manager sets its provider to `null-provider` and removes it
    /// once its workers are gone). A pool that does not exist is fine.
    pub async fn delete_pool(&self, pool_id: &str) -> Result<()> {
        match call(
            "worker-manager",
            "deleteWorkerPool",
            pool_id,
            self.client.deleteWorkerPool(pool_id),
        )
        .await
        {
            Ok(_) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(self
                .env
                .explain(&format!("deleting worker pool {pool_id}"), e)),
        }
    }

    /// Every worker pool the credentials can list (listWorkerPools, every page, each pool as
    /// `workerPool` returns it), or, when the client may not list them (403), why.
    pub async fn list_pools(&self) -> Result<PoolList> {
        let listing = Listing::new(
            "worker-manager",
            "listWorkerPools",
            "",
            "workerPools",
            "listing the worker pools",
        );
        let listed = self
            .signed
            .list(&self.env, listing, |token| {
                self.client.listWorkerPools_url(token, None)
            })
            .await;
        match listed {
            Ok(pools) => Ok(PoolList::Pools(pools)),
            Err(e) if status_of(&e) == Some(403) => Ok(PoolList::NotAllowed(format!("{e:#}"))),
            Err(e) => Err(e),
        }
    }

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

/// The Queue: tasks and task groups (for `try`), and its view of a task queue's workers and
/// the state of their tasks (for `rollout`).
pub struct QueueApi {
    env: TcEnv,
    client: Queue,
    signed: Signed,
}

impl QueueApi {
    pub fn new(env: &TcEnv) -> Result<QueueApi> {
        let client = Queue::new(env.builder())?;
        Ok(QueueApi {
            env: env.clone(),
            client,
            signed: env.signed()?,
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
            self.client.createTask(task_id, task),
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
            self.client.cancelTask(task_id),
        )
        .await
        {
            Ok(_) => Ok(()),
            Err(e) if matches!(status_of(&e), Some(404 | 409)) => Ok(()),
            Err(e) => Err(self.env.explain(&format!("cancelling task {task_id}"), e)),
        }
    }

    /// Every task of the group (the `tasks` entries of all pages, signed by tc-ami with their
    /// query); none for a group that does not exist (yet).
    pub async fn list_task_group(&self, group: &str) -> Result<Vec<Value>> {
        let listing = Listing::new(
            "queue",
            "listTaskGroup",
            group,
            "tasks",
            format!("listing task group {group}"),
        );
        let listed = self
            .signed
            .list(&self.env, listing, |token| {
                self.client.listTaskGroup_url(group, token, None)
            })
            .await;
        match listed {
            Err(e) if status_of(&e) == Some(404) => Ok(vec![]),
            listed => listed,
        }
    }

    /// The Queue's workers of a task queue (`<provisionerId>/<workerType>`; a worker pool's
    /// task queue has the pool's id), every page: each with its latest task run.
    pub async fn list_workers(&self, task_queue_id: &str) -> Result<Vec<QueueWorker>> {
        let (provisioner, worker_type) = task_queue_id.split_once('/').ok_or_else(|| {
            anyhow::anyhow!("task queue id `{task_queue_id}` is not <provisionerId>/<workerType>")
        })?;
        let listing = Listing::new(
            "queue",
            "listWorkers",
            task_queue_id,
            "workers",
            format!("listing the Queue's workers of {task_queue_id}"),
        )
        .naming(format!("queue:list-workers:{task_queue_id}"));
        self.signed
            .list(&self.env, listing, |token| {
                self.client
                    .listWorkers_url(provisioner, worker_type, token, None, None)
            })
            .await
    }

    /// The state of run `run_id` of a task (`status`); None when the Queue no longer has the
    /// task (404) or the task has no such run.
    pub async fn run_state(&self, task_id: &str, run_id: u32) -> Result<Option<RunState>> {
        let status = match call("queue", "status", task_id, self.client.status(task_id)).await {
            Ok(status) => status,
            Err(e) if status_of(&e) == Some(404) => {
                return Ok(None);
            }
            Err(e) => {
                return Err(self.env.explain_scope(
                    &format!("reading the status of task {task_id}"),
                    &format!("queue:status:{task_id}"),
                    e,
                ));
            }
        };
        let state = &status["status"]["runs"][run_id as usize]["state"];
        match state {
            Value::Null => Ok(None),
            s => serde_json::from_value(s.clone()).map(Some).map_err(|e| {
                anyhow::anyhow!("the status of task {task_id} is not what the API promises: {e}")
            }),
        }
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

    /// A loopback server for the listing tests: answers each request with `answer(path with
    /// its query)`, a status and a JSON body, one connection at a time; it lives as long as
    /// the test process.
    fn serve(answer: impl Fn(&str) -> (u16, Value) + Send + 'static) -> String {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for mut stream in listener.incoming().map_while(Result::ok) {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request = String::new();
                reader.read_line(&mut request).unwrap();
                let mut header = String::new();
                while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                    header.clear();
                }
                let path = request.split_whitespace().nth(1).unwrap_or_default();
                let (status, body) = answer(path);
                let body = body.to_string();
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        url
    }

    #[tokio::test]
    async fn a_listing_reads_every_page_and_explains_a_failure() {
        let url = serve(|path| match path {
            "/items" => (
                200,
                serde_json::json!({"items": [1, 2], "continuationToken": "t1"}),
            ),
            "/items?continuationToken=t1" => (200, serde_json::json!({"items": [3]})),
            "/odd" => (200, serde_json::json!({"items": ["three"]})),
            "/refused" => (
                403,
                serde_json::json!({"message": "Client ID x does not have sufficient scopes"}),
            ),
            _ => (
                404,
                serde_json::json!({"message": "Task group does not exist"}),
            ),
        });
        let e = env(&[("TASKCLUSTER_ROOT_URL", &url)], false).unwrap();
        let signed = e.signed().unwrap();
        let at = |path: &'static str| {
            let url = url.clone();
            move |token: Option<&str>| {
                Ok(match token {
                    None => format!("{url}{path}"),
                    Some(t) => format!("{url}{path}?continuationToken={t}"),
                })
            }
        };
        let listing = |what: &str| Listing::new("queue", "listTaskGroup", "g", "items", what);
        let all: Vec<u32> = signed
            .list(&e, listing("listing g"), at("/items"))
            .await
            .unwrap();
        assert_eq!(all, [1, 2, 3]);
        let odd = signed
            .list::<u32>(&e, listing("listing o"), at("/odd"))
            .await;
        let odd = odd.unwrap_err().to_string();
        assert!(
            odd.starts_with("listing o: an entry is not what the API promises"),
            "{odd}"
        );
        // A 404 comes back explained, and its status can still be read.
        let missing = signed
            .list::<Value>(&e, listing("listing h"), at("/h"))
            .await;
        let missing = missing.unwrap_err();
        assert!(missing.downcast_ref::<CallError>().is_some());
        assert_eq!(status_of(&missing), Some(404));
        let text = format!("listing h: {url} answered 404: Task group does not exist");
        assert_eq!(missing.to_string(), text);
        // Explaining it again keeps it as it is.
        assert_eq!(e.explain("other", missing).to_string(), text);
        // A 403 names the listing's scope.
        let refused = listing("listing r").naming("queue:list-task-group:r".into());
        let refused = signed.list::<Value>(&e, refused, at("/refused")).await;
        let refused = refused.unwrap_err();
        assert_eq!(status_of(&refused), Some(403));
        let called = refused.downcast_ref::<CallError>().unwrap();
        assert_eq!(called.missing_scopes, ["queue:list-task-group:r"]);
        // The crate's own error, before it is explained, and an error without an answer.
        let raw = signed.get_json(&format!("{url}/h")).await.unwrap_err();
        assert!(raw.downcast_ref::<CallError>().is_none());
        assert_eq!(status_of(&raw), Some(404));
        assert_eq!(status_of(&anyhow::anyhow!("connection refused")), None);
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
    fn the_proxy_stands_for_credentials_when_no_client_id_is_set() {
        let root = ("TASKCLUSTER_ROOT_URL", "https://tc.example/");
        let proxy = ("TASKCLUSTER_PROXY_URL", "http://taskcluster/");
        let e = env(&[root, proxy, ("TASK_ID", "abcTASKid")], true).unwrap();
        assert_eq!(e.proxy_url.as_deref(), Some("http://taskcluster"));
        assert_eq!(e.root_url, "https://tc.example");
        assert_eq!(e.api_base(), "http://taskcluster");
        assert_eq!(e.identity(), "task abcTASKid");
        assert!(e.access_token.is_none());
        // Without TASK_ID the history says it came through the proxy.
        assert_eq!(
            env(&[root, proxy], true).unwrap().identity(),
            "taskcluster-proxy"
        );
        // A stray token without a client id does not turn the proxy off; it is not used.
        let e = env(&[root, proxy, ("TASKCLUSTER_ACCESS_TOKEN", "t")], true).unwrap();
        assert!(e.proxy_url.is_some() && e.access_token.is_none());
        // A client id wins over the proxy: its credentials, the deployment itself.
        let both = [
            root,
            proxy,
            ("TASKCLUSTER_CLIENT_ID", "me"),
            ("TASKCLUSTER_ACCESS_TOKEN", "t"),
            ("TASK_ID", "abcTASKid"),
        ];
        let e = env(&both, true).unwrap();
        assert_eq!(e.proxy_url, None);
        assert_eq!(e.api_base(), "https://tc.example");
        assert_eq!(e.identity(), "me");
        // ... and it must be complete.
        assert_eq!(
            env(&[root, proxy, ("TASKCLUSTER_CLIENT_ID", "me")], true).unwrap_err(),
            TcConfigError::MissingCredential("TASKCLUSTER_ACCESS_TOKEN")
        );
        // Only the proxy: the root URL is still needed, and the error says why.
        let err = env(&[proxy], true).unwrap_err();
        assert_eq!(
            err,
            TcConfigError::NoRootUrlBehindProxy("http://taskcluster".into())
        );
        assert!(
            err.to_string()
                .contains("taskcluster-proxy at http://taskcluster")
        );
    }

    #[test]
    fn a_malformed_proxy_url_is_one_line() {
        let root = ("TASKCLUSTER_ROOT_URL", "https://tc.example");
        for bad in [
            "taskcluster",
            "ftp://x",
            "http://",
            "http://a b",
            "http://x/?q=1",
            "http://x#f",
        ] {
            let err = env(&[root, ("TASKCLUSTER_PROXY_URL", bad)], false).unwrap_err();
            assert!(
                matches!(err, TcConfigError::BadProxyUrl(_)),
                "{bad}: {err:?}"
            );
            let text = err.to_string();
            assert!(
                text.contains("TASKCLUSTER_PROXY_URL") && !text.contains('\n'),
                "{text}"
            );
        }
        // Checked even when a client id makes tc-ami not use it: a typo is a typo.
        let with_client = [
            root,
            ("TASKCLUSTER_PROXY_URL", "nope"),
            ("TASKCLUSTER_CLIENT_ID", "me"),
            ("TASKCLUSTER_ACCESS_TOKEN", "t"),
        ];
        assert!(matches!(
            env(&with_client, true),
            Err(TcConfigError::BadProxyUrl(_))
        ));
        assert!(
            env(
                &[root, ("TASKCLUSTER_PROXY_URL", "http://127.0.0.1:8080")],
                true
            )
            .is_ok()
        );
    }

    #[test]
    fn through_the_proxy_a_refusal_names_the_proxy_and_the_tasks_scopes() {
        let e = env(
            &[
                ("TASKCLUSTER_ROOT_URL", "https://tc.example"),
                ("TASKCLUSTER_PROXY_URL", "http://taskcluster"),
            ],
            true,
        )
        .unwrap();
        let refused = anyhow::Error::new(CallError {
            status: Some(403),
            missing_scopes: vec!["secrets:get:p/x".into()],
            message: String::new(),
        });
        assert_eq!(
            e.refusal(refused, None, "read x", "nothing was done")
                .to_string(),
            "the task's scopes (through taskcluster-proxy at http://taskcluster) lack the scope secrets:get:p/x needed to read x (403 at https://tc.example); nothing was done"
        );
        let unreachable = e.explain(
            "fetching worker pool p/w",
            anyhow::anyhow!("connection refused"),
        );
        assert_eq!(
            unreachable.to_string(),
            "fetching worker pool p/w: cannot reach taskcluster-proxy at http://taskcluster: connection refused"
        );
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

    /// The example of Hawk's own specification (hueniverse/hawk README, "Protocol Example";
    /// the `hawk` crate's header tests use the same MAC): a GET with a query string, which the
    /// MAC covers.
    #[test]
    fn signs_the_path_with_its_query_string() {
        let credentials = hawk::Credentials {
            id: "dh37fgj492je".into(),
            key: hawk::Key::new("werxhqb98rpaxn39848xrunpaw3489ruxnpa98w4rxn", hawk::SHA256)
                .unwrap(),
        };
        let url = reqwest::Url::parse("http://example.com:8000/resource/1?b=1&a=2").unwrap();
        let ts = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1353832234);
        let header = hawk_header(
            &credentials,
            Some("some-app-ext-data"),
            "GET",
            &url,
            ts,
            "j4h3g2",
        )
        .unwrap();
        assert_eq!(
            header,
            "Hawk id=\"dh37fgj492je\", ts=\"1353832234\", nonce=\"j4h3g2\", \
             mac=\"6R4rV5iE+NPoym+WwjeHzjAGXUtLNIxmo1vpMofpLAE=\", ext=\"some-app-ext-data\""
        );
        // Without the query the MAC differs: the service would refuse it (401 "Bad mac").
        let bare = reqwest::Url::parse("http://example.com:8000/resource/1").unwrap();
        let other = hawk_header(
            &credentials,
            Some("some-app-ext-data"),
            "GET",
            &bare,
            ts,
            "j4h3g2",
        );
        assert!(!other.unwrap().contains("6R4rV5iE"));
    }

    #[test]
    fn ext_carries_the_certificate_of_temporary_credentials() {
        use base64::Engine;
        let cert = r#"{"version":1,"scopes":["worker-manager:list-workers:p/w"],"start":1,"expiry":2,"seed":"s","signature":"x"}"#;
        let ext = certificate_ext(cert).unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(ext)
            .unwrap();
        let v: Value = serde_json::from_slice(&decoded).unwrap();
        assert_eq!(
            v["certificate"]["scopes"][0],
            "worker-manager:list-workers:p/w"
        );
        assert_eq!(v.as_object().unwrap().len(), 1);
        let err = certificate_ext("not json").unwrap_err().to_string();
        assert!(err.contains("TASKCLUSTER_CERTIFICATE is not JSON"), "{err}");
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
