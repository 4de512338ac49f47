//! The whole command-line surface, in one place, and its dispatch to the commands.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use serde_json::json;

use crate::commands::{self, Ctx, Outcome};

#[derive(Debug, Parser)]
#[command(
    name = "tc-ami",
    version,
    about = "Builds Windows AMIs for Taskcluster workers and rolls them out to worker pools",
    long_about = "Builds Windows AMIs for Taskcluster workers and rolls them out to worker pools.\n\n\
        Worker types are described by worker-types/<W>.toml in the config directory (-C).\n\
        AWS credentials and endpoints come from the standard AWS places (AWS_PROFILE, AWS_REGION,\n\
        AWS_ENDPOINT_URL, ...); Taskcluster from TASKCLUSTER_ROOT_URL, TASKCLUSTER_CLIENT_ID,\n\
        TASKCLUSTER_ACCESS_TOKEN and TASKCLUSTER_CERTIFICATE, or, inside a task, through\n\
        taskcluster-proxy at TASKCLUSTER_PROXY_URL."
)]
pub struct Cli {
    /// The config directory holding worker-types/, scripts/ and base-ami.txt.
    #[arg(
        short = 'C',
        long = "config-dir",
        global = true,
        default_value = ".",
        value_name = "DIR"
    )]
    pub config_dir: PathBuf,

    /// Print one JSON document on stdout; human text and progress go to stderr.
    #[arg(long, global = true)]
    pub json: bool,

    /// More log detail on stderr (-v, -vv); RUST_LOG works too.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the base AMI a build of the worker type would start from; with --list, the
    /// Windows images to choose from.
    BaseAmi(BaseAmiArgs),
    /// Build an image for the worker type, copy it to its regions, store the password.
    Build {
        /// The worker type: worker-types/<W>.toml; repeat it to build several at once.
        #[arg(
            short = 'w',
            long = "worker-type",
            value_name = "W",
            required_unless_present = "all"
        )]
        worker_type: Vec<String>,
        /// Build every worker type of worker-types/.
        #[arg(long, conflicts_with = "worker_type")]
        all: bool,
        #[command(flatten)]
        jobs: Jobs,
        /// On a failure after the launch, keep the build instance with its key pair and
        /// security group for TTL (default 4h) to look inside, instead of removing them; prints
        /// how to get in. `cleanup` removes them after the TTL. Not after Ctrl-C or SIGTERM.
        #[arg(
            long,
            value_name = "TTL",
            num_args = 0..=1,
            require_equals = true,
            default_missing_value = "4h",
            value_parser = parse_keep_ttl
        )]
        keep_on_failure: Option<Duration>,
    },
    /// Review mode: the change deploy would push, as a unified diff.
    /// Exit 0: nothing to change; 2: changes; 1: error.
    Diff(DiffArgs),
    /// Put images into the worker pool: builds first without --image, shows the diff, asks,
    /// pushes, verifies.
    Deploy(DeployArgs),
    /// Put back the images that were live before the last deploy, with a new deployment id.
    Rollback {
        /// The worker type: worker-types/<W>.toml.
        #[arg(short = 'w', long = "worker-type", value_name = "W")]
        worker_type: String,
        /// Roll back to this image instead (AMI of the build region, or REGION=AMI).
        #[arg(long, value_name = "AMI")]
        to: Option<String>,
        /// Do everything but the push.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// The deployments of the worker type's pool: when, who, images per region.
    History {
        /// The worker type: worker-types/<W>.toml.
        #[arg(short = 'w', long = "worker-type", value_name = "W")]
        worker_type: String,
    },
    /// Deploy W1's live images to W2 (staging to production).
    Promote {
        /// The worker type whose live images are promoted (staging).
        #[arg(long, value_name = "W1")]
        from: String,
        /// The worker type they are deployed to (production).
        #[arg(long, value_name = "W2")]
        to: String,
        /// Do everything but the copies and the push.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
        #[command(flatten)]
        try_first: TryFlags,
    },
    /// Run real tasks on images in a temporary copy of the worker type's pool: creates the pool
    /// `<pool>-try-<id>` with the images, submits the task, waits for its whole task group,
    /// prints each task's state, and removes the pool whatever happens.
    /// Exit 0: every task completed; 1: a task failed or hit an exception, or the timeout.
    Try {
        /// The worker type: worker-types/<W>.toml.
        #[arg(short = 'w', long = "worker-type", value_name = "W")]
        worker_type: String,
        /// The image to try: AMI (the build region's; its copies are found by name) or
        /// REGION=AMI, repeatable. Default: the newest image tc-ami built for W per region.
        #[arg(long = "image", value_name = "AMI|REGION=AMI")]
        images: Vec<String>,
        /// The task definition (JSON, or YAML); tc-ami points it at the temporary pool and sets
        /// its dates.
        #[arg(long = "task", value_name = "FILE")]
        task: PathBuf,
        /// How long the tasks may take, from the task's creation (its deadline); at most 5d.
        #[arg(long, value_name = "DURATION", default_value = crate::commands::try_cmd::DEFAULT_TIMEOUT)]
        timeout: String,
        /// Keep the temporary pool afterwards, for debugging (`cleanup` removes it after the
        /// timeout).
        #[arg(long)]
        keep_pool: bool,
    },
    /// Which workers of the pool still run an old image (a worker of an archived launch
    /// config), per launch config, image and region; --watch follows them until they are
    /// gone; --retire removes them.
    Rollout {
        /// The worker type: worker-types/<W>.toml.
        #[arg(short = 'w', long = "worker-type", value_name = "W")]
        worker_type: String,
        /// Look again every few seconds until no worker of an archived launch config is left
        /// (exit 0), or Ctrl-C (exit 130).
        #[arg(long, conflicts_with = "retire")]
        watch: bool,
        /// Remove the workers of archived launch configs (removeWorker), in batches, after
        /// showing which and asking. A worker of a current launch config is never removed.
        #[arg(long)]
        retire: bool,
        /// With --retire: only workers that are not running a task (the Queue's data), so that
        /// no task fails.
        #[arg(long, requires = "retire")]
        idle_only: bool,
        /// With --retire: show what would be removed, remove nothing.
        #[arg(long, requires = "retire")]
        dry_run: bool,
        /// With --retire: do not ask for confirmation.
        #[arg(long, short = 'y', requires = "retire")]
        yes: bool,
    },
    /// For a scheduled run: rebuild W's image when the live one is stale (a newer base image,
    /// a changed first-boot script, --max-age), deploy it to W (trying it first when W has a
    /// try_task), and report; never promotes, never asks.
    Auto {
        /// The worker type: worker-types/<W>.toml (meant for staging); repeat it for several.
        /// Never one that is another's promote_to (production).
        #[arg(
            short = 'w',
            long = "worker-type",
            value_name = "W",
            required_unless_present = "all"
        )]
        worker_type: Vec<String>,
        /// Every worker type that declares a promote_to (the staging ones).
        #[arg(long, conflicts_with = "worker_type")]
        all: bool,
        #[command(flatten)]
        jobs: Jobs,
        /// Also rebuild when the live image is older than this (`30d`, `12h`; at most 3650d).
        #[arg(long, value_name = "DURATION", value_parser = parse_max_age)]
        max_age: Option<Duration>,
    },
    /// The live images per region, their age, the last deployment, how far the rollout is,
    /// and whether a newer base AMI exists.
    Status {
        /// The worker type (repeatable); default: all of worker-types/.
        #[arg(short = 'w', long = "worker-type", value_name = "W")]
        worker_type: Vec<String>,
        #[command(flatten)]
        jobs: Jobs,
    },
    /// Fill in the SHA-256 of every download the first-boot script pins (its `$Pins` block):
    /// downloads each URL and writes the hashes into the script, changing no other byte.
    Pin {
        /// One worker type's script; default: the scripts of every worker-types/*.toml.
        #[arg(short = 'w', long = "worker-type", value_name = "W")]
        worker_type: Option<String>,
        /// Change nothing, download nothing: list the entries that are not pinned; exit 1 if any.
        #[arg(long, conflicts_with = "force")]
        check: bool,
        /// Accept a download whose hash differs from the one already pinned (the file changed).
        #[arg(long)]
        force: bool,
    },
    /// Deregister tc-ami's old images and delete their snapshots in every region, and remove
    /// what interrupted builds left (instances, security groups, key pairs, snapshots) and the
    /// temporary pools of killed tries.
    /// Never deleted: the image of any launch config of any pool it can read or list, rollback
    /// targets, the images of each pool's newest deployments, the N newest per worker type and
    /// region, anything that may belong to a build in progress (its tc-ami:expires-at).
    Cleanup {
        /// One worker type; default: every worker-types/*.toml.
        #[arg(short = 'w', long = "worker-type", value_name = "W")]
        worker_type: Option<String>,
        /// How many of the newest available images to keep per worker type and region.
        #[arg(long, value_name = "N", default_value_t = crate::cleanup::DEFAULT_KEEP)]
        keep: usize,
        /// Keep the images of the newest N deployments recorded in each pool's history.
        #[arg(long, value_name = "N", default_value_t = crate::cleanup::DEFAULT_KEEP_DEPLOYMENTS)]
        keep_deployments: usize,
        /// Show the plan, delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Print the hook definition (a createHook request body) that runs `tc-ami auto -w W`
    /// nightly inside Taskcluster through taskcluster-proxy, with exactly the scopes that run
    /// needs; with --apply, create or update it through the Hooks service (diff, confirmation).
    /// Also says which scopes the hook's role must hold and who may grant them.
    Hook(HookArgs),
    /// Launch a Windows instance of the worker type's image to log in to over RDP, admitting
    /// RDP from --cidr only; it terminates itself after --ttl. --list shows the debug instances,
    /// --stop ID removes one.
    DebugInstance(DebugInstanceArgs),
    /// Print the shell completion script for SHELL, made from these same definitions (see the
    /// README for where each shell looks for it).
    Completions {
        /// The shell to complete for.
        #[arg(value_enum, value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the man page tc-ami(1) in roff; with --dir, write it and one page per command
    /// (tc-ami-deploy(1), ...) into DIR.
    Man {
        /// Write tc-ami.1 and tc-ami-<command>.1 into this directory (created if missing).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// `tc-ami hook`'s arguments.
#[derive(Debug, clap::Args)]
pub struct HookArgs {
    /// The worker type: worker-types/<W>.toml.
    #[arg(short = 'w', long = "worker-type", value_name = "W")]
    pub worker_type: String,
    /// When the hook fires: a cron pattern as the Hooks service reads it (cron-parser: six
    /// fields, seconds first; UTC). Default: nightly at 03:00 UTC.
    #[arg(long, value_name = "CRON")]
    pub schedule: Option<String>,
    /// The Docker image the task runs in (holding tc-ami, and git with --config-repo, else the
    /// config directory as its working directory); default: the worker type's hook_image.
    #[arg(long, value_name = "DOCKER_IMAGE")]
    pub image: Option<String>,
    /// The task queue (a docker-worker pool) the task runs on; default: the worker type's
    /// hook_task_queue.
    #[arg(long, value_name = "Q")]
    pub task_queue: Option<String>,
    /// The hook group; default project-<p> for a pool proj-<p>/… (what the project's
    /// administrators may write).
    #[arg(long, value_name = "G")]
    pub hook_group: Option<String>,
    /// The hook id; default tc-ami-<W>.
    #[arg(long, value_name = "ID")]
    pub hook_id: Option<String>,
    /// The hook's and task's owner (an email address); default: the pool's owner.
    #[arg(long, value_name = "EMAIL")]
    pub owner: Option<String>,
    /// The config repository the task checks out (shallow) and runs `tc-ami -C <checkout>
    /// auto` on, so each run sees its current worker types and first-boot script: https://,
    /// ssh://, user@host:path or file:///; default: the worker type's hook_config_repo; without
    /// either, the image holds the config directory.
    #[arg(long, value_name = "URL")]
    pub config_repo: Option<String>,
    /// The git ref of the config repository to check out (a branch, a tag, refs/heads/…);
    /// default: the worker type's hook_config_ref, else the remote's default branch.
    #[arg(long, value_name = "REF")]
    pub config_ref: Option<String>,
    /// Create or update the hook through the Hooks service, after showing the diff.
    #[arg(long)]
    pub apply: bool,
    /// With --apply: do not ask for confirmation.
    #[arg(long, short = 'y', requires = "apply")]
    pub yes: bool,
}

impl HookArgs {
    async fn run(self, ctx: &Ctx) -> Outcome {
        let ask = commands::hook::HookAsk {
            worker_type: self.worker_type,
            schedule: self.schedule,
            image: self.image,
            task_queue: self.task_queue,
            hook_group: self.hook_group,
            hook_id: self.hook_id,
            owner: self.owner,
            config_repo: self.config_repo,
            config_ref: self.config_ref,
            apply: self.apply,
            yes: self.yes,
        };
        let run = commands::hook::run(ctx, &ask);
        if ask.apply {
            commands::changing(ctx, run).await
        } else {
            commands::read_only(ctx, run).await
        }
    }
}

/// How many worker types at once, for the commands that take several.
#[derive(Debug, clap::Args)]
pub struct Jobs {
    /// How many worker types to work on at once (1: one after the other).
    #[arg(
        long,
        value_name = "N",
        default_value_t = commands::each::DEFAULT_JOBS,
        value_parser = parse_jobs
    )]
    pub jobs: usize,
}

/// `--jobs N`: a whole number, at least 1.
fn parse_jobs(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("at least 1 (1 runs the worker types one after the other)".into()),
        Ok(n) => Ok(n),
        Err(_) => Err("a whole number, at least 1".into()),
    }
}

