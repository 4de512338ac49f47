//! A debug instance's lifecycle (`tc-ami debug-instance`): its key pair, its security group with
//! the one RDP rule, the instance (shutdown behaviour `terminate`), each create registered in
//! the teardown first, as the build's are (the same code: [`access`], [`instances`]); the wait
//! for the administrator password; and removing all three again (`--stop`).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::time::Instant;

use crate::debug_instance::{Cidr, DebugInstance, DebugPlan, NAME_PREFIX, RDP_PORT};
use crate::ec2::{Ec2, LaunchSpec};
use crate::interrupt::Cancel;
use crate::model::InstanceStateName;
use crate::model::tags;
use crate::ops::access;
use crate::ops::instances;
use crate::ops::teardown::{Removal, Step, Teardown};
use crate::password::{Secret, decrypt_password};
use crate::wait::{POLL_INTERVAL, poll_until};

/// How long Windows may take to make the administrator password (EC2 asks to wait at least
/// four minutes; on large images it takes longer). At most the TTL.
pub const PASSWORD_WAIT: Duration = Duration::from_secs(30 * 60);

/// What to launch.
pub struct Launch<'a> {
    pub region: &'a str,
    pub plan: &'a DebugPlan,
    pub image_id: &'a str,
    pub instance_type: &'a str,
    pub cidr: &'a Cidr,
}

/// A launched debug instance and the steps that remove it, its group and key pair.
pub struct Launched {
    pub instance_id: String,
    pub group_id: String,
    pub private_key: Secret,
    pub steps: Vec<Step>,
}

/// Creates the key pair, the security group admitting RDP from `cidr` only, and the instance,
/// registering each removal in `td` before its create call.
pub async fn launch<'a>(
    ec2: &'a Ec2,
    td: &Teardown<'a>,
    cancel: &Cancel,
    l: &Launch<'_>,
) -> Result<Launched> {
    let (region, plan) = (l.region, l.plan);
    cancel.check()?;
    let (private_key, key_step) =
        access::create_key_pair(ec2, td, region, &plan.name, &plan.tags).await?;
    cancel.check()?;
    let description = format!(
        "tc-ami debug-instance {}: RDP from {} only",
        plan.debug_id, l.cidr.text
    );
    let (group_id, group_step) =
        access::create_security_group(ec2, td, region, &plan.name, &description, &plan.tags)
            .await?;
    ec2.authorize_tcp_from(region, &group_id, RDP_PORT, l.cidr)
        .await?;
    cancel.check()?;
    let spec = LaunchSpec {
        image_id: l.image_id,
        instance_type: l.instance_type,
        key_name: &plan.name,
        security_group_id: &group_id,
        user_data: &plan.user_data,
        root_device_name: None,
        root_volume_gb: None,
        tags: &plan.tags,
        client_token: &plan.debug_id,
        terminate_on_shutdown: true,
    };
    let sweep = (tags::DEBUG_ID, plan.debug_id.as_str());
    let (instance_id, instance_step) = instances::launch(ec2, td, region, &spec, sweep).await?;
    Ok(Launched {
        instance_id,
        group_id,
        private_key,
        steps: vec![key_step, group_step, instance_step],
    })
}

/// Waits (within `limit`) for Windows to make the administrator password and decrypts it;
/// fails at once if the instance stops or terminates first.
pub async fn wait_password(
    ec2: &Ec2,
    cancel: &Cancel,
    region: &str,
    instance_id: &str,
    private_key: &Secret,
    limit: Duration,
) -> Result<Secret> {
    let mut polls = 0u32;
    let data = poll_until(
        cancel,
        "Windows to make the administrator password",
        Instant::now(),
        limit,
        POLL_INTERVAL,
        || {
            polls += 1;
            let check_state = polls.is_multiple_of(5);
            async move {
                if check_state
                    && let Some(i) = ec2.describe_instance(region, instance_id).await?
                    && !matches!(
                        i.state,
                        InstanceStateName::Pending | InstanceStateName::Running
                    )
                {
                    bail!(
                        "{} before Windows made the administrator password",
                        i.gone_text()
                    );
                }
                ec2.get_password_data(region, instance_id).await
            }
        },
    )
    .await?;
    decrypt_password(private_key, &data)
        .with_context(|| format!("GetPasswordData for {instance_id}"))
}

/// Terminates the debug instance (waiting until it is), then deletes its security group and
/// its key pair: both are named as its key pair, `tc-ami-debug-<W>-<debug id>` (a terminated
/// instance may no longer list its groups, so the group is found by that name).
pub async fn remove(ec2: &Ec2, instance: &DebugInstance) -> Removal {
    let region = instance.region.as_str();
    let td = Teardown::new();
    let mut removal = Removal::default();
    if let Some(key) = instance
        .key_name
        .as_ref()
        .filter(|k| k.starts_with(NAME_PREFIX))
    {
        td.register(access::remove_key_pair(ec2, region, key));
        match ec2.find_security_groups_by_name(region, key).await {
            Ok(found) => {
                for group in &found {
                    td.register(access::remove_security_group(ec2, region, group));
                }
            }
            Err(e) => removal.left.push(format!(
                "security group {key} in {region} (could not list: {e})"
            )),
        }
    }
    td.register(instances::remove_instance(
        ec2,
        region,
        &instance.instance_id,
    ));
    removal.add(td.run(POLL_INTERVAL).await);
    removal
}
