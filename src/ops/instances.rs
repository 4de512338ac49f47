//! Instances: launched with their removal registered, terminated and waited for once.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use tokio::time::Instant;

use crate::ec2::{Ec2, LaunchSpec, has_code};
use crate::model::InstanceStateName;
use crate::model::codes::ErrorCode;
use crate::ops::teardown::{Removal, Step, Teardown, Undo};
use crate::wait::Pacer;

/// How long a removal waits for an instance to terminate (its security group cannot go
/// before).
pub const TERMINATE_WAIT: Duration = Duration::from_secs(300);

/// Launches one instance; until its id is known, its removal is a sweep for instances tagged
/// `sweep_tag` (key, value) that are not terminated.
pub async fn launch<'a>(
    ec2: &'a Ec2,
    td: &Teardown<'a>,
    region: &str,
    spec: &LaunchSpec<'_>,
    sweep_tag: (&str, &str),
) -> Result<(String, Step)> {
    td.create(
        sweep_instances(ec2, region, sweep_tag),
        ec2.run_instance(region, spec),
        |id| remove_instance(ec2, region, id),
    )
    .await
}

/// Terminates the instance and waits until it is terminated.
pub fn remove_instance<'a>(ec2: &'a Ec2, region: &str, id: &str) -> Undo<'a> {
    let (region, id) = (region.to_string(), id.to_string());
    Undo::new(
        format!("instance {id} in {region}"),
        move |pace| async move { instance_removal(ec2, &region, &id, pace).await },
    )
}

async fn instance_removal(ec2: &Ec2, region: &str, id: &str, pace: Duration) -> Removal {
    let result =
        match terminate_and_wait(ec2, region, std::slice::from_ref(&id.to_string()), pace).await {
            Ok(left) if left.is_empty() => Ok(()),
            Ok(_) => Err(anyhow::anyhow!(
                "not terminated after {}s",
                TERMINATE_WAIT.as_secs()
            )),
            Err(e) => Err(e),
        };
    Removal::of(
        format!("instance {id}"),
        format!("instance {id} in {region}"),
        result,
    )
}

fn sweep_instances<'a>(ec2: &'a Ec2, region: &str, (key, value): (&str, &str)) -> Undo<'a> {
    let (region, key, value) = (region.to_string(), key.to_string(), value.to_string());
    let what = format!("instances tagged {key}={value} in {region}");
    Undo::new(what.clone(), move |pace| async move {
        let found = ec2.find_instances_by_tag(&region, &key, &value).await;
        Removal::each(found, &what, |i| {
            let region = &region;
            async move { instance_removal(ec2, region, &i.id, pace).await }
        })
        .await
    })
}

/// Terminates the instances and waits until they are, looking on the schedule
/// ([`crate::wait::poll_interval`]) whose first-minute interval is `pace` (the first look one
/// interval in: termination is never at once), for [`TERMINATE_WAIT`] at most. Returns those
/// that are not terminated by then, with their state. One instance that EC2 does not know is
/// terminated already.
pub async fn terminate_and_wait(
    ec2: &Ec2,
    region: &str,
    ids: &[String],
    pace: Duration,
) -> Result<BTreeMap<String, InstanceStateName>> {
    match ec2.terminate_instances(region, ids).await {
        Ok(()) => {}
        Err(e) if ids.len() == 1 && has_code(&e, &[ErrorCode::InstanceNotFound]) => {
            return Ok(BTreeMap::new());
        }
        Err(e) => return Err(e),
    }
    let deadline = Instant::now() + TERMINATE_WAIT;
    let pacer = Pacer::new(pace);
    loop {
        pacer.pause().await;
        crate::budget::poll(region).await;
        let left: BTreeMap<String, InstanceStateName> = ec2
            .instance_states(region, ids)
            .await?
            .into_iter()
            .filter(|(_, state)| *state != InstanceStateName::Terminated)
            .collect();
        if left.is_empty() || Instant::now() >= deadline {
            return Ok(left);
        }
    }
}

/// The error for an instance that is still not terminated.
pub fn not_terminated(state: &InstanceStateName) -> String {
    format!(
        "still {state} {}s after TerminateInstances",
        TERMINATE_WAIT.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_not_terminated_message_names_the_state() {
        assert_eq!(
            not_terminated(&InstanceStateName::ShuttingDown),
            "still shutting-down 300s after TerminateInstances"
        );
    }
}
