//! `tc-ami debug-instance`: a Windows instance of a worker type's image to log in to over RDP,
//! that ends itself after its TTL; `--list` and `--stop ID`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures::future::join_all;
use rand::Rng;
use serde_json::{Value, json};

use crate::build::new_build_id;
use crate::commands::Ctx;
use crate::commands::build::data_dir;
use crate::config::WorkerType;
use crate::config_dir::{list_worker_types, load_worker_type};
use crate::debug_instance::{
    self as debug, DEFAULT_TTL, DebugInstance, RDP_PORT, USER, parse_cidr, parse_ttl, render_list,
    render_rdp, rfc3339,
};
use crate::duration::format_duration;
use crate::ec2::Ec2;
use crate::interrupt::ShieldKind;
use crate::model::tags;
use crate::ops::aws_credentials::{ec2_for, ec2_for_all};
use crate::ops::debug::{Launch, Launched, PASSWORD_WAIT, launch, remove, wait_password};
use crate::ops::teardown::{Removal, Step, Teardown, Undo};
use crate::password::Secret;
use crate::pool::{definition, live_images};
use crate::taskcluster::{TcEnv, WorkerManagerApi};
use crate::wait::POLL_INTERVAL;

/// What was asked for a launch.
pub struct Asked {
    pub worker_type: Option<String>,
    pub image: Option<String>,
    pub ttl: Option<String>,
    pub cidr: Option<String>,
    pub show_password: bool,
}

/// Where a debug instance's files go: `<data dir>/debug/<instance id>/`.
fn files_dir(instance_id: &str) -> Result<PathBuf> {
    Ok(data_dir()?.join("debug").join(instance_id))
}

