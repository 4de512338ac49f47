//! `tc-ami status [-w W …] [--jobs N]`: per worker type, the live image per region with its name and age,
//! the last deployment, how far the rollout is (workers on current and archived launch
//! configs), and whether a newer base AMI exists than the live image's.

use anyhow::Result;
use chrono::{DateTime, Utc};
use futures::future::join_all;
use serde_json::{Value, json};

use crate::base_ami::newer_base;
use crate::commands::Ctx;
use crate::commands::base_ami::find_base_image;
use crate::commands::each;
use crate::commands::rollout;
use crate::config::WorkerType;
use crate::config_dir::load_worker_type;
use crate::duration::format_age;
use crate::ec2::Ec2;
use crate::model::tags::{BASE_IMAGE_ID, BASE_IMAGE_NAME};
use crate::ops::deployments::HistorySecret;
use crate::pool::{definition, live_images};
use crate::taskcluster::{SecretsApi, TcEnv, WorkerManagerApi};

/// `3d4h`, `2h5m`, `12m`: how long ago, roughly.
pub fn age(created: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match created {
        Some(created) => format_age(Some((now - created).num_seconds().max(0) as u64)),
        None => "age unknown".into(),
    }
}

async fn one(
    ec2: &Ec2,
    wm: &WorkerManagerApi,
    secrets: &SecretsApi,
    wt: &WorkerType,
) -> Result<Value> {
    let now = Utc::now();
    let pool = wm.get_pool(&wt.worker_pool_id).await?;
    let rollout = rollout_doc(wm, &wt.worker_pool_id, &pool).await;
    let live = live_images(&definition(&pool));
    let described = join_all(live.iter().map(|(region, id)| async move {
        let image = ec2
            .describe_images(region, std::slice::from_ref(id))
            .await
            .ok()
            .and_then(|l| l.into_iter().next());
        (region.clone(), id.clone(), image)
    }))
    .await;
    let current_base = find_base_image(ec2, wt).await;
    let built_from_id = described
        .iter()
        .find(|(r, _, _)| *r == wt.build_region)
        .or(described.first())
        .and_then(|(_, _, i)| i.as_ref())
        .and_then(|i| i.tags.get(BASE_IMAGE_ID).cloned());
    let built_from = match &built_from_id {
        Some(id) => ec2
            .describe_images(&wt.build_region, std::slice::from_ref(id))
            .await
            .ok()
            .and_then(|l| l.into_iter().next()),
        None => None,
    };
    let newer = match &current_base {
        Ok(current) => newer_base(current, built_from_id.as_deref(), built_from.as_ref())
            .map(|i| json!({"id": i.id, "name": i.name, "creation_date": i.creation_date})),
        Err(_) => None,
    };
    let store = HistorySecret::new(secrets, &wt.worker_pool_id, &wt.history_secret);
    let last = match store.load().await {
        Ok(h) => h
            .history
            .last_deployment()
            .map(|r| serde_json::to_value(r).unwrap_or_default())
            .unwrap_or(Value::Null),
        Err(e) => json!({"error": format!("{e:#}")}),
    };
    Ok(json!({
        "worker_type": wt.name,
        "workerPoolId": wt.worker_pool_id,
        "live": described.iter().map(|(region, id, image)| json!({
            "region": region,
            "image": id,
            "exists": image.is_some(),
            "name": image.as_ref().map(|i| i.name.clone()),
            "state": image.as_ref().map(|i| i.state.to_string()),
            "created": image.as_ref().and_then(|i| i.creation_date),
            "age": age(image.as_ref().and_then(|i| i.creation_date), now),
            "base_image_id": image.as_ref().and_then(|i| i.tags.get(BASE_IMAGE_ID).cloned()),
            "base_image_name": image.as_ref().and_then(|i| i.tags.get(BASE_IMAGE_NAME).cloned()),
        })).collect::<Vec<_>>(),
        "last_deployment": last,
        "rollout": rollout,
        "newer_base_image": newer,
        "built_from": built_from_id,
        "base_image_error": current_base.err().map(|e| format!("{e:#}")),
    }))
}