/// `tc-ami diff`'s arguments.
#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The worker type: worker-types/<W>.toml.
    #[arg(short = 'w', long = "worker-type", value_name = "W")]
    pub worker_type: String,
    /// The image to deploy: AMI (the build region's; its copies are found by name) or
    /// REGION=AMI, repeatable. Default: the newest image tc-ami built for W per region.
    #[arg(long = "image", value_name = "AMI|REGION=AMI")]
    pub images: Vec<String>,
    /// Lines of context around each change.
    #[arg(short = 'U', long = "unified", value_name = "N", default_value_t = crate::diff::DEFAULT_CONTEXT)]
    pub unified: usize,
    /// Also show how deploy --update-file PATH would change this file (repeatable);
    /// default: the worker type's config_files.
    #[arg(long = "update-file", value_name = "PATH")]
    pub update_files: Vec<PathBuf>,
}

impl DiffArgs {
    async fn run(self, ctx: &Ctx) -> Outcome {
        let files = commands::managed::FilesAsked {
            update_files: self.update_files,
            managed_ok: false,
        };
        let diff = commands::diff::run(ctx, &self.worker_type, &self.images, self.unified, &files);
        commands::read_only(ctx, diff).await
    }
}

/// `tc-ami deploy`'s arguments.
#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// The worker type: worker-types/<W>.toml.
    #[arg(short = 'w', long = "worker-type", value_name = "W")]
    pub worker_type: String,
    /// The image to deploy: AMI (the build region's; its copies are found by name) or
    /// REGION=AMI, repeatable. Without it, tc-ami builds one first.
    #[arg(long = "image", value_name = "AMI|REGION=AMI")]
    pub images: Vec<String>,
    /// Do everything but the push.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Deploy to a pool managed by tc-admin (description `*DO NOT EDIT*`) without
    /// updating its configuration: its next `tc-admin apply` puts the old images back.
    #[arg(long)]
    pub managed_ok: bool,
    /// A file that declares the pool's image ids (tc-admin's config/worker-pools.yml):
    /// the old ids are replaced by the new ones, shown in the review, written after the
    /// push is verified (repeatable); default: the worker type's config_files.
    #[arg(long = "update-file", value_name = "PATH")]
    pub update_files: Vec<PathBuf>,
    /// When it builds, on a failure after the launch, keep the build instance with its key pair and
    /// security group for TTL (default 4h) to look inside, instead of removing them; prints
    /// how to get in. `cleanup` removes them after the TTL. Not after Ctrl-C or SIGTERM.
    #[arg(
        long,
        value_name = "TTL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "4h",
        value_parser = parse_keep_ttl,
        conflicts_with = "images"
    )]
    pub keep_on_failure: Option<Duration>,
    #[command(flatten)]
    pub try_first: TryFlags,
}

