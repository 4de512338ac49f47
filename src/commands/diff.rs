//! `tc-ami diff -w W [--image …]`: the change deploy would push, as a unified diff.
//! Exit 0: nothing to change; 2: changes; 1: error.

use anyhow::{Result, anyhow};

use crate::commands::Ctx;
use crate::commands::change::{
    Change, Target, check_available, newest_built_images, resolve_images,
};
use crate::history::History;
use crate::image_arg::parse_image_args;

pub async fn run(ctx: &Ctx, worker_type: &str, images: &[String], context: usize) -> Result<u8> {
    let args = parse_image_args(images).map_err(|e| anyhow!(e))?;
    let t = Target::load(ctx, worker_type).await?;
    // Only to keep the shown deploymentId unique: a client that may not read the history
    // still reviews.
    let history = match t.history().load().await {
        Ok(loaded) => loaded.history,
        Err(e) => {
            tracing::debug!("reviewing without the deployment history: {e:#}");
            History::default()
        }
    };
    let Target {
        wt,
        wm,
        live,
        regions,
        ec2,
        ..
    } = t;
    let images = if args.is_empty() {
        newest_built_images(&ec2, &wt, &regions).await?
    } else {
        resolve_images(&ec2, &wt, &wt.worker_pool_id, &regions, &args).await?
    };
    check_available(&ec2, &images).await?;
    let change = Change::new(&wt.worker_pool_id, wm.root_url(), &live, images, &history)?;
    change.show(ctx, context);
    ctx.shell.json_doc(&change.to_json());
    if change.patched.changed {
        Ok(2)
    } else {
        ctx.shell.note(&format!(
            "worker pool {} is up to date: {}",
            change.pool_id,
            change.images_text()
        ));
        Ok(0)
    }
}
