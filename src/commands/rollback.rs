//! `tc-ami rollback -w W [--to AMI] [--dry-run] [--yes]`: puts back the images that were live
//! before the last deploy, through the same diff, confirm, push and verify path as deploy.

use anyhow::{Result, anyhow};

use crate::commands::Ctx;
use crate::commands::change::{
    Asked, Change, PushTo, RecordAs, Target, check_available, load_history, resolve_images,
    review_and_push,
};
use crate::history::{Kind, plan_rollback};
use crate::image_arg::{ImageArgs, parse_image_args};
use crate::pool::{definition, live_images};

pub async fn run(
    ctx: &Ctx,
    worker_type: &str,
    to: Option<&str>,
    dry_run: bool,
    yes: bool,
) -> Result<u8> {
    let to_args = match to {
        Some(ami) => parse_image_args(&[ami.to_string()])
            .map_err(|e| anyhow!(e.replace("--image", "--to")))?,
        None => ImageArgs::default(),
    };
    let t = Target::load(ctx, worker_type).await?;
    let Target {
        wt,
        wm,
        live,
        regions,
        ec2,
        ..
    } = &t;
    let def = definition(live);
    let store = t.history();
    let loaded = load_history(ctx, &t.env, &store).await?;
    let history = &loaded.history;

    let (images, undoes, undoes_outside_change) = if to_args.is_empty() {
        let plan = plan_rollback(&wt.worker_pool_id, history, &live_images(&def))?;
        let outside = plan.undoes.is_none();
        if outside {
            ctx.shell.note(&format!(
                "worker pool {} was changed outside tc-ami since its last recorded deployment; rolling back to what tc-ami last put there",
                wt.worker_pool_id
            ));
        }
        (plan.target, plan.undoes, outside)
    } else {
        (
            resolve_images(ec2, wt, &wt.worker_pool_id, regions, &to_args).await?,
            None,
            false,
        )
    };
    // Every target image must still exist and be available, before anything changes.
    check_available(ec2, &images)
        .await
        .map_err(|e| anyhow!("cannot roll back worker pool {}: {e:#}", wt.worker_pool_id))?;
    let change = Change::new(&wt.worker_pool_id, wm.root_url(), live, images, history)?;
    let record = RecordAs {
        kind: Kind::Rollback,
        worker_type: wt.name.clone(),
        undoes,
        undoes_outside_change,
        from: None,
    };
    let who = t.who();
    let to = PushTo {
        env: &t.env,
        wm,
        store: &store,
        loaded: &loaded,
        who: &who,
        proven: false,
    };
    review_and_push(ctx, &to, &change, record, Asked { dry_run, yes }).await?;
    Ok(0)
}