impl DeployArgs {
    async fn run(self, ctx: &Ctx) -> Outcome {
        let files = commands::managed::FilesAsked {
            update_files: self.update_files,
            managed_ok: self.managed_ok,
        };
        let try_first = self.try_first.first();
        let asked = commands::deploy::DeployAsked {
            images: &self.images,
            asked: commands::change::Asked {
                dry_run: self.dry_run,
                yes: self.yes,
            },
            keep_on_failure: self.keep_on_failure,
            try_first: &try_first,
            files: &files,
        };
        commands::changing(ctx, commands::deploy::run(ctx, &self.worker_type, &asked)).await
    }
}

/// `tc-ami base-ami`'s arguments.
#[derive(Debug, clap::Args)]
pub struct BaseAmiArgs {
    /// The worker type: worker-types/<W>.toml (with --list: its build region, owner and
    /// pattern).
    #[arg(
        short = 'w',
        long = "worker-type",
        value_name = "W",
        required_unless_present = "list"
    )]
    pub worker_type: Option<String>,
    /// List the Windows images: grouped by version, locale, edition and flavour (parsed
    /// from the names), each group with its count and newest image; with --pattern, the
    /// matching images newest first, and which one a build would pick and why not the others.
    #[arg(long)]
    pub list: bool,
    /// With --list: the region to list, instead of W's build region.
    #[arg(
        long,
        value_name = "R",
        requires = "list",
        conflicts_with = "worker_type"
    )]
    pub region: Option<String>,
    /// With --list: only images whose name matches P (`*` and `?`, as in base-ami.txt).
    #[arg(long, value_name = "P", requires = "list")]
    pub pattern: Option<String>,
    /// With --list: the images' owner (amazon, self, aws-marketplace or an account id);
    /// default W's base_ami_owner, else amazon.
    #[arg(long, value_name = "O", requires = "list")]
    pub owner: Option<String>,
}

