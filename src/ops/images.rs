//! Images with their snapshots, and copies: created with their removal registered, waited
//! for, tagged, and removed (deregistered, then every snapshot) once, for build, deploy,
//! promote and cleanup.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::future::join_all;
use tokio::time::Instant;

use crate::ec2::{Ec2, has_code};
use crate::interrupt::Cancel;
use crate::model::codes::{ErrorCode, IMAGE_GONE};
use crate::model::{Image, Tags, tags};
use crate::ops::teardown::{Removal, Step, Teardown, Undo};
use crate::shell::Progress;
use crate::wait::{POLL_INTERVAL, Pacer, poll_until};

/// A snapshot stays "in use" for a moment after its image is deregistered: this many tries on
/// the schedule, [`POLL_INTERVAL`] apart (they all fall in its first minute).
pub const SNAPSHOT_IN_USE_TRIES: u32 = 30;

/// How an image is found when the answer to its create or copy call is lost.
#[derive(Debug, Clone)]
pub struct ImageMarks {
    /// The image's name.
    pub name: String,
    /// A build's own images: the name is the build's alone, and the build id tags the image
    /// and its snapshots. Without it (a copy of an existing image, which shares the source's
    /// name), only an image of that name that is not available and carries no
    /// `tc-ami:source-image-id` tag yet is taken for the lost one.
    pub build_id: Option<String>,
}

/// Creates an image of the instance; until its id is known, its removal is a sweep by `marks`.
pub async fn create_image<'a>(
    ec2: &'a Ec2,
    td: &Teardown<'a>,
    region: &str,
    instance_id: &str,
    description: &str,
    tags: &Tags,
    marks: &ImageMarks,
) -> Result<(String, Step)> {
    let create = async {
        match ec2
            .create_image(region, instance_id, &marks.name, description, tags)
            .await
        {
            // CreateImage has no idempotency token: when its answer is lost, the SDK's retry
            // finds the name taken by the image the first call made. A build's name and build
            // id tag are its own, so that image is the one.
            Err(e) if has_code(&e, &[ErrorCode::AmiNameDuplicate]) => {
                match lost_image(ec2, region, marks).await?.as_slice() {
                    [id] => {
                        tracing::debug!(
                            "{e:#}: the answer to this build's own call was lost; using {id}"
                        );
                        Ok(id.clone())
                    }
                    _ => Err(e),
                }
            }
            other => other,
        }
    };
    td.create(sweep_images(ec2, region, marks), create, |id| {
        remove_image_undo(ec2, region, id, marks)
    })
    .await
}

/// The ids of this build's image named `marks.name` carrying its build id (none for a copy
/// of an image that is not the build's own).
async fn lost_image(ec2: &Ec2, region: &str, marks: &ImageMarks) -> Result<Vec<String>> {
    let Some(build_id) = &marks.build_id else {
        return Ok(vec![]);
    };
    Ok(ec2
        .find_own_images_by_name(region, &marks.name)
        .await?
        .into_iter()
        .filter(|i| i.tags.get(tags::BUILD_ID) == Some(build_id))
        .map(|i| i.id)
        .collect())
}

/// Waits until the image is available (an error if it fails).
pub async fn wait_available(
    ec2: &Ec2,
    cancel: &Cancel,
    region: &str,
    image_id: &str,
    started: Instant,
    timeout: Duration,
) -> Result<Image> {
    let ids = vec![image_id.to_string()];
    poll_until(
        cancel,
        &format!("image {image_id} in {region} to be available"),
        started,
        timeout,
        POLL_INTERVAL,
        || async {
            crate::budget::poll(region).await;
            let image = match ec2.describe_images(region, &ids).await {
                Ok(images) => images.into_iter().next(),
                Err(e) if has_code(&e, &[ErrorCode::AmiNotFound]) => None,
                Err(e) => return Err(e),
            };
            match image {
                Some(i) if i.is_available() => Ok(Some(i)),
                Some(i) if i.has_failed() => bail!(
                    "image {image_id} in {region} is {}{}",
                    i.state,
                    i.state_reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                ),
                _ => Ok(None),
            }
        },
    )
    .await
}

/// What [`copy_image_to`] copies.
pub struct ImageCopy<'a> {
    pub source_region: &'a str,
    pub image_id: &'a str,
    /// The source's name, which each copy takes; `marks.build_id` when the source is a
    /// build's own image.
    pub marks: ImageMarks,
    pub description: &'a str,
    /// The source's tags, given to each copy (CopyImage does not copy them), plus
    /// `tc-ami:source-image-id`.
    pub tags: &'a Tags,
    /// Idempotency tokens are `<token_prefix>-<region>`.
    pub token_prefix: &'a str,
    pub timeout: Duration,
}

