//! tc-ami: builds Windows AMIs for Taskcluster workers and rolls them out to worker pools.
//!
//! Layers, from the bottom; a module uses only its own layer and the ones below (README,
//! "Layout"):
//! 1. [`model`]: plain data — images, instances and their states, the tag vocabulary, the EC2
//!    error codes tc-ami acts on, what a region holds.
//! 2. The pure core, functions of data with their unit tests: [`config`], [`duration`],
//!    [`text`], [`base_ami`], [`user_data`], [`build`] (the build plan), [`pool`], [`diff`],
//!    [`history`] (its rules), [`image_arg`], [`cleanup`] (planning), [`password`], [`pins`],
//!    [`ami_names`], [`managed`], [`rollout`], [`try_pool`], [`guest_console`],
//!    [`debug_instance`], [`staleness`], [`cron`] (the Hooks service's cron patterns), [`hook`]
//!    (the nightly hook: scopes, role, definition).
//! 3. Runtime support, no network: [`budget`] (the EC2 poll budget), [`config_dir`] (reading
//!    the config files), [`files`]
//!    (rewriting a file in place), [`interrupt`],
//!    [`wait`], [`shell`] (the one output channel).
//! 4. Adapters, thin, SDK types in and model data out: [`download`], [`ec2`], [`ec2_debug`],
//!    [`ec2_inventory`],
//!    [`taskcluster`] (worker-manager, secrets and the Queue), [`taskcluster_hooks`] (Hooks).
//! 5. [`ops`]: the lifecycle of what tc-ami creates, with registered cleanups.
//! 6. [`commands`]: orchestration and printing. 7. [`cli`] (and the binary): the command line.

pub mod model;

pub mod ami_names;
pub mod base_ami;
pub mod build;
pub mod cleanup;
pub mod config;
pub mod cron;
pub mod debug_instance;
pub mod diff;
pub mod duration;
pub mod guest_console;
pub mod history;
pub mod hook;
pub mod image_arg;
pub mod managed;
pub mod password;
pub mod pins;
pub mod pool;
pub mod rollout;
pub mod staleness;
pub mod text;
pub mod try_pool;
pub mod user_data;

pub mod budget;
pub mod config_dir;
pub mod files;
pub mod interrupt;
pub mod shell;
pub mod wait;

pub mod download;
pub mod ec2;
pub mod ec2_debug;
pub mod ec2_inventory;
pub mod taskcluster;
pub mod taskcluster_hooks;

pub mod ops;

pub mod commands;

pub mod cli;
