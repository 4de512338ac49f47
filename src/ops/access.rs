//! Key pairs and security groups: created with their removal registered, removed once.

use anyhow::Result;
use tokio::time::Instant;

use crate::ec2::{Ec2, has_code};
use crate::model::Tags;
use crate::model::codes::ErrorCode;
use crate::ops::instances::TERMINATE_WAIT;
use crate::ops::teardown::{Removal, Step, Teardown, Undo};
use crate::password::Secret;
use crate::wait::{POLL_INTERVAL, Pacer};

/// Creates the RSA key pair `name`; its removal is registered first (by name: that works
/// whether or not the answer arrives). Returns the private key, which exists nowhere else.
pub async fn create_key_pair<'a>(
    ec2: &'a Ec2,
    td: &Teardown<'a>,
    region: &str,
    name: &str,
    tags: &Tags,
) -> Result<(Secret, Step)> {
    let step = td.register(remove_key_pair(ec2, region, name));
    let key = match ec2.create_key_pair(region, name, tags).await {
        // The name is this build's alone: the SDK retried a call whose answer was lost, and
        // the key pair that call made holds a private key nobody has. Replace it.
        Err(e) if has_code(&e, &[ErrorCode::KeyPairDuplicate]) => {
            tracing::debug!("{e:#}: the answer to this build's own call was lost; replacing it");
            ec2.delete_key_pair(region, name).await?;
            ec2.create_key_pair(region, name, tags).await?
        }
        other => other?,
    };
    Ok((key, step))
}

/// Deletes a key pair by name (DeleteKeyPair succeeds for one that is already gone).
pub fn remove_key_pair<'a>(ec2: &'a Ec2, region: &str, name: &str) -> Undo<'a> {
    let (region, name) = (region.to_string(), name.to_string());
    Undo::new(
        format!("key pair {name} in {region}"),
        move |_| async move {
            let result = ec2.delete_key_pair(&region, &name).await;
            Removal::of(
                format!("key pair {name}"),
                format!("key pair {name} in {region}"),
                result,
            )
        },
    )
}

/// Creates a security group without inbound rules; until its id is known, its removal is a
/// sweep by name.
pub async fn create_security_group<'a>(
    ec2: &'a Ec2,
    td: &Teardown<'a>,
    region: &str,
    name: &str,
    description: &str,
    tags: &Tags,
) -> Result<(String, Step)> {
    let create = async {
        match ec2
            .create_security_group(region, name, description, tags)
            .await
        {
            // The name is this build's alone: the SDK retried a call whose answer was lost;
            // the group that call made is the one.
            Err(e) if has_code(&e, &[ErrorCode::GroupDuplicate]) => {
                let found = ec2.find_security_groups_by_name(region, name).await?;
                match found.as_slice() {
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
    td.create(sweep_security_groups(ec2, region, name), create, |id| {
        remove_security_group(ec2, region, id)
    })
    .await
}

pub fn remove_security_group<'a>(ec2: &'a Ec2, region: &str, id: &str) -> Undo<'a> {
    let (region, id) = (region.to_string(), id.to_string());
    Undo::new(
        format!("security group {id} in {region}"),
        move |_| async move { group_removal(ec2, &region, &id).await },
    )
}

async fn group_removal(ec2: &Ec2, region: &str, id: &str) -> Removal {
    Removal::of(
        format!("security group {id}"),
        format!("security group {id} in {region}"),
        delete_group_when_free(ec2, region, id).await,
    )
}

fn sweep_security_groups<'a>(ec2: &'a Ec2, region: &str, name: &str) -> Undo<'a> {
    let (region, name) = (region.to_string(), name.to_string());
    let what = format!("security group {name} in {region}");
    Undo::new(what.clone(), move |_| async move {
        let found = ec2.find_security_groups_by_name(&region, &name).await;
        Removal::each(found, &what, |id| {
            let region = &region;
            async move { group_removal(ec2, region, &id).await }
        })
        .await
    })
}

/// Deletes a security group, waiting while an instance that is terminating still holds it.
pub async fn delete_group_when_free(ec2: &Ec2, region: &str, id: &str) -> Result<()> {
    let deadline = Instant::now() + TERMINATE_WAIT;
    let pacer = Pacer::new(POLL_INTERVAL);
    loop {
        match ec2.delete_security_group(region, id).await {
            Ok(()) => return Ok(()),
            Err(e) if has_code(&e, &[ErrorCode::GroupNotFound]) => return Ok(()),
            // Still attached to an instance that is terminating.
            Err(e)
                if has_code(&e, &[ErrorCode::DependencyViolation]) && Instant::now() < deadline =>
            {
                pacer.pause().await
            }
            Err(e) => return Err(e),
        }
    }
}