/// Launches a debug instance and prints how to connect.
pub async fn run(ctx: &Ctx, asked: &Asked) -> Result<u8> {
    let Some(worker_type) = asked.worker_type.as_deref() else {
        bail!(
            "-w W is required: the worker type whose image, instance type and build region the debug instance uses"
        );
    };
    let cidr = match asked.cidr.as_deref() {
        None => bail!(
            "--cidr is required: the address range RDP (port {RDP_PORT}) is admitted from, e.g. --cidr 203.0.113.7/32 for your own address (tc-ami does not guess it)"
        ),
        Some(text) => parse_cidr(text).map_err(|e| anyhow!(e))?,
    };
    let ttl = match asked.ttl.as_deref() {
        None => DEFAULT_TTL,
        Some(text) => parse_ttl(text).map_err(|e| anyhow!(e))?,
    };
    let wt = load_worker_type(&ctx.config_dir, worker_type)?;
    let ec2 = ec2_for(&wt).await?;
    let image = image_to_launch(ctx, &ec2, &wt, asked.image.as_deref()).await?;
    let now = chrono::Utc::now();
    let debug_id = new_build_id(now, rand::thread_rng().r#gen());
    let plan = debug::plan(&wt.name, &debug_id, ttl, now)
        .ok_or_else(|| anyhow!("--ttl {}: too far in the future", format_duration(ttl)))?;
    let launch = Launch {
        region: &wt.build_region,
        plan: &plan,
        image_id: &image,
        instance_type: &wt.instance_type,
        cidr: &cidr,
    };
    let ready = launch_and_wait(ctx, &ec2, &launch, asked.show_password).await?;
    tell(ctx, &launch, &ready, asked.show_password);
    Ok(0)
}

/// `--image`, else the live image of W's pool in the build region; checked to be available
/// there before anything is created.
async fn image_to_launch(
    ctx: &Ctx,
    ec2: &Ec2,
    wt: &WorkerType,
    image: Option<&str>,
) -> Result<String> {
    let region = &wt.build_region;
    let (id, what) = match image {
        Some(id) => (id.to_string(), format!("--image {id}")),
        None => {
            let id = live_image(ctx, wt).await?;
            let what = format!("the live image {id} of worker pool {}", wt.worker_pool_id);
            (id, what)
        }
    };
    let missing = || {
        anyhow!(
            "{what}: no such image in {region} (the build region of {})",
            wt.name
        )
    };
    match ec2.describe_images(region, std::slice::from_ref(&id)).await {
        Ok(images) => match images.iter().find(|i| i.id == id) {
            Some(i) if i.is_available() => Ok(id),
            Some(i) => bail!(
                "{what} is {} in {region}, not available; wait for it or give --image AMI",
                i.state
            ),
            None => Err(missing()),
        },
        Err(e) if crate::ec2::has_code(&e, crate::model::codes::IMAGE_UNUSABLE) => Err(missing()),
        Err(e) => Err(e),
    }
}

/// The image of W's pool's launch config in W's build region.
async fn live_image(ctx: &Ctx, wt: &WorkerType) -> Result<String> {
    let region = &wt.build_region;
    ctx.shell
        .verbose(|| format!("reading worker pool {}", wt.worker_pool_id));
    let env = TcEnv::from_env(false)?;
    let wm = WorkerManagerApi::new(&env)?;
    let pool = wm
        .get_pool(&wt.worker_pool_id)
        .await
        .map_err(|e| env.explain(&format!("reading worker pool {}", wt.worker_pool_id), e))?;
    live_images(&definition(&pool))
        .get(region.as_str())
        .cloned()
        .ok_or_else(|| {
            anyhow!(
                "worker pool {} has no launch config in {region} (the build region of {}), so there is no live image to launch; give --image AMI",
                wt.worker_pool_id,
                wt.name
            )
        })
}

/// A debug instance ready to log in to.
struct Ready {
    instance: DebugInstance,
    group_id: String,
    files: Files,
    password: Secret,
}

struct Files {
    dir: PathBuf,
    private_key: PathBuf,
    password: Option<PathBuf>,
    rdp: PathBuf,
}

/// Launches, waits for the password and writes the files. Until it returns, an interrupt or a
/// failure removes everything (instance, group, key pair, files) through the teardown.
async fn launch_and_wait(
    ctx: &Ctx,
    ec2: &Ec2,
    l: &Launch<'_>,
    show_password: bool,
) -> Result<Ready> {
    let cancel = &ctx.cancel;
    let _shield = cancel.shield(ShieldKind::Own, "launching the debug instance");
    let td = Teardown::watched(
        cancel,
        format!(
            "`tc-ami cleanup -w {}` removes them (they carry the tag {}={}) once {} has passed",
            l.plan.worker_type,
            tags::DEBUG_ID,
            l.plan.debug_id,
            rfc3339(l.plan.expires_at)
        ),
    );
    let progress = ctx.shell.progress();
    let mut steps = Vec::new();
    let work = async {
        progress.stage(&format!(
            "launching a debug instance of {} ({} from {}) in {}",
            l.plan.worker_type, l.instance_type, l.image_id, l.region
        ));
        let launched = launch(ec2, &td, cancel, l).await?;
        steps.extend(launched.steps.iter().copied());
        let Launched {
            instance_id,
            group_id,
            private_key,
            ..
        } = launched;
        progress.stage(&format!(
            "waiting for Windows on {instance_id} to make the administrator password"
        ));
        let limit = PASSWORD_WAIT.min(l.plan.ttl);
        let password =
            wait_password(ec2, cancel, l.region, &instance_id, &private_key, limit).await?;
        let instance = ec2
            .find_instance(l.region, &instance_id)
            .await?
            .ok_or_else(|| anyhow!("EC2 no longer knows the instance {instance_id}"))?;
        let (files, files_step) =
            write_files(&td, &instance, &private_key, &password, show_password)?;
        steps.push(files_step);
        cancel.check()?;
        anyhow::Ok(Ready {
            instance,
            group_id,
            files,
            password,
        })
    };
    let result = td.undo_on_failure(POLL_INTERVAL, work, |_| {}).await;
    progress.finish();
    match result {
        Ok(ready) => {
            keep(cancel, &td, &steps, &ready);
            Ok(ready)
        }
        Err((e, removal)) => Err(e.context(failure_text(&removal))),
    }
}

/// The instance is the user's from now on: its removals are forgotten.
fn keep(cancel: &crate::interrupt::Cancel, td: &Teardown<'_>, steps: &[Step], ready: &Ready) {
    td.keep(steps);
    cancel.stays(format!(
        "the debug instance {} stays until {}",
        ready.instance.instance_id,
        ready
            .instance
            .expires_at
            .map(rfc3339)
            .unwrap_or_else(|| "its TTL".into())
    ));
}

fn failure_text(removal: &Removal) -> String {
    let mut text = "the debug instance was not ready".to_string();
    if !removal.removed.is_empty() {
        text.push_str(&format!("; removed {}", removal.removed.join(", ")));
    }
    if !removal.left.is_empty() {
        text.push_str(&format!(
            "; LEFT BEHIND, remove by hand: {}",
            removal.left.join(", ")
        ));
    }
    text
}

/// Writes the private key, the password (unless it is to be shown) and the `.rdp` file into
/// the instance's own directory (0700; files 0600), registering the directory's removal first.
fn write_files<'a>(
    td: &Teardown<'a>,
    instance: &DebugInstance,
    private_key: &Secret,
    password: &Secret,
    show_password: bool,
) -> Result<(Files, Step)> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = files_dir(&instance.instance_id)?;
    let step = td.register(remove_dir(&dir));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let id = &instance.instance_id;
    let private_key_path = dir.join(format!("{id}.pem"));
    write_private(&private_key_path, private_key.expose())?;
    let password_path = (!show_password).then(|| dir.join("password.txt"));
    if let Some(path) = &password_path {
        write_private(path, password.expose())?;
    }
    let rdp = dir.join(format!("{id}.rdp"));
    let host = instance.address.as_deref().unwrap_or(id);
    write_private(&rdp, &render_rdp(host))?;
    let files = Files {
        dir,
        private_key: private_key_path,
        password: password_path,
        rdp,
    };
    Ok((files, step))
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn remove_dir<'a>(dir: &Path) -> Undo<'a> {
    let dir = dir.to_path_buf();
    let what = format!("files {}", dir.display());
    Undo::new(what.clone(), move |_| async move {
        let result = match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(anyhow!(e).context(format!("removing {}", dir.display())))
            }
            _ => Ok(()),
        };
        Removal::of(what.clone(), what, result)
    })
}

