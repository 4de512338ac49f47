//! AWS credentials from a Taskcluster secret: a worker type's `aws_credentials_secret` names a
//! secret holding `{access_key_id, secret_access_key}` (and optionally `session_token`). It is
//! read with the caller's (or, through taskcluster-proxy, the task's) scopes before any AWS
//! call, checked for its shape, and used as static credentials for every EC2 client of that
//! worker type. Its values never reach a message or the log.

use crate::text::json_kind;
use anyhow::{Result, anyhow, bail};
use serde_json::Value;

use crate::config::WorkerType;
use crate::ec2::Ec2;
use crate::password::Secret;
use crate::taskcluster::{SecretsApi, TcEnv};

/// The keys such a secret may hold.
const SHAPE: &str = "{\"access_key_id\": \"…\", \"secret_access_key\": \"…\"} (and optionally \"session_token\"), strings, no other keys";

/// Static AWS keys; Debug shows none of them.
#[derive(Clone)]
pub struct AwsKeys {
    access_key_id: Secret,
    secret_access_key: Secret,
    session_token: Option<Secret>,
}

impl std::fmt::Debug for AwsKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsKeys")
            .field("session_token", &self.session_token.is_some())
            .finish_non_exhaustive()
    }
}

impl AwsKeys {
    /// The SDK's static credentials (its Debug redacts the secret key and token too).
    fn credentials(&self) -> aws_sdk_ec2::config::Credentials {
        aws_sdk_ec2::config::Credentials::new(
            self.access_key_id.expose(),
            self.secret_access_key.expose(),
            self.session_token.as_ref().map(|t| t.expose().to_string()),
            None,
            "tc-ami aws_credentials_secret",
        )
    }
}

/// The secret's value as AWS keys, or what is wrong with its shape: never a value, only key
/// names and kinds.
pub fn parse_aws_keys(value: &Value) -> Result<AwsKeys, String> {
    let Value::Object(map) = value else {
        return Err(format!(
            "it holds a JSON {}, not an object",
            json_kind(value)
        ));
    };
    if let Some(k) = map.keys().find(|k| {
        !matches!(
            k.as_str(),
            "access_key_id" | "secret_access_key" | "session_token"
        )
    }) {
        return Err(format!("it has the key `{k}`"));
    }
    let string = |key: &str| -> Result<Option<Secret>, String> {
        match map.get(key) {
            None => Ok(None),
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(Secret::new(s.trim()))),
            Some(Value::String(_)) => Err(format!("`{key}` is empty")),
            Some(v) => Err(format!("`{key}` is a JSON {}, not a string", json_kind(v))),
        }
    };
    let required = |key: &str| string(key)?.ok_or_else(|| format!("it has no `{key}`"));
    Ok(AwsKeys {
        access_key_id: required("access_key_id")?,
        secret_access_key: required("secret_access_key")?,
        session_token: string("session_token")?,
    })
}

/// The EC2 adapter for `wt`: with the keys of its `aws_credentials_secret` when it has one
/// (read now, before any AWS call; a missing secret, a refusal or a bad shape is one line and
/// nothing is done), else with the standard credential chain.
pub async fn ec2_for(wt: &WorkerType) -> Result<Ec2> {
    match aws_keys(wt).await? {
        Some((_, keys)) => Ok(Ec2::load_with(Some(keys.credentials())).await),
        None => Ok(Ec2::load().await),
    }
}

/// One EC2 adapter for several worker types (cleanup lists and deletes per region for all of
/// them at once): they must agree on their AWS credentials, the same `aws_credentials_secret`
/// or none; otherwise one line, and nothing is done.
pub async fn ec2_for_all(wts: &[&WorkerType]) -> Result<Ec2> {
    match wts {
        [] => Ok(Ec2::load().await),
        [first, rest @ ..] => {
            if let Some(other) = rest
                .iter()
                .find(|w| w.aws_credentials_secret != first.aws_credentials_secret)
            {
                let source = |w: &WorkerType| match &w.aws_credentials_secret {
                    Some(name) => format!("{}: the secret `{name}`", w.name),
                    None => format!("{}: the standard AWS credential chain", w.name),
                };
                bail!(
                    "the worker types take their AWS credentials from different places ({}; {}), and one run uses one set; run it for each worker type with -w W; nothing was done",
                    source(first),
                    source(other)
                );
            }
            ec2_for(first).await
        }
    }
}

