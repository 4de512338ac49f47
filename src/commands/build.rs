//! `tc-ami build -w W`: build an image, copy it to W's regions, store the password.

use anyhow::Context;
use rand::Rng;

use crate::build::{PasswordOutcome, new_build_id, plan_build, run_build};
use crate::commands::base_ami::find_base_image;
use crate::commands::{Ctx, Outcome};
use crate::config::{PasswordDestination, load_worker_type};
use crate::ec2::Ec2;
use crate::progress::Progress;
use crate::taskcluster::{SecretsApi, TcEnv};
use crate::user_data::user_data_for;

pub async fn run(ctx: &Ctx, worker_type: &str) -> Outcome {
    // Everything that can be checked before creating anything is checked here.
    let prepared = async {
        let wt = load_worker_type(&ctx.config_dir, worker_type)?;
        let script_path = wt.first_boot_script.display().to_string();
        let script = std::fs::read_to_string(&wt.first_boot_script).with_context(|| {
            format!(
                "cannot read the first-boot script {script_path} (first_boot_script in {})",
                wt.file.display()
            )
        })?;
        let user_data = user_data_for(&script, &script_path)?;
        let secrets = match wt.password {
            PasswordDestination::Secret { .. } => Some(SecretsApi::new(&TcEnv::from_env(true)?)?),
            PasswordDestination::Print => None,
        };
        let ec2 = Ec2::load().await;
        let progress = Progress::new();
        progress.stage(&format!(
            "finding the base image `{}` in {}",
            wt.base_ami_pattern, wt.build_region
        ));
        let base = tokio::select! {
            r = find_base_image(&ec2, &wt) => r?,
            i = ctx.cancel.cancelled() => return Err(i.into()),
        };
        progress.note(&format!("base image {} ({})", base.id, base.name));
        anyhow::Ok((wt, user_data, secrets, ec2, progress, base))
    };
    let (wt, user_data, secrets, ec2, progress, base) = match prepared.await {
        Ok(p) => p,
        Err(e) => return Err::<u8, _>(e).into(),
    };

    let now = chrono::Utc::now();
    let build_id = new_build_id(now, rand::thread_rng().r#gen());
    let plan = plan_build(&wt, &base, user_data, now, &build_id);
    progress.note(&format!(
        "build {build_id} of {} in {}",
        wt.name,
        wt.all_regions().join(", ")
    ));

    match run_build(&ec2, secrets.as_ref(), &plan, &ctx.cancel, &progress).await {
        Ok(report) => {
            let mut human = String::new();
            for (region, id) in &report.images {
                human.push_str(&format!("{region}\t{id}\n"));
            }
            match &report.password {
                PasswordOutcome::Secret { secret } => {
                    eprintln!("administrator password stored in the Taskcluster secret {secret}")
                }
                PasswordOutcome::Printed => {
                    if let Some(p) = &report.printed_password {
                        // Asked for: the worker type names no secret. Shown once, on stderr.
                        eprintln!(
                            "administrator password of {} (shown once; set password_secret_prefix to store it instead): {}",
                            report
                                .images
                                .get(&report.region)
                                .map(String::as_str)
                                .unwrap_or("the image"),
                            p.expose()
                        );
                    }
                }
            }
            let json = serde_json::to_value(&report).unwrap_or_default();
            ctx.emit(human.trim_end(), &json);
            Outcome::Done(0)
        }
        Err(failed) => match failed.interrupted() {
            Some(i) => Outcome::Interrupted(i, failed.to_string()),
            None => Outcome::Failed(failed.into()),
        },
    }
}