/// Prints host, port, user, expiry and where the files are (the password only when asked).
fn tell(ctx: &Ctx, l: &Launch<'_>, ready: &Ready, show_password: bool) {
    let i = &ready.instance;
    let expires = rfc3339(l.plan.expires_at);
    let host = i.address.clone();
    let file = |p: &Path| p.display().to_string();
    let mut lines = vec![
        format!(
            "debug instance {} of {} ({} from {}) in {}, RDP from {} only",
            i.instance_id, l.plan.worker_type, l.instance_type, l.image_id, l.region, l.cidr.text
        ),
        format!(
            "host      {}",
            host.as_deref()
                .unwrap_or("none (the instance has no public address)")
        ),
        format!("port      {RDP_PORT}"),
        format!("user      {USER}"),
    ];
    match &ready.files.password {
        Some(p) => lines.push(format!("password  in {} (mode 0600)", file(p))),
        None => lines.push(format!("password  {}", ready.password.expose())),
    }
    lines.push(format!(
        "expires   {expires} (TTL {}): it shuts itself down and is terminated; `tc-ami cleanup -w {}` removes it after that time if it did not",
        format_duration(l.plan.ttl),
        l.plan.worker_type
    ));
    lines.push(format!("rdp file  {}", file(&ready.files.rdp)));
    lines.push(format!(
        "key       {} (mode 0600)",
        file(&ready.files.private_key)
    ));
    lines.push(format!(
        "stop it   tc-ami debug-instance --stop {}",
        i.instance_id
    ));
    let mut doc = json!({
        "instance_id": i.instance_id,
        "worker_type": l.plan.worker_type,
        "debug_id": l.plan.debug_id,
        "region": l.region,
        "image": l.image_id,
        "instance_type": l.instance_type,
        "host": host,
        "port": RDP_PORT,
        "user": USER,
        "cidr": l.cidr.text,
        "security_group": ready.group_id,
        "key_pair": l.plan.name,
        "launched": rfc3339(l.plan.launched),
        "expires_at": expires,
        "ttl_seconds": l.plan.ttl.as_secs(),
        "files": {
            "dir": file(&ready.files.dir),
            "private_key": file(&ready.files.private_key),
            "password": ready.files.password.as_deref().map(file),
            "rdp": file(&ready.files.rdp),
        },
    });
    if show_password {
        doc["password"] = Value::String(ready.password.expose().to_string());
    }
    ctx.shell.result(&lines.join("\n"), &doc);
}