impl From<BaseAmiArgs> for commands::base_ami::Asked {
    fn from(a: BaseAmiArgs) -> Self {
        commands::base_ami::Asked {
            worker_type: a.worker_type,
            list: a.list,
            region: a.region,
            pattern: a.pattern,
            owner: a.owner,
        }
    }
}

/// `tc-ami debug-instance`'s arguments.
#[derive(Debug, clap::Args)]
pub struct DebugInstanceArgs {
    /// The worker type: worker-types/<W>.toml (with --list: only its debug instances).
    #[arg(short = 'w', long = "worker-type", value_name = "W")]
    pub worker_type: Option<String>,
    /// The image to launch; default: the live image of W's pool in W's build region.
    #[arg(long, value_name = "AMI", conflicts_with_all = ["list", "stop"])]
    pub image: Option<String>,
    /// How long the instance lives: it shuts itself down (and is terminated) after this, and
    /// `cleanup` removes it once it has passed. Default 4h, at most 3650d (what Windows'
    /// `shutdown /t` accepts).
    #[arg(long, value_name = "TTL", conflicts_with_all = ["list", "stop"])]
    pub ttl: Option<String>,
    /// The only addresses RDP (TCP 3389) is admitted from, e.g. 203.0.113.7/32; required for a
    /// launch (tc-ami does not guess your address).
    #[arg(long, value_name = "CIDR", conflicts_with_all = ["list", "stop"])]
    pub cidr: Option<String>,
    /// Print the administrator password (by default it goes to a file only you can read).
    #[arg(long, conflicts_with_all = ["list", "stop"])]
    pub show_password: bool,
    /// List the debug instances in the worker types' build regions.
    #[arg(long, conflicts_with = "stop")]
    pub list: bool,
    /// Terminate this debug instance and remove its security group, key pair and files.
    #[arg(long, value_name = "ID", conflicts_with = "worker_type")]
    pub stop: Option<String>,
}