/// How far the pool's rollout is (`rollout::look_json`), or `{"error", "line"}` when the
/// workers cannot be listed (status does not fail for it).
async fn rollout_doc(wm: &WorkerManagerApi, pool_id: &str, pool: &Value) -> Value {
    let look = rollout::look(wm, pool_id, Some(pool)).await;
    let line = rollout::rollout_line(&look);
    match look {
        Ok(l) => {
            let mut doc = rollout::look_json(&l);
            doc["line"] = json!(line);
            doc
        }
        Err(e) => json!({"error": format!("{e:#}"), "line": line}),
    }
}

/// The human text for one worker type's status document (pure).
pub fn render(doc: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let mut out = format!(
        "{}  (pool {})\n",
        s(&doc["worker_type"]),
        s(&doc["workerPoolId"])
    );
    for l in doc["live"].as_array().into_iter().flatten() {
        if l["exists"] == true {
            out.push_str(&format!(
                "  {}  {}  {}  {}\n",
                s(&l["region"]),
                s(&l["image"]),
                s(&l["name"]),
                s(&l["age"])
            ));
        } else {
            out.push_str(&format!(
                "  {}  {}  (does not exist in that region)\n",
                s(&l["region"]),
                s(&l["image"])
            ));
        }
    }
    let last = &doc["last_deployment"];
    if let Some(err) = last["error"].as_str() {
        out.push_str(&format!("  last deployment: unknown ({err})\n"));
    } else if last.is_object() {
        out.push_str(&format!(
            "  last deployment: #{} {} by {} at {} (deploymentId {})\n",
            last["seq"],
            s(&last["kind"]),
            s(&last["who"]),
            s(&last["time"]),
            s(&last["deployment_id"])
        ));
    } else {
        out.push_str("  last deployment: none recorded by tc-ami\n");
    }
    if let Some(line) = doc["rollout"]["line"].as_str() {
        out.push_str(&format!("  {line}\n"));
    }
    match (&doc["newer_base_image"], doc["base_image_error"].as_str()) {
        (n, _) if n.is_object() => out.push_str(&format!(
            "  NEWER BASE IMAGE: {} ({}); rebuild with `tc-ami build -w {}`\n",
            s(&n["name"]),
            s(&n["id"]),
            s(&doc["worker_type"])
        )),
        (_, Some(err)) => out.push_str(&format!("  base image: unknown ({err})\n")),
        _ if doc["built_from"].is_null() => out.push_str(
            "  base image: unknown (the live images carry no tc-ami:base-image-id tag)\n",
        ),
        _ => out.push_str("  base image: the live image is built from the newest base image\n"),
    }
    out
}

pub async fn run(ctx: &Ctx, given: &[String], jobs: usize) -> Result<u8> {
    let names = each::worker_types(ctx, given)?;
    let env = TcEnv::from_env(true)?;
    let wm = WorkerManagerApi::new(&env)?;
    let secrets = SecretsApi::new(&env)?;
    let (wm, secrets) = (&wm, &secrets);
    each::run_each(ctx, &names, jobs, |ctx, name| async move {
        let wt = load_worker_type(&ctx.config_dir, &name)?;
        // Each worker type with its own AWS credentials (aws_credentials_secret).
        let ec2 = crate::ops::aws_credentials::ec2_for(&wt).await?;
        let doc = one(&ec2, wm, secrets, &wt).await?;
        Ok(each::Done::ok(render(&doc), doc))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse_ec2_time;

    #[test]
    fn ages() {
        let now = parse_ec2_time("2026-11-24T12:00:00Z").unwrap();
        assert_eq!(age(parse_ec2_time("2026-11-24T11:48:00Z"), now), "12m");
        assert_eq!(age(parse_ec2_time("2026-11-24T09:55:00Z"), now), "2h5m");
        assert_eq!(age(parse_ec2_time("2026-11-21T08:00:00Z"), now), "3d4h");
        assert_eq!(age(None, now), "age unknown");
    }
}