/// The worker types `only` names (or every worker type).
fn worker_types(ctx: &Ctx, only: Option<&str>) -> Result<Vec<WorkerType>> {
    let names = match only {
        Some(w) => vec![w.to_string()],
        None => list_worker_types(&ctx.config_dir),
    };
    if names.is_empty() {
        bail!(
            "no worker types in {}: add worker-types/<W>.toml or pass -C DIR",
            ctx.config_dir.join("worker-types").display()
        );
    }
    Ok(names
        .iter()
        .map(|n| load_worker_type(&ctx.config_dir, n))
        .collect::<Result<Vec<_>, _>>()?)
}

/// The build regions of `only` (or of every worker type), and the EC2 adapter with their AWS
/// credentials (`aws_credentials_secret`, else the standard chain).
async fn regions(ctx: &Ctx, only: Option<&str>) -> Result<(Vec<String>, Ec2)> {
    let wts = worker_types(ctx, only)?;
    let ec2 = ec2_for_all(&wts.iter().collect::<Vec<_>>()).await?;
    let named: Vec<_> = wts
        .into_iter()
        .map(|wt| (wt.name, wt.build_region))
        .collect();
    Ok((debug::list_regions(&named, only).into_iter().collect(), ec2))
}

/// `--list [-w W]`: the debug instances in the build regions.
pub async fn list(ctx: &Ctx, only: Option<&str>) -> Result<u8> {
    let (regions, ec2) = regions(ctx, only).await?;
    let listed = join_all(regions.iter().map(|r| ec2.list_debug_instances(r))).await;
    let mut instances = Vec::new();
    for found in listed {
        instances.extend(
            found?
                .into_iter()
                .filter(|i| only.is_none_or(|w| i.worker_type.as_deref() == Some(w))),
        );
    }
    let now = chrono::Utc::now();
    if instances.is_empty() {
        ctx.shell
            .note(&format!("no debug instances in {}", regions.join(", ")));
    }
    let rows: Vec<Value> = instances
        .iter()
        .map(|i| {
            let mut v = serde_json::to_value(i).unwrap_or(Value::Null);
            v["expired"] = Value::Bool(i.expired(now));
            v
        })
        .collect();
    let human = if instances.is_empty() {
        String::new()
    } else {
        render_list(&instances, now)
    };
    ctx.shell.result(
        human.trim_end(),
        &json!({"regions": regions, "instances": rows}),
    );
    Ok(0)
}

/// `--stop ID`: terminates a debug instance, waits, removes its group, key pair and files.
pub async fn stop(ctx: &Ctx, id: &str) -> Result<u8> {
    if !debug::valid_instance_id(id) {
        bail!("--stop {id}: not an instance id (i- and 8 or 17 hexadecimal digits)");
    }
    let (regions, ec2) = regions(ctx, None).await?;
    let mut found = None;
    for region in &regions {
        if let Some(i) = ec2.find_instance(region, id).await? {
            found = Some(i);
            break;
        }
    }
    let Some(instance) = found else {
        bail!(
            "no instance {id} in the build regions of worker-types/ ({}); `tc-ami debug-instance --list` shows the debug instances",
            regions.join(", ")
        );
    };
    if instance.debug_id.is_none() {
        bail!(
            "instance {id} in {} is not a tc-ami debug instance (it has no {} tag); tc-ami stops only the debug instances it launched",
            instance.region,
            tags::DEBUG_ID
        );
    }
    let _shield = ctx.cancel.shield(
        ShieldKind::Finish,
        format!("stopping the debug instance {id}"),
    );
    let progress = ctx.shell.progress();
    progress.stage(&format!("terminating {id} in {}", instance.region));
    let mut removal = remove(&ec2, &instance).await;
    if let Ok(dir) = files_dir(id)
        && dir.exists()
    {
        let td = Teardown::new();
        td.register(remove_dir(&dir));
        removal.add(td.run(Duration::ZERO).await);
    }
    progress.finish();
    if !removal.left.is_empty() {
        bail!(
            "stopping {id}: LEFT BEHIND, remove by hand: {} (removed {})",
            removal.left.join(", "),
            removal.removed.join(", ")
        );
    }
    let doc = json!({"instance_id": id, "region": instance.region, "removed": removal.removed});
    ctx.shell.result(
        &format!(
            "stopped {id} in {}: removed {}",
            instance.region,
            removal.removed.join(", ")
        ),
        &doc,
    );
    Ok(0)
}
