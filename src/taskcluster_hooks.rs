//! The thin adapter of the Hooks service (the `taskcluster` crate's `Hooks`): read a hook,
//! create or update it, each call logged with its duration; a refusal names the scope the API
//! reference's expression asks for.

use anyhow::Result;
use serde_json::Value;
use taskcluster::Hooks;

use crate::taskcluster::{CallError, TcEnv, call};

pub struct HooksApi {
    env: TcEnv,
    client: Hooks,
}

fn status(e: &anyhow::Error) -> Option<u16> {
    taskcluster::err_status_code(e).map(|s| s.as_u16())
}

impl HooksApi {
    pub fn new(env: &TcEnv) -> Result<HooksApi> {
        Ok(HooksApi {
            env: env.clone(),
            client: Hooks::new(env.builder())?,
        })
    }

    /// The hook's definition, or None when there is no such hook (404). Needs
    /// `hooks:get:<group>:<id>` (the `anonymous` role has `hooks:get:*` on the community
    /// deployment).
    pub async fn get(&self, group: &str, id: &str) -> Result<Option<Value>> {
        let target = format!("{group}/{id}");
        match call("hooks", "hook", &target, self.client.hook(group, id)).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.env.explain_scope(
                &format!("reading hook {target}"),
                &format!("hooks:get:{group}:{id}"),
                e,
            )),
        }
    }

    /// createHook: needs `hooks:modify-hook:<group>/<id>` and `assume:hook-id:<group>/<id>`.
    pub async fn create(&self, group: &str, id: &str, definition: &Value) -> Result<Value> {
        let target = format!("{group}/{id}");
        let request = self.client.createHook(group, id, definition);
        call("hooks", "createHook", &target, request)
            .await
            .map_err(|e| self.refused(&format!("creating hook {target}"), group, id, e))
    }

    /// updateHook: the same scopes as createHook.
    pub async fn update(&self, group: &str, id: &str, definition: &Value) -> Result<Value> {
        let target = format!("{group}/{id}");
        let request = self.client.updateHook(group, id, definition);
        call("hooks", "updateHook", &target, request)
            .await
            .map_err(|e| self.refused(&format!("updating hook {target}"), group, id, e))
    }

    /// A 403 names the scopes the service says are missing (both of the expression's when it
    /// says none); anything else is [`TcEnv::explain`].
    fn refused(&self, what: &str, group: &str, id: &str, e: anyhow::Error) -> anyhow::Error {
        if status(&e) != Some(403) {
            return self.env.explain(what, e);
        }
        let explained = self.env.explain(what, e);
        let named = explained
            .downcast_ref::<CallError>()
            .map(|c| c.missing_scopes.clone())
            .unwrap_or_default();
        let scopes = if named.is_empty() {
            vec![
                format!("hooks:modify-hook:{group}/{id}"),
                format!("assume:hook-id:{group}/{id}"),
            ]
        } else {
            named
        };
        anyhow::anyhow!(
            "{what}: client `{}` lacks {} at {} (403); a project administrator holds them for the project's hook group (hooks:modify-hook:project-<p>/* and assume:hook-id:project-<p>/* on the community deployment)",
            self.env.client(),
            scopes.join(" and "),
            self.env.root_url
        )
    }
}