impl DebugInstanceArgs {
    async fn run(self, ctx: &Ctx) -> Outcome {
        use commands::debug_instance as d;
        if self.list {
            return commands::read_only(ctx, d::list(ctx, self.worker_type.as_deref())).await;
        }
        if let Some(id) = self.stop {
            return commands::changing(ctx, d::stop(ctx, &id)).await;
        }
        let asked = d::Asked {
            worker_type: self.worker_type,
            image: self.image,
            ttl: self.ttl,
            cidr: self.cidr,
            show_password: self.show_password,
        };
        commands::changing(ctx, d::run(ctx, &asked)).await
    }
}

/// `deploy` and `promote`: try the images before pushing them.
#[derive(Debug, clap::Args)]
pub struct TryFlags {
    /// Run `tc-ami try` with this task file on the images first, and push only if every task
    /// completed. Default: the worker type's `try_task`, if it sets one.
    #[arg(long = "try", value_name = "FILE", conflicts_with = "no_try")]
    pub task: Option<PathBuf>,
    /// Push without trying, even when the worker type sets `try_task`.
    #[arg(long)]
    pub no_try: bool,
}

impl TryFlags {
    fn first(&self) -> commands::try_cmd::TryFirst {
        commands::try_cmd::TryFirst {
            task: self.task.clone(),
            no_try: self.no_try,
        }
    }
}

