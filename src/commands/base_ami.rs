//! `tc-ami base-ami -w W`: the base AMI a build of W would start from.

use anyhow::{Result, bail};

use crate::base_ami::{choose_base_ami, unavailable_matches};
use crate::commands::Ctx;
use crate::config::WorkerType;
use crate::config_dir::load_worker_type;
use crate::ec2::Ec2;
use crate::model::Image;

/// Finds the base image for `wt` in its build region.
pub async fn find_base_image(ec2: &Ec2, wt: &WorkerType) -> Result<Image> {
    let images = ec2
        .find_base_images(&wt.build_region, &wt.base_ami_owner, &wt.base_ami_pattern)
        .await?;
    if let Some(chosen) = choose_base_ami(&images, &wt.base_ami_pattern) {
        return Ok(chosen.clone());
    }
    let pending = unavailable_matches(&images, &wt.base_ami_pattern);
    let note = if pending.is_empty() {
        String::new()
    } else {
        format!(
            " ({} matching image(s) exist but are not available yet)",
            pending.len()
        )
    };
    bail!(
        "no available Windows image named `{}` owned by {} in {}{note}; check base_ami_pattern in {} or base-ami.txt",
        wt.base_ami_pattern,
        wt.base_ami_owner,
        wt.build_region,
        wt.file.display()
    )
}

pub async fn run(ctx: &Ctx, worker_type: &str) -> Result<u8> {
    let wt = load_worker_type(&ctx.config_dir, worker_type)?;
    let ec2 = Ec2::load().await;
    let image = find_base_image(&ec2, &wt).await?;
    let created = image
        .creation_date
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "unknown".into());
    ctx.shell.result(
        &format!(
            "{}  {}  created {created}  ({}, owner {})",
            image.id, image.name, wt.build_region, wt.base_ami_owner
        ),
        &serde_json::json!({
            "worker_type": wt.name,
            "region": wt.build_region,
            "pattern": wt.base_ami_pattern,
            "owner": wt.base_ami_owner,
            "image": {
                "id": image.id,
                "name": image.name,
                "creation_date": image.creation_date,
                "owner_id": image.owner_id,
            },
        }),
    );
    Ok(0)
}
