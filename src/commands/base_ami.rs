//! `tc-ami base-ami -w W`: the base AMI a build of W would start from; `tc-ami base-ami --list
//! [-w W | --region R] [--pattern P] [--owner O]`: the Windows images to choose from.

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::ami_names::{
    Group, ImageSummary, candidates, group_images, picked, render_candidates, render_groups,
};
use crate::base_ami::{choose_base_ami, unavailable_matches};
use crate::commands::Ctx;
use crate::config::{
    DEFAULT_BASE_AMI_OWNER, WorkerType, valid_base_ami_owner, valid_base_ami_pattern, valid_region,
};
use crate::config_dir::load_worker_type;
use crate::ec2::Ec2;
use crate::model::Image;

/// What the command line asked for.
#[derive(Debug, Clone, Default)]
pub struct Asked {
    pub worker_type: Option<String>,
    pub list: bool,
    pub region: Option<String>,
    pub pattern: Option<String>,
    pub owner: Option<String>,
}

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

pub async fn run(ctx: &Ctx, asked: &Asked) -> Result<u8> {
    if asked.list {
        return list(ctx, asked).await;
    }
    let Some(worker_type) = &asked.worker_type else {
        bail!(
            "tc-ami base-ami needs -w W (the worker type), or --list; see tc-ami base-ami --help"
        );
    };
    let wt = load_worker_type(&ctx.config_dir, worker_type)?;
    let ec2 = crate::ops::aws_credentials::ec2_for(&wt).await?;
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

/// Where and what `--list` lists.
struct Listing {
    wt: Option<WorkerType>,
    region: String,
    owner: String,
    pattern: Option<String>,
}

impl Listing {
    /// The region, owner and pattern from the arguments and the worker type, checked.
    fn from_args(ctx: &Ctx, asked: &Asked) -> Result<Listing> {
        let wt = match &asked.worker_type {
            Some(w) => Some(load_worker_type(&ctx.config_dir, w)?),
            None => None,
        };
        let region = match (&asked.region, &wt) {
            (Some(r), _) => r.clone(),
            (None, Some(wt)) => wt.build_region.clone(),
            (None, None) => bail!(
                "tc-ami base-ami --list needs a region: -w W (its build region and owner) or --region R"
            ),
        };
        if !valid_region(&region) {
            bail!("--region {region}: not a region name; write it like us-west-2");
        }
        let owner = asked
            .owner
            .clone()
            .or_else(|| wt.as_ref().map(|w| w.base_ami_owner.clone()))
            .unwrap_or_else(|| DEFAULT_BASE_AMI_OWNER.to_string());
        if !valid_base_ami_owner(&owner) {
            bail!(
                "--owner {owner}: expected amazon, self, aws-marketplace or a 12-digit AWS account id"
            );
        }
        if let Some(p) = asked
            .pattern
            .as_deref()
            .filter(|p| !valid_base_ami_pattern(p))
        {
            bail!("--pattern {p:?}: holds control characters or is over 128 characters");
        }
        Ok(Listing {
            wt,
            region,
            owner,
            pattern: asked.pattern.clone(),
        })
    }

    fn what(&self) -> String {
        format!("owned by {} in {}", self.owner, self.region)
    }
}

/// `--list`: the groups, or with `--pattern` the matching images and the pick.
async fn list(ctx: &Ctx, asked: &Asked) -> Result<u8> {
    let l = Listing::from_args(ctx, asked)?;
    let ec2 = match &l.wt {
        Some(wt) => crate::ops::aws_credentials::ec2_for(wt).await?,
        None => Ec2::load().await,
    };
    let progress = ctx.shell.progress();
    progress.stage(&format!("listing the Windows images {}", l.what()));
    let images = ec2
        .list_windows_images(&l.region, &l.owner, l.pattern.as_deref())
        .await;
    progress.finish();
    let images = images?;
    match &l.pattern {
        Some(pattern) => show_candidates(ctx, &l, pattern, &images),
        None => show_groups(ctx, &l, &images),
    }
}

fn show_groups(ctx: &Ctx, l: &Listing, images: &[Image]) -> Result<u8> {
    if images.is_empty() {
        bail!("no Windows images {}; check --owner and --region", l.what());
    }
    let groups = group_images(images);
    let heading = format!(
        "{} Windows images {}, in {} groups; the newest available image of each:",
        images.len(),
        l.what(),
        groups.len()
    );
    // What a build of W would start from, when W is given.
    let pick = l.wt.as_ref().map(|wt| {
        let chosen = choose_base_ami(images, &wt.base_ami_pattern).map(ImageSummary::from);
        (wt, chosen)
    });
    ctx.shell.result(
        &format!("{heading}\n{}", render_groups(&groups).trim_end()),
        &json!({
            "region": l.region,
            "owner": l.owner,
            "pattern": null,
            "images": images.len(),
            "groups": groups.iter().map(group_json).collect::<Vec<_>>(),
            "worker_type": pick.as_ref().map(|(wt, chosen)| json!({
                "name": wt.name, "pattern": wt.base_ami_pattern, "picks": chosen,
            })),
        }),
    );
    match pick {
        Some((wt, chosen)) => {
            let picks = match chosen {
                Some(i) => format!("would start from {} {}", i.id, i.name),
                None => "matches no available image here: its build would fail".into(),
            };
            ctx.shell.note(&format!(
                "{} (base_ami_pattern `{}`) {picks}; its candidates: tc-ami base-ami --list -w {} --pattern '{}'",
                wt.name, wt.base_ami_pattern, wt.name, wt.base_ami_pattern
            ));
        }
        None => {
            if let Some(example) = groups.iter().find_map(|g| g.family.as_ref()) {
                ctx.shell.note(&format!(
                    "one group's images: tc-ami base-ami --list --region {} --owner {} --pattern '{}'",
                    l.region,
                    l.owner,
                    example.pattern()
                ));
            }
        }
    }
    Ok(0)
}

/// A group for `--json`, with the pattern that selects its family.
fn group_json(g: &Group) -> Value {
    let mut v = serde_json::to_value(g).unwrap_or(Value::Null);
    v["pattern"] = json!(g.family.as_ref().map(|f| f.pattern()));
    v
}

fn show_candidates(ctx: &Ctx, l: &Listing, pattern: &str, images: &[Image]) -> Result<u8> {
    let list = candidates(images, pattern);
    if list.is_empty() {
        bail!(
            "no Windows image named `{pattern}` {}; drop --pattern to see the groups of names",
            l.what()
        );
    }
    let pick = picked(&list).map(|c| c.image.clone());
    let heading = format!(
        "{} Windows images named `{pattern}` {}, newest first:",
        list.len(),
        l.what()
    );
    ctx.shell.result(
        &format!("{heading}\n{}", render_candidates(&list).trim_end()),
        &json!({
            "region": l.region,
            "owner": l.owner,
            "pattern": pattern,
            "images": list.len(),
            "picked": pick,
            "candidates": list,
        }),
    );
    ctx.shell.note(&match pick {
        Some(i) => format!(
            "a build with this pattern would start from {} {}",
            i.id, i.name
        ),
        None => "no matching image is available: a build with this pattern would fail".into(),
    });
    Ok(0)
}
