//! Where the deployment history lives: the Taskcluster secret the worker type's
//! `history_secret` names (the old `tc-ami/deployments/<pool>` is read while that one does not
//! exist yet). Reading it, proving before anything starts that it may be written, and recording
//! a deployment without losing one that another tc-ami records at the same moment; the rules are
//! [`crate::history`]'s.

use std::time::Duration;

use anyhow::{Result, bail};
use chrono::Utc;
use rand::Rng;
use serde_json::Value;

use crate::history::{Deployment, History, Images, legacy_secret_name, merge, plan_rollback};
use crate::taskcluster::{SecretsApi, status_of};

/// How long the history secret lives after each write.
const HISTORY_LIFETIME_DAYS: i64 = 3650;
/// How long a probe written to prove the scope may live, should its removal fail.
const PROBE_LIFETIME_MINUTES: i64 = 60;
/// How often a record is written again when another tc-ami's write dropped it.
const RECORD_ATTEMPTS: usize = 5;

/// One pool's history secret.
pub struct HistorySecret<'a> {
    secrets: &'a SecretsApi,
    /// The configured secret's name.
    pub name: String,
    pub pool_id: String,
}

/// A history as read, and where from.
pub struct Loaded {
    pub history: History,
    pub source: Source,
}

pub enum Source {
    /// The configured secret.
    Secret,
    /// The old secret of this name; the configured one does not exist yet.
    Legacy(String),
    /// Neither exists: no deployment recorded yet.
    Nowhere,
}

impl Loaded {
    /// What to tell the person when the history came from the old secret.
    pub fn legacy_note(&self, to: &HistorySecret<'_>) -> Option<String> {
        match &self.source {
            Source::Legacy(old) => Some(format!(
                "the deployment history of worker pool {} was read from the old secret {old}; the next deployment is recorded in {} (the old secret is left as it is)",
                to.pool_id, to.name
            )),
            _ => None,
        }
    }
}

impl<'a> HistorySecret<'a> {
    pub fn new(secrets: &'a SecretsApi, pool_id: &str, name: &str) -> HistorySecret<'a> {
        HistorySecret {
            secrets,
            name: name.to_string(),
            pool_id: pool_id.to_string(),
        }
    }

    fn read(&self, name: &str, value: &Value) -> Result<History> {
        History::from_secret(value, &self.pool_id).map_err(|e| {
            anyhow::anyhow!(
                "the deployment history of worker pool {} in the Taskcluster secret {name} is unreadable: {e}",
                self.pool_id
            )
        })
    }

    /// The history: from the configured secret, else from the old one. A client that may not
    /// read the old one (a project administrator on a shared deployment) simply has none there.
    pub async fn load(&self) -> Result<Loaded> {
        if let Some(value) = self.secrets.get(&self.name).await? {
            return Ok(Loaded {
                history: self.read(&self.name, &value)?,
                source: Source::Secret,
            });
        }
        let legacy = legacy_secret_name(&self.pool_id);
        if legacy == self.name {
            return Ok(nothing());
        }
        match self.secrets.get(&legacy).await {
            Ok(Some(value)) => Ok(Loaded {
                history: self.read(&legacy, &value)?,
                source: Source::Legacy(legacy),
            }),
            Ok(None) => Ok(nothing()),
            Err(e) if status_of(&e) == Some(403) => {
                tracing::debug!("not reading the old history secret {legacy}: {e:#}");
                Ok(nothing())
            }
            Err(e) => Err(e),
        }
    }

    /// Proves that the client may write the secret, with no lasting effect: reads it and
    /// writes it back unchanged (same value, same expiry); or, when it does not exist yet,
    /// writes an empty history (an hour's lifetime) and removes it again (removal needs the same
    /// scope). Reading it again right before the write keeps the window in which a record
    /// another tc-ami writes could be overwritten to one round trip, and [`Self::record`]'s
    /// check after writing catches that.
    pub async fn prove_writable(&self) -> Result<()> {
        match self.secrets.get_stored(&self.name).await? {
            Some(stored) => {
                let expires = stored
                    .expires
                    .unwrap_or_else(|| Utc::now() + chrono::Duration::days(HISTORY_LIFETIME_DAYS));
                self.secrets.set(&self.name, stored.value, expires).await
            }
            None => {
                let expires = Utc::now() + chrono::Duration::minutes(PROBE_LIFETIME_MINUTES);
                let empty = History::default().to_secret(&self.pool_id);
                self.secrets.set(&self.name, empty, expires).await?;
                self.secrets.remove(&self.name).await
            }
        }
    }

    async fn write(&self, history: &History) -> Result<()> {
        let expires = Utc::now() + chrono::Duration::days(HISTORY_LIFETIME_DAYS);
        self.secrets
            .set(&self.name, history.to_secret(&self.pool_id), expires)
            .await
    }

    /// Appends `ours` to the history without losing what another tc-ami records meanwhile:
    /// reads the secret right before writing and merges ([`merge`]: ours is renumbered when its
    /// seq was taken meanwhile), then reads it back a moment later and, if another write
    /// dropped ours, merges and writes again. Returns the record as written.
    pub async fn record(&self, ours: &Deployment) -> Result<Deployment> {
        for _ in 0..RECORD_ATTEMPTS {
            let latest = self.load().await?;
            let merged = merge(&latest.history, ours);
            if merged.changed {
                self.write(&merged.history).await?;
            }
            // Long enough for a write that raced ours to land; random, so that two writers do
            // not keep meeting.
            let pause = rand::thread_rng().gen_range(50..300);
            tokio::time::sleep(Duration::from_millis(pause)).await;
            let now = match self.secrets.get(&self.name).await? {
                Some(value) => self.read(&self.name, &value)?,
                None => History::default(),
            };
            if now.records.iter().any(|r| r.same_event(ours)) {
                return Ok(merged.record);
            }
            tracing::debug!(
                "another write to {} dropped the record of this deployment; merging again",
                self.name
            );
        }
        bail!(
            "other writes to the secret {} kept dropping the record of this deployment ({} attempts)",
            self.name,
            RECORD_ATTEMPTS
        )
    }
}

fn nothing() -> Loaded {
    Loaded {
        history: History::default(),
        source: Source::Nowhere,
    }
}

/// The rollback target of a pool (for cleanup: those images must be kept). None when the
/// history has nothing to roll back to.
pub async fn rollback_target(store: &HistorySecret<'_>, live: &Images) -> Result<Option<Images>> {
    let loaded = store.load().await?;
    Ok(plan_rollback(&store.pool_id, &loaded.history, live)
        .ok()
        .map(|p| p.target))
}