/// Copies an image to `dests` at once, tags the copies and their snapshots, and waits for all
/// of them: the wall time is the slowest copy's, not the sum. Each copy's removal is
/// registered before it is requested. Returns region → copy, and the copies' steps.
pub async fn copy_image_to<'a>(
    ec2: &'a Ec2,
    td: &Teardown<'a>,
    cancel: &Cancel,
    progress: &Progress,
    copy: &ImageCopy<'_>,
    dests: &[String],
) -> Result<(BTreeMap<String, String>, Vec<Step>)> {
    let started = Instant::now();
    let mut tags = copy.tags.clone();
    tags.retain(|(k, _)| k != tags::SOURCE_IMAGE_ID && !k.starts_with("aws:"));
    tags.push((tags::SOURCE_IMAGE_ID.into(), copy.image_id.to_string()));
    let tags = &tags;
    let copies = join_all(dests.iter().map(|dest| async move {
        let token = format!("{}-{dest}", copy.token_prefix);
        let (copy_id, step) = td
            .create(
                sweep_images(ec2, dest, &copy.marks),
                ec2.copy_image(
                    dest,
                    copy.source_region,
                    copy.image_id,
                    &copy.marks.name,
                    copy.description,
                    &token,
                ),
                |id| remove_image_undo(ec2, dest, id, &copy.marks),
            )
            .await?;
        ec2.create_tags(dest, std::slice::from_ref(&copy_id), tags)
            .await?;
        progress.note(&format!("copy {copy_id} in {dest}"));
        let image = wait_available(ec2, cancel, dest, &copy_id, started, copy.timeout).await?;
        ec2.create_tags(dest, &image.snapshot_ids, tags).await?;
        Ok::<_, anyhow::Error>(((dest.clone(), copy_id), step))
    }))
    .await;
    let copies: Vec<_> = copies.into_iter().collect::<Result<_>>()?;
    let steps = copies.iter().map(|(_, step)| *step).collect();
    Ok((copies.into_iter().map(|(copy, _)| copy).collect(), steps))
}

fn remove_image_undo<'a>(ec2: &'a Ec2, region: &str, id: &str, marks: &ImageMarks) -> Undo<'a> {
    let (region, id, build_id) = (region.to_string(), id.to_string(), marks.build_id.clone());
    Undo::new(format!("image {id} in {region}"), move |_| async move {
        image_removal(ec2, &region, &id, build_id.as_deref()).await
    })
}

async fn image_removal(ec2: &Ec2, region: &str, id: &str, build_id: Option<&str>) -> Removal {
    match remove_image(ec2, region, id, Snapshots::Find { build_id }).await {
        Ok(n) => Removal {
            removed: vec![format!("image {id} in {region} and {n} snapshot(s)")],
            left: vec![],
        },
        Err(e) => Removal {
            removed: vec![],
            left: vec![format!("image {id} in {region} ({e:#})")],
        },
    }
}

/// Removes the image a create or copy call made whose answer never arrived.
fn sweep_images<'a>(ec2: &'a Ec2, region: &str, marks: &ImageMarks) -> Undo<'a> {
    let (region, marks) = (region.to_string(), marks.clone());
    Undo::new(
        format!("image {} in {region}", marks.name),
        move |_| async move {
            let mut found: Vec<Image> = ec2
                .find_own_images_by_name(&region, &marks.name)
                .await
                .unwrap_or_default();
            match &marks.build_id {
                Some(build_id) => found.extend(
                    ec2.find_own_images_by_tag(&region, tags::BUILD_ID, build_id)
                        .await
                        .unwrap_or_default(),
                ),
                None => found
                    .retain(|i| !i.is_available() && !i.tags.contains_key(tags::SOURCE_IMAGE_ID)),
            }
            let mut ids: Vec<String> = found.into_iter().map(|i| i.id).collect();
            ids.sort();
            ids.dedup();
            let build_id = marks.build_id.as_deref();
            Removal::each(Ok(ids), &marks.name, |id| {
                let region = &region;
                async move { image_removal(ec2, region, &id, build_id).await }
            })
            .await
        },
    )
}

/// Which snapshots go with an image.
#[derive(Debug, Clone, Copy)]
pub enum Snapshots<'a> {
    /// These (a cleanup plan lists them).
    Listed(&'a [String]),
    /// Those EC2 knows: the image's block devices', those whose description names the image,
    /// and for a build's own images those tagged with its build id.
    Find { build_id: Option<&'a str> },
}

/// Deregisters an image (pending or available; one already gone counts as deregistered) and
/// deletes its snapshots. Returns how many snapshots were deleted.
pub async fn remove_image(
    ec2: &Ec2,
    region: &str,
    id: &str,
    snapshots: Snapshots<'_>,
) -> Result<usize> {
    let mut ids: Vec<String> = match snapshots {
        Snapshots::Listed(listed) => listed.to_vec(),
        Snapshots::Find { .. } => match ec2.describe_images(region, &[id.to_string()]).await {
            Ok(images) => images.into_iter().flat_map(|i| i.snapshot_ids).collect(),
            Err(e) if has_code(&e, IMAGE_GONE) => Vec::new(),
            Err(e) => return Err(e),
        },
    };
    match ec2.deregister_image(region, id).await {
        Ok(()) => {}
        Err(e) if has_code(&e, IMAGE_GONE) => {}
        Err(e) => return Err(e),
    }
    if let Snapshots::Find { build_id } = snapshots {
        ids.extend(ec2.find_snapshots_naming(region, id).await?);
        if let Some(build_id) = build_id {
            ids.extend(
                ec2.find_snapshots_by_tag(region, tags::BUILD_ID, build_id)
                    .await?,
            );
        }
    }
    ids.sort();
    ids.dedup();
    for snap in &ids {
        delete_snapshot_when_free(ec2, region, snap)
            .await
            .with_context(|| format!("deregistered, but its snapshot {snap} remains"))?;
    }
    Ok(ids.len())
}

/// Deletes a snapshot, retrying while the deregistration of its image has not reached it.
pub async fn delete_snapshot_when_free(ec2: &Ec2, region: &str, id: &str) -> Result<()> {
    let mut tries = 0;
    let pacer = Pacer::new(POLL_INTERVAL);
    loop {
        match ec2.delete_snapshot(region, id).await {
            Ok(()) => return Ok(()),
            Err(e) if has_code(&e, &[ErrorCode::SnapshotNotFound]) => return Ok(()),
            Err(e)
                if has_code(&e, &[ErrorCode::SnapshotInUse]) && tries < SNAPSHOT_IN_USE_TRIES =>
            {
                tries += 1;
                pacer.pause().await;
            }
            Err(e) => return Err(e),
        }
    }
}