/// Runs the command.
pub async fn run(ctx: &Ctx, command: Command) -> Outcome {
    use commands::*;
    match command {
        Command::BaseAmi(args) => read_only(ctx, base_ami::run(ctx, &args.into())).await,
        Command::Diff(args) => args.run(ctx).await,
        Command::History { worker_type } => read_only(ctx, history::run(ctx, &worker_type)).await,
        // Its only write comes after the last await and is atomic: an interrupt stops it cleanly.
        Command::Pin {
            worker_type,
            check,
            force,
        } => read_only(ctx, pin::run(ctx, worker_type.as_deref(), check, force)).await,
        Command::Status { worker_type, jobs } => {
            read_only(ctx, status::run(ctx, &worker_type, jobs.jobs)).await
        }
        Command::Hook(args) => args.run(ctx).await,
        Command::Completions { shell } => completions(ctx, shell).into(),
        Command::Man { dir } => man(ctx, dir.as_deref()).into(),
        changing => run_changing(ctx, changing).await,
    }
}

/// The commands that change something run under [`commands::changing`]: an interrupt drops them
/// where they wait, except in the sections they shield (a push is finished, a build or copies
/// stop themselves and remove what they made).
async fn run_changing(ctx: &Ctx, command: Command) -> Outcome {
    use commands::*;
    match command {
        Command::Build {
            worker_type,
            all,
            jobs,
            keep_on_failure,
        } => match worker_type.as_slice() {
            [one] if !all => changing(ctx, build::run(ctx, one, keep_on_failure)).await,
            several => {
                let build = build::run_several(ctx, several, jobs.jobs, keep_on_failure);
                changing(ctx, build).await
            }
        },
        Command::Deploy(args) => args.run(ctx).await,
        Command::DebugInstance(args) => args.run(ctx).await,
        Command::Auto {
            worker_type,
            all,
            jobs,
            max_age,
        } => {
            let asked = auto::AutoAsked { max_age };
            match worker_type.as_slice() {
                [one] if !all => changing(ctx, auto::run(ctx, one, asked)).await,
                several => {
                    let auto = auto::run_several(ctx, several, jobs.jobs, asked);
                    changing(ctx, auto).await
                }
            }
        }
        Command::Rollback {
            worker_type,
            to,
            dry_run,
            yes,
        } => {
            changing(
                ctx,
                rollback::run(ctx, &worker_type, to.as_deref(), dry_run, yes),
            )
            .await
        }
        Command::Promote {
            from,
            to,
            dry_run,
            yes,
            try_first,
        } => {
            let first = try_first.first();
            changing(ctx, promote::run(ctx, &from, &to, dry_run, yes, &first)).await
        }
        other => run_more(ctx, other).await,
    }
}

