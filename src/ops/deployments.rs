//! Where the deployment history lives: the Taskcluster secret
//! `tc-ami/deployments/<worker pool id>`, read and written here; the rules are
//! [`crate::history`]'s.

use anyhow::Result;
use chrono::Utc;

use crate::history::{Deployment, History, secret_name};
use crate::taskcluster::SecretsApi;

pub async fn load(secrets: &SecretsApi, pool_id: &str) -> Result<History> {
    let name = secret_name(pool_id);
    match secrets.get(&name).await? {
        None => Ok(History::default()),
        Some(v) => History::from_secret(&v).map_err(|e| {
            anyhow::anyhow!(
                "the deployment history in the Taskcluster secret {name} is unreadable: {e}"
            )
        }),
    }
}

/// Appends `record` and writes the history back.
pub async fn append(
    secrets: &SecretsApi,
    pool_id: &str,
    mut history: History,
    record: Deployment,
) -> Result<()> {
    history.records.push(record);
    let expires = Utc::now() + chrono::Duration::days(3650);
    secrets
        .set(&secret_name(pool_id), history.to_secret(pool_id), expires)
        .await
}