/// The keys of `wt`'s `aws_credentials_secret`, with the secret's name; None without one.
pub async fn aws_keys(wt: &WorkerType) -> Result<Option<(String, AwsKeys)>> {
    let Some(name) = &wt.aws_credentials_secret else {
        return Ok(None);
    };
    let what = format!(
        "the AWS credentials of worker type {} from the Taskcluster secret `{name}` (aws_credentials_secret in {})",
        wt.name,
        wt.file.display()
    );
    let env = TcEnv::from_env(true)
        .map_err(|e| anyhow!("{e}; needed to read {what}; nothing was done"))?;
    let secrets = SecretsApi::new(&env)?;
    let scope = format!("secrets:get:{name}");
    let value = match secrets.get(name).await {
        Ok(Some(value)) => value,
        Ok(None) => bail!(
            "cannot read {what}: there is no such secret at {} (or it expired); create it as {SHAPE}, or remove aws_credentials_secret to use the standard AWS credential chain; nothing was done",
            env.root_url
        ),
        Err(e) => {
            return Err(env.refusal(
                e,
                Some(std::slice::from_ref(&scope)),
                &format!("read {what}"),
                "nothing was done",
            ));
        }
    };
    let keys = parse_aws_keys(&value).map_err(|problem| {
        anyhow!("cannot use {what}: {problem}; it must be {SHAPE}; nothing was done")
    })?;
    tracing::debug!(
        "AWS credentials of worker type {}: from the Taskcluster secret `{name}` (not shown)",
        wt.name
    );
    Ok(Some((name.clone(), keys)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_keys_and_hides_them() {
        let keys = parse_aws_keys(&json!({
            "access_key_id": "AKIAEXAMPLEKEYID0001",
            "secret_access_key": "s3cr3t/VALUE",
            "session_token": "t0k3n",
        }))
        .unwrap();
        let shown = format!("{keys:?}");
        for value in ["AKIAEXAMPLEKEYID0001", "s3cr3t", "t0k3n"] {
            assert!(!shown.contains(value), "{shown}");
        }
        let creds = keys.credentials();
        assert_eq!(creds.access_key_id(), "AKIAEXAMPLEKEYID0001");
        assert_eq!(creds.secret_access_key(), "s3cr3t/VALUE");
        assert_eq!(creds.session_token(), Some("t0k3n"));
        assert!(!format!("{creds:?}").contains("s3cr3t"));
        let no_token =
            parse_aws_keys(&json!({"access_key_id": "a", "secret_access_key": "b"})).unwrap();
        assert!(no_token.session_token.is_none());
    }

    #[test]
    fn a_wrong_shape_is_named_without_its_values() {
        let cases = [
            (
                json!("AKIA:s3cr3t"),
                "it holds a JSON string, not an object",
            ),
            (
                json!({"access_key_id": "a"}),
                "it has no `secret_access_key`",
            ),
            (
                json!({"secret_access_key": "s3cr3t"}),
                "it has no `access_key_id`",
            ),
            (
                json!({"access_key_id": "a", "secret_access_key": "s3cr3t", "region": "x"}),
                "it has the key `region`",
            ),
            (
                json!({"access_key_id": "a", "secret_access_key": 7}),
                "`secret_access_key` is a JSON number, not a string",
            ),
            (
                json!({"access_key_id": " ", "secret_access_key": "s3cr3t"}),
                "`access_key_id` is empty",
            ),
            (
                json!({"AccessKeyId": "a", "SecretAccessKey": "s3cr3t"}),
                "it has the key `AccessKeyId`",
            ),
        ];
        for (value, expected) in cases {
            let err = parse_aws_keys(&value).unwrap_err();
            assert_eq!(err, expected, "{value}");
            assert!(!err.contains("s3cr3t"));
        }
    }
}