/// try, rollout and cleanup. try and rollout watch the interrupt themselves (try removes its
/// temporary pool, rollout finishes the batch under way); cleanup runs as the other changing
/// commands.
async fn run_more(ctx: &Ctx, command: Command) -> Outcome {
    use commands::*;
    match command {
        Command::Try {
            worker_type,
            images,
            task,
            timeout,
            keep_pool,
        } => try_cmd::run(ctx, &worker_type, &images, &task, &timeout, keep_pool)
            .await
            .into(),
        Command::Rollout {
            worker_type,
            watch,
            retire,
            idle_only,
            dry_run,
            yes,
        } => {
            let asked = rollout::Asked {
                watch,
                retire,
                idle_only,
                dry_run,
                yes,
            };
            rollout::run(ctx, &worker_type, asked).await.into()
        }
        Command::Cleanup {
            worker_type,
            keep,
            keep_deployments,
            dry_run,
            yes,
        } => {
            let keep = cleanup::Keep {
                images: keep,
                deployments: keep_deployments,
            };
            changing(
                ctx,
                cleanup::run(ctx, worker_type.as_deref(), keep, dry_run, yes),
            )
            .await
        }
        read_only_command => Outcome::Failed(anyhow::anyhow!(
            "internal error: {read_only_command:?} reached the dispatch of changing commands"
        )),
    }
}

/// The longest `--keep-on-failure` TTL: a failed build's instance is for a look inside, not to
/// live on.
const MAX_KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

/// `--keep-on-failure=TTL`: a duration (`4h`, `90m`), more than zero, at most 7d.
/// `auto --max-age`: not zero (every image would be too old), at most ten years.
fn parse_max_age(text: &str) -> Result<Duration, String> {
    let age = crate::duration::parse_duration(text)?;
    if age.is_zero() {
        return Err("0s would rebuild every time: leave --max-age out or give a real age".into());
    }
    if age > Duration::from_secs(3650 * 24 * 3600) {
        return Err("at most 3650d".into());
    }
    Ok(age)
}

fn parse_keep_ttl(text: &str) -> Result<Duration, String> {
    let ttl = crate::duration::parse_duration(text)?;
    if ttl.is_zero() {
        return Err("a TTL of 0s would keep nothing: leave --keep-on-failure out".into());
    }
    if ttl > MAX_KEEP {
        return Err("at most 7d".into());
    }
    Ok(ttl)
}

/// The completion script for `shell`, generated from [`Cli`].
fn completions(ctx: &Ctx, shell: clap_complete::Shell) -> anyhow::Result<u8> {
    let script = completion_script(shell)?;
    ctx.shell.result(
        script.trim_end(),
        &json!({"shell": shell.to_string(), "script": script}),
    );
    Ok(0)
}

/// The completion script for `shell`. clap_complete 4.6 writes a bash script whose
/// subcommand branches never match when the program's name has a hyphen (clap-rs/clap issue
/// 6421: its loop and its branches spell the state differently), so the bash script is made for
/// `tc_ami` and registered for `tc-ami`.
fn completion_script(shell: clap_complete::Shell) -> anyhow::Result<String> {
    let bash = shell == clap_complete::Shell::Bash;
    let name = if bash { "tc_ami" } else { "tc-ami" };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), name, &mut script);
    let script = String::from_utf8(script).context("the completion script is not UTF-8")?;
    if !bash {
        return Ok(script);
    }
    let registered = script.replace(" -o default tc_ami\n", " -o default tc-ami\n");
    if registered.matches(" tc-ami\n").count() != 2 {
        anyhow::bail!("the bash completion script does not register tc_ami as expected");
    }
    Ok(registered)
}

/// The man page tc-ami(1) on stdout, or with `dir` it and one page per command written there.
fn man(ctx: &Ctx, dir: Option<&Path>) -> anyhow::Result<u8> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let Some(dir) = dir else {
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd)
            .render(&mut page)
            .context("rendering the man page")?;
        let page = String::from_utf8(page).context("the man page is not UTF-8")?;
        ctx.shell
            .result(page.trim_end(), &json!({"page": "tc-ami.1", "roff": page}));
        return Ok(0);
    };
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the directory {}", dir.display()))?;
    let subcommands: Vec<clap::Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    let mut pages = Vec::new();
    for page in std::iter::once(cmd).chain(subcommands) {
        let path = clap_mangen::Man::new(page)
            .generate_to(dir)
            .with_context(|| format!("cannot write a man page into {}", dir.display()))?;
        pages.push(path.display().to_string());
    }
    ctx.shell.result(
        &format!("wrote {} man pages: {}", pages.len(), pages.join(" ")),
        &json!({"dir": dir, "pages": pages}),
    );
    Ok(0)
}
